"""Extraction methods as aggregators: built-ins by name, user callables, their checks."""

from __future__ import annotations

import functools

import pytest
import torch

from actsteer.aggregators import AGGREGATORS, mean_diff, per_layer, resolve_aggregator
from actsteer.extraction import (
    ContrastivePair,
    caa_vector,
    contrastive_activations,
    directions_from_pairs,
)

PAIRS = [ContrastivePair(f"Item {i}: is {'rain ' * (i + 1)}wet? (", "A", "B") for i in range(4)]


def test_names_map_to_the_built_in_aggregators():
    for name, aggregate in AGGREGATORS.items():
        assert resolve_aggregator(name) == (name, aggregate)
        assert aggregate.__name__ == name
    with pytest.raises(ValueError, match=r"'lda'.*mean_diff, pca, probe"):
        resolve_aggregator("lda")
    with pytest.raises(TypeError, match="callable"):
        resolve_aggregator(3)  # type: ignore[arg-type]


def test_callables_are_named_by_their_name():
    def median_diff(p, n):
        return (p - n).median(0).values

    assert resolve_aggregator(median_diff)[0] == "median_diff"
    assert resolve_aggregator(lambda p, n: p.mean(0))[0] == "custom"
    assert resolve_aggregator(functools.partial(mean_diff))[0] == "custom"


def test_per_layer_applies_a_one_layer_direction_to_each_layer():
    gen = torch.Generator().manual_seed(0)
    positive, negative = torch.randn(5, 3, 4, generator=gen), torch.randn(5, 3, 4, generator=gen)

    def first_pair(p, n):
        return p[0] - n[0]

    lifted = per_layer(first_pair)
    assert lifted.__name__ == "first_pair"
    assert torch.equal(lifted(positive, negative), positive[0] - negative[0])
    assert torch.equal(directions_from_pairs(positive, negative), mean_diff(positive, negative))


def test_caa_vector_accepts_names_and_callables(tiny_model):
    positive, negative = contrastive_activations(tiny_model, PAIRS, layers=[0, 2])
    for name in ("mean_diff", "pca"):
        vector = caa_vector(tiny_model, PAIRS, layers=[0, 2], method=name, diagnostics=False)
        assert vector.meta.method == name
        assert torch.allclose(vector.directions, AGGREGATORS[name](positive, negative))

    def last_pair_diff(p, n):
        return p[-1] - n[-1]

    custom = caa_vector(tiny_model, PAIRS, layers=[0, 2], method=last_pair_diff)
    assert custom.meta.method == "last_pair_diff"
    assert torch.allclose(custom.directions, positive[-1] - negative[-1])
    assert set(custom.meta.diagnostics) == {"0", "2"}  # cross-fitted with the same callable


def test_bad_aggregator_output_names_the_expected_shape(tiny_model):
    with pytest.raises(ValueError, match=r"\[layer, d_model\] = \(2, 64\)"):
        caa_vector(tiny_model, PAIRS, layers=[0, 2], method=lambda p, n: p.mean(0)[0],
                   diagnostics=False)
    with pytest.raises(ValueError, match="'lda'"):
        caa_vector(tiny_model, PAIRS, layers=[0], method="lda")
