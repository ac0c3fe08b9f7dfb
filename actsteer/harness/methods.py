"""What the harness compares: methods, and the intervention each makes at one strength.

An :class:`Intervention` is what one generation runs under: an optional
:class:`~actsteer.plan.SteeringPlan`, an optional instruction appended to the user turn,
and an optional model transform (a value whose ``applied(model)`` context manager changes
the model while the text is generated and restores it after, e.g. an edited model). The
scorers always read the text under the plain model, outside every intervention.

A :class:`Method` names a row of the report and builds its intervention from the
behaviour's :class:`MethodContext` (vector, layer, norms, instruction) at each strength of
its ladder; a method without a ladder runs at strength 0 only. Everything downstream
(cells, scores, choice of strength, report) is the same for every method.

The judged rows (``docs/harness.md``) are methods too. Those that *raise* the behaviour
(``goal="raise"``) are compared with the unsteered model: CAA (``steering``), ``pca``,
``probe``, the ``learned`` vector (each added as a fraction of the residual norm; the
learned one at the fraction chosen for CAA, so at matched norm), ``surgery`` (the probe's
Model Surgery, its own ladder of steps) and ``prompting``. Those that *lower* it
(``goal="lower"``) run with the behaviour's instruction, which elicits it, and are
compared with ``prompting`` alone: ``subtract`` (minus CAA), ``ablation`` (CAA's
direction projected out at every writing site), ``clamp`` (its component at the layer
clamped to ``-strength`` of the norm), ``orthogonalised`` (the same ablation baked into
the weights, :mod:`actsteer.harness.transforms`) and ``surgery:lower``.

Example::

    context = MethodContext("sentiment", vector, layer=20, norms=norms,
                            instruction="Answer cheerfully.")
    intervention = METHODS["steering"].intervention(context, 0.1)   # 0.1 of |resid|
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from actsteer.errors import InvalidValueError
from actsteer.harness.transforms import Orthogonalised, Surgical
from actsteer.norms import ResidualNorms
from actsteer.plan import SteeringPlan, single
from actsteer.projection import project
from actsteer.surgery.edit import SurgeryEdit
from actsteer.vector import SteeringVector

__all__ = ["JUDGED_METHODS", "METHODS", "SURGERY_LADDER", "Goal", "Intervention", "Method",
           "MethodContext", "ModelTransform"]

Goal = Literal["raise", "lower"]
"""What a method is for: raising the behaviour (compared with the unsteered model) or
lowering it once the instruction has elicited it (compared with prompting alone)."""

SURGERY_LADDER: tuple[float, ...] = (0.0, 4.0, 8.0)
"""The surgery rows' ladder: the step added to each edited gate row (the surgery study's
ladder, ``docs/surgery.md``), 0 being the model as loaded."""


@runtime_checkable
class ModelTransform(Protocol):
    """A change of the model for the length of one generation (picklable, so that it
    travels to a Ray worker): ``applied(model)`` enters it and restores the model on exit;
    ``identity()`` names it for the results log."""

    def applied(self, model: Any) -> contextlib.AbstractContextManager[Any]: ...

    def identity(self) -> str: ...


@dataclass(frozen=True)
class Intervention:
    """What one cell's generations run under (module docstring)."""

    plan: SteeringPlan | None = None
    """Added to the residual stream while generating (None: nothing added)."""
    instruction: str | None = None
    """Appended to the everyday instruction in the user turn (None: the instruction alone)."""
    transform: ModelTransform | None = None
    """Applied to the model while generating (None: the model as loaded)."""

    def identity(self) -> str:
        """A digest of everything that decides the generated text (the results log's resume
        key: a cell made by another intervention is generated again)."""
        parts = {"plan": None if self.plan is None or not self.plan.injections
                 else self.plan.identity(),
                 "instruction": self.instruction,
                 "transform": None if self.transform is None else self.transform.identity()}
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        parts = []
        if self.plan is not None and self.plan.injections:
            parts.append(self.plan.describe())
        if self.instruction:
            parts.append(f"instruction {self.instruction!r}")
        if self.transform is not None:
            parts.append(f"transform {self.transform.identity()}")
        return "; ".join(parts) or "unsteered, no instruction"

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        """The transform entered (if any); the plan is applied by the generator itself."""
        if self.transform is None:
            yield
            return
        with self.transform.applied(model):
            yield


@dataclass(frozen=True)
class MethodContext:
    """What a method may build its intervention from, per behaviour."""

    behaviour: str
    vector: SteeringVector
    """The behaviour's CAA vector (answer-mean read)."""
    layer: int
    """Where the vector is added."""
    norms: ResidualNorms
    """Median residual norms: a strength is a fraction of the norm at ``layer``."""
    instruction: str | None
    """The behaviour's instruction (None: the prompting methods cannot run)."""
    vectors: Mapping[str, SteeringVector] = field(default_factory=dict)
    """Other vectors at ``layer`` by name (``pca``, ``probe``, ``learned``), for the
    methods that need them (:mod:`actsteer.harness.prepare`)."""
    edits: Mapping[str, SurgeryEdit] = field(default_factory=dict)
    """Model Surgery edits at strength 1 by goal (``raise``, ``lower``)."""
    n_layers: int = 0
    """The model's depth (every-site ablation)."""

    def other(self, name: str) -> SteeringVector:
        if name not in self.vectors:
            raise InvalidValueError(f"behaviour {self.behaviour!r} has no {name!r} vector; "
                                    "prepare it first (actsteer.harness.prepare)")
        return self.vectors[name]


