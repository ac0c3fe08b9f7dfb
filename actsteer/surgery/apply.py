"""Apply a :class:`~actsteer.surgery.edit.SurgeryEdit` to a model: the edited model needs
no hooks, its plain forward computes the edited logits.

* :func:`surgery` — a context manager: edited inside, restored bit for bit on exit (also
  on an exception);
* :func:`apply_surgery` — edit in place and return a :class:`SurgeryHandle` whose
  :meth:`~SurgeryHandle.revert` restores the original rows exactly;
* :func:`operate` — a new, edited copy; the input model is not changed.

All three check the whole edit against the model before writing anything.

Example::

    with surgery(model, edit.with_strength(4.0)):
        edited = model(tokens)
    assert torch.equal(model(tokens), original)
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from actsteer.models import model_info
from actsteer.models.info import record
from actsteer.surgery.edit import SurgeryEdit
from actsteer.surgery.errors import SurgeryError
from actsteer.surgery.gates import GateSite, check_surgical, folded_norms, gate_site, norm_gains

__all__ = ["SurgeryHandle", "apply_surgery", "operate", "surgery"]

M = TypeVar("M")


@dataclass(frozen=True, eq=False)
class _Write:
    """New values for some rows of one in-memory tensor, with the values they replace."""

    site: GateSite
    tensor: Tensor
    index: Tensor
    before: Tensor
    after: Tensor

    def put(self, values: Tensor) -> None:
        self.site.rows_view(self.tensor)[self.index] = values

    def current(self) -> Tensor:
        return self.site.rows_view(self.tensor)[self.index]


class SurgeryHandle:
    """An edit applied in place; :meth:`revert` puts the original rows back exactly."""

    def __init__(self, model: Any, edit: SurgeryEdit, writes: list[_Write]) -> None:
        self.model = model
        self.edit = edit
        self._writes = writes
        self.active = True

    def revert(self) -> None:
        """Restore every edited row bit for bit (a second call does nothing).

        Raises :class:`SurgeryError`, changing nothing, if a row no longer holds what this
        edit wrote (another edit on the same rows applied later and still in place):
        revert the later edit first.
        """
        if not self.active:
            return
        with torch.no_grad():
            for write in self._writes:
                if not torch.equal(write.current(), write.after):
                    raise SurgeryError(
                        f"gate rows of layer {write.site.layer} changed since this edit was "
                        "applied (a later edit on the same rows?); revert that one first")
            for write in reversed(self._writes):
                write.put(write.before)
        self.active = False

    def __repr__(self) -> str:
        state = "active" if self.active else "reverted"
        return f"SurgeryHandle({self.edit.n_rows} rows in layers {list(self.edit.layers)}, {state})"


def _plan(model: Any, edit: SurgeryEdit) -> list[_Write]:
    """Every write the edit makes, computed without touching the model."""
    if not isinstance(edit, SurgeryEdit):
        raise SurgeryError(f"expected a SurgeryEdit, got {type(edit).__name__}")
    check_surgical(model)
    edit.check_fits(model)
    layers = [layer for layer, rows in edit.rows.items() if rows]
    norms = folded_norms(model, layers)
    gains = norm_gains(model, [layer for layer in layers if layer not in norms]
                       ) if edit.basis == "folded" else {}
    writes = []
    for layer in layers:
        site = gate_site(model, layer)
        if layer in norms and edit.basis == "folded":  # the model holds folded rows
            added = edit.strength * edit.direction.double()  # edit.added, without overflow
        elif layer in norms:  # the model holds ln2.weight * checkpoint row
            added = edit.checkpoint_step(None) * norms[layer].double()
        else:
            added = edit.checkpoint_step(gains.get(layer))
        for tensor in site.tensors:
            index = torch.tensor(edit.rows[layer], dtype=torch.long, device=tensor.device)
            before = site.rows_view(tensor)[index].detach().clone()
            after = before + added.to(tensor.device, tensor.dtype)[None, :]
            if not bool(torch.isfinite(after).all()):
                raise SurgeryError(f"the edit makes gate rows of layer {layer} non-finite in "
                                   f"{tensor.dtype}; lower the strength ({edit.strength:g})")
            writes.append(_Write(site, tensor, index, before, after))
    return writes


def apply_surgery(model: Any, edit: SurgeryEdit) -> SurgeryHandle:
    """Edit ``model``'s gate rows in place; ``handle.revert()`` restores them exactly.

    Works on HookedTransformer and TransformerBridge, with or without TransformerLens
    weight processing (on a processed model a checkpoint-basis step is scaled by the
    folded norm weight, read from the model's source folder; on an unprocessed one a
    folded-basis step is divided by the norm weight; see :mod:`actsteer.surgery.gates`).
    """
    writes = _plan(model, edit)
    done: list[_Write] = []
    with torch.no_grad():
        try:
            for write in writes:
                write.put(write.after)
                done.append(write)
        except BaseException:
            for write in reversed(done):
                write.put(write.before)
            raise
    return SurgeryHandle(model, edit, writes)


@contextlib.contextmanager
def surgery(model: M, edit: SurgeryEdit) -> Iterator[M]:
    """Edit ``model`` for the ``with`` block and restore it exactly on exit."""
    handle = apply_surgery(model, edit)
    try:
        yield model
    finally:
        handle.revert()


def operate(model: M, edit: SurgeryEdit) -> M:
    """A NEW model with ``edit`` applied (a deep copy: as much memory again); ``model``
    is unchanged. The copy keeps ``model``'s provenance (:func:`model_info`)."""
    _plan(model, edit)  # refuse before paying for the copy
    info = model_info(model)  # type: ignore[arg-type]
    edited = copy.deepcopy(model)
    if info.weight_processing != "unknown":
        record(edited, info.name, info.backend, info.weight_processing != "none")
    apply_surgery(edited, edit)
    return edited
