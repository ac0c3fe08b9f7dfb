"""What an injection does to the activation it reaches: add, project, or ablate then add.

An :class:`~actsteer.plan.Injection` without an operator adds ``coefficient * vector``.
With one, it first removes a unit direction ``d`` from the activation (directional
ablation, Arditi et al. 2024, arXiv 2406.11717) and then adds:

* :class:`Project` — ``x <- x - (x.d) d + c d`` with ``d`` the injection's vector
  normalised and ``c`` its coefficient: ``c = 0`` ablates ``d``, any other ``c`` clamps
  the component along ``d`` to ``c``. :attr:`Project.units` records how ``c`` was chosen.
* :class:`AblateThenAdd` — ``x <- x - (x.d) d + coefficient * vector`` with ``d`` the
  operator's own direction: one direction removed, another vector added.

These are values (a field of the injection); :func:`actsteer.projection.project` builds
plans from them, and the steering hooks, the shared-prefix sweep, generation and
:func:`actsteer.bake` all read them from the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.errors import InvalidValueError

__all__ = ["AblateThenAdd", "Operator", "Project", "Units", "added", "operator_from_dict",
           "operator_tensors", "remove_and_add", "removed", "unit"]

Units = Literal["raw", "norm", "mean"]
"""How a clamp value ``c`` was given: ``raw`` (residual-stream units), ``norm`` (a fraction
of the median residual norm at the layer, :mod:`actsteer.norms`) or ``mean`` (a multiple
of the mean projection of given activations onto ``d``)."""


def unit(vector: Float[Tensor, " d_model"]) -> Float[Tensor, " d_model"]:
    """``vector / |vector|`` (computed in float64, returned in the vector's dtype)."""
    norm = vector.detach().double().norm()
    if not norm > 0 or not torch.isfinite(norm):
        raise InvalidValueError(f"cannot project onto a vector of norm {float(norm)}; give a "
                                "non-zero, finite direction")
    return (vector.detach().double() / norm).to(vector.dtype)


@dataclass(frozen=True)
class Project:
    """Replace the component along the injection's (normalised) vector by its coefficient.

    ``unit_size`` is one unit of ``units`` in raw residual-stream units (1 for ``raw``;
    the median norm for ``norm``; the mean projection for ``mean``), so the value in the
    units it was chosen in is ``coefficient / unit_size``.
    """

    units: Units = "raw"
    unit_size: float = 1.0

    def __post_init__(self) -> None:
        if self.units not in ("raw", "norm", "mean"):
            raise InvalidValueError(f"unknown units {self.units!r}; use raw, norm or mean")
        if not (torch.isfinite(torch.tensor(self.unit_size)) and self.unit_size != 0):
            raise InvalidValueError(f"unit_size must be finite and non-zero, got "
                                    f"{self.unit_size} (a mean projection of 0 cannot be a "
                                    "unit; give the value raw)")
        if self.units == "raw" and self.unit_size != 1.0:
            raise InvalidValueError(f"raw units have unit_size 1, got {self.unit_size}")

    def to_dict(self, digest: Callable[[Tensor], str]) -> dict[str, Any]:
        return {"kind": "project", "units": self.units, "unit_size": float(self.unit_size)}

    def describe(self) -> str:
        return "project" + ("" if self.units == "raw" else f", unit {self.units}="
                            f"{self.unit_size:.4g}")


@dataclass(frozen=True, eq=False)
class AblateThenAdd:
    """Remove the component along ``direction`` (normalised where it is used), then add
    the injection's ``coefficient * vector``."""

    direction: Float[Tensor, " d_model"]

    def __post_init__(self) -> None:
        if self.direction.dim() != 1:
            raise InvalidValueError(f"the ablated direction must be one d_model vector, got "
                                    f"shape {tuple(self.direction.shape)}")
        unit(self.direction)  # refuses a zero or non-finite direction

    def to_dict(self, digest: Callable[[Tensor], str]) -> dict[str, Any]:
        return {"kind": "ablate_then_add", "direction": digest(self.direction)}

    def describe(self) -> str:
        return "ablate, then add"


Operator = Project | AblateThenAdd


def operator_from_dict(data: Mapping[str, Any] | None,
                       vectors: Mapping[str, Tensor]) -> Operator | None:
    """Inverse of ``to_dict`` (None for None); ``vectors`` maps digests to tensors."""
    if data is None:
        return None
    if data["kind"] == "project":
        return Project(data["units"], float(data["unit_size"]))
    if data["kind"] == "ablate_then_add":
        return AblateThenAdd(vectors[data["direction"]])
    raise InvalidValueError(f"unknown operator kind {data['kind']!r}; use project or "
                            "ablate_then_add")


def added(vector: Tensor, coefficient: float, operator: Operator | None) -> Tensor:
    """What an injection adds: ``coefficient * vector``, with the vector normalised under
    :class:`Project` (``c d``)."""
    return coefficient * (unit(vector) if isinstance(operator, Project) else vector)


def removed(vector: Tensor, operator: Operator | None) -> Tensor | None:
    """The unit direction an injection removes first (None for an addition)."""
    if operator is None:
        return None
    return unit(vector if isinstance(operator, Project) else operator.direction)


def operator_tensors(operator: Operator | None) -> tuple[Tensor, ...]:
    """Tensors an operator holds besides the injection's vector (saved with the plan)."""
    return (operator.direction,) if isinstance(operator, AblateThenAdd) else ()


def remove_and_add(activation: Tensor, direction: Tensor, delta: Tensor) -> Tensor:
    """``activation - (activation . direction) direction + delta`` on the last axis (a new
    tensor; ``direction`` is a unit vector)."""
    along = (activation * direction).sum(-1, keepdim=True)
    return activation - along * direction + delta
