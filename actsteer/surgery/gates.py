"""Where a model's MLP gate rows live, and how its coordinates relate to the checkpoint's.

Surgery works in **checkpoint coordinates**: row ``j`` of the Hugging Face
``mlp.gate_proj.weight`` as saved in the model's folder, the row that multiplies
``RMSNorm(x) = ln2.weight * x / rms(x)``. TransformerLens's default weight processing
folds ``ln2.weight`` into the gate, so the model in memory holds other numbers:

* HookedTransformer: ``blocks[L].mlp.W_gate[:, j] == ln2.weight * gate_proj.weight[j]``
  (bit for bit), and ``ln2`` becomes a weightless ``RMSNormPre``;
* TransformerBridge (compatibility mode with processing): the wrapped ``gate_proj.weight``
  is overwritten in place with the same folded rows (the MLP's forward reads that very
  tensor) and ``post_attention_layernorm.weight`` is set to ones.

Neither keeps ``ln2.weight``, so for a processed model it is read from the model's source
folder (safetensors only). With ``fold_ln=False`` the gate rows in memory are the
checkpoint's and nothing is read.

**Two bases for an edit** (:data:`Basis`). Write ``g`` for ``ln2.weight`` and
``x̂ = x / rms(x)``: the residual stream ``x`` rescaled by one positive number, so in the
residual basis where a probe direction ``d`` is trained. A checkpoint row ``w`` computes
``w · (g ⊙ x̂) = (w ⊙ g) · x̂``, so the row as the residual stream sees it is the *folded*
row ``f = w ⊙ g`` (what TransformerLens holds after folding).

* ``"checkpoint"`` (the paper's code, the default): compare ``w`` with ``d`` and add
  ``s·d`` to ``w``. The neuron then responds to ``(s·d ⊙ g) · x̂``: the direction ``d ⊙ g``,
  not ``d``.
* ``"folded"``: compare ``f`` with ``d`` (both covectors on ``x̂``) and add ``s·d`` to
  ``f``, which is adding ``s·(d ⊘ g)`` to the checkpoint row ``w``. The neuron's gate then
  changes by exactly ``s · (d · x̂)``, the probe's own score of the normed input: the
  mechanism the paper describes (the neurons fire more where the behaviour shows).

Mapping ``d`` to ``d ⊙ g`` would be right for a *vector* moved through the norm (a shift
``x + d`` shifts ``g ⊙ x̂`` by ``g ⊙ d / rms``), but a probe direction and a gate row are
both read-out weights (covectors): a covector on ``g ⊙ x̂`` that matches ``d`` on ``x̂`` is
``d ⊘ g``. Cosines are not invariant under ``diag(g)``, so ``cos(w ⊙ g, d)`` (folded) and
``cos(w, d)`` (checkpoint) select different rows when ``g`` is not constant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from actsteer.errors import InvalidValueError
from actsteer.models import model_info, source_folder
from actsteer.surgery.errors import SurgeryError

__all__ = ["BASES", "Basis", "GateSite", "check_basis", "check_surgical", "checkpoint_rows",
           "folded_norms", "gate_site", "norm_gains"]

Basis = Literal["checkpoint", "folded"]
"""Where an edit compares rows with the probe and adds its step (module docstring)."""

BASES: tuple[Basis, ...] = ("checkpoint", "folded")
"""Every :data:`Basis`, the paper's first."""


def check_basis(basis: object) -> Basis:
    """``basis`` if it is one of :data:`BASES`, else :class:`InvalidValueError`."""
    if basis == "checkpoint" or basis == "folded":
        return basis  # type: ignore[return-value]  # narrowed by the comparison
    raise InvalidValueError(f"basis must be one of {', '.join(repr(b) for b in BASES)}, got "
                            f"{basis!r}: 'checkpoint' edits the saved gate_proj rows as the "
                            "paper's code does, 'folded' the rows with the RMSNorm weight "
                            "folded in (the basis the probe lives in)")


@dataclass(frozen=True, eq=False)
class GateSite:
    """The tensors that hold layer ``layer``'s gate rows in memory (several only if a
    backend keeps copies in separate storage), each with its row layout."""

    layer: int
    tensors: tuple[Tensor, ...]
    transposed: bool
    """``True`` for TransformerLens's ``W_gate [d_model, d_mlp]`` (rows are columns)."""

    def rows_view(self, tensor: Tensor) -> Tensor:
        """``tensor`` as ``[d_mlp, d_model]`` (a view: writes reach the model)."""
        return tensor.T if self.transposed else tensor


def check_surgical(model: Any) -> None:
    """Raise :class:`SurgeryError` unless ``model`` has RMSNorm-fed gated MLPs."""
    cfg = model.cfg
    if not bool(getattr(cfg, "gated_mlp", False)):
        raise SurgeryError(f"{model_info(model).name!r} has no gated MLP (cfg.gated_mlp is "
                           "false): model surgery edits gate-projection rows; use a "
                           "Llama-family model")
    norm = getattr(cfg, "normalization_type", None)
    if norm not in ("RMS", "RMSPre"):
        raise SurgeryError(f"{model_info(model).name!r} normalises with {norm!r}; surgery "
                           "supports RMSNorm models (the Llama family)")


