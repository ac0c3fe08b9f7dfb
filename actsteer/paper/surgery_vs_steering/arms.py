"""The methods a comparison runs, as *arms*: one way of moving a behaviour, at any strength.

* :class:`SteeringArm` — a vector added at one layer by a hook (:func:`actsteer.single`);
  its strength is a fraction of the median residual norm there (:mod:`actsteer.norms`).
* :class:`SurgeryArm` — a Model Surgery edit of gate rows, no hook; its strength is the
  edit's ``strength``, the norm of the step added to each selected row.

Each arm gives, for a strength, the plan to pass to a measurement while it is applied
(:meth:`~SteeringArm.applied`): the steering plan itself, or an empty plan inside
:func:`actsteer.surgery.surgery` (edited weights, restored exactly on exit).
:func:`score_points` runs one measurement over many (arm, strength) points, all steering
plans in one call (prefix reuse) and each surgery in its own.

:func:`build_arms` makes the arms of one behaviour from its contrastive pairs: a probe and
a CAA vector read at one layer over the answer tokens, steering with each, and the
probe's surgery (optionally a random-direction surgery as a control), all oriented so
that a positive strength is meant to move the behaviour's propensity in ``direction``;
optionally the same surgery in the folded basis (``surgery:folded``, see
:mod:`actsteer.surgery.gates`), to show whether the basis matters.

Example::

    arms = build_arms(model, load_expressed("sentiment").pairs(), layer=18, norms=norms)
    with arms.arms["surgery"].applied(model, 4.0) as plan:     # plan is empty_plan()
        scores = word_propensities(model, prompts, [words], [plan])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.contrast import ContrastivePair
from actsteer.errors import InvalidValueError
from actsteer.extraction import contrastive_activations
from actsteer.norms import ResidualNorms
from actsteer.plan import SteeringPlan, empty_plan, single
from actsteer.surgery.apply import surgery
from actsteer.surgery.edit import SurgeryEdit, make_edit
from actsteer.surgery.probe import Probe, train_probe
from actsteer.surgery.region import Region, Scope, select_region

__all__ = [
    "AUTHORS_SHARE",
    "Arm",
    "ArmKind",
    "Arms",
    "SteeringArm",
    "SurgeryArm",
    "build_arms",
    "default_k",
    "score_points",
]

ArmKind = Literal["steering", "surgery"]

AUTHORS_SHARE = 16384 / 352256
"""Share of all gate rows the authors' code edits: 4096 * 4 of Llama 2 7B's 32 * 11008
(about 4.65%), selected over all layers together (``per="all"``)."""


@dataclass(frozen=True, eq=False)
class SteeringArm:
    """Add ``vector`` at ``blocks.{layer}.hook_{site}``, every position; strength is the
    fraction of the median residual norm at ``layer`` (``norms``) the addition has."""

    name: str
    vector: Float[Tensor, " d_model"]
    layer: int
    norms: ResidualNorms
    site: str = "resid_post"
    control: bool = False
    """A baseline (e.g. a random direction): measured like the others, but never sets
    the matched-effect target."""
    kind: ClassVar[ArmKind] = "steering"
    unit: ClassVar[str] = "x median residual norm"

    def plan(self, strength: float) -> SteeringPlan:
        return single(self.vector, self.layer, strength, site=self.site, label=self.name,
                      norms=self.norms)

    @contextlib.contextmanager
    def applied(self, model: Any, strength: float) -> Iterator[SteeringPlan]:
        """The plan to run the model with (nothing is changed in the model)."""
        yield self.plan(strength)


@dataclass(frozen=True, eq=False)
class SurgeryArm:
    """Apply ``edit`` at a strength (its rows, its direction); no hook at inference."""

    name: str
    edit: SurgeryEdit
    control: bool = False
    """A baseline (e.g. a random direction): measured like the others, but never sets
    the matched-effect target."""
    kind: ClassVar[ArmKind] = "surgery"
    unit: ClassVar[str] = "gate-row step"

    def plan(self, strength: float) -> SteeringPlan:
        return empty_plan()

    @contextlib.contextmanager
    def applied(self, model: Any, strength: float) -> Iterator[SteeringPlan]:
        """Edit ``model`` in place for the block (exactly restored on exit); run it with
        the empty plan this yields."""
        with surgery(model, self.edit.with_strength(strength)):
            yield empty_plan()


Arm = SteeringArm | SurgeryArm

T = TypeVar("T")


def score_points(model: Any, points: Sequence[tuple[Arm, float]],
                 measure: Callable[[list[SteeringPlan]], Sequence[T]]) -> list[T]:
    """``measure`` on the unsteered model and at each ``(arm, strength)`` point.

    ``measure(plans)`` returns one result per plan. The unsteered model and every steering
    point go through one call (so sweeps share their prefix); each surgery point gets its
    own call with the edit applied. Returns ``[unsteered, *points]`` in order.
    """
    steering = [(index, arm.plan(strength)) for index, (arm, strength) in enumerate(points)
                if arm.kind == "steering"]
    first = list(measure([empty_plan(), *(plan for _, plan in steering)]))
    if len(first) != len(steering) + 1:
        raise InvalidValueError(f"measure returned {len(first)} results for "
                                f"{len(steering) + 1} plans; it must return one per plan")
    found: dict[int, T] = {index: result for (index, _), result
                           in zip(steering, first[1:], strict=True)}
    for index, (arm, strength) in enumerate(points):
        if arm.kind == "surgery":
            with arm.applied(model, strength) as plan:
                found[index] = measure([plan])[0]
    return [first[0], *(found[index] for index in range(len(points)))]


def default_k(model: Any) -> int:
    """The authors' share of gate rows (:data:`AUTHORS_SHARE`) for ``model``: 2,143 of
    SmolLM2-135M's 30 * 1536."""
    total = int(model.cfg.n_layers) * int(model.cfg.d_mlp)
    return max(1, round(AUTHORS_SHARE * total))