def _plan(context: MethodContext, strength: float, vector: str = "caa",
          sign: float = 1.0) -> SteeringPlan | None:
    if strength == 0:
        return None
    chosen = context.vector if vector == "caa" else context.other(vector)
    return single(chosen, context.layer, sign * strength, norms=context.norms,
                  label=f"{context.behaviour}:{vector}@{context.layer}")


def _instruction(context: MethodContext) -> str:
    if not context.instruction:
        raise InvalidValueError(f"behaviour {context.behaviour!r} has no instruction for a "
                                "prompting method")
    return context.instruction


@dataclass(frozen=True)
class Method:
    """A row of the report: a name, whether it has a strength ladder (the strength is then
    chosen per behaviour on the ``select`` half), and how it builds its intervention."""

    name: str
    laddered: bool
    """True: run at every strength of the config's ladder; False: at strength 0 only."""
    build: Callable[[MethodContext, float], Intervention]
    """``build(context, strength) -> Intervention``."""
    needs_instruction: bool = False
    """Whether it needs the behaviour's instruction."""
    goal: Goal = "raise"
    """Raise the behaviour (against the unsteered model) or lower it (against prompting)."""
    ladder: tuple[float, ...] | None = None
    """Its own ladder in its own units (None: the config's fractions of the norm)."""
    needs: tuple[str, ...] = ()
    """What it is built from besides CAA: ``pca``, ``probe``, ``learned``, ``surgery``."""
    detection: str | None = "caa"
    """The direction whose held-out ROC-AUC its row reports (None: none, e.g. prompting)."""
    matched_to: str | None = None
    """Report at the strength chosen for this other method (same fraction of the norm:
    matched norm), when the run has it; None: its own choice on the select half."""

    def strengths(self, ladder: tuple[float, ...]) -> tuple[float, ...]:
        if not self.laddered:
            return (0.0,)
        return self.ladder if self.ladder is not None else ladder

    def intervention(self, context: MethodContext, strength: float) -> Intervention:
        return self.build(context, strength)


def _lowering(context: MethodContext, plan: SteeringPlan | None = None,
              transform: Any = None) -> Intervention:
    return Intervention(plan=plan, instruction=_instruction(context), transform=transform)


def _clamp(context: MethodContext, strength: float) -> SteeringPlan:
    return project(context.vector, context.layer, -strength if strength else 0.0,
                   norms=context.norms,
                   label=f"{context.behaviour}@{context.layer}")


def _ablation(context: MethodContext) -> SteeringPlan:
    return project(context.vector, context.layer, every_site=True, n_layers=context.n_layers,
                   label=context.behaviour)


def _surgery(context: MethodContext, goal: str, strength: float) -> Surgical | None:
    if strength == 0:
        return None
    if goal not in context.edits:
        raise InvalidValueError(f"behaviour {context.behaviour!r} has no {goal!r} surgery "
                                "edit; prepare it first (actsteer.harness.prepare)")
    return Surgical(context.edits[goal].with_strength(strength))


def _orthogonalised(context: MethodContext) -> Orthogonalised:
    return Orthogonalised(context.vector.at(context.layer), context.n_layers, context.behaviour)


JUDGED_METHODS: dict[str, Method] = {
    "pca": Method("pca", True, lambda c, s: Intervention(plan=_plan(c, s, "pca")),
                  needs=("pca",), detection="pca"),
    "probe": Method("probe", True, lambda c, s: Intervention(plan=_plan(c, s, "probe")),
                    needs=("probe",), detection="probe"),
    "learned": Method("learned", True, lambda c, s: Intervention(plan=_plan(c, s, "learned")),
                      needs=("learned",), detection="learned", matched_to="steering"),
    "surgery": Method("surgery", True,
                      lambda c, s: Intervention(transform=_surgery(c, "raise", s)),
                      ladder=SURGERY_LADDER, needs=("surgery",), detection="probe"),
    "subtract": Method("subtract", True,
                       lambda c, s: _lowering(c, _plan(c, s, sign=-1.0)),
                       needs_instruction=True, goal="lower"),
    "ablation": Method("ablation", False, lambda c, s: _lowering(c, _ablation(c)),
                       needs_instruction=True, goal="lower"),
    "clamp": Method("clamp", True, lambda c, s: _lowering(c, _clamp(c, s)),
                    needs_instruction=True, goal="lower"),
    "orthogonalised": Method("orthogonalised", False,
                             lambda c, s: _lowering(c, transform=_orthogonalised(c)),
                             needs_instruction=True, goal="lower"),
    "surgery:lower": Method("surgery:lower", True,
                            lambda c, s: _lowering(c, transform=_surgery(c, "lower", s)),
                            needs_instruction=True, goal="lower", ladder=SURGERY_LADDER,
                            needs=("surgery",), detection="probe"),
}
"""The judged table's rows beyond steering and prompting (module docstring)."""

METHODS: dict[str, Method] = {
    "steering": Method("steering", True, lambda c, s: Intervention(plan=_plan(c, s))),
    "prompting": Method("prompting", False,
                        lambda c, s: Intervention(instruction=_instruction(c)),
                        needs_instruction=True, detection=None),
    "prompting+steering": Method(
        "prompting+steering", True,
        lambda c, s: Intervention(plan=_plan(c, s), instruction=_instruction(c)),
        needs_instruction=True),
    **JUDGED_METHODS,
}
"""The methods the harness knows, by name (its config's ``methods`` chooses among them)."""