def gate_site(model: Any, layer: int) -> GateSite:
    """The in-memory gate rows of block ``layer`` on either backend."""
    block = model.blocks[layer]
    if model_info(model).backend == "hooked":
        weight = getattr(block.mlp, "W_gate", None)
        if not isinstance(weight, torch.nn.Parameter):
            raise SurgeryError(f"blocks.{layer}.mlp has no W_gate ({type(block.mlp).__name__})")
        return GateSite(layer, (weight,), transposed=True)
    mlp = block.mlp
    linear = getattr(getattr(mlp, "gate", None), "original_component", None)
    if not isinstance(linear, torch.nn.Linear):
        raise SurgeryError(f"blocks.{layer}.mlp: cannot find the wrapped Hugging Face "
                           f"gate_proj of {type(mlp).__name__}")
    tensors = [linear.weight]
    # TransformerLens 3.9's processed forward multiplies by its own copy of the gate rows;
    # 4.x writes the processed rows into gate_proj itself (no copy).
    processed = getattr(mlp, "_processed_W_gate", None)
    if getattr(mlp, "_use_processed_weights", False) and processed is not None \
            and processed.data_ptr() != linear.weight.data_ptr():
        tensors.append(processed)
    return GateSite(layer, tuple(tensors), transposed=False)


def _is_folded(model: Any, layer: int) -> bool:
    block = model.blocks[layer]
    info = model_info(model)
    if info.backend == "hooked":
        return not isinstance(getattr(block.ln2, "w", None), torch.nn.Parameter)
    # load_model's lean bridge folds the norms into the HF weights itself and switches the
    # bridge's own processing off, so the bridge's flag says nothing; the provenance does.
    if info.weight_processing != "unknown":
        return info.weight_processing == "fold_ln+centre"
    return bool(getattr(block.mlp, "_use_processed_weights", False))


def folded_norms(model: Any, layers: Sequence[int]) -> dict[int, Tensor]:
    """``ln2.weight`` (float32, CPU) of each of ``layers`` whose gate rows are folded
    in memory; empty when none is (the model holds checkpoint coordinates)."""
    folded = [layer for layer in layers if _is_folded(model, layer)]
    if not folded:
        return {}
    name = model_info(model).name
    try:
        folder = source_folder(name)
    except InvalidValueError:
        raise SurgeryError(
            f"this model's weight processing folded each block's RMSNorm weight into its gate "
            f"rows, and surgery needs that weight to work in checkpoint coordinates; it reads "
            f"it from the model's Hugging Face folder, but {name!r} is not one. Load the model "
            "with actsteer.load_model(<local folder>) (or the embedded default), or with "
            "fold_ln=False") from None
    keys = {layer: f"model.layers.{layer}.post_attention_layernorm.weight" for layer in folded}
    tensors = _read_safetensors(folder, list(keys.values()))
    d_model = int(model.cfg.d_model)
    norms = {}
    for layer, key in keys.items():
        weight = tensors[key].to(torch.float32)
        if tuple(weight.shape) != (d_model,):
            raise SurgeryError(f"{folder}: {key} has shape {tuple(weight.shape)}, but the model "
                               f"has d_model {d_model}; is {folder} the folder it came from?")
        if not bool((weight != 0).all()):
            raise SurgeryError(f"{folder}: {key} has zero entries, so the folded gate rows "
                               "cannot be mapped back to checkpoint coordinates; load the "
                               "model with fold_ln=False")
        norms[layer] = weight
    return norms


def norm_gains(model: Any, layers: Sequence[int]) -> dict[int, Tensor]:
    """``g = ln2.weight`` (float32, CPU) of every one of ``layers``: read from the source
    folder where it is folded into the gate rows (:func:`folded_norms`), from the model's
    norm where it is not."""
    gains = folded_norms(model, layers)
    for layer in layers:
        if layer in gains:
            continue
        norm = model.blocks[layer].ln2
        weight = getattr(norm, "w", None)  # HookedTransformer's RMSNorm
        if weight is None:  # the bridge wraps the Hugging Face norm
            weight = getattr(getattr(norm, "original_component", None), "weight", None)
        if not isinstance(weight, Tensor):
            raise SurgeryError(f"blocks.{layer}.ln2 ({type(norm).__name__}) has no weight to "
                               "map the probe into the folded basis; use basis='checkpoint'")
        gain = weight.detach().to("cpu", torch.float32)
        if not bool((gain != 0).all()):
            raise SurgeryError(f"blocks.{layer}.ln2 has zero weights, so no folded-basis step "
                               "maps back to its gate rows; use basis='checkpoint'")
        gains[layer] = gain
    return gains


def checkpoint_rows(model: Any, layer: int, norm: Tensor | None) -> Tensor:
    """Block ``layer``'s gate rows ``[d_mlp, d_model]`` in checkpoint coordinates
    (float64, CPU): the in-memory rows divided by the folded ``norm``, if any."""
    site = gate_site(model, layer)
    rows = site.rows_view(site.tensors[-1]).detach().to("cpu", torch.float64)
    return rows / norm.double()[None, :] if norm is not None else rows


def _read_safetensors(folder: Path, keys: list[str]) -> dict[str, Tensor]:
    """``keys`` from a Hugging Face folder's single or sharded safetensors weights."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = {key: folder / weight_map[key] for key in keys if key in weight_map}
    elif (folder / "model.safetensors").is_file():
        files = dict.fromkeys(keys, folder / "model.safetensors")
    else:
        raise SurgeryError(f"{folder} has no safetensors weights (actsteer never unpickles "
                           "pytorch_model.bin); re-save the model with save_pretrained")
    out: dict[str, Tensor] = {}
    for path in sorted(set(files.values())):
        with safe_open(str(path), framework="pt") as handle:
            for key in keys:
                if files.get(key) == path and key in handle.keys():  # noqa: SIM118
                    out[key] = handle.get_tensor(key)
    missing = [key for key in keys if key not in out]
    if missing:
        raise SurgeryError(f"{folder} lacks {missing[0]} (and {len(missing) - 1} more); "
                           "surgery reads Llama-family checkpoints")
    return out
