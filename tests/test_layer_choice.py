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


def test_layer_profile_scores_an_expressed_behaviour_in_fractions_of_the_norm(
        tiny_model, vectors) -> None:
    from actsteer.data.expressed import load_expressed
    from actsteer.effects import paired_effect
    from actsteer.layer_choice import strongest_layer
    from actsteer.likelihood import word_propensities
    from actsteer.norms import ResidualNorms
    from actsteer.plan import empty_plan, single
    from actsteer.steerability import layer_profile

    sentiment = load_expressed("sentiment")
    norms = ResidualNorms("resid_post", {1: 3.0, 2: 5.0, 3: 8.0}, 10)
    prompts = list(sentiment.prompts[:5])
    profile = layer_profile(tiny_model, vectors[0], sentiment, multipliers=(-0.5, 0.0, 0.5),
                            layers=(1, 2, 3), norms=norms, prompts=prompts)
    assert profile.fractions and profile.propensity.shape == (3, 3, 5)
    effects = {}
    for layer in (1, 2, 3):  # each row against plans built and scored one at a time
        alone = word_propensities(tiny_model, prompts, [sentiment.words],
                                  [empty_plan(), single(vectors[0], layer, 0.5, norms=norms)])
        reference = paired_effect(alone["sentiment"].summed[1], alone["sentiment"].summed[0])
        effects[layer] = profile.effect(layer, 0.5)
        assert effects[layer].value == pytest.approx(reference.value, abs=1e-4)
    assert profile.best_layer() == strongest_layer(effects)
    assert effects[profile.best_layer()].low == max(e.low for e in effects.values())
    with pytest.raises(ValueError, match="prompts= is for expressed behaviours"):
        layer_profile(tiny_model, vectors[0], object(), multipliers=(-1, 0, 1),  # type: ignore[arg-type]
                      prompts=prompts)
