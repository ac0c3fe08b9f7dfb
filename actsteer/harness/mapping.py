"""The fixed mapping of the three raw scores to AxBench's 0-2 ratings, and the combined
score. Fixed (and documented in ``docs/harness.md``) before any harness result was read.

Every threshold is relative to a **reference**: the unsteered, unprompted generations of the
same behaviour on the ``select`` half of the instructions (never the ``report`` half, so the
mapping, like the choice of strength, sees one half only). Per generation:

* **concept** (raw ``c``: words per 100 tokens; for sentiment with VADER installed, VADER's
  compound score instead): ``t`` = the reference's 75th percentile; 0 if ``c <= t`` (no more
  of the concept than most unsteered text), 2 if ``c >= t + CONCEPT_STEP`` (words: 5 more
  per 100 tokens; VADER: half-way from ``t`` to the scale's top, 1), else 1;
* **relevance** (raw ``r``: PMI per token, nats): 0 if ``r <= 0`` (the instruction does
  not make the text more likely), 2 if ``r >= RELEVANCE_SHARE`` (one half) of the
  reference's median (or ``r > 0`` when that median is not positive), else 1;
* **fluency** (raw ``f``: log-likelihood per token, nats): 0 if fewer than
  :data:`MIN_DISTINCT` (half) of the generated tokens are distinct (degenerate repetition,
  which a likelihood rewards); else with ``d = f - `` the reference's median: 2 if
  ``d >= -0.5``, 1 if ``d >= -1.5``, 0 below.

The **combined** score is AxBench's: the harmonic mean of the three ratings, 0 if any is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from actsteer.errors import InvalidValueError

__all__ = ["CONCEPT_QUANTILE", "CONCEPT_WORD_STEP", "FLUENCY_STEPS", "MIN_DISTINCT",
           "RELEVANCE_SHARE", "Thresholds", "combined", "rate"]

CONCEPT_QUANTILE = 0.75
"""Quantile of the reference's concept scores that a generation must exceed to score 1."""
CONCEPT_WORD_STEP = 5.0
"""Words per 100 tokens above that quantile that score 2."""
RELEVANCE_SHARE = 0.5
"""Share of the reference's median PMI that scores 2."""
FLUENCY_STEPS = (-0.5, -1.5)
"""Nats per token below the reference's median log-likelihood: at or above the first
scores 2, at or above the second 1, below it 0."""
MIN_DISTINCT = 0.5
"""A generation with a smaller share of distinct tokens scores fluency 0."""


def _median(values: Sequence[float]) -> float:
    return float(torch.tensor(list(values), dtype=torch.float64).median())


@dataclass(frozen=True)
class Thresholds:
    """The mapping's thresholds for one behaviour, from its reference generations."""

    concept_low: float
    concept_high: float
    relevance_high: float
    fluency_median: float
    concept_scale: str
    """``"words"`` (words per 100 tokens) or ``"vader"`` (compound score)."""

    @classmethod
    def from_reference(cls, concept: Sequence[float], relevance: Sequence[float],
                       fluency: Sequence[float], concept_scale: str = "words") -> Thresholds:
        """Thresholds from the reference generations' raw scores (module docstring)."""
        if not concept or not relevance or not fluency:
            raise InvalidValueError("the reference needs at least one generation per score")
        if concept_scale not in ("words", "vader"):
            raise InvalidValueError(f"concept_scale {concept_scale!r}: use words or vader")
        low = float(torch.quantile(torch.tensor(list(concept), dtype=torch.float64),
                                   CONCEPT_QUANTILE))
        high = low + CONCEPT_WORD_STEP if concept_scale == "words" else (low + 1.0) / 2
        median_r = _median(relevance)
        return cls(low, max(high, low), RELEVANCE_SHARE * median_r if median_r > 0 else 0.0,
                   _median(fluency), concept_scale)

    def concept(self, value: float) -> int:
        if value <= self.concept_low:
            return 0
        return 2 if value >= self.concept_high else 1

    def relevance(self, value: float) -> int:
        if value <= 0:
            return 0
        return 2 if value >= self.relevance_high else 1

    def fluency(self, value: float, distinct: float) -> int:
        if distinct < MIN_DISTINCT:
            return 0
        drop = value - self.fluency_median
        return 2 if drop >= FLUENCY_STEPS[0] else 1 if drop >= FLUENCY_STEPS[1] else 0

    def to_dict(self) -> dict[str, Any]:
        return {"concept_low": self.concept_low, "concept_high": self.concept_high,
                "relevance_high": self.relevance_high, "fluency_median": self.fluency_median,
                "concept_scale": self.concept_scale}


def combined(concept: float, relevance: float, fluency: float) -> float:
    """AxBench's combined score: the harmonic mean of the three ratings, 0 if any is 0."""
    if min(concept, relevance, fluency) <= 0:
        return 0.0
    return 3.0 / (1.0 / concept + 1.0 / relevance + 1.0 / fluency)


def rate(cell: dict[str, Any], thresholds: Thresholds, goal: str = "raise"
         ) -> dict[str, list[float]]:
    """The 0-2 ratings and the combined score of each generation of a stored cell. For a
    method that lowers the behaviour (``goal="lower"``) the combined score rates the
    concept's absence, ``2 - concept``, the ``concept`` rating itself staying as it is."""
    scale = thresholds.concept_scale
    raw_concept = cell["vader"] if scale == "vader" else cell["concept"]
    concept = [float(thresholds.concept(x)) for x in raw_concept]
    relevance = [float(thresholds.relevance(x)) for x in cell["relevance"]]
    fluency = [float(thresholds.fluency(x, d))
               for x, d in zip(cell["fluency"], cell["distinct"], strict=True)]
    wanted = concept if goal == "raise" else [2.0 - c for c in concept]
    return {"concept": concept, "relevance": relevance, "fluency": fluency,
            "combined": [combined(*x) for x in zip(wanted, relevance, fluency, strict=True)]}
