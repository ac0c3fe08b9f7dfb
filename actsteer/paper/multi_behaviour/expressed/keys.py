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


NO_INSTRUCTION = "-"
"""The ``scaffold`` of a scaffold key whose user turn holds no behaviour's instruction (no
behaviour can be named ``-``)."""


ROWS: tuple[str, ...] = ("steering", "prompting", "prompting+steering")
"""The interventions compared in the chat scaffold, each against the scaffold without
instruction, unsteered (:mod:`~actsteer.paper.multi_behaviour.expressed.prompting`)."""


def row_cell(row: str, behaviour: str) -> tuple[str, str]:
    """``(scaffold, plan)`` of the cells that hold ``row`` (:data:`ROWS`) for
    ``behaviour``; ``(NO_INSTRUCTION, "unsteered")`` is every row's baseline."""
    cells = {"steering": (NO_INSTRUCTION, f"individual:{behaviour}"),
             "prompting": (behaviour, "unsteered"),
             "prompting+steering": (behaviour, f"individual:{behaviour}")}
    return cells[row]


@dataclass(frozen=True)
class ScaffoldKey(CellKey):
    """Every behaviour's propensity on the test openings put in the chat scaffold whose
    user turn holds behaviour ``scaffold``'s instruction (:data:`NO_INSTRUCTION`: none),
    under the plan named ``plan``."""

    STEP: ClassVar[str] = "expressed-scaffold"
    scaffold: str
    plan: str


@dataclass(frozen=True)
class ScaffoldTaxKey(CellKey):
    """Perplexity of the text's documents, each put after the chat scaffold of
    ``scaffold`` (as :class:`ScaffoldKey`; only the document's tokens scored), under the
    plan named ``plan``."""

    STEP: ClassVar[str] = "expressed-scaffold-tax"
    scaffold: str
    plan: str
