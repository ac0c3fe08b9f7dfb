"""TransformerLens weight processing done lean: safetensors shards -> a processed model.

TransformerLens's ``load_and_process_state_dict`` works on whole state dicts upcast to
float32 (an HF model, its TL-format copy and several float32 copies alive together: ~8x
the weights' bytes for a bf16 checkpoint, TransformerLens#252). This module computes the
same result one tensor at a time: read from the safetensors (:mod:`.checkpoint`),
converted from HF to TL layout, processed in float32 and written into a model whose
parameters were allocated uninitialised in the target dtype.

The processing is TransformerLens's default, written here from what it computes:

* fold the norms (``ln1`` into W_Q/W_K/W_V, ``ln2`` into W_in/W_gate, ``ln_final`` into
  W_U; for LayerNorm also their biases into the next biases, and the folded reading
  weights centred over ``d_model``);
* centre the writing weights (W_E, W_pos, W_O, b_O, W_out, b_out) over ``d_model``, for
  LayerNorm models only (an RMSNorm does not remove the mean);
* centre the unembedding (W_U and b_U over the vocabulary);
* fold the value biases into b_O (then re-centre b_O for LayerNorm models).

Architectures covered: :data:`LEAN_ARCHITECTURES`. For any other (Gemma-2's offset norms,
post-norms and scaled embedding among them) :func:`lean_supported` is False and the
caller uses TransformerLens's own loader, numerics unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from actsteer.errors import InvalidValueError
from actsteer.models.checkpoint import Checkpoint, has_safetensors

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = ["LEAN_ARCHITECTURES", "lean_supported", "load_weights"]

LEAN_ARCHITECTURES: tuple[str, ...] = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "GPT2LMHeadModel",
)
"""HF architectures whose weights :func:`load_weights` converts and processes itself."""

# Rows of the embedding/unembedding matrices read and processed at once (64 MiB in
# float32 at d_model 4096): what these add to memory, whatever the vocabulary.
_ROWS = 4096


def lean_supported(folder: Path, architecture: str | None) -> bool:
    """Whether :func:`load_weights` covers this folder (architecture and safetensors)."""
    return architecture in LEAN_ARCHITECTURES and has_safetensors(folder)


class _Writer:
    """Copies tensors into a model's parameters by TL name, remembering which were set."""

    def __init__(self, model: HookedTransformer) -> None:
        self.params = dict(model.named_parameters())
        self.written: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.params

    def put(self, name: str, value: torch.Tensor, part: tuple[slice, ...] | None = None) -> None:
        """Copy ``value`` (cast to the parameter's dtype) into ``name`` or its ``part``;
        a ``part`` does not count as written (the caller marks the whole)."""
        param = self.params.get(name)
        if param is None:
            raise InvalidValueError(
                f"the model has no parameter {name}; the config.json does not match the "
                "weights, or the lean loader does not know this layout"
            )
        target = param.data if part is None else param.data[part]
        if target.shape != value.shape:
            raise InvalidValueError(
                f"{name}: checkpoint gives shape {tuple(value.shape)}, the model expects "
                f"{tuple(target.shape)}; the config.json does not match the weights"
            )
        # Cast in the source's own layout first: a strided copy that also converts is
        # ~3x slower than a cast followed by a same-dtype strided copy (same rounding).
        target.copy_(value.to(target.dtype))
        if part is None:
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


_Source = dict[str, Callable[[], torch.Tensor]]


