"""What the harness compares: methods, and the intervention each makes at one strength.

An :class:`Intervention` is what one generation runs under: an optional
:class:`~actsteer.plan.SteeringPlan`, an optional instruction appended to the user turn,
and an optional model transform (a value whose ``applied(model)`` context manager changes
the model while the text is generated and restores it after, e.g. an edited model). The
scorers always read the text under the plain model, outside every intervention.

A :class:`Method` names a row of the report and builds its intervention from the
behaviour's :class:`MethodContext` (vector, layer, norms, instruction) at each strength of
its ladder; a method without a ladder runs at strength 0 only. New rows (a learned vector,
an ablation, a clamp, orthogonalised weights, surgery) are new :class:`Method` values in
:data:`METHODS`; everything downstream (cells, scores, choice of strength, report) is the
same for every method.

Example::

    context = MethodContext("sentiment", vector, layer=20, norms=norms,
                            instruction="Answer cheerfully.")
    intervention = METHODS["steering"].intervention(context, 0.1)   # 0.1 of |resid|
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from actsteer.errors import InvalidValueError
from actsteer.norms import ResidualNorms
from actsteer.plan import SteeringPlan, single
from actsteer.vector import SteeringVector

__all__ = ["METHODS", "Intervention", "Method", "MethodContext", "ModelTransform"]


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


def _plan(context: MethodContext, strength: float) -> SteeringPlan | None:
    if strength == 0:
        return None
    return single(context.vector, context.layer, strength, norms=context.norms,
                  label=f"{context.behaviour}@{context.layer}")


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

    def strengths(self, ladder: tuple[float, ...]) -> tuple[float, ...]:
        return ladder if self.laddered else (0.0,)

    def intervention(self, context: MethodContext, strength: float) -> Intervention:
        return self.build(context, strength)


METHODS: dict[str, Method] = {
    "steering": Method("steering", True, lambda c, s: Intervention(plan=_plan(c, s))),
    "prompting": Method("prompting", False,
                        lambda c, s: Intervention(instruction=_instruction(c)),
                        needs_instruction=True),
    "prompting+steering": Method(
        "prompting+steering", True,
        lambda c, s: Intervention(plan=_plan(c, s), instruction=_instruction(c)),
        needs_instruction=True),
}
"""The methods the harness knows, by name (its config's ``methods`` chooses among them)."""
