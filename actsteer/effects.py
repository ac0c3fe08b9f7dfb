"""Paired effects of steering: per-item differences against the unsteered model.

A steering plan and the unsteered model answer the *same* items, so the effect of the
plan is the mean over items of (steered − unsteered), and its interval comes from a
paired bootstrap (:func:`actsteer.stats.paired_bootstrap`). Pairing removes the large
item-to-item variation both runs share, so the interval is much narrower than the
difference of two separate intervals, and an :class:`Effect` also carries the spread of
the differences, which sizes the design: the smallest effect ``n`` items resolve
(:func:`minimum_detectable_effect`) and the items a given effect needs (:func:`items_needed`).

The verdict is read only from the interval, against the direction the plan intends:
``"moves"`` (excludes 0 on the intended side), ``"reversed"`` (excludes 0 on the other)
or ``"no effect"`` (includes 0).

Example::

    scores = score_items(model, prepare_items(model, dataset),
                         [empty_plan(), single(v, 14, 8.0), single(v, 14, -8.0)])
    up = ab_effect(scores, 1, metric="p_matching")
    down = ab_effect(scores, 2, metric="p_matching", direction=-1)
    print(up, up.verdict)            # Δ +0.031 [+0.012, +0.050] moves
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.errors import InvalidValueError
from actsteer.evaluation import MATCHING, ABScores
from actsteer.stats import check_level, paired_bootstrap

__all__ = [
    "AB_METRICS",
    "ABMetric",
    "Effect",
    "Verdict",
    "ab_effect",
    "ab_effects",
    "items_needed",
    "minimum_detectable_effect",
    "paired_effect",
    "plan_effects",
    "verdict_of",
]

Verdict = Literal["moves", "reversed", "no effect"]
ABMetric = Literal["matching_rate", "p_matching", "logit_diff"]
AB_METRICS: tuple[ABMetric, ...] = ("matching_rate", "p_matching", "logit_diff")
"""Per-item A/B metrics: 1 if the argmax is the matching answer else 0; P(matching | the
two answers); logit(matching) − logit(non-matching)."""


def _check_direction(direction: int) -> None:
    if direction not in (1, -1):
        raise InvalidValueError(f"direction must be +1 (the plan should raise the metric) or -1 "
                                f"(lower it), got {direction!r}")


def verdict_of(low: float, high: float, direction: int = 1) -> Verdict:
    """``"moves"`` when ``[low, high]`` excludes 0 on the side of ``direction`` (+1 up,
    −1 down), ``"reversed"`` when it excludes 0 on the other side, else ``"no effect"``."""
    _check_direction(direction)
    if low > high:
        raise InvalidValueError(f"interval [{low}, {high}] has low > high")
    if low > 0:
        return "moves" if direction == 1 else "reversed"
    if high < 0:
        return "moves" if direction == -1 else "reversed"
    return "no effect"


def _z(level: float, power: float) -> float:
    check_level(level)
    if not 0 < power < 1:
        raise InvalidValueError(f"power must be in (0, 1), e.g. 0.8, got {power!r}")
    normal = NormalDist()
    return normal.inv_cdf(1 - (1 - level) / 2) + normal.inv_cdf(power)


def minimum_detectable_effect(sd: float, n: int, *, level: float = 0.95,
                              power: float = 0.8) -> float:
    """Smallest true mean difference that a two-sided test at ``level`` detects with
    probability ``power``, for paired differences with standard deviation ``sd`` over
    ``n`` items: ``(z_{1-α/2} + z_power) · sd / sqrt(n)`` (2.80 · sd / sqrt(n) at 95%/80%).

    Example:
        >>> round(minimum_detectable_effect(0.1, 100), 4)     # 0.028
        0.028
    """
    if n < 1:
        raise InvalidValueError(f"n must be >= 1 item, got {n}")
    if not sd >= 0:
        raise InvalidValueError(f"sd must be a non-negative number, got {sd!r}")
    return _z(level, power) * sd / math.sqrt(n)


def items_needed(effect: float, sd: float, *, level: float = 0.95, power: float = 0.8) -> int:
    """Items needed so that :func:`minimum_detectable_effect` is at most ``|effect|``:
    ``ceil(((z_{1-α/2} + z_power) · sd / effect)²)``, at least 1.

    Example:
        >>> items_needed(0.05, 0.1)       # (2.80 * 0.1 / 0.05)² = 31.4
        32
    """
    if effect == 0 or not math.isfinite(effect):
        raise InvalidValueError(f"effect must be a finite non-zero size, got {effect!r}")
    if not sd >= 0:
        raise InvalidValueError(f"sd must be a non-negative number, got {sd!r}")
    needed = (_z(level, power) * sd / abs(effect)) ** 2
    # a hair of tolerance so that items_needed(minimum_detectable_effect(sd, n), sd) == n
    return max(1, math.ceil(needed - 1e-9))


@dataclass(frozen=True)
class Effect:
    """Mean per-item difference (plan − unsteered) of ``metric`` over ``n`` paired items,
    with a paired-bootstrap interval at ``level``.

    ``sd`` (standard deviation of the per-item differences, NaN for one item) sizes the
    design; ``direction`` is the intended sign (+1: the plan should raise the metric).
    ``format(effect, ".2f")`` chooses the digits; ``str`` gives 3 decimals.
    """

    metric: str
    value: float
    low: float
    high: float
    n: int
    sd: float
    level: float = 0.95
    direction: int = 1

    def __post_init__(self) -> None:
        _check_direction(self.direction)
        check_level(self.level)

    @property
    def verdict(self) -> Verdict:
        """Read from the interval only, against :attr:`direction`."""
        return verdict_of(self.low, self.high, self.direction)

    def mde(self, power: float = 0.8) -> float:
        """Minimum detectable effect of this design (this ``sd`` and ``n``, at ``level``)."""
        return minimum_detectable_effect(self.sd, self.n, level=self.level, power=power)

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"Δ {self.value:+{spec}} [{self.low:+{spec}}, {self.high:+{spec}}]"

    def __str__(self) -> str:
        return format(self, "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, the verdict and the 80%-power minimum detectable effect."""
        sd = None if math.isnan(self.sd) else self.sd
        return {"metric": self.metric, "value": self.value, "low": self.low,
                "high": self.high, "n": self.n, "sd": sd, "level": self.level,
                "direction": self.direction, "verdict": self.verdict,
                "mde": None if sd is None else self.mde()}


