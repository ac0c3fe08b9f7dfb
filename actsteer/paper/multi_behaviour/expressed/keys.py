"""Keys of the expressed-behaviour comparison's results cells, one class per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from actsteer.paper.keys import CellKey


@dataclass(frozen=True)
class GridKey(CellKey):
    """``behaviour`` added alone at ``layer`` on the grid prompts (layer -1: unsteered)."""

    STEP: ClassVar[str] = "expressed-layers"
    behaviour: str
    layer: int


@dataclass(frozen=True)
class TestKey(CellKey):
    """Every behaviour's propensity on the test prompts under the plan named ``plan``."""

    STEP: ClassVar[str] = "expressed-test"
    plan: str


@dataclass(frozen=True)
class TaxKey(CellKey):
    """Perplexity and top-1 on text under the plan named ``plan``."""

    STEP: ClassVar[str] = "expressed-tax"
    plan: str


@dataclass(frozen=True)
class TextKey(CellKey):
    """Greedy continuations under the plan named ``plan``, scored by VADER."""

    STEP: ClassVar[str] = "expressed-text"
    plan: str
