"""Model transforms for the harness's weight-space rows: edited weights while a cell generates.

* :class:`Orthogonalised` — every matrix that writes the residual stream (the embedding,
  each block's attention and MLP outputs) orthogonalised against one unit direction: the
  weight-space twin of every-site directional ablation (Arditi et al. 2024, arXiv
  2406.11717), computed by :mod:`actsteer.writers` as :func:`actsteer.bake` computes it.
  A tied unembedding keeps its values: its module gets its own copy for the length of the
  cell and the tie is put back on exit.
* :class:`Surgical` — a Model Surgery edit of gate rows (:mod:`actsteer.surgery`).

Both restore the model exactly on exit (the edited tensors are copied back bit for bit),
also when generation raises; both are picklable values, so that a cell runs on a Ray worker
as well, and ``identity()`` digests every value that decides the edit.

Example::

    with Orthogonalised(direction, n_layers=30).applied(model):
        ...   # the model computes every-site ablation of ``direction`` with no hook
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.models.info import backend_of
from actsteer.operators import unit
from actsteer.projection import project
from actsteer.surgery.apply import surgery
from actsteer.surgery.edit import SurgeryEdit
from actsteer.vector_meta import vector_digest
from actsteer.writers import orthogonalise, projections, writers_bridge, writers_hooked

__all__ = ["Orthogonalised", "Surgical"]


def _tied_to(model: Any, weight: Tensor) -> list[torch.nn.Module]:
    """Modules of a bridge's Hugging Face model (other than the embedding) that share the
    embedding's weight: a tied unembedding."""
    original = getattr(model, "original_model", None)
    if original is None:
        return []
    return [module for module in original.modules()
            if getattr(module, "weight", None) is weight
            and not isinstance(module, torch.nn.Embedding)]


@dataclass(frozen=True, eq=False)
class Orthogonalised:
    """Every writer of the residual stream orthogonalised against ``direction`` (module
    docstring); ``direction`` is normalised on use."""

    direction: Float[Tensor, " d_model"]
    n_layers: int
    label: str = ""

    def identity(self) -> str:
        return "orthogonalised:" + json.dumps(
            {"direction": vector_digest(unit(self.direction)), "n_layers": self.n_layers})

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[Any]:
        plan = project(self.direction, 0, every_site=True, n_layers=self.n_layers,
                       label=self.label or "orthogonalised")
        removals = projections(plan, self.n_layers)
        find = writers_bridge if backend_of(model) == "bridge" else writers_hooked
        saved: list[tuple[Tensor, Tensor]] = []
        retie: list[tuple[torch.nn.Module, Tensor | None]] = []
        config = getattr(getattr(model, "original_model", None), "config", None)
        tied_flag = getattr(config, "tie_word_embeddings", None)
        try:
            with torch.no_grad():
                for (layer, part), direction in removals.items():
                    if part == "embed" and backend_of(model) == "bridge":
                        embedding = model.embed.original_component
                        # what each sharer holds itself (a bridge wrapper holds no
                        # parameter: it shows the embedding's through a property)
                        retie += [(module, module._parameters.get("weight"))
                                  for module in _tied_to(model, embedding.weight)]
                    for writer in find(model, layer, part):
                        saved.append((writer[0], writer[0].detach().clone()))
                        orthogonalise(writer, direction)
            yield model
        finally:
            with torch.no_grad():
                for tensor, before in reversed(saved):
                    tensor.copy_(before)
            for module, weight in retie:
                if weight is None:
                    module._parameters.pop("weight", None)
                else:
                    module._parameters["weight"] = weight  # type: ignore[assignment]
            if retie and config is not None:
                config.tie_word_embeddings = tied_flag


@dataclass(frozen=True, eq=False)
class Surgical:
    """A Model Surgery edit applied for the length of a cell (:func:`actsteer.surgery.surgery`)."""

    edit: SurgeryEdit

    def identity(self) -> str:
        edit = self.edit
        rows = {str(layer): list(found) for layer, found in sorted(edit.rows.items())}
        return "surgery:" + json.dumps(
            {"direction": vector_digest(edit.direction), "strength": float(edit.strength),
             "basis": edit.basis, "rows": hashlib.sha1(json.dumps(rows).encode()).hexdigest()},
            sort_keys=True)

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[Any]:
        with surgery(model, self.edit):
            yield model
