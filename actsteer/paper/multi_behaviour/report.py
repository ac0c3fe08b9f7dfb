"""The multi-behaviour report: paired effects with intervals, and what they let one claim.

Every effect is the per-item difference against the unsteered model on the same test
items, ``Δ value [95% CI]``; "moves", "reversed" and "no effect" are read from that
interval against the plan's intended direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actsteer.effects import paired_effect
from actsteer.paper.multi_behaviour.analysis import (
    _effect_text,
    cell,
    cells_of,
    diagnostics_vs_steerability,
    interference,
    reported_plans,
    resolution,
    steerability_rows,
)
from actsteer.paper.multi_behaviour.keys import DefaultKey, LetterFreeKey, TaxKey
from actsteer.results import read_results

METRIC_TITLES = {"p_matching": "P(matching | the two answers)",
                 "matching_rate": "matching rate (argmax is the matching answer, as the paper)",
                 "logit_diff": "logit(matching) - logit(non-matching)"}


def _width(results: Mapping[str, Any]) -> int:
    return max(10, *(len(b) for b in results["behaviours"])) + 2


def effects_table(results: Mapping[str, Any], metric: str = "p_matching") -> list[str]:
    """One row per behaviour × reported plan: setting, unsteered value, Δ [CI], verdict;
    or why nothing was chosen."""
    width = _width(results)
    plans = {b: reported_plans(results, b) for b in results["behaviours"]}
    plan_width = max([12, *(len(p[0]) + 2 for rows in plans.values() for p in rows)])
    setting_width = max([12, *(len(p[1]) + 2 for rows in plans.values() for p in rows
                               if isinstance(p[2], Mapping))])
    lines = [f"{METRIC_TITLES[metric]}, test split: paired Δ against the unsteered model",
             f"{'behaviour':<{width}}{'plan':<{plan_width}}{'setting':<{setting_width}}"
             f"{'unsteered':>10}  {'Δ [95% CI]':<30}verdict"]
    lines.append("-" * len(lines[-1]))
    for behaviour in results["behaviours"]:
        base = cell(results, DefaultKey(behaviour, "test"))
        unsteered = "-" if base is None else f"{base[metric]['value']:.3f}"
        for plan, setting, found in plans[behaviour]:
            prefix = f"{behaviour:<{width}}{plan:<{plan_width}}"
            if isinstance(found, str) or found is None:
                lines.append(prefix + (found or "not run"))
                continue
            effect = found["effects"][metric]
            lines.append(prefix + f"{setting:<{setting_width}}{unsteered:>10}  "
                         f"{_effect_text(effect):<30}{effect['verdict']}")
    return lines


def steerability_table(results: Mapping[str, Any]) -> list[str]:
    """Per behaviour: the profiled layers by verdict, then the grid layers and the most
    steerable layer in full (mean slope, anti-steerable share, by matching label,
    extraction diagnostics)."""
    rows = steerability_rows(results)
    if not rows:
        return []
    width = _width(results)
    multipliers = results["config"].get("steerability_multipliers", [])
    listed = ", ".join(f"{m:g}" for m in multipliers)
    lines = [f"per-item steerability, test split: slope of the propensity logit(matching) - "
             f"logit(non-matching) per unit multiplier ({listed})",
             f"{'behaviour':<{width}}{'layer':>5}  {'mean slope [95% CI]':<28}{'anti share':>11}"
             f"  {'by label (mean slope)':<26}{'consist.':>9}{'separ.':>8}  verdict"]
    lines.append("-" * len(lines[-1]))
    grid = set(results.get("layers", {}).get("grid", []))
    for behaviour in results["behaviours"]:
        own = [r for r in rows if r["behaviour"] == behaviour]
        if not own:
            continue
        best = max(own, key=lambda r: r["summary"]["mean_slope"]["low"])
        for row in own:
            if row["layer"] in grid or row is best:
                lines.append(_steerability_line(row, width))
        groups: dict[str, list[int]] = {}
        for row in own:
            groups.setdefault(row["verdict"], []).append(row["layer"])
        lines.append(f"{'':<{width}}layers: " + "; ".join(
            f"{verdict} {_spans(layers)}" for verdict, layers in sorted(groups.items())))
    return lines


def _steerability_line(row: Mapping[str, Any], width: int) -> str:
    summary, diag = row["summary"], row.get("diagnostics") or {}
    slope, anti = summary["mean_slope"], summary["anti_share"]
    labels = " ".join(f"{label} {entry['mean_slope']['value']:+.3f}"
                      for label, entry in (summary.get("by_label") or {}).items())

    def number(name: str) -> str:
        value = diag.get(name)
        return "-" if value is None else f"{value:.2f}"

    interval = f"{slope['value']:+.4f} [{slope['low']:+.4f}, {slope['high']:+.4f}]"
    return (f"{row['behaviour']:<{width}}{row['layer']:>5}  {interval:<28}{anti['value']:>11.0%}"
            f"  {labels:<26}{number('consistency'):>9}{number('separation'):>8}  "
            f"{row['verdict']}")


def _spans(layers: list[int]) -> str:
    """``[3, 4, 5, 9]`` → ``"3-5, 9"``."""
    runs: list[list[int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def interference_table(results: Mapping[str, Any]) -> list[str]:
    width = _width(results)
    lines = ["interference: ΔP(matching) of the behaviour's own vector added, of the combined "
             "vector added, and of simultaneous steering (share of the individual effect)"]
    for behaviour, row in interference(results).items():
        parts = []
        for name in ("individual", "combined", "simultaneous"):
            effect = row[name]
            text = "-" if effect is None else _effect_text(effect)
            share = row.get(f"{name}_share")
            parts.append(f"{name} {text}" + ("" if share is None else f" ({share:.2f}x)"))
        lines.append(f"{behaviour:<{width}}" + "; ".join(parts))
    return lines


def letter_free_table(results: Mapping[str, Any]) -> list[str]:
    """The reported plans measured on the answer texts (no letters): paired Δ of
    log P(matching text) − log P(other text), summed over tokens and per token.

    The verdict reads the per-token Δ: the summed Δ grows with an item's answer length,
    so its mean over items is weighted towards the items with long answers, while per
    token every item counts alike. The intended direction is the cell's ``direction``
    (the sign the plan gives the behaviour's vector, recorded when it was scored); a cell
    without one gets the verdict ``?``."""
    found = [(key, c) for key, c in cells_of(results, LetterFreeKey)]
    if not found:
        return []
    width = _width(results)
    lines = ["letter-free, test split: log P(matching answer text) - log P(other answer text) "
             "after the question without letters; paired Δ against the unsteered model (nats)",
             f"{'behaviour':<{width}}{'plan':<34}{'n':>4}{'unsteered':>11}  "
             f"{'Δ summed [95% CI]':<27}{'Δ per token [95% CI]':<27} verdict"]
    lines.append("-" * len(lines[-1]))
    for behaviour in results["behaviours"]:
        base = cell(results, LetterFreeKey(behaviour, "unsteered"))
        if base is None:
            continue
        for key, found_cell in found:
            if key.behaviour != behaviour or key.plan == "unsteered":
                continue
            direction = found_cell.get("direction")
            summed = paired_effect(found_cell["summed"], base["summed"],
                                   direction=direction or 1)
            per_token = paired_effect(found_cell["per_token"], base["per_token"],
                                      direction=direction or 1)
            mean = sum(base["summed"]) / len(base["summed"])
            lines.append(f"{behaviour:<{width}}{key.plan:<34}{base['n']:>4}{mean:>+11.2f}  "
                         f"{format(summed, '.3f'):<27}{format(per_token, '.4f'):<27} "
                         f"{per_token.verdict if direction else '?'}")
    return lines


def summary_table(results: Mapping[str, Any]) -> str:
    """The full plain-text report of a run."""
    lines = [*effects_table(results, "p_matching"), ""]
    lines += [*effects_table(results, "matching_rate"), ""]
    free = letter_free_table(results)
    if free:
        lines += [*free, ""]
    width = _width(results)
    lines.append("what the test split can resolve (80% power, 95% intervals):")
    for behaviour in results["behaviours"]:
        found = resolution(results, behaviour)
        lines.append(f"{behaviour:<{width}}" + ("-" if found is None else
                     f"n = {found[0]} items: |ΔP(matching)| >= {found[1]:.3f}"))
    lines.append("")
    lines += [*interference_table(results), ""]
    steer = steerability_table(results)
    if steer:
        lines += steer
        correlations = diagnostics_vs_steerability(results)
        lines.append("diagnostics vs mean steerability, Spearman rank correlation over "
                     "behaviours x layers: " + ", ".join(
                         f"{name} {_rho(c['rho'])} (n={c['n']})"
                         for name, c in correlations.items()))
        lines.append("")
    tax = sorted((key.scale, found) for key, found in cells_of(results, TaxKey))
    if tax:
        lines.append("alignment tax, next-token top-1 on text under the simultaneous plan: "
                     + ", ".join(f"{scale:+g}: {found['top1']['value']:.3f}"
                                 + ("" if "effect" not in found else
                                    f" ({_effect_text(found['effect'])})")
                                 for scale, found in tax))
    return "\n".join(lines)


def _rho(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def load_results(path: str | Path) -> dict[str, Any]:
    """A finished ``multi_behaviour.jsonl`` in the shape ``run`` returns."""
    return read_results(path, needs=("behaviours", "chosen", "coefficients", "layers"))