def _llama_layer(ck: Checkpoint, cfg: Any, layer: int, dtype: torch.dtype) -> _Source:
    """Readers of one Llama/Qwen2 layer's tensors, TL layout, float32 (Qwen2 adds q/k/v
    biases). Each reads its tensor when called, so only what is processed is in memory."""
    p = f"model.layers.{layer}."
    n_heads = int(cfg.n_heads)
    n_kv = int(cfg.n_key_value_heads or n_heads)

    def get(name: str) -> Callable[[], torch.Tensor]:
        return lambda: ck.get(p + name, dtype).float()

    def heads(name: str, n: int) -> Callable[[], torch.Tensor]:
        # HF [n*d_head, d_model] -> TL [n, d_model, d_head]
        return lambda: get(name)().reshape(n, -1, int(cfg.d_model)).transpose(1, 2)

    def transposed(name: str) -> Callable[[], torch.Tensor]:
        return lambda: get(name)().T

    def per_head(name: str, n: int) -> Callable[[], torch.Tensor]:
        return lambda: get(name)().reshape(n, -1)

    out: _Source = {
        "ln1.w": get("input_layernorm.weight"),
        "ln2.w": get("post_attention_layernorm.weight"),
        "attn.W_Q": heads("self_attn.q_proj.weight", n_heads),
        "attn.W_K": heads("self_attn.k_proj.weight", n_kv),
        "attn.W_V": heads("self_attn.v_proj.weight", n_kv),
        # HF [d_model, n*d_head] -> TL [n, d_head, d_model]
        "attn.W_O": lambda: get("self_attn.o_proj.weight")()
        .reshape(int(cfg.d_model), n_heads, -1).permute(1, 2, 0),
        "mlp.W_in": transposed("mlp.up_proj.weight"),
        "mlp.W_gate": transposed("mlp.gate_proj.weight"),
        "mlp.W_out": transposed("mlp.down_proj.weight"),
    }
    for x, n in (("Q", n_heads), ("K", n_kv), ("V", n_kv)):
        name = f"self_attn.{x.lower()}_proj.bias"
        if p + name in ck:
            out[f"attn.b_{x}"] = per_head(name, n)
    return out


def _gpt2_layer(ck: Checkpoint, cfg: Any, layer: int, dtype: torch.dtype) -> _Source:
    """Readers of one GPT-2 layer's tensors, TL layout, float32 (Conv1D is ``[in, out]``)."""
    p = _gpt2_prefix(ck) + f"h.{layer}."
    n_heads, d_model = int(cfg.n_heads), int(cfg.d_model)

    def get(name: str) -> Callable[[], torch.Tensor]:
        return lambda: ck.get(p + name, dtype).float()

    def qkv(i: int) -> Callable[[], torch.Tensor]:
        # [d_model, 3*d_model] -> third i -> TL [n, d_model, d_head]
        return lambda: (get("attn.c_attn.weight")()[:, i * d_model : (i + 1) * d_model]
                        .reshape(d_model, n_heads, -1).transpose(0, 1))

    def qkv_bias(i: int) -> Callable[[], torch.Tensor]:
        return lambda: get("attn.c_attn.bias")().reshape(3, n_heads, -1)[i]

    out: _Source = {
        "ln1.w": get("ln_1.weight"),
        "ln1.b": get("ln_1.bias"),
        "ln2.w": get("ln_2.weight"),
        "ln2.b": get("ln_2.bias"),
        "attn.W_O": lambda: get("attn.c_proj.weight")().reshape(n_heads, -1, d_model),
        "attn.b_O": get("attn.c_proj.bias"),
        "mlp.W_in": get("mlp.c_fc.weight"),
        "mlp.b_in": get("mlp.c_fc.bias"),
        "mlp.W_out": get("mlp.c_proj.weight"),
        "mlp.b_out": get("mlp.c_proj.bias"),
    }
    for i, x in enumerate("QKV"):
        out[f"attn.W_{x}"] = qkv(i)
        out[f"attn.b_{x}"] = qkv_bias(i)
    return out


def _gpt2_prefix(ck: Checkpoint) -> str:
    return "transformer." if "transformer.wte.weight" in ck else ""


