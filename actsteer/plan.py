"""Steering plans: what to add, where, how much, and at which positions — as values.

Three named ways to build one (they compose with ``+``):

* :func:`single` — one vector at one layer;
* :func:`combined` — several vectors summed (or averaged) into one vector at one layer;
* :func:`simultaneous` — each vector at its own layer, all in the same forward pass.

Two injections on the same hook apply in plan order (additions add up). Nothing here
touches a model; apply a plan with :func:`actsteer.steer`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.atomic import atomic_write, write_json_atomic
from actsteer.errors import InvalidValueError, MissingFileError, MissingKeyError
from actsteer.norms import ResidualNorms
from actsteer.operators import Operator, added, operator_from_dict, operator_tensors, removed
from actsteer.sites import SITES, hook_name
from actsteer.vector import SteeringVector, VectorFileError, VectorMismatchError
from actsteer.vector_meta import vector_digest

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
            raise InvalidValueError(
                f"unknown position mode {self.mode!r}; use all, prompt, generated or from"
                )
        if self.start < 0:
            raise InvalidValueError(f"start must be >= 0, got {self.start}")

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
    fraction: float | None = None
    """When the strength was given in units of the residual norm: ``coefficient *
    |vector| = fraction * median norm`` at this layer (see :mod:`actsteer.norms`)."""
    operator: Operator | None = None
    """None adds; else an :mod:`actsteer.operators` value: :attr:`removed` goes first."""

    def __post_init__(self) -> None:
        if self.vector.dim() != 1:
            raise VectorMismatchError(
                f"an injection adds one d_model vector, got shape {tuple(self.vector.shape)}; "
                "use SteeringVector.at(layer)"
            )
        if self.site not in SITES:
            raise InvalidValueError(f"unknown site {self.site!r}; valid sites: {', '.join(SITES)}")

    @property
    def hook(self) -> str:
        return hook_name(self.layer, self.site)

    @property
    def delta(self) -> Float[Tensor, " d_model"]:
        """What is added at each chosen position (after :attr:`removed` is taken out)."""
        return added(self.vector, self.coefficient, self.operator)

    @property
    def removed(self) -> Float[Tensor, " d_model"] | None:
        """The unit direction taken out before :attr:`delta` is added (None: addition)."""
        return removed(self.vector, self.operator)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description; the vector appears as its :func:`vector_digest`."""
        out: dict[str, Any] = {
            "layer": self.layer, "site": self.site, "coefficient": float(self.coefficient),
            "positions": {"mode": self.positions.mode, "start": self.positions.start},
            "label": self.label, "vector": vector_digest(self.vector)}
        if self.fraction is not None:
            out["fraction"] = float(self.fraction)
        if self.operator is not None:
            out["operator"] = self.operator.to_dict(vector_digest)
        return out


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
            injections=tuple(replace(i, coefficient=i.coefficient * factor,
                                     fraction=None if i.fraction is None
                                     else i.fraction * factor)
                             for i in self.injections),
        )

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({i.layer for i in self.injections}))

    def describe(self) -> str:
        """One human-readable line (for logs and tables; :meth:`identity` is the key)."""
        parts = [f"{i.label or 'vector'}@{i.hook} x{i.coefficient:g}"
                 + ("" if i.fraction is None else f" ({i.fraction:g} of the norm)")
                 + ("" if i.operator is None else f" [{i.operator.describe()}]")
                 + f" ({i.positions.mode})" for i in self.injections]
        return f"{self.name or 'plan'}: " + ("; ".join(parts) or "no injections")

    # -- plans as data -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: name, meta and each injection with its vector's digest.

        The vectors themselves are not in the dict; :meth:`save` writes them beside it,
        :meth:`from_dict` takes them back by digest.
        """
        return {"format": PLAN_FORMAT, "name": self.name, "meta": dict(self.meta),
                "injections": [i.to_dict() for i in self.injections]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  vectors: Mapping[str, Tensor]) -> SteeringPlan:
        """Inverse of :meth:`to_dict`; ``vectors`` maps digests to ``[d_model]`` tensors."""
        try:
            injections = []
            for entry in data["injections"]:
                digest = entry["vector"]
                if digest not in vectors:
                    raise MissingKeyError(f"no tensor for vector digest {digest!r}")
                vector = vectors[digest]
                if vector_digest(vector) != digest:
                    raise InvalidValueError(f"the tensor given for {digest!r} has another digest "
                                            f"({vector_digest(vector)!r})")
                where = entry["positions"]
                injections.append(Injection(
                    vector, int(entry["layer"]), float(entry["coefficient"]), str(entry["site"]),
                    Positions(where["mode"], int(where["start"])), str(entry["label"]),
                    None if entry.get("fraction") is None else float(entry["fraction"]),
                    operator_from_dict(entry.get("operator"), vectors)))
            return cls(tuple(injections), str(data.get("name", "")), dict(data.get("meta", {})))
        except (KeyError, TypeError, ValueError) as error:
            detail = error.args[0] if error.args else error
            raise InvalidValueError(f"not a valid actsteer plan ({detail}); make it with "
                                    "SteeringPlan.to_dict or SteeringPlan.save") from None

    def identity(self) -> str:
        """SHA-256 of :meth:`to_dict` (vector digests included): two plans with the same
        identity add exactly the same values at the same places, so results stored under
        it can be reused. A changed vector value, coefficient, layer, site, position mode
        or start changes it; the plan's display ``name`` and ``meta`` do not."""
        canonical = json.dumps([i.to_dict() for i in self.injections], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (JSON, :meth:`to_dict`) and its vectors beside it as
        ``<path stem>.safetensors``, both atomically. Returns the JSON path."""
        from safetensors.torch import save_file

        target = Path(path)
        tensors = {vector_digest(t): t.detach().cpu().contiguous() for i in self.injections
                   for t in (i.vector, *operator_tensors(i.operator))}
        atomic_write(target.with_suffix(".safetensors"), lambda tmp: save_file(tensors, str(tmp)))
        return write_json_atomic(target, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringPlan:
        """Read a plan written by :meth:`save` (safetensors only: never unpickles)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        source = Path(path)
        tensor_file = source.with_suffix(".safetensors")
        for needed in (source, tensor_file):
            if not needed.is_file():
                raise MissingFileError(f"no plan file at {needed}; SteeringPlan.save writes "
                                       f"{source.name} and {tensor_file.name} together")
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
            tensors = load_file(str(tensor_file))
        except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as error:
            raise VectorFileError(f"{source}: cannot read the plan ({error}); save it again "
                                  "with SteeringPlan.save") from None
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise VectorFileError(f"{source} is not an actsteer plan file (format "
                                  f"{PLAN_FORMAT!r} expected)")
        try:
            return cls.from_dict(data, tensors)
        except ValueError as error:
            raise VectorFileError(f"{source}: {error}") from None


PLAN_FORMAT = "actsteer-plan/1"


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
    norms: ResidualNorms | None = None,
) -> SteeringPlan:
    """One vector at one layer: adds ``coefficient * vector[layer]`` at ``positions``.

    Args:
        vector: a :class:`SteeringVector` (its ``layer`` row is used, at its own site) or
            a raw ``[d_model]`` tensor (added at ``site``, default ``resid_post``).
        layer: block index; ``blocks.{layer}.hook_{site}`` must exist on the model.
        coefficient: the multiplier; 0 leaves logits bit-identical to no steering.
        positions: :class:`Positions` (default all positions, as the paper).
        norms: with :class:`~actsteer.norms.ResidualNorms`, ``coefficient`` is a fraction
            of the median residual norm at ``layer`` (recorded as the injection's
            ``fraction``), whatever the vector's own norm; norms of another site or model
            are refused (:mod:`actsteer.norms`).

    Example:
        >>> plan = single(vector, layer=14, coefficient=-4.0)   # subtract at block 14 output
        >>> plan = single(vector, 14, 0.1, norms=residual_norms(model, texts))  # 0.1 |resid|
        >>> logits = actsteer.run(model, ["Human: ..."], plan)    # [batch, pos, d_vocab]
    """
    if isinstance(vector, SteeringVector) and site is not None and site != vector.site:
        warnings.warn(
            f"{vector.meta.dataset or 'this vector'} was read at {vector.site!r} but is added "
            f"at {site!r}; activations there live on another scale and direction. Omit site= "
            f"to add it where it was read, or pass vector.at({layer}) to add the raw tensor",
            stacklevel=2)
    chosen_site = site or (vector.site if isinstance(vector, SteeringVector) else "resid_post")
    label = label or (vector.meta.dataset if isinstance(vector, SteeringVector) else "")
    direction = _direction(vector, layer)
    fraction = None
    if norms is not None:
        if isinstance(vector, SteeringVector):
            norms.check_vector(vector)
        fraction, coefficient = coefficient, norms.coefficient(direction, layer, coefficient,
                                                               site=chosen_site)
    injection = Injection(direction, layer, coefficient, chosen_site, positions, label,
                          fraction)
    return SteeringPlan((injection,), name=f"single({label or 'vector'}, L{layer})")