@dataclass(frozen=True, eq=False)
class Arms:
    """The arms of one behaviour and what they were made from."""

    probe: Probe
    """Trained with the behaviour's side as positive (its direction points towards it)."""
    vector: Float[Tensor, " d_model"]
    """CAA vector at the probe's layer: mean over pairs of (behaviour − contrast)."""
    region: Region
    """Gate rows of the probe's surgery."""
    direction: int
    """+1: positive strengths are meant to raise the behaviour's propensity; −1: lower it."""
    arms: Mapping[str, Arm] = field(default_factory=dict)
    folded_region: Region | None = None
    """Gate rows of the folded-basis surgery (``None`` unless asked for)."""

    @property
    def shared_rows(self) -> int | None:
        """Rows that the checkpoint- and the folded-basis surgery both edit."""
        if self.folded_region is None:
            return None
        return sum(len(set(rows) & set(self.folded_region.rows.get(layer, ())))
                   for layer, rows in self.region.rows.items())

    @property
    def layer(self) -> int:
        assert self.probe.layer is not None  # build_arms trains it at a layer
        return self.probe.layer


def build_arms(model: Any, pairs: Sequence[ContrastivePair], *, layer: int,
               norms: ResidualNorms, direction: int = 1, k: int | None = None,
               per: Scope = "all", control: bool = False, folded: bool = False,
               seed: int = 0, batch_size: int = 16) -> Arms:
    """Probe, CAA vector and the arms that move a behaviour in ``direction``.

    From ``pairs`` (prompt, behaviour answer, contrast answer), activations at
    ``resid_post`` of ``layer`` averaged over each answer's tokens (``answer_mean``: the
    two sides share the prompt, so only the answer tells them apart; the paper's probe
    averages all tokens of its examples). The probe is a logistic regression on them, the
    CAA vector their mean difference. The arms:

    * ``steer:probe`` — ``direction`` × the probe's unit direction at ``layer``;
    * ``steer:caa`` — ``direction`` × the CAA vector at ``layer``;
    * ``surgery`` — the paper's surgery against the side to remove (the contrast's probe,
      ``probe.flipped()``, to raise the behaviour; the behaviour's probe to lower it): the
      ``k`` gate rows (default :func:`default_k`, counted ``per`` layer or over ``"all"``)
      most inversely aligned with it, each given ``strength`` × its direction;
    * ``surgery:random`` (with ``control``) — the same recipe for a random unit direction
      (seeded by ``seed``): what any edit of that many rows at that step does; a control
      arm, which never sets the matched-effect target;
    * ``surgery:folded`` (with ``folded``) — the ``surgery`` arm's recipe in the folded
      basis (``basis="folded"``: rows compared and stepped as ``ln2.weight ⊙ row``, the
      basis the probe lives in), its own ``k`` rows; a method, not a control.
    """
    if direction not in (1, -1):
        raise InvalidValueError(f"direction must be +1 (raise the behaviour) or -1 (lower it), "
                                f"got {direction!r}")
    if len(pairs) < 2:
        raise InvalidValueError(f"a probe needs at least 2 contrastive pairs, got {len(pairs)}")
    norms.check_fits(model)
    positive, negative = contrastive_activations(model, pairs, layers=[layer],
                                                 read="answer_mean", batch_size=batch_size)
    probe = train_probe(positive[:, 0], negative[:, 0], layer=layer)
    vector = (positive[:, 0] - negative[:, 0]).mean(0)
    avoid = probe.flipped() if direction == 1 else probe
    k = default_k(model) if k is None else k
    region = select_region(model, avoid, k=k, per=per)
    arms: dict[str, Arm] = {
        "steer:probe": SteeringArm("steer:probe", direction * probe.direction, layer, norms),
        "steer:caa": SteeringArm("steer:caa", direction * vector, layer, norms),
        "surgery": SurgeryArm("surgery", make_edit(model, avoid, region)),
    }
    if control:
        generator = torch.Generator().manual_seed(seed)
        random = Probe.from_direction(torch.randn(int(model.cfg.d_model), generator=generator),
                                      layer=layer)
        arms["surgery:random"] = SurgeryArm(
            "surgery:random", make_edit(model, random, select_region(model, random, k=k,
                                                                      per=per)), control=True)
    folded_region = None
    if folded:
        folded_region = select_region(model, avoid, k=k, per=per, basis="folded")
        arms["surgery:folded"] = SurgeryArm("surgery:folded",
                                            make_edit(model, avoid, folded_region))
    return Arms(probe, vector, region, direction, arms, folded_region)


def check_ladder(name: str, strengths: Sequence[float]) -> tuple[float, ...]:
    """Positive, finite, distinct strengths in ascending order (the ladder of one arm)."""
    values = tuple(sorted(float(s) for s in strengths))
    if not values or len(set(values)) != len(values) or not all(
            math.isfinite(s) and s > 0 for s in values):
        raise InvalidValueError(f"ladder of {name!r} must be distinct positive finite "
                                f"strengths (the negatives are added for slopes), got "
                                f"{tuple(strengths)}")
    return values