def _process_layer(
    src: _Source,
    emit: Callable[[str, torch.Tensor], None],
    *,
    fold: bool,
    layer_norm: bool,
    centre_writing: bool,
    n_rep: int,
) -> None:
    """Read, process (TL's defaults when ``fold``) and ``emit`` one layer, tensor by tensor.

    ``layer_norm``: LayerNorm (fold biases, centre the reading weights) rather than
    RMSNorm (scale only). ``centre_writing``: centre W_O, b_O, W_out, b_out.
    ``n_rep``: query heads per key/value head (value biases are shared that way).
    Big tensors are changed in place (the same arithmetic, one buffer) and emitted
    before the next is read.
    """

    def read(key: str) -> torch.Tensor | None:
        return src[key]() if key in src else None

    if not fold:
        for key in src:
            emit(key, src[key]())
        return
    w1, b1, w2, b2 = src["ln1.w"](), read("ln1.b"), src["ln2.w"](), read("ln2.b")
    b_v = None
    for x in "QKV":
        w = src[f"attn.W_{x}"]()
        bias = read(f"attn.b_{x}")
        if layer_norm and b1 is not None:
            if bias is None:
                bias = w.new_zeros(w.shape[0], w.shape[2])
            bias = bias + (w * b1[None, :, None]).sum(-2)
        w.mul_(w1[None, :, None])
        if layer_norm:
            w.sub_(w.mean(1, keepdim=True))
        emit(f"attn.W_{x}", w)
        del w
        if x == "V":
            b_v = bias
        elif bias is not None:
            emit(f"attn.b_{x}", bias)
    if layer_norm and b2 is not None and "mlp.W_gate" in src:
        raise InvalidValueError("a gated MLP after a LayerNorm is not covered here")
    w_in = src["mlp.W_in"]()
    if layer_norm and b2 is not None:
        b_in = read("mlp.b_in")
        fold_b = (w_in * b2[:, None]).sum(-2)
        emit("mlp.b_in", fold_b if b_in is None else b_in + fold_b)
    w_in.mul_(w2[:, None])
    if layer_norm:
        w_in.sub_(w_in.mean(0, keepdim=True))
    emit("mlp.W_in", w_in)
    del w_in
    if "mlp.W_gate" in src:
        emit("mlp.W_gate", src["mlp.W_gate"]().mul_(w2[:, None]))
    w_out, b_out = src["mlp.W_out"](), read("mlp.b_out")
    if centre_writing:
        w_out.sub_(w_out.mean(-1, keepdim=True))
        b_out = None if b_out is None else b_out - b_out.mean()
    emit("mlp.W_out", w_out)
    del w_out
    if b_out is not None:
        emit("mlp.b_out", b_out)
    w_o, b_o = src["attn.W_O"](), read("attn.b_O")
    if centre_writing:
        w_o.sub_(w_o.mean(-1, keepdim=True))
        b_o = None if b_o is None else b_o - b_o.mean()
    if b_v is not None:  # value biases: a constant per layer, moved into b_O
        if b_o is None:
            b_o = w_o.new_zeros(w_o.shape[-1])
        b_o = b_o + (b_v.repeat_interleave(n_rep, dim=0)[:, :, None] * w_o).sum((0, 1))
        if centre_writing:
            b_o = b_o - b_o.mean()
        emit("attn.b_V", torch.zeros_like(b_v))
    emit("attn.W_O", w_o)
    if b_o is not None:
        emit("attn.b_O", b_o)


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
    ck = Checkpoint(folder)
    gpt2 = architecture == "GPT2LMHeadModel"
    layer_norm = cfg.normalization_type in ("LN", "LNPre")
    centre_writing = fold_ln and layer_norm and not cfg.final_rms
    n_rep = cfg.n_heads // (cfg.n_key_value_heads or cfg.n_heads)
    writer = _Writer(model)
    read_layer = _gpt2_layer if gpt2 else _llama_layer
    with torch.no_grad():
        for layer in range(cfg.n_layers):
            def emit(key: str, value: torch.Tensor, layer: int = layer) -> None:
                writer.put(_tl_name(layer, key, writer), value)

            _process_layer(
                read_layer(ck, cfg, layer, dtype),
                emit,
                fold=fold_ln,
                layer_norm=layer_norm,
                centre_writing=centre_writing,
                n_rep=n_rep,
            )
        _load_embeddings(ck, writer, cfg, dtype, gpt2=gpt2, centre=centre_writing)
        _load_unembed(ck, writer, cfg, dtype, gpt2=gpt2, fold_ln=fold_ln, layer_norm=layer_norm)
        writer.finish()


