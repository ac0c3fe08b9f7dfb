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
    profile = actsteer.layer_profile(smol, vector, items.prompts, items.matching_ids,
                                     items.not_matching_ids, multipliers=(-8.0, 0.0, 8.0),
                                     labels=items.matching_labels, batch_size=16)
    for layer in (8, 14):
        summary = profile.summary(layer)
        found = (layer, summary.to_dict())
        assert summary.mean_slope.low > 0, found
        assert summary.anti_share.value <= 0.1, found
    # Diagnostics agree with the label: every held-out pair's matching side projects higher.
    assert vector.meta.diagnostics["14"]["separation"] >= 0.9, vector.meta.diagnostics["14"]
