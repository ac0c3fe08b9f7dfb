"""Keys of the broad-skills results file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from actsteer.paper.keys import CellKey


@dataclass(frozen=True)
class BaselineKey(CellKey):
    """The unsteered model on every evaluation set."""

    STEP: ClassVar[str] = "baseline"


@dataclass(frozen=True)
class SweepKey(CellKey):
    """One sweep cell: ``vector`` added at ``layer`` with ``coefficient``, every eval set."""

    STEP: ClassVar[str] = "sweep"
    vector: str
    layer: int
    coefficient: float