def _row_chunks(
    ck: Checkpoint, name: str, dtype: torch.dtype
) -> Iterator[tuple[slice, torch.Tensor]]:
    """``name`` as consecutive blocks of rows (dim 0), each read when needed."""
    n_rows = ck.shape(name)[0]
    for start in range(0, n_rows, _ROWS):
        rows = slice(start, min(n_rows, start + _ROWS))
        yield rows, ck.get(name, dtype, rows)


def _load_embeddings(
    ck: Checkpoint, writer: _Writer, cfg: Any, dtype: torch.dtype, *, gpt2: bool, centre: bool
) -> None:
    """W_E (and GPT-2's W_pos), centred over d_model when ``centre`` (row-local)."""
    prefix = _gpt2_prefix(ck) if gpt2 else "model."
    for rows, w_e in _row_chunks(ck, prefix + ("wte.weight" if gpt2 else "embed_tokens.weight"),
                                 dtype):
        if centre:
            w_e = w_e.float()
            w_e.sub_(w_e.mean(-1, keepdim=True))
        writer.put("embed.W_E", w_e, (rows,))
    writer.written.add("embed.W_E")
    if gpt2:
        w_pos = ck.get(prefix + "wpe.weight", dtype)[: int(cfg.n_ctx)]
        if centre:
            w_pos = w_pos.float()
            w_pos = w_pos - w_pos.mean(-1, keepdim=True)
        writer.put("pos_embed.W_pos", w_pos)


def _load_unembed(
    ck: Checkpoint,
    writer: _Writer,
    cfg: Any,
    dtype: torch.dtype,
    *,
    gpt2: bool,
    fold_ln: bool,
    layer_norm: bool,
) -> None:
    """W_U and b_U (and ln_final when it is not folded), a block of vocabulary at a time.

    W_U is the transpose of HF's ``lm_head`` ``[d_vocab, d_model]``. Folding ln_final and
    centring over d_model are local to a vocabulary row; centring over the vocabulary
    needs each d_model row's mean, so a first pass sums the processed rows (in float64)
    and a second writes them minus the mean.
    """
    prefix = _gpt2_prefix(ck) if gpt2 else "model."
    head = "lm_head.weight"
    if head not in ck:  # tied embeddings
        head = prefix + ("wte.weight" if gpt2 else "embed_tokens.weight")
    norm = prefix + ("ln_f" if gpt2 else "norm")
    w_f = ck.get(norm + ".weight", dtype).float()
    b_f = ck.get(norm + ".bias", dtype).float() if norm + ".bias" in ck else None
    n_vocab, d_model = ck.shape(head)
    if not fold_ln:
        for rows, x in _row_chunks(ck, head, dtype):
            writer.put("unembed.W_U", x.T, (slice(None), rows))
        writer.written.add("unembed.W_U")
        writer.put("ln_final.w", w_f)
        if b_f is not None:
            writer.put("ln_final.b", b_f)
        return
    fold_bias = b_f is not None and layer_norm and not cfg.final_rms
    b_u = torch.zeros(n_vocab)

    def processed(x: torch.Tensor, rows: slice) -> torch.Tensor:
        x = x.float()
        if fold_bias:
            b_u[rows] = (x * b_f[None, :]).sum(-1)  # type: ignore[index]
        x.mul_(w_f[None, :])
        if layer_norm:
            x.sub_(x.mean(-1, keepdim=True))
        return x

    total = torch.zeros(d_model, dtype=torch.float64)
    for rows, x in _row_chunks(ck, head, dtype):
        total += processed(x, rows).sum(0, dtype=torch.float64)
    mean = (total / n_vocab).float()
    for rows, x in _row_chunks(ck, head, dtype):
        writer.put("unembed.W_U", processed(x, rows).sub_(mean[None, :]).T, (slice(None), rows))
    writer.written.add("unembed.W_U")
    if writer.has("unembed.b_U"):
        writer.put("unembed.b_U", b_u - b_u.mean())