def combined(
    vectors: Mapping[str, SteeringVector] | Sequence[SteeringVector],
    layer: int,
    *,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    mode: Literal["sum", "mean"] = "sum",
    coefficient: float = 1.0,
    positions: Positions = ALL,
    norms: ResidualNorms | None = None,
) -> SteeringPlan:
    """Several behaviour vectors merged into ONE vector at ONE layer.

    ``sum_i w_i v_i`` (``mode="sum"``) or that divided by the number of vectors
    (``mode="mean"``); weights default to 1 (e.g. pass each behaviour's chosen
    multiplier for the paper's weighted variant). The result is multiplied by
    ``coefficient``; with ``norms``, ``coefficient`` is the fraction of the median
    residual norm at ``layer`` that the merged vector gets. All vectors must come from
    the same site.

    Example:
        >>> plan = combined({"myopia": v1, "wealth": v2}, layer=14,
        ...                 weights={"myopia": 4.0, "wealth": 8.0}, mode="mean")
    """
    named = dict(vectors) if isinstance(vectors, Mapping) else _unique_names(vectors)
    if not named:
        raise InvalidValueError("combined() needs at least one vector")
    if weights is None:
        weight_of = dict.fromkeys(named, 1.0)
    elif isinstance(weights, Mapping):
        missing = sorted(set(named) - set(weights))
        if missing:
            raise InvalidValueError(f"weights missing for {missing}; give one weight per vector")
        weight_of = {k: float(weights[k]) for k in named}
    else:
        if len(weights) != len(named):
            raise InvalidValueError(f"{len(weights)} weights for {len(named)} vectors")
        weight_of = dict(zip(named, map(float, weights), strict=True))
    if mode not in ("sum", "mean"):
        raise InvalidValueError(f"unknown mode {mode!r}; use 'sum' or 'mean'")
    sites = {v.site for v in named.values()}
    if len(sites) != 1:
        raise VectorMismatchError(f"cannot combine vectors from different sites {sorted(sites)}")
    total = torch.stack([weight_of[k] * v.at(layer) for k, v in named.items()]).sum(0)
    if mode == "mean":
        total = total / len(named)
    # Weights go in the label, so describe() (and resumed results) tell weightings apart.
    label = f"{mode}(" + ",".join(k if weight_of[k] == 1 else f"{weight_of[k]:g}*{k}"
                                  for k in named) + ")"
    site = sites.pop()
    fraction = None
    if norms is not None:
        for vector in named.values():
            norms.check_vector(vector)
        fraction, coefficient = coefficient, norms.coefficient(total, layer, coefficient,
                                                               site=site)
    injection = Injection(total, layer, coefficient, site, positions, label, fraction)
    return SteeringPlan((injection,), name=f"combined-{mode}(L{layer})",
                        meta={"weights": str(weight_of)})