def paired_effect(
    treated: Sequence[float] | Float[Tensor, " item"],
    baseline: Sequence[float] | Float[Tensor, " item"],
    *,
    metric: str = "",
    direction: int = 1,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Effect:
    """The :class:`Effect` of ``treated`` against ``baseline``, both one value per item in
    the same item order (e.g. each question's P(matching) steered and unsteered)."""
    _check_direction(direction)
    estimate = paired_bootstrap(treated, baseline, n_resamples=n_resamples, level=level,
                                seed=seed)
    diffs = (torch.as_tensor(treated, dtype=torch.float64).flatten()
             - torch.as_tensor(baseline, dtype=torch.float64).flatten())
    sd = float(diffs.std()) if diffs.numel() > 1 else float("nan")
    return Effect(metric, estimate.value, estimate.low, estimate.high, estimate.n, sd,
                  level, direction)


def plan_effects(
    values: Float[Tensor, "plan item"],
    base_index: int = 0,
    *,
    metric: str = "",
    directions: Sequence[int] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[Effect | None]:
    """Effect of every plan (row of ``values``) against row ``base_index`` on the same
    items; ``None`` at ``base_index`` itself. One ``seed`` resamples the same items for
    every plan. ``directions``: the intended sign per plan (default +1 for all)."""
    if values.dim() != 2:
        raise InvalidValueError(f"values must be [plan, item], got shape {tuple(values.shape)}")
    n_plans = int(values.shape[0])
    if not -n_plans <= base_index < n_plans:
        raise InvalidValueError(f"base_index {base_index} is not a plan of {n_plans}; pass the row "
                                "of the unsteered plan")
    base = base_index % n_plans
    signs = [1] * n_plans if directions is None else list(directions)
    if len(signs) != n_plans:
        raise InvalidValueError(f"{len(signs)} directions for {n_plans} plans; give one per plan")
    return [None if row == base else
            paired_effect(values[row], values[base], metric=metric, direction=signs[row],
                          n_resamples=n_resamples, level=level, seed=seed)
            for row in range(n_plans)]


def _metric_values(scores: ABScores, metric: str) -> Float[Tensor, "plan item"]:
    if metric == "matching_rate":
        return (scores.klass == MATCHING).double()
    if metric == "p_matching":
        return scores.p_matching.double()
    if metric == "logit_diff":
        return scores.logit_diff.double()
    raise InvalidValueError(f"unknown A/B metric {metric!r}; use one of {', '.join(AB_METRICS)}")


def ab_effect(
    scores: ABScores,
    plan_index: int,
    base_index: int = 0,
    *,
    metric: ABMetric = "p_matching",
    direction: int = 1,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Effect:
    """Effect of plan ``plan_index`` against plan ``base_index`` (the unsteered model) in
    :func:`actsteer.evaluation.score_items` scores: Δ matching rate (share of all items,
    faulty answers count as not matching), Δ P(matching) or Δ logit difference."""
    values = _metric_values(scores, metric)
    n_plans = int(values.shape[0])
    for name, index in (("plan_index", plan_index), ("base_index", base_index)):
        if not -n_plans <= index < n_plans:
            raise InvalidValueError(f"{name} {index} is not a plan of the {n_plans} scored")
    if plan_index % n_plans == base_index % n_plans:
        raise InvalidValueError(f"plan_index and base_index are both plan {plan_index % n_plans}; "
                                "an effect compares a plan with another (the unsteered one)")
    return paired_effect(values[plan_index], values[base_index], metric=metric,
                         direction=direction, n_resamples=n_resamples, level=level, seed=seed)


def ab_effects(
    scores: ABScores,
    plan_index: int,
    base_index: int = 0,
    *,
    direction: int = 1,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Effect]:
    """:func:`ab_effect` for each of :data:`AB_METRICS`, keyed by metric name."""
    return {metric: ab_effect(scores, plan_index, base_index, metric=metric,
                              direction=direction, n_resamples=n_resamples, level=level,
                              seed=seed)
            for metric in AB_METRICS}
