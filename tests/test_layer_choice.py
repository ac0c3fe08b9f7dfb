"""Each behaviour's own steering layer from its measured effects, distinct where possible."""

from __future__ import annotations

import pytest

from actsteer.effects import Effect
from actsteer.layer_choice import distinct_layers


def _effect(low: float) -> Effect:
    return Effect("m", value=low + 1.0, low=low, high=low + 2.0, n=10, sd=1.0)


def test_the_strongest_behaviour_chooses_first_and_the_next_takes_its_next_best() -> None:
    effects = {
        "weak": {6: _effect(0.5), 9: _effect(0.4), 12: _effect(-1.0)},  # also best at 6
        "strong": {6: _effect(2.0), 9: _effect(0.1), 12: _effect(1.0)},
    }
    # strong takes 6 (its best); weak's best, 6, is taken, so it takes 9
    assert distinct_layers(effects) == {"weak": 9, "strong": 6}
    # and the result keeps the order of the input, not the order of choosing
    assert list(distinct_layers(effects)) == ["weak", "strong"]


def test_with_more_behaviours_than_layers_the_last_keep_their_best() -> None:
    effects = {"a": {3: _effect(1.0)}, "b": {3: _effect(0.5)}, "c": {3: _effect(0.2)}}
    assert distinct_layers(effects) == {"a": 3, "b": 3, "c": 3}


def test_ties_keep_the_candidates_order_and_no_layer_is_refused() -> None:
    assert distinct_layers({"x": {9: _effect(0.3), 4: _effect(0.3)}}) == {"x": 9}
    with pytest.raises(ValueError, match=r"\['x'\] have no measured layer"):
        distinct_layers({"x": {}})
