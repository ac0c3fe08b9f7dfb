"""Steering plans: what to add, where, how much, and at which positions — as values.

Three named ways to build one (they compose with ``+``):

* :func:`single` — one vector at one layer;
* :func:`combined` — several vectors summed (or averaged) into one vector at one layer;
* :func:`simultaneous` — each vector at its own layer, all in the same forward pass.

Two injections on the same hook add up. Nothing here touches a model; apply a plan with
:func:`actsteer.steer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.sites import SITES, hook_name
from actsteer.vector import SteeringVector, VectorMismatchError

PositionMode = Literal["all", "prompt", "generated", "from"]


@dataclass(frozen=True)
class Positions:
    """Which sequence positions receive the vector.

    * ``all`` — every position (the paper);
    * ``prompt`` — positions of the prompt (the first forward pass in a steering context);
    * ``generated`` — positions produced during generation;
    * ``from`` — token index ``start`` onwards, counted from each row's first real token.
    """

    mode: PositionMode = "all"
    start: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("all", "prompt", "generated", "from"):
            raise ValueError(
                f"unknown position mode {self.mode!r}; use all, prompt, generated or from"
            )
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")

    @classmethod
    def from_index(cls, start: int) -> Positions:
        return cls("from", start)


ALL = Positions()


@dataclass(frozen=True, eq=False)
class Injection:
    """Add ``coefficient * vector`` at ``blocks.{layer}.hook_{site}`` at ``positions``."""

    vector: Float[Tensor, " d_model"]
    layer: int
    coefficient: float = 1.0
    site: str = "resid_post"
    positions: Positions = ALL
    label: str = ""

    def __post_init__(self) -> None:
        if self.vector.dim() != 1:
            raise VectorMismatchError(
                f"an injection adds one d_model vector, got shape {tuple(self.vector.shape)}; "
                "use SteeringVector.at(layer)"
            )
        if self.site not in SITES:
            raise ValueError(f"unknown site {self.site!r}; valid sites: {', '.join(SITES)}")

    @property
    def hook(self) -> str:
        return hook_name(self.layer, self.site)

    @property
    def delta(self) -> Float[Tensor, " d_model"]:
        """What is added at each chosen position."""
        return self.coefficient * self.vector


@dataclass(frozen=True)
class SteeringPlan:
    """A tuple of injections applied together in one forward pass."""

    injections: tuple[Injection, ...] = ()
    name: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)

    def __add__(self, other: SteeringPlan) -> SteeringPlan:
        name = " + ".join(n for n in (self.name, other.name) if n)
        return SteeringPlan(self.injections + other.injections, name)

    def scaled(self, factor: float) -> SteeringPlan:
        """Every coefficient multiplied by ``factor`` (the simultaneous "global scale")."""
        return replace(
            self,
            injections=tuple(replace(i, coefficient=i.coefficient * factor)
                             for i in self.injections),
        )

    def at_positions(self, positions: Positions) -> SteeringPlan:
        return replace(self, injections=tuple(replace(i, positions=positions)
                                              for i in self.injections))

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({i.layer for i in self.injections}))

    def describe(self) -> str:
        parts = [f"{i.label or 'vector'}@{i.hook} x{i.coefficient:g} ({i.positions.mode})"
                 for i in self.injections]
        return f"{self.name or 'plan'}: " + ("; ".join(parts) or "no injections")


def _direction(vector: SteeringVector | Tensor, layer: int) -> Tensor:
    return vector.at(layer) if isinstance(vector, SteeringVector) else vector


def single(
    vector: SteeringVector | Tensor,
    layer: int,
    coefficient: float = 1.0,
    *,
    site: str | None = None,
    positions: Positions = ALL,
    label: str = "",
) -> SteeringPlan:
    """One vector at one layer: adds ``coefficient * vector[layer]`` at ``positions``.

    Args:
        vector: a :class:`SteeringVector` (its ``layer`` row is used, at its own site) or
            a raw ``[d_model]`` tensor (added at ``site``, default ``resid_post``).
        layer: block index; ``blocks.{layer}.hook_{site}`` must exist on the model.
        coefficient: the multiplier; 0 leaves logits bit-identical to no steering.
        positions: :class:`Positions` (default all positions, as the paper).

    Example:
        >>> plan = single(vector, layer=14, coefficient=-4.0)   # subtract at block 14 output
        >>> logits = actsteer.run(model, ["Human: ..."], plan)    # [batch, pos, d_vocab]
    """
    chosen_site = site or (vector.site if isinstance(vector, SteeringVector) else "resid_post")
    label = label or (vector.meta.dataset if isinstance(vector, SteeringVector) else "")
    injection = Injection(_direction(vector, layer), layer, coefficient, chosen_site,
                          positions, label)
    return SteeringPlan((injection,), name=f"single({label or 'vector'}, L{layer})")


def combined(
    vectors: Mapping[str, SteeringVector] | Sequence[SteeringVector],
    layer: int,
    *,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    mode: Literal["sum", "mean"] = "sum",
    coefficient: float = 1.0,
    positions: Positions = ALL,
) -> SteeringPlan:
    """Several behaviour vectors merged into ONE vector at ONE layer.

    ``sum_i w_i v_i`` (``mode="sum"``) or that divided by the number of vectors
    (``mode="mean"``); weights default to 1 (e.g. pass each behaviour's chosen
    multiplier for the paper's weighted variant). The result is multiplied by
    ``coefficient``. All vectors must come from the same site.

    Example:
        >>> plan = combined({"myopia": v1, "wealth": v2}, layer=14,
        ...                 weights={"myopia": 4.0, "wealth": 8.0}, mode="mean")
    """
    named = dict(vectors) if isinstance(vectors, Mapping) else {
        (v.meta.dataset or f"v{i}"): v for i, v in enumerate(vectors)}
    if not named:
        raise ValueError("combined() needs at least one vector")
    if weights is None:
        weight_of = dict.fromkeys(named, 1.0)
    elif isinstance(weights, Mapping):
        missing = sorted(set(named) - set(weights))
        if missing:
            raise ValueError(f"weights missing for {missing}; give one weight per vector")
        weight_of = {k: float(weights[k]) for k in named}
    else:
        if len(weights) != len(named):
            raise ValueError(f"{len(weights)} weights for {len(named)} vectors")
        weight_of = dict(zip(named, map(float, weights), strict=True))
    if mode not in ("sum", "mean"):
        raise ValueError(f"unknown mode {mode!r}; use 'sum' or 'mean'")
    sites = {v.site for v in named.values()}
    if len(sites) != 1:
        raise VectorMismatchError(f"cannot combine vectors from different sites {sorted(sites)}")
    total = torch.stack([weight_of[k] * v.at(layer) for k, v in named.items()]).sum(0)
    if mode == "mean":
        total = total / len(named)
    # Weights go in the label, so describe() (and resumed results) tell weightings apart.
    label = f"{mode}(" + ",".join(k if weight_of[k] == 1 else f"{weight_of[k]:g}*{k}"
                                  for k in named) + ")"
    injection = Injection(total, layer, coefficient, sites.pop(), positions, label)
    return SteeringPlan((injection,), name=f"combined-{mode}(L{layer})",
                        meta={"weights": str(weight_of)})


def simultaneous(
    spec: Mapping[str, tuple[SteeringVector, int, float]],
    *,
    scale: float = 1.0,
    positions: Positions = ALL,
) -> SteeringPlan:
    """Each named vector at its own layer with its own coefficient, all in one pass.

    ``spec`` maps a name to ``(vector, layer, coefficient)``; every coefficient is then
    multiplied by the global ``scale`` (the paper sweeps it from -2 to 2).

    Example:
        >>> plan = simultaneous({"myopia": (v1, 11, 4.0), "wealth": (v2, 12, 8.0)}, scale=0.5)
        >>> [(i.layer, i.coefficient) for i in plan.injections]
        [(11, 2.0), (12, 4.0)]
    """
    if not spec:
        raise ValueError("simultaneous() needs at least one entry")
    injections = tuple(
        Injection(vector.at(layer), layer, coefficient * scale, vector.site, positions, name)
        for name, (vector, layer, coefficient) in spec.items()
    )
    return SteeringPlan(injections, name=f"simultaneous(scale={scale:g})")


def empty_plan() -> SteeringPlan:
    return SteeringPlan((), name="unsteered")
