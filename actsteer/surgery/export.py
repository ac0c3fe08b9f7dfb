"""Write an edited model as an ordinary Hugging Face folder.

``AutoModelForCausalLM.from_pretrained(folder)`` in plain ``transformers`` then computes
the edited model, with no actsteer at run time. Exporting adds the edit's step in
checkpoint coordinates (:meth:`SurgeryEdit.checkpoint_step`: ``edit.added``, or for a
folded-basis edit ``edit.added / ln2.weight``) to the selected ``gate_proj.weight`` rows of
the source checkpoint; the edit itself is saved beside the weights as :data:`EDIT_FILE`.

Example::

    save_surgery_hf(edit, "smollm2-detox")        # source: the model the edit was made on
    SurgeryEdit.load("smollm2-detox/surgery_edit.safetensors")
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from actsteer.atomic import atomic_dir
from actsteer.errors import ActsteerError
from actsteer.models.source import source_folder
from actsteer.surgery.edit import SurgeryEdit
from actsteer.surgery.errors import SurgeryError

__all__ = ["EDIT_FILE", "ExportFolderError", "save_surgery_hf"]

EDIT_FILE = "surgery_edit.safetensors"
"""Name of the edit that :func:`save_surgery_hf` writes into the folder."""


class ExportFolderError(ActsteerError, FileExistsError):
    """The target folder exists and is not empty."""


def save_surgery_hf(edit: SurgeryEdit, folder: str | os.PathLike[str], *,
                    source: Any = None) -> Path:
    """Write the source model with ``edit`` applied as a Hugging Face folder.

    Args:
        edit: the edit to apply to the checkpoint's gate rows.
        folder: a new folder (refused if it exists and is not empty).
        source: the embedded model's name, a local Hugging Face folder of a Llama-family
            model, or a model from :func:`actsteer.load_model` built from one; default:
            the model the edit was made on (``edit.model``).

    Example:
        >>> save_surgery_hf(edit, "smollm2-detox")
        >>> AutoModelForCausalLM.from_pretrained("smollm2-detox")
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    origin = source_folder(edit.model if source is None else source)
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportFolderError(f"{target} exists and is not empty; choose a new folder")
    hf_model = AutoModelForCausalLM.from_pretrained(origin, dtype="auto")
    config = hf_model.config
    shapes = {"d_model": ("hidden_size", edit.d_model), "d_mlp": ("intermediate_size", edit.d_mlp),
              "n_layers": ("num_hidden_layers", edit.n_layers)}
    for name, (key, value) in shapes.items():
        if int(getattr(config, key, -1)) != value:
            raise SurgeryError(f"the edit has {name} {value} but {origin} has {key} "
                               f"{getattr(config, key, None)}; export onto the model the edit "
                               "was made on")
    if source is not None and _folder_of(edit.model) not in (None, origin.resolve()):
        warnings.warn(f"exporting an edit made on {edit.model!r} onto {str(origin)!r}",
                      stacklevel=2)
    layers = hf_model.model.layers
    with torch.no_grad():
        for layer, rows in edit.rows.items():
            if not rows:
                continue
            gate = layers[layer].mlp.gate_proj.weight
            gain = layers[layer].post_attention_layernorm.weight
            step = edit.added if edit.basis == "checkpoint" else edit.checkpoint_step(gain)
            index = torch.tensor(rows, dtype=torch.long, device=gate.device)
            gate[index] = gate[index] + step.to(gate.device, gate.dtype)[None, :]
    tokenizer = AutoTokenizer.from_pretrained(origin)
    with atomic_dir(target) as scratch:
        hf_model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        edit.save(scratch / EDIT_FILE)
    return target


def _folder_of(name: str) -> Path | None:
    """The resolved source folder of the model an edit was made on, if it is one."""
    try:
        return source_folder(name).resolve()
    except ActsteerError:
        return None
