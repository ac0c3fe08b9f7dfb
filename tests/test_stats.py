"""The one bootstrap: resampling, percentile intervals, one-sample and paired estimates."""

from __future__ import annotations

import pytest
import torch

from actsteer.errors import InvalidValueError
from actsteer.stats import (
    Estimate,
    bootstrap,
    paired_bootstrap,
    percentile_interval,
    resample_indices,
    resampled,
)


def test_resample_indices_are_seeded_in_range_and_generator_continues():
    first = resample_indices(7, 50, seed=3)
    assert first.shape == (50, 7) and first.dtype == torch.long
    assert int(first.min()) >= 0 and int(first.max()) <= 6
    assert torch.equal(first, resample_indices(7, 50, seed=3))
    assert not torch.equal(first, resample_indices(7, 50, seed=4))
    # a shared generator gives two different, reproducible draws in sequence
    gen = torch.Generator().manual_seed(3)
    a, b = resample_indices(7, 50, generator=gen), resample_indices(7, 50, generator=gen)
    assert torch.equal(a, first) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="0 items"):
        resample_indices(0, 10)
    with pytest.raises(ValueError, match="n_resamples"):
        resample_indices(3, 0)


def test_resampled_equals_plain_indexing():
    values = torch.arange(10, dtype=torch.float64) ** 2
    idx = resample_indices(10, 20, seed=1)
    assert torch.equal(resampled(values, idx), values[idx])


def test_percentile_interval_of_known_draws():
    draws = torch.arange(101, dtype=torch.float64)  # 0 .. 100
    assert percentile_interval(draws, 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(draws.tolist(), 0.5) == pytest.approx((25.0, 75.0))
    with pytest.raises(ValueError, match="no"):
        percentile_interval([], 0.9)
    with pytest.raises(ValueError, match="NaN"):
        percentile_interval([1.0, float("nan")], 0.9)
    with pytest.raises(ValueError, match="level"):
        percentile_interval(draws, 95)


def test_bootstrap_is_the_percentile_interval_of_resampled_means():
    values = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    est = bootstrap(values, n_resamples=300, level=0.8, seed=5)
    means = values[resample_indices(8, 300, seed=5)].mean(-1)
    assert est == Estimate(0.625, *percentile_interval(means, 0.8), 8)
    custom = bootstrap(values, lambda x: x.max() - x.min(), n_resamples=50, seed=5)
    assert custom.value == 1.0 and custom.low <= custom.high <= 1.0
    assert bootstrap([2.0] * 5) == Estimate(2.0, 2.0, 2.0, 5)
    with pytest.raises(ValueError, match="empty"):
        bootstrap([])


def test_paired_mean_difference_is_the_bootstrap_of_the_differences():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, generator=gen, dtype=torch.float64)
    b = torch.randn(30, generator=gen, dtype=torch.float64)
    paired = paired_bootstrap(a, b, n_resamples=400, seed=2)
    assert paired.value == pytest.approx(float((a - b).mean()))
    direct = bootstrap(a - b, n_resamples=400, seed=2)
    assert (paired.low, paired.high) == pytest.approx((direct.low, direct.high), abs=1e-12)


def test_paired_interval_ignores_what_both_sides_share():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(40, generator=gen, dtype=torch.float64)
    b = a - 0.5 + 0.1 * torch.randn(40, generator=gen, dtype=torch.float64)
    shared = 100.0 * torch.randn(40, generator=gen, dtype=torch.float64)
    plain = paired_bootstrap(a, b, seed=3)
    shifted = paired_bootstrap(a + shared, b + shared, seed=3)
    assert (shifted.value, shifted.low, shifted.high) == pytest.approx(
        (plain.value, plain.low, plain.high), abs=1e-9)
    assert 0.45 < plain.low < plain.high < 0.55


def test_paired_statistic_ratio_of_sums():
    hits = torch.tensor([3.0, 5.0, 2.0, 4.0])
    base = torch.tensor([4.0, 5.0, 4.0, 5.0])
    est = paired_bootstrap(hits, base, lambda x, y: x.sum(-1) / y.sum(-1), seed=0)
    assert est.value == pytest.approx(14 / 18) and est.n == 4
    assert est.low <= est.value <= est.high
    with pytest.raises(ValueError, match="last"):
        paired_bootstrap(hits, base, lambda x, y: x - y)
    with pytest.raises(ValueError, match="4 and 3"):
        paired_bootstrap(hits, base[:3])


def test_bootstrap_refuses_a_statistic_with_weights():
    """The weighted mean would silently replace the statistic; refuse the pair."""
    with pytest.raises(InvalidValueError, match=r"statistic.*weights.*weighted mean"):
        bootstrap([1.0, 0.0, 1.0], lambda x: x.max(-1).values, weights=[1.0, 2.0, 3.0])
    weighted = bootstrap([1.0, 0.0], weights=[3.0, 1.0], n_resamples=50)  # alone: still fine
    assert weighted.value == 0.75
