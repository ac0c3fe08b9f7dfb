"""Decisions of the multi-behaviour experiment, each made from evidence and recorded with
its reason: when a grid cell failed, which setting (or simultaneous scale) is chosen, and
the combined plans built from the choices."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from actsteer.paper.common import ConfigError
from actsteer.paper.multi_behaviour.config import COMBINED_VARIANTS, MultiBehaviourConfig
from actsteer.plan import SteeringPlan, combined
from actsteer.vector import SteeringVector

logger = logging.getLogger(__name__)


def failure(cell: Mapping[str, Any], default: Mapping[str, Any],
            config: MultiBehaviourConfig) -> str | None:
    """Why a steered cell does not count as a steering result, or ``None``.

    * collapse: one answer token for more than ``max_top_share`` of items — detectable only
      when the unsteered model is not collapsed already (small models often answer "A");
    * faulty: more than ``max_faulty`` of answers are neither answer, and more than
      unsteered (a model that is already this faulty can still be steered).
    """
    share, base_share = cell["top_answer_share"], default["top_answer_share"]
    if base_share <= config.max_top_share < share:
        return (f"collapse: one answer for {share:.0%} of items (max_top_share "
                f"{config.max_top_share:.0%}; unsteered {base_share:.0%})")
    faulty, base_faulty = cell["faulty_rate"]["value"], default["faulty_rate"]["value"]
    if faulty > config.max_faulty and faulty > base_faulty:
        return (f"faulty: {faulty:.0%} of answers are neither answer (max_faulty "
                f"{config.max_faulty:.0%}; unsteered {base_faulty:.0%})")
    return None


def choose(cells: Sequence[Mapping[str, Any]], direction: int, metric: str, *,
           setting: str = "multiplier") -> dict[str, Any]:
    """The setting whose paired effect on ``metric`` moves the behaviour in ``direction``
    (+1 add, -1 subtract): among cells of that sign that did not fail and whose interval
    excludes 0 on the intended side, the largest effect (then the smaller |setting|).

    Returns ``{"steerable": True, setting: ..., "effect": ..., ...}``; when no cell
    qualifies, ``{"steerable": False, "reason": ...}`` with the closest candidate's numbers,
    so a report can say why ("not steerable at these settings").
    """
    signed = [c for c in cells if math.copysign(1, c[setting]) == direction]
    usable = [c for c in signed if not c.get("failed")]

    def rank(cell: Mapping[str, Any]) -> tuple[float, float]:
        return direction * cell["effects"][metric]["value"], -abs(cell[setting])

    def describe(cell: Mapping[str, Any]) -> dict[str, Any]:
        return {setting: cell[setting], "layer": cell.get("layer"),
                "effect": dict(cell["effects"][metric])}

    moving = [c for c in usable if c["effects"][metric]["verdict"] == "moves"]
    if moving:
        return {"steerable": True, **describe(max(moving, key=rank)), "reason": "moves"}
    if not signed:
        return {"steerable": False, "reason": f"no {'positive' if direction > 0 else 'negative'}"
                                              f" {setting} was tried"}
    if not usable:
        return {"steerable": False, **describe(max(signed, key=rank)),
                "reason": "every setting failed; first: " + str(signed[0]["failed"])}
    best = max(usable, key=rank)
    effect = best["effects"][metric]
    why = "reversed" if effect["verdict"] == "reversed" else "interval includes 0"
    return {"steerable": False, **describe(best),
            "reason": f"not steerable at these settings ({why} at best)"}


def describe_pick(pick: Mapping[str, Any], *, setting: str = "multiplier") -> str:
    """One line for a :func:`choose` result, e.g. ``L14 x-8: -0.213 [-0.305, -0.121]
    moves`` or ``not steerable (interval includes 0 at best; closest L14 x8: ...)``."""
    where = ""
    if pick.get(setting) is not None:
        layer = pick.get("layer")
        where = f"{'' if layer is None else f'L{layer} '}x{pick[setting]:g}"
        effect = pick.get("effect")
        if effect:
            where += (f": {effect['value']:+.3f} [{effect['low']:+.3f}, "
                      f"{effect['high']:+.3f}] {effect['verdict']}")
    if pick.get("steerable"):
        return where
    return f"not steerable ({pick['reason']}{'; closest ' + where if where else ''})"


def add_coefficient(behaviour: str, pick: Mapping[str, Any], config: MultiBehaviourConfig
                    ) -> tuple[float, str]:
    """The coefficient combined and simultaneous steering give ``behaviour``, and where it
    came from: its chosen add multiplier, or (when no add setting moved it) the smallest
    positive grid multiplier, so the other steps still have a weight for it."""
    if pick.get("steerable"):
        return float(pick["multiplier"]), "chosen"
    fallback = min(m for m in config.grid_multipliers if m > 0)
    logger.warning("%s: no add multiplier moved it on the grid split; combined and "
                   "simultaneous steering give it the smallest positive one, %g",
                   behaviour, fallback)
    return fallback, "fallback: no add setting moved the behaviour"


def combined_plan(vectors: Mapping[str, SteeringVector], layer: int, variant: str,
                  add_coefficients: Mapping[str, float], sign: float) -> SteeringPlan:
    """The combined plan of ``variant``: ``sum``/``mean`` of the vectors (coefficient: the
    mean add coefficient) or ``weighted_sum``/``weighted_mean`` (weights: each behaviour's
    add coefficient, coefficient 1), times ``sign``."""
    if variant not in COMBINED_VARIANTS:
        raise ConfigError(f"unknown combined variant {variant!r}; use "
                          f"{', '.join(COMBINED_VARIANTS)}")
    mode = "mean" if variant.endswith("mean") else "sum"
    if variant.startswith("weighted"):
        weights = {b: add_coefficients[b] for b in vectors}
        return combined(dict(vectors), layer, weights=weights, mode=mode,  # type: ignore[arg-type]
                        coefficient=sign)
    coefficient = sum(abs(add_coefficients[b]) for b in vectors) / len(vectors)
    return combined(dict(vectors), layer, mode=mode,  # type: ignore[arg-type]
                    coefficient=sign * coefficient)


def combined_variant(config: Mapping[str, Any]) -> str:
    """The combined variant a report shows: ``weighted_mean`` (the paper's) when run."""
    variants = list(config.get("combined_variants") or ["weighted_mean"])
    return "weighted_mean" if "weighted_mean" in variants else variants[0]
