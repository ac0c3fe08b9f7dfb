"""Keys of the multi-behaviour results file, one class per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from actsteer.paper.keys import CellKey

DIRECTIONS: dict[str, float] = {"subtract": -1.0, "add": 1.0}
"""Steering directions by name and their sign."""


@dataclass(frozen=True)
class DefaultKey(CellKey):
    """The unsteered model on one split of one behaviour."""

    STEP: ClassVar[str] = "default"
    behaviour: str
    split: str


@dataclass(frozen=True)
class GridKey(CellKey):
    """One grid-search cell: the behaviour's own vector at ``layer`` × ``multiplier``."""

    STEP: ClassVar[str] = "grid"
    behaviour: str
    layer: int
    multiplier: float


@dataclass(frozen=True)
class IndividualKey(CellKey):
    """The behaviour's own vector at its chosen setting, on the test split."""

    STEP: ClassVar[str] = "individual"
    behaviour: str
    direction: str


@dataclass(frozen=True)
class CombinedKey(CellKey):
    """The combined vector of ``variant`` added or subtracted, scored on ``behaviour``."""

    STEP: ClassVar[str] = "combined"
    variant: str
    direction: str
    behaviour: str


@dataclass(frozen=True)
class SimultaneousKey(CellKey):
    """The simultaneous plan at global ``scale``, scored on ``behaviour``'s ``split``
    (grid: to choose a scale; test: to report)."""

    STEP: ClassVar[str] = "simultaneous"
    scale: float
    behaviour: str
    split: str = "test"


@dataclass(frozen=True)
class SteerabilityKey(CellKey):
    """Per-item propensity slopes of ``behaviour``'s own vector at ``layer`` (test split)."""

    STEP: ClassVar[str] = "steerability"
    behaviour: str
    layer: int


@dataclass(frozen=True)
class TaxKey(CellKey):
    """Next-token accuracy on text under the simultaneous plan at ``scale``."""

    STEP: ClassVar[str] = "tax"
    scale: float


@dataclass(frozen=True)
class LetterFreeKey(CellKey):
    """The reported ``plan`` of ``behaviour`` measured on its answer texts, no letters
    (test split)."""

    STEP: ClassVar[str] = "letter-free"
    behaviour: str
    plan: str
