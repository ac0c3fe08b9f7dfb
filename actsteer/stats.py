"""Bootstrap confidence intervals: the one resampling routine every actsteer metric uses.

Three building blocks, and two estimators made of them:

* :func:`resample_indices` — ``[resample, n]`` item indices drawn with replacement; pass
  the same indices (or the same seed) to everything that must be resampled *together*;
* :func:`percentile_interval` — the percentile interval of bootstrap draws;
* :func:`resampled` — ``values[idx]``, fast;
* :func:`check_level` — validates a confidence level;
* :func:`bootstrap` — one sample (mean, weighted mean or any statistic);
* :func:`paired_bootstrap` — two measurements of the *same* items (steered vs unsteered,
  numerator vs denominator): each resample keeps the pairs together, so the item-to-item
  variation that both sides share cancels out of the interval.

Example::

    est = paired_bootstrap(steered, unsteered)                 # mean per-item difference
    est.value, est.low, est.high
    ratio = paired_bootstrap(hits, base_hits,                  # a paired ratio of sums
                             statistic=lambda a, b: a.sum(-1) / b.sum(-1))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.errors import InvalidValueError

__all__ = [
    "Estimate",
    "PairedStatistic",
    "bootstrap",
    "check_level",
    "paired_bootstrap",
    "percentile_interval",
    "resample_indices",
    "resampled",
]

PairedStatistic = Callable[[Tensor, Tensor], Tensor]
"""Maps two ``[..., n]`` tensors (the same items, resampled together) to ``[...]``."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile-bootstrap interval over ``n`` items."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def check_level(level: float) -> None:
    """Raise ``ValueError`` unless ``0 < level < 1`` (e.g. 0.95 for a 95% interval)."""
    if not 0 < level < 1:
        raise InvalidValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")


def resample_indices(n: int, n_resamples: int, seed: int = 0, *,
                     generator: torch.Generator | None = None) -> Int[Tensor, "resample n"]:
    """``n_resamples`` rows of ``n`` indices in ``[0, n)`` drawn with replacement.

    Deterministic in ``seed``; with ``generator``, draws from it instead (so that two
    successive calls give independent, reproducible resamples of two different sets).

    Example:
        >>> idx = resample_indices(3, 2, seed=0)     # e.g. [[2, 0, 2], [1, 1, 0]]
        >>> values[idx].mean(-1)                     # one bootstrap mean per row
    """
    if n < 1:
        raise InvalidValueError(f"cannot resample {n} items; need at least one")
    if n_resamples < 1:
        raise InvalidValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n_resamples, n), generator=generator)


def percentile_interval(draws: Sequence[float] | Float[Tensor, " resample"],
                        level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``draws`` (linear
    interpolation between order statistics, as ``torch.quantile``)."""
    check_level(level)
    x = torch.as_tensor(draws, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise InvalidValueError("percentile_interval needs at least one draw, got none")
    if torch.isnan(x).any():
        raise InvalidValueError(f"{int(torch.isnan(x).sum())} of {x.numel()} bootstrap draws are "
                                "NaN; drop them (or the resamples that produced them) first")
    tail = (1 - level) / 2
    low, high = torch.quantile(x, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(low), float(high)


def bootstrap(
    values: Sequence[float] | Tensor,
    statistic: Callable[[Tensor], Tensor] | None = None,
    *,
    weights: Sequence[float] | Tensor | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap of ``statistic`` over items (default: the mean; with
    ``weights``, the weighted mean ``sum(w x) / sum(w)``, e.g. token-weighted accuracy over
    documents). ``statistic`` maps a ``[n]`` sample to a scalar; ``weights`` define the
    statistic themselves, so the two are not accepted together."""
    if statistic is not None and weights is not None:
        raise InvalidValueError(
            "bootstrap got both a statistic and weights, but with weights the statistic is "
            "the weighted mean; drop one, or for a weighted statistic of your own use "
            "paired_bootstrap(values, weights, statistic=lambda x, w: ...)")
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise InvalidValueError("cannot bootstrap an empty sample")
    check_level(level)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w is not None and w.shape != x.shape:
        raise InvalidValueError(f"{w.numel()} weights for {x.numel()} values; give one per value")

    def stat(idx: Tensor | None) -> Tensor:
        xs = x if idx is None else resampled(x, idx)
        if w is not None:
            ws = w if idx is None else resampled(w, idx)
            return (xs * ws).sum(-1) / ws.sum(-1).clamp_min(1e-12)
        return statistic(xs) if statistic is not None else xs.mean(-1)

    point = float(stat(None))
    idx = resample_indices(x.numel(), n_resamples, seed)
    if statistic is not None:
        draws = torch.stack([torch.as_tensor(statistic(x[row])) for row in idx])
    else:
        draws = stat(idx)
    low, high = percentile_interval(draws, level)
    return Estimate(point, low, high, int(x.numel()))


def resampled(values: Float[Tensor, " n"], idx: Int[Tensor, "resample n"]
              ) -> Float[Tensor, "resample n"]:
    """``values[idx]`` for 1-D ``values`` (one row per resample). Uses ``index_select``,
    which stays fast when the CPU's threads are busy (plain indexing was ~25x slower on
    a loaded 2-core machine)."""
    return values.index_select(0, idx.flatten()).view(idx.shape)


def _mean_difference(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).mean(-1)


def paired_bootstrap(
    a: Sequence[float] | Float[Tensor, " n"],
    b: Sequence[float] | Float[Tensor, " n"],
    statistic: PairedStatistic | None = None,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap of a statistic of two measurements of the same ``n`` items,
    resampling items (pairs ``(a[i], b[i])``) so both sides always see the same items.

    Args:
        a, b: one value per item each, in the same item order (e.g. a steered and the
            unsteered score of each question).
        statistic: ``f(a, b)`` on ``[..., n]`` tensors returning ``[...]`` (vectorised
            over resamples); default the mean difference ``mean(a - b)``. E.g. a paired
            ratio of sums: ``lambda a, b: a.sum(-1) / b.sum(-1)``.

    Returns:
        :class:`Estimate` of ``statistic(a, b)`` with its interval; ``n`` is the number of
        items. Using one ``seed`` for several comparisons on the same items resamples the
        same items in each, so their intervals are comparable.

    Example:
        >>> paired_bootstrap([0.6, 0.8, 0.7], [0.5, 0.6, 0.6]).value   # ≈ 0.1333
    """
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.shape != y.shape:
        raise InvalidValueError(f"paired samples need one value per item on both sides, got "
                                f"{x.numel()} and {y.numel()} values")
    if x.numel() == 0:
        raise InvalidValueError("cannot bootstrap an empty sample")
    check_level(level)
    stat = statistic if statistic is not None else _mean_difference
    point = torch.as_tensor(stat(x, y))
    if point.numel() != 1:
        raise InvalidValueError(f"the paired statistic returned shape {tuple(point.shape)} for one "
                                "sample; it must reduce the last (item) axis to a scalar")
    idx = resample_indices(x.numel(), n_resamples, seed)
    draws = torch.as_tensor(stat(resampled(x, idx), resampled(y, idx)), dtype=torch.float64)
    if draws.shape != (n_resamples,):
        raise InvalidValueError(
            f"the paired statistic returned shape {tuple(draws.shape)} for "
            f"{n_resamples} resamples; it must reduce the last (item) axis only")
    low, high = percentile_interval(draws, level)
    return Estimate(float(point), low, high, int(x.numel()))
