"""TransformerLens weight processing done lean: safetensors shards -> a processed model.

TransformerLens's ``load_and_process_state_dict`` works on whole state dicts and upcasts
every tensor to float32 at once (an HF model, its TL-format copy and several float32
copies alive together: ~8x the weights' bytes for a bf16 checkpoint, TransformerLens#252).
This module computes the same result one tensor at a time: each weight is read from the
safetensors files with plain reads (no mmap, so file pages never count as our memory),
converted from Hugging Face to TransformerLens layout, processed in float32 and written
into a model whose parameters were allocated uninitialised in the target dtype. The
extra memory is a few tensors of one layer.

The processing is TransformerLens's default, written here from what it computes:

* fold the norms (``ln1`` into W_Q/W_K/W_V, ``ln2`` into W_in/W_gate, ``ln_final`` into
  W_U; for LayerNorm also their biases into the next biases, and the folded reading
  weights centred over ``d_model``);
* centre the writing weights (W_E, W_pos, W_O, b_O, W_out, b_out) over ``d_model``, for
  LayerNorm models only (an RMSNorm does not remove the mean);
* centre the unembedding (W_U and b_U over the vocabulary);
* fold the value biases into b_O (then re-centre b_O for LayerNorm models).

Architectures covered: :data:`LEAN_ARCHITECTURES`. For any other,
:func:`lean_supported` is False and the caller uses TransformerLens's own loader.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from actsteer.errors import InvalidValueError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = ["LEAN_ARCHITECTURES", "lean_supported", "load_weights"]

LEAN_ARCHITECTURES: tuple[str, ...] = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "GPT2LMHeadModel",
)
"""HF architectures whose weights :func:`load_weights` converts and processes itself."""

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}

# Rows of W_U processed at once on RMSNorm models (all of their unembedding processing is
# row-local, so chunking changes nothing but the transient memory).
_UNEMBED_CHUNK = 512


class _Checkpoint:
    """The tensors of a safetensors checkpoint (one file or an indexed set), read on demand.

    Reads with ``readinto`` into fresh tensors rather than through a memory map: the bytes
    read are the only memory used, and nothing stays resident after a tensor is freed.
    """

    def __init__(self, folder: Path) -> None:
        index = folder / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (folder / "model.safetensors").exists():
            files = ["model.safetensors"]
        else:
            raise InvalidValueError(f"{folder} has no model.safetensors(.index.json)")
        self._where: dict[str, tuple[Path, dict[str, Any], int]] = {}
        for name in files:
            path = folder / name
            with path.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
            header.pop("__metadata__", None)
            for key, entry in header.items():
                self._where[key] = (path, entry, 8 + length)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def keys(self) -> Iterator[str]:
        return iter(self._where)

    def get(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """Tensor ``name`` cast to ``dtype`` (the cast HF's loader makes)."""
        try:
            path, entry, base = self._where[name]
        except KeyError:
            raise InvalidValueError(f"tensor {name!r} is not in the checkpoint") from None
        file_dtype = _ST_DTYPES.get(str(entry["dtype"]))
        if file_dtype is None:
            raise InvalidValueError(f"tensor {name!r} has unsupported dtype {entry['dtype']}")
        start, end = (int(x) for x in entry["data_offsets"])
        raw = torch.empty(end - start, dtype=torch.uint8)
        with path.open("rb") as handle:
            handle.seek(base + start)
            if handle.readinto(raw.numpy().data) != end - start:
                raise InvalidValueError(f"{path} is truncated (tensor {name!r})")
        shape = [int(s) for s in entry["shape"]]
        tensor = raw.view(file_dtype).reshape(shape)
        return tensor if file_dtype == dtype else tensor.to(dtype)


def lean_supported(folder: Path, architecture: str | None) -> bool:
    """Whether :func:`load_weights` covers this folder (architecture and safetensors)."""
    has_weights = (folder / "model.safetensors").exists() or (
        folder / "model.safetensors.index.json"
    ).exists()
    return has_weights and architecture in LEAN_ARCHITECTURES


class _Writer:
    """Copies tensors into a model's parameters by TL name, remembering which were set."""

    def __init__(self, model: HookedTransformer) -> None:
        self.params = dict(model.named_parameters())
        self.written: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.params

    def put(self, name: str, value: torch.Tensor, rows: slice | None = None) -> None:
        param = self.params.get(name)
        if param is None:
            raise InvalidValueError(
                f"the model has no parameter {name}; the config.json does not match the "
                "weights, or the lean loader does not know this layout"
            )
        target = param.data if rows is None else param.data[rows]
        if target.shape != value.shape:
            raise InvalidValueError(
                f"{name}: checkpoint gives shape {tuple(value.shape)}, the model expects "
                f"{tuple(target.shape)}; the config.json does not match the weights"
            )
        target.copy_(value)
        if rows is None:
            self.written.add(name)

    def finish(self) -> None:
        """Zero the biases the checkpoint lacks (as TL does); refuse missing weights."""
        for name, param in self.params.items():
            if name in self.written:
                continue
            if name.rsplit(".", 1)[-1].lstrip("_").startswith("b_"):
                param.data.zero_()
            else:
                raise InvalidValueError(
                    f"the checkpoint gave no value for {name}; the lean loader does not "
                    "know this layout (load with TransformerLens's loader instead)"
                )


def _heads_in(weight: torch.Tensor, n: int) -> torch.Tensor:
    """HF ``[n*d_head, d_model]`` projection -> TL ``[n, d_model, d_head]``."""
    return weight.reshape(n, -1, weight.shape[-1]).transpose(1, 2)


def _llama_layer(
    ck: _Checkpoint, cfg: Any, layer: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """TL-format float32 tensors of one Llama/Qwen2 layer (Qwen2 adds q/k/v biases)."""
    p = f"model.layers.{layer}."
    n_heads = int(cfg.n_heads)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)

    def get(name: str) -> torch.Tensor:
        return ck.get(p + name, dtype).float()

    out = {
        "ln1.w": get("input_layernorm.weight"),
        "ln2.w": get("post_attention_layernorm.weight"),
        "attn.W_Q": _heads_in(get("self_attn.q_proj.weight"), n_heads),
        "attn.W_K": _heads_in(get("self_attn.k_proj.weight"), n_kv),
        "attn.W_V": _heads_in(get("self_attn.v_proj.weight"), n_kv),
        "attn.W_O": get("self_attn.o_proj.weight").reshape(-1, n_heads, int(cfg.d_head))
        .permute(1, 2, 0),
        "mlp.W_in": get("mlp.up_proj.weight").T,
        "mlp.W_gate": get("mlp.gate_proj.weight").T,
        "mlp.W_out": get("mlp.down_proj.weight").T,
    }
    for x, n in (("Q", n_heads), ("K", n_kv), ("V", n_kv)):
        name = f"self_attn.{x.lower()}_proj.bias"
        if p + name in ck:
            out[f"attn.b_{x}"] = get(name).reshape(n, -1)
    return out


def _gpt2_layer(
    ck: _Checkpoint, cfg: Any, layer: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """TL-format float32 tensors of one GPT-2 layer (Conv1D weights are ``[in, out]``)."""
    p = _gpt2_prefix(ck) + f"h.{layer}."
    n_heads = int(cfg.n_heads)

    def get(name: str) -> torch.Tensor:
        return ck.get(p + name, dtype).float()

    w_qkv = get("attn.c_attn.weight")
    b_qkv = get("attn.c_attn.bias").reshape(3, n_heads, -1)
    out = {
        "ln1.w": get("ln_1.weight"),
        "ln1.b": get("ln_1.bias"),
        "ln2.w": get("ln_2.weight"),
        "ln2.b": get("ln_2.bias"),
        "attn.W_O": get("attn.c_proj.weight").reshape(n_heads, -1, w_qkv.shape[0]),
        "attn.b_O": get("attn.c_proj.bias"),
        "mlp.W_in": get("mlp.c_fc.weight"),
        "mlp.b_in": get("mlp.c_fc.bias"),
        "mlp.W_out": get("mlp.c_proj.weight"),
        "mlp.b_out": get("mlp.c_proj.bias"),
    }
    for i, x in enumerate("QKV"):
        w = w_qkv[:, i * w_qkv.shape[0] : (i + 1) * w_qkv.shape[0]]
        out[f"attn.W_{x}"] = w.reshape(w.shape[0], n_heads, -1).transpose(0, 1)
        out[f"attn.b_{x}"] = b_qkv[i]
    return out


def _gpt2_prefix(ck: _Checkpoint) -> str:
    return "transformer." if "transformer.wte.weight" in ck else ""


def _process_layer(
    t: dict[str, torch.Tensor], *, layer_norm: bool, centre_writing: bool, n_rep: int
) -> None:
    """TL's default processing of one layer's float32 tensors, in place in ``t``.

    ``layer_norm``: LayerNorm (fold biases, centre the reading weights) rather than
    RMSNorm (scale only). ``centre_writing``: centre W_O, b_O, W_out, b_out.
    ``n_rep``: query heads per key/value head (value biases are shared that way).
    """
    w1, b1 = t.pop("ln1.w"), t.pop("ln1.b", None)
    d_head = t["attn.W_Q"].shape[-1]
    for x in "QKV":
        w = t[f"attn.W_{x}"]
        if layer_norm and b1 is not None:
            bias = t.get(f"attn.b_{x}", w.new_zeros(w.shape[0], d_head))
            t[f"attn.b_{x}"] = bias + (w * b1[None, :, None]).sum(-2)
        w = w * w1[None, :, None]
        if layer_norm:
            w = w - w.mean(1, keepdim=True)
        t[f"attn.W_{x}"] = w
    w2, b2 = t.pop("ln2.w"), t.pop("ln2.b", None)
    if layer_norm and b2 is not None:
        if "mlp.W_gate" in t:
            raise InvalidValueError("a gated MLP after a LayerNorm is not covered here")
        bias = t.get("mlp.b_in", w2.new_zeros(t["mlp.W_in"].shape[1]))
        t["mlp.b_in"] = bias + (t["mlp.W_in"] * b2[:, None]).sum(-2)
    t["mlp.W_in"] = t["mlp.W_in"] * w2[:, None]
    if "mlp.W_gate" in t:
        t["mlp.W_gate"] = t["mlp.W_gate"] * w2[:, None]
    if layer_norm:
        t["mlp.W_in"] = t["mlp.W_in"] - t["mlp.W_in"].mean(0, keepdim=True)
    if centre_writing:
        for name in ("attn.W_O", "mlp.W_out"):
            t[name] = t[name] - t[name].mean(-1, keepdim=True)
        for name in ("attn.b_O", "mlp.b_out"):
            if name in t:
                t[name] = t[name] - t[name].mean()
    if "attn.b_V" in t:
        b_v = t["attn.b_V"].repeat_interleave(n_rep, dim=0)
        b_o = t.get("attn.b_O", b_v.new_zeros(t["attn.W_O"].shape[-1]))
        b_o = b_o + (b_v[:, :, None] * t["attn.W_O"]).sum((0, 1))
        t["attn.b_O"] = b_o - b_o.mean() if centre_writing else b_o
        t["attn.b_V"] = torch.zeros_like(t["attn.b_V"])


def _tl_name(layer: int, key: str, writer: _Writer) -> str:
    """TL parameter name, with the ``_`` that grouped-query attention puts on K/V."""
    name = f"blocks.{layer}.{key}"
    if not writer.has(name):
        gqa = f"blocks.{layer}.attn._{key.split('.', 1)[1]}"
        if writer.has(gqa):
            return gqa
    return name


def load_weights(model: HookedTransformer, folder: Path, *, fold_ln: bool) -> None:
    """Fill ``model``'s parameters from ``folder``'s safetensors, processed as TL would.

    ``model`` is a HookedTransformer built from this folder's config (with
    ``init_weights=False``, so its parameters are uninitialised and cost nothing until
    written; with ``fold_ln`` its norms must already be the ``*Pre`` kind, as
    ``get_pretrained_model_config(fold_ln=True)`` makes them). ``fold_ln`` applies all of
    TransformerLens's default processing; False only converts.
    """
    cfg = model.cfg
    architecture = cfg.original_architecture
    if architecture not in LEAN_ARCHITECTURES:
        raise InvalidValueError(
            f"architecture {architecture!r} is not covered by the lean loader; use one of "
            f"{LEAN_ARCHITECTURES} or TransformerLens's loader"
        )
    dtype = cfg.dtype
    ck = _Checkpoint(folder)
    gpt2 = architecture == "GPT2LMHeadModel"
    layer_norm = cfg.normalization_type in ("LN", "LNPre")
    centre_writing = fold_ln and layer_norm and not cfg.final_rms
    n_rep = cfg.n_heads // (cfg.n_key_value_heads or cfg.n_heads)
    writer = _Writer(model)
    read_layer = _gpt2_layer if gpt2 else _llama_layer
    with torch.no_grad():
        for layer in range(cfg.n_layers):
            tensors = read_layer(ck, cfg, layer, dtype)
            if fold_ln:
                _process_layer(
                    tensors, layer_norm=layer_norm, centre_writing=centre_writing, n_rep=n_rep
                )
            for key in list(tensors):
                value = tensors.pop(key)
                writer.put(_tl_name(layer, key, writer), value.to(dtype))
        _load_embeddings(ck, writer, cfg, dtype, gpt2=gpt2, centre=centre_writing)
        _load_unembed(ck, writer, cfg, dtype, gpt2=gpt2, fold_ln=fold_ln, layer_norm=layer_norm)
        writer.finish()


def _load_embeddings(
    ck: _Checkpoint, writer: _Writer, cfg: Any, dtype: torch.dtype, *, gpt2: bool, centre: bool
) -> None:
    prefix = _gpt2_prefix(ck) if gpt2 else "model."
    w_e = ck.get(prefix + ("wte.weight" if gpt2 else "embed_tokens.weight"), dtype)
    if centre:
        w_e = w_e.float()
        w_e = (w_e - w_e.mean(-1, keepdim=True)).to(dtype)
    writer.put("embed.W_E", w_e)
    if gpt2:
        w_pos = ck.get(prefix + "wpe.weight", dtype)[: int(cfg.n_ctx)]
        if centre:
            w_pos = w_pos.float()
            w_pos = (w_pos - w_pos.mean(-1, keepdim=True)).to(dtype)
        writer.put("pos_embed.W_pos", w_pos)


def _load_unembed(
    ck: _Checkpoint,
    writer: _Writer,
    cfg: Any,
    dtype: torch.dtype,
    *,
    gpt2: bool,
    fold_ln: bool,
    layer_norm: bool,
) -> None:
    """W_U, b_U (and ln_final when it is not folded)."""
    prefix = _gpt2_prefix(ck) if gpt2 else "model."
    head = "lm_head.weight"
    if head not in ck:  # tied embeddings
        head = prefix + ("wte.weight" if gpt2 else "embed_tokens.weight")
    norm = prefix + ("ln_f" if gpt2 else "norm")
    lm_head = ck.get(head, dtype)  # [d_vocab, d_model]; W_U is its transpose
    w_f = ck.get(norm + ".weight", dtype).float()
    b_f = ck.get(norm + ".bias", dtype).float() if norm + ".bias" in ck else None
    b_u = torch.zeros(lm_head.shape[0])
    if not fold_ln:
        writer.put("unembed.W_U", lm_head.T)
        writer.put("ln_final.w", w_f.to(dtype))
        if b_f is not None:
            writer.put("ln_final.b", b_f.to(dtype))
        return
    if layer_norm:  # centring over d_model is not row-local: do the whole matrix
        w_u = lm_head.T.float()
        if b_f is not None and not cfg.final_rms:
            b_u = b_u + (w_u * b_f[:, None]).sum(-2)
        w_u = w_u * w_f[:, None]
        w_u = w_u - w_u.mean(0, keepdim=True)
        w_u = w_u - w_u.mean(-1, keepdim=True)
        writer.put("unembed.W_U", w_u.to(dtype))
    else:
        w_u_t = lm_head.T
        for start in range(0, w_u_t.shape[0], _UNEMBED_CHUNK):
            rows = slice(start, start + _UNEMBED_CHUNK)
            chunk = w_u_t[rows].float() * w_f[rows, None]
            writer.put("unembed.W_U", (chunk - chunk.mean(-1, keepdim=True)).to(dtype), rows)
        writer.written.add("unembed.W_U")
    if writer.has("unembed.b_U"):
        writer.put("unembed.b_U", (b_u - b_u.mean()).to(dtype))