def _unique_names(vectors: Sequence[SteeringVector]) -> dict[str, SteeringVector]:
    """Name each vector by its dataset; repeated names get ``#2``, ``#3``... in list order
    (two vectors from the same dataset are still two vectors)."""
    named: dict[str, SteeringVector] = {}
    for index, vector in enumerate(vectors):
        base = vector.meta.dataset or f"v{index}"
        name, count = base, 1
        while name in named:
            count += 1
            name = f"{base}#{count}"
        named[name] = vector
    return named


def simultaneous(
    spec: Mapping[str, tuple[SteeringVector, int, float]],
    *,
    scale: float = 1.0,
    positions: Positions = ALL,
    norms: ResidualNorms | None = None,
) -> SteeringPlan:
    """Each named vector at its own layer with its own coefficient, all in one pass.

    ``spec`` maps a name to ``(vector, layer, coefficient)``; every coefficient is then
    multiplied by the global ``scale`` (the paper sweeps it from -2 to 2). With ``norms``,
    each coefficient is a fraction of the median residual norm at its layer.

    Example:
        >>> plan = simultaneous({"myopia": (v1, 11, 4.0), "wealth": (v2, 12, 8.0)}, scale=0.5)
        >>> [(i.layer, i.coefficient) for i in plan.injections]
        [(11, 2.0), (12, 4.0)]
    """
    if not spec:
        raise InvalidValueError("simultaneous() needs at least one entry")
    injections = []
    for name, (vector, layer, coefficient) in spec.items():
        direction, fraction = vector.at(layer), None
        if norms is not None:
            norms.check_vector(vector)
            fraction = coefficient * scale
            coefficient = norms.coefficient(direction, layer, coefficient, site=vector.site)
        injections.append(Injection(direction, layer, coefficient * scale, vector.site,
                                    positions, name, fraction))
    return SteeringPlan(tuple(injections), name=f"simultaneous(scale={scale:g})")


def empty_plan() -> SteeringPlan:
    return SteeringPlan((), name="unsteered")
