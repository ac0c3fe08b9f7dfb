"""Numbers derived from a multi-behaviour results file: cells by key, the effect of each
reported plan, interference, steerability rows, and how well the extraction diagnostics
predict steerability."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import torch

from actsteer.errors import InvalidValueError
from actsteer.paper.keys import CellKey, try_parse
from actsteer.paper.multi_behaviour.choose import combined_variant
from actsteer.paper.multi_behaviour.keys import CombinedKey, IndividualKey, SimultaneousKey

K = TypeVar("K", bound=CellKey)

DIAGNOSTICS = ("consistency", "separation", "effect_size")


def cells_of(results: Mapping[str, Any], kind: type[K]) -> Iterator[tuple[K, Any]]:
    """The ``(key, cell)`` pairs of one key class, in file order."""
    for text, found in results["cells"].items():
        key = try_parse(text)
        if isinstance(key, kind):
            yield key, found


def cell(results: Mapping[str, Any], key: CellKey) -> Any:
    return results["cells"].get(str(key))


def simultaneous_scale(results: Mapping[str, Any], behaviour: str) -> tuple[float, bool]:
    """The simultaneous scale reported for ``behaviour``: the one chosen on the grid split
    (``True``), else +1 when it was run (``False``: not chosen, shown for reference)."""
    choice = (results.get("simultaneous_choice") or {}).get(behaviour) or {}
    if choice.get("steerable"):
        return float(choice["scale"]), True
    scales = [float(s) for s in results["config"].get("scales", ()) if s > 0]
    return (1.0 if 1.0 in scales else min(scales, default=1.0)), False


def reported_plans(results: Mapping[str, Any], behaviour: str
                   ) -> list[tuple[str, str, Any]]:
    """The test-split rows of a behaviour: (plan, setting, cell or a reason string)."""
    rows: list[tuple[str, str, Any]] = []
    for direction in ("subtract", "add"):
        pick = results["chosen"].get(behaviour, {}).get(direction) or {}
        found = cell(results, IndividualKey(behaviour, direction))
        if pick.get("steerable") and found is not None:
            rows.append((f"individual {direction}",
                         f"L{pick['layer']} x{pick['multiplier']:+g}", found))
        else:
            rows.append((f"individual {direction}", "-", _reason(pick)))
    variant = combined_variant(results["config"])
    layer = results.get("layers", {}).get("combined")
    for direction in ("subtract", "add"):
        rows.append((f"combined {variant} {direction}", f"L{layer}",
                     cell(results, CombinedKey(variant, direction, behaviour))))
    scale, chosen = simultaneous_scale(results, behaviour)
    rows.append(("simultaneous", f"scale {scale:+g}" + ("" if chosen else " (not chosen)"),
                 cell(results, SimultaneousKey(scale, behaviour, "test"))))
    return rows


def _reason(pick: Mapping[str, Any]) -> str:
    if not pick:
        return "not run"
    text = str(pick.get("reason", "not steerable at these settings"))
    effect = pick.get("effect")
    if effect is not None and pick.get("multiplier") is not None:
        text += (f"; best on the grid split L{pick['layer']} x{pick['multiplier']:+g}: "
                 f"{_effect_text(effect)}")
    return text


def _effect_text(effect: Mapping[str, Any], digits: int = 3) -> str:
    return (f"Δ {effect['value']:+.{digits}f} [{effect['low']:+.{digits}f}, "
            f"{effect['high']:+.{digits}f}]")


def interference(results: Mapping[str, Any], metric: str = "p_matching"
                 ) -> dict[str, dict[str, Any]]:
    """Per behaviour: the paired effect of its own vector added (individual), of the
    combined vector added, and of simultaneous steering at the reported scale, and each
    of the latter as a share of the individual effect (below 1: the other behaviours'
    vectors interfere). Effects are dicts (value, low, high, verdict, ...) or ``None``."""
    variant = combined_variant(results["config"])
    out: dict[str, dict[str, Any]] = {}
    for behaviour in results["behaviours"]:
        scale, _ = simultaneous_scale(results, behaviour)
        row: dict[str, Any] = {}
        for name, key in (("individual", IndividualKey(behaviour, "add")),
                          ("combined", CombinedKey(variant, "add", behaviour)),
                          ("simultaneous", SimultaneousKey(scale, behaviour, "test"))):
            found = cell(results, key)
            row[name] = None if found is None else found["effects"][metric]
        own = row["individual"]
        for name in ("combined", "simultaneous"):
            other = row[name]
            row[f"{name}_share"] = (None if own is None or other is None
                                    or abs(own["value"]) < 1e-9
                                    else other["value"] / own["value"])
        out[behaviour] = row
    return out


def steerability_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per behaviour × profiled layer: summary, diagnostics and verdict."""
    rows = []
    for behaviour, by_layer in (results.get("steerability") or {}).items():
        for layer, entry in by_layer.items():
            rows.append({"behaviour": behaviour, "layer": int(layer), **entry})
    return rows


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks with ties averaged (1-based)."""
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=values.dtype)
    for value in values.unique():
        tied = values == value
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rank correlation (``None`` for fewer than 3 pairs or a constant side)."""
    if len(x) != len(y):
        raise InvalidValueError(f"{len(x)} values against {len(y)}; give pairs")
    if len(x) < 3:
        return None
    rx = _ranks(torch.tensor(x, dtype=torch.float64))
    ry = _ranks(torch.tensor(y, dtype=torch.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(rx.norm() * ry.norm())
    return None if denominator == 0 else float((rx * ry).sum()) / denominator


def diagnostics_vs_steerability(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Rank correlation, across every behaviour × profiled layer, between each extraction
    diagnostic and the mean per-item steerability (Braun et al. 2025 report that the
    diagnostics predict steering reliability); also within layers of one behaviour, where
    the vector norm's growth with depth does not mix in."""
    rows = [r for r in steerability_rows(results) if r.get("diagnostics")]
    out: dict[str, dict[str, Any]] = {}
    for name in DIAGNOSTICS:
        usable = [r for r in rows if r["diagnostics"].get(name) is not None
                  and math.isfinite(r["diagnostics"][name])]
        xs = [float(r["diagnostics"][name]) for r in usable]
        ys = [float(r["summary"]["mean_slope"]["value"]) for r in usable]
        within = {}
        for behaviour in {r["behaviour"] for r in usable}:
            own = [r for r in usable if r["behaviour"] == behaviour]
            within[behaviour] = spearman([float(r["diagnostics"][name]) for r in own],
                                         [float(r["summary"]["mean_slope"]["value"])
                                          for r in own])
        out[name] = {"rho": spearman(xs, ys), "n": len(usable), "within": within}
    return out


def resolution(results: Mapping[str, Any], behaviour: str,
               metric: str = "p_matching") -> tuple[int, float] | None:
    """The test items of ``behaviour`` and the effect on ``metric`` they resolve at 80%
    power (the median minimum detectable effect over its test-split cells)."""
    found = [c["effects"][metric] for key, c in cells_of(results, CellKey)
             if isinstance(key, (IndividualKey, CombinedKey, SimultaneousKey))
             and key.behaviour == behaviour and getattr(key, "split", "test") == "test"
             and c["effects"][metric].get("mde") is not None]
    if not found:
        return None
    mdes = sorted(e["mde"] for e in found)
    return int(found[0]["n"]), float(mdes[len(mdes) // 2])
