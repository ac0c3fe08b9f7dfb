"""The plain-text table of a :class:`~actsteer.surgery.compare.Comparison`.

One line per (arm, strength): the behaviour's Δ [95% CI] and verdict, the arm's slope
[CI] per unit of its strength, the VADER Δ of generated text, perplexity [CI] with its
paired ratio to the unsteered model, the paired Δ of next-token top-1, and generation
tokens/s; then the matched-effect rows and the sign audit. Columns that were not measured
print as ``-``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actsteer.effects import Effect
from actsteer.stats import Estimate

if TYPE_CHECKING:
    from actsteer.surgery.compare import Comparison, Row

__all__ = ["comparison_table"]



def _header(text_metric: str) -> str:
    return (f"{'method':<15}{'strength':>16}  {'Δ behaviour [95% CI]':<22}{'verdict':<10}"
            f"{'slope [CI] /unit':<24}{text_metric + ' Δ [CI]':<22}{'perplexity [CI]':<20}"
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
