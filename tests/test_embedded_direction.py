"""The sign of steering, audited end to end on the embedded model.

A dataset whose direction is known by construction: the built-in myopia questions with the
matching answer relabelled to always be (A) ("alpha"), or always (B) ("beta"). Its vector
is the letter itself, so adding it must raise the matching answer for *both* datasets.
The path is the library's own, nothing mocked: ``pairs()`` (which answer is positive),
``caa_vector`` (read position, which side is subtracted), ``prepare_items`` (which token is
the matching one) and ``layer_profile`` (slope of logit(matching) - logit(non-matching)).
A sign flipped anywhere in that chain turns both slopes negative; a letter mix-up turns
one of them negative.

Measured (SmolLM2-135M-Instruct, 40 vector and 32 test items, multipliers -8, 0, 8):
see the assertion messages; every test item moves towards its matching letter.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

import actsteer
from actsteer.data.behaviours import BehaviourDataset

pytestmark = pytest.mark.slow


def _relabelled(data: BehaviourDataset, matching: str) -> BehaviourDataset:
    other = "B" if matching == "A" else "A"
    items = tuple(replace(item, matching=matching, not_matching=other) for item in data)
    return BehaviourDataset(f"always_{matching}", items, data.source)


@pytest.mark.parametrize("letter", ["A", "B"])
def test_a_vector_of_known_direction_raises_the_matching_answer(smol, letter) -> None:
    data = _relabelled(actsteer.load_behaviour("builtin:myopia").shuffled(), letter)
    train, test = data[:40], data[40:]
    vector = actsteer.caa_vector(smol, train.pairs(), layers=[8, 14], dataset=data.name,
                                 batch_size=20)
    items = actsteer.prepare_items(smol, test, "paper")
    assert set(items.matching_labels) == {letter}
    profile = actsteer.layer_profile(smol, vector, items, multipliers=(-8.0, 0.0, 8.0),
                                     batch_size=16)
    for layer in (8, 14):
        summary = profile.summary(layer)
        found = (layer, summary.to_dict())
        assert summary.mean_slope.low > 0, found
        assert summary.anti_share.value <= 0.1, found
    # Diagnostics agree with the label: every held-out pair's matching side projects higher.
    assert vector.meta.diagnostics["14"]["separation"] >= 0.9, vector.meta.diagnostics["14"]


def test_sentiment_steers_its_likelihood_up_at_a_tenth_of_the_norm(smol) -> None:
    """The likelihood path's sign audit: a sentiment vector read over the answer tokens of
    the built-in completions, added at 0.1 of the median residual norm, raises the
    positive-minus-negative word mass after held-out neutral prompts (per-item slope
    interval above 0), and subtracting it lowers the mass. A flipped side anywhere
    (pairs, read position, subtraction, word sets) turns the slope negative."""
    from actsteer.data.expressed import load_expressed, neutral_prompts
    from actsteer.likelihood import word_propensities
    from actsteer.norms import residual_norms
    from actsteer.steerability import propensity_slopes, summarize_steerability

    sentiment = load_expressed("sentiment")
    vector = actsteer.caa_vector(smol, sentiment.pairs(), read="answer_mean",
                                 dataset="sentiment", layers=[10])
    norms = residual_norms(smol, list(neutral_prompts()), layers=[10])
    fractions = (-0.1, 0.0, 0.1)
    plans = [actsteer.single(vector, 10, f, norms=norms) if f else actsteer.SteeringPlan()
             for f in fractions]
    prompts = list(neutral_prompts())[:32]
    scores = word_propensities(smol, prompts, [sentiment.words], plans)["sentiment"]
    summary = summarize_steerability(propensity_slopes(scores.summed, fractions))
    assert summary.mean_slope.low > 0, summary
    assert float((scores.summed[2] - scores.summed[1]).mean()) > 0.3
    assert float((scores.summed[0] - scores.summed[1]).mean()) < -0.3
