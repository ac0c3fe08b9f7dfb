"""What a surgery-versus-steering comparison found (:class:`Comparison`, one
:class:`Row` per arm and strength), and its plain-text table.

The table has one line per (arm, strength): the behaviour's Δ [95% CI] and verdict, the arm's slope
[CI] per unit of its strength, the VADER Δ of generated text, perplexity [CI] with its
paired ratio to the unsteered model, the paired Δ of next-token top-1, and generation
tokens/s; then the matched-effect rows and the sign audit. Columns that were not measured
print as ``-``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actsteer.effects import Effect, verdict_of
from actsteer.errors import InvalidValueError
from actsteer.paper.surgery_vs_steering.arms import ArmKind
from actsteer.stats import Estimate
from actsteer.steerability import SteerabilitySummary

__all__ = ["Comparison", "Row", "comparison_table"]


@dataclass(frozen=True)
class Row:
    """One arm at one strength, everything paired against the unsteered model."""

    arm: str
    kind: ArmKind
    unit: str
    strength: float
    matched: bool
    """Measured at the matched-effect strength (else a ladder point)."""
    effect: Effect
    """Δ of the behaviour's word-set propensity (nats), intended direction recorded."""
    text: Effect | None = None
    """Δ of the text score of greedy continuations (e.g. VADER compound)."""
    perplexity: Estimate | None = None
    perplexity_ratio: Estimate | None = None
    """Perplexity over the unsteered model's, paired over documents."""
    top1_delta: Estimate | None = None
    """Δ next-token top-1 accuracy (token-weighted), paired over documents."""
    tokens_per_s: float | None = None
    """New tokens/s of generation under this arm's kind (one arm of each kind is timed,
    see :func:`compare`)."""

    def to_dict(self) -> dict[str, Any]:
        def est(value: Estimate | None) -> dict[str, Any] | None:
            return None if value is None else value.as_dict()

        return {"arm": self.arm, "kind": self.kind, "unit": self.unit,
                "strength": self.strength, "matched": self.matched,
                "effect": self.effect.to_dict(),
                "text": None if self.text is None else self.text.to_dict(),
                "perplexity": est(self.perplexity),
                "perplexity_ratio": est(self.perplexity_ratio),
                "top1_delta": est(self.top1_delta), "tokens_per_s": self.tokens_per_s}


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`: rows (ladder points, then matched points), each arm's
    steerability, how strengths were matched, and the unsteered model's numbers."""

    behaviour: str
    direction: int
    n_prompts: int
    rows: tuple[Row, ...]
    slopes: Mapping[str, SteerabilitySummary]
    """Per arm: slope of the propensity per unit of the arm's strength over its ladder."""
    ladders: Mapping[str, tuple[float, ...]]
    target: float | None
    """The effect every arm was matched to (in the intended direction), or None."""
    target_rule: str
    reach: Mapping[str, float | None]
    """Per arm: its largest ladder effect in the intended direction whose interval
    excludes 0 there (None: no such point)."""
    matched: Mapping[str, float | None]
    """Per arm: the matched strength (None: its ladder never reaches the target)."""
    unsteered: Mapping[str, Any]
    audit: Mapping[str, Effect] = field(default_factory=dict)
    """Per arm: the sign audit (see the module docstring); empty without audit items."""
    texts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Generated continuations per point label (``"unsteered"``, ``"surgery@4"``; a
    matched point's label ends in ``*``)."""
    text_metric: str = ""
    """What scored the generated text (the table's column name); empty when no text was
    scored."""
    counted_words: Mapping[str, list[str]] = field(default_factory=dict)
    """The words of each side (``behaviour``, ``contrast``) that the propensity counted:
    those that are one token after a space (:func:`actsteer.likelihood.counted_words`)."""

    def row(self, arm: str, strength: float | None = None, *, matched: bool = False) -> Row:
        """The row of ``arm`` at ``strength`` (or its matched row)."""
        for row in self.rows:
            if row.arm == arm and row.matched == matched and (
                    strength is None or math.isclose(row.strength, strength)):
                return row
        raise InvalidValueError(f"no {'matched ' if matched else ''}row for {arm!r}"
                                + ("" if strength is None else f" at {strength:g}"))

    def slope_verdict(self, arm: str) -> str:
        slope = self.slopes[arm].mean_slope
        return verdict_of(slope.low, slope.high, self.direction)

    def to_dict(self) -> dict[str, Any]:
        return {
            "behaviour": self.behaviour, "direction": self.direction,
            "n_prompts": self.n_prompts, "rows": [row.to_dict() for row in self.rows],
            "slopes": {arm: {**s.to_dict(), "verdict": self.slope_verdict(arm)}
                       for arm, s in self.slopes.items()},
            "ladders": {arm: list(v) for arm, v in self.ladders.items()},
            "target": self.target, "target_rule": self.target_rule,
            "reach": dict(self.reach), "matched": dict(self.matched),
            "unsteered": {key: value.as_dict() if isinstance(value, Estimate) else value
                          for key, value in self.unsteered.items()},
            "audit": {arm: effect.to_dict() for arm, effect in self.audit.items()},
            "texts": {label: list(texts) for label, texts in self.texts.items()},
            "text_metric": self.text_metric,
            "counted_words": {side: list(w) for side, w in self.counted_words.items()},
        }

    def table(self) -> str:
        """Plain-text table: ladder rows, then matched rows, then the sign audit."""
        return comparison_table(self)



def _header(text_metric: str) -> str:
    text = (text_metric or "text") + " Δ [CI]"
    return (f"{'method':<15}{'strength':>16}  {'Δ behaviour [95% CI]':<22}{'verdict':<10}"
            f"{'slope [CI] /unit':<24}{text:<22}{'perplexity [CI]':<20}"
            f"{'x unsteered [CI]':<20}{'top-1 Δ [CI]':<24}{'tok/s':>6}")


def _interval(value: float, low: float, high: float, spec: str) -> str:
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def _effect(effect: Effect | None, spec: str) -> str:
    return "-" if effect is None else _interval(effect.value, effect.low, effect.high, spec)


def _estimate(estimate: Estimate | None, spec: str) -> str:
    return "-" if estimate is None else _interval(estimate.value, estimate.low, estimate.high,
                                                  spec)


def _strength(row: Row) -> str:
    if row.kind == "steering":
        return f"{row.strength:.3g} x norm"
    return f"{row.strength:.3g} step"


def _line(result: Comparison, row: Row) -> str:
    slope = result.slopes[row.arm].mean_slope
    speed = "-" if row.tokens_per_s is None else f"{row.tokens_per_s:.1f}"
    return (f"{row.arm:<15}{_strength(row):>16}  {_effect(row.effect, '+.2f'):<22}"
            f"{row.effect.verdict:<10}{_estimate(slope, '+.2f'):<24}"
            f"{_effect(row.text, '+.2f'):<22}{_estimate(row.perplexity, '.1f'):<20}"
            f"{_estimate(row.perplexity_ratio, '.2f'):<20}"
            f"{_estimate(row.top1_delta, '+.3f'):<24}{speed:>6}")


def comparison_table(result: Comparison) -> str:
    """The table (see the module docstring)."""
    side = "raise" if result.direction == 1 else "lower"
    plain = result.unsteered
    bits = [f"propensity {_estimate(plain['propensity'], '+.2f')} nats"]
    if "perplexity" in plain:
        bits.append(f"perplexity {_estimate(plain['perplexity'], '.1f')}")
        bits.append(f"top-1 {plain['top1'].value:.3f}")
    if "text_score" in plain:
        bits.append(f"{result.text_metric} {plain['text_score']:+.2f}")
    if "tokens_per_s" in plain:
        ratios = ", ".join(f"{kind} x{ratio:.2f}"
                           for kind, ratio in plain.get("speed_ratio", {}).items())
        bits.append(f"{plain['tokens_per_s']:.1f} tok/s" + (f" ({ratios} per round)"
                                                           if ratios else ""))
    lines = [f"{result.behaviour}: positive strengths are meant to {side} it "
             f"({result.n_prompts} held-out prompts); "
             f"unsteered: " + ", ".join(bits), _header(result.text_metric)]
    lines += [_line(result, row) for row in result.rows if not row.matched]
    if result.target is None:
        lines.append(f"matched effect: {result.target_rule}")
    else:
        lines.append(f"matched effect: {result.direction * result.target:+.2f} nats "
                     f"({result.target_rule}); strength interpolated on each ladder, "
                     "then measured")
        for arm, strength in result.matched.items():
            if strength is None:
                reach = result.reach[arm]
                lines.append(f"{arm:<15}{'not reached':>16}  (largest significant effect: "
                             + ("none" if reach is None else f"{result.direction * reach:+.2f}")
                             + ")")
            else:
                lines.append(_line(result, result.row(arm, strength, matched=True)))
    if result.audit:
        lines.append("sign audit (largest strength, the completions the arms were made from; "
                     "log P(behaviour) - log P(contrast), nats):")
        lines += [f"  {arm:<15}{_effect(effect, '+.2f'):<26}{effect.verdict}"
                  for arm, effect in result.audit.items()]
    return "\n".join(lines)
