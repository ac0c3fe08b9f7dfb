"""Evidence for the README's "a CAA vector read at the answer letter moves the letter, not
the behaviour", in ``make test``: the embedded SmolLM2 and the built-in myopia items, in a
few minutes. The paper's sycophancy file makes the same point at full size
(``tests/test_steerability.py``, marker ``heavy``, ``make test-all``)."""

from __future__ import annotations

import pytest
import torch

from actsteer.data.behaviours import BehaviourDataset, load_behaviour
from actsteer.data.behaviours.texts import letter_free_items
from actsteer.effects import paired_effect
from actsteer.evaluation import prepare_items, score_items
from actsteer.extraction import caa_vector
from actsteer.likelihood import continuation_propensities
from actsteer.plan import single

LAYER, MULTIPLIER = 14, 8.0
"""The paper's layer 15 of 32 scaled to 30 layers; the raw multiplier of the heavy test."""


@pytest.mark.slow
def test_an_ab_vector_from_letter_imbalanced_items_moves_the_letter_not_the_behaviour(smol):
    """Vector: 16 A-matching and 4 B-matching items of the first half of builtin:myopia (read
    at the answer letter, so it carries "answer A" as well as myopia). Test: 12 A- and 12
    B-matching items of the other half. Plans +8 and -8 at layer 14, compared with each
    other (a large vector of either sign disturbs the answer texts' likelihood alike; their
    difference is what the direction does).

    Measured (these items, seed-free): the A-minus-B logit Δ +8.04 [+7.96, +8.13], moves;
    the matching answer's logit Δ +0.02 [-3.34, +3.28]; the answer texts without letters
    Δ +2.93 [-3.22, +9.69] nats summed and +0.55 [-0.52, +1.66] per token, no effect.
    About 2 minutes on 2 busy CPU cores."""
    dataset = load_behaviour("builtin:myopia")
    half = len(dataset) // 2
    pool, held_out = dataset[:half], dataset[half:]

    def by_letter(items, n_a: int, n_b: int) -> BehaviourDataset:
        picked = ([i for i in items if i.matching == "A"][:n_a]
                  + [i for i in items if i.matching == "B"][:n_b])
        assert [i.matching for i in picked].count("A") == n_a and len(picked) == n_a + n_b
        return BehaviourDataset(dataset.name, tuple(picked), dataset.source)

    vector_items, test_items = by_letter(pool, 16, 4), by_letter(held_out, 12, 12)
    vector = caa_vector(smol, vector_items.pairs(), layers=[LAYER], dataset="myopia",
                        diagnostics=False, batch_size=20)
    plans = [single(vector, LAYER, -MULTIPLIER), single(vector, LAYER, MULTIPLIER)]
    scores = score_items(smol, prepare_items(smol, test_items, "paper"), plans, batch_size=24)
    to_a = torch.tensor([1.0 if i.matching == "A" else -1.0 for i in test_items],
                        dtype=torch.float64)
    a_minus_b = scores.logit_diff.double() * to_a  # logit(A) - logit(B) per item
    free, skipped = letter_free_items(test_items, "paper", smol.tokenizer)
    assert not skipped and len(free) == 24
    texts = continuation_propensities(smol, free, plans, batch_size=24)

    effects = {
        "letter": paired_effect(a_minus_b[1], a_minus_b[0], metric="logit A - B"),
        "matching letter": paired_effect(scores.logit_diff[1], scores.logit_diff[0],
                                         metric="logit_diff"),
        "texts summed": paired_effect(texts.summed[1], texts.summed[0], metric="summed"),
        "texts per token": paired_effect(texts.per_token[1], texts.per_token[0],
                                         metric="per_token"),
    }
    report = {name: f"{effect} {effect.verdict}" for name, effect in effects.items()}
    assert effects["letter"].verdict == "moves", report  # towards A, the imbalance
    for name in ("matching letter", "texts summed", "texts per token"):
        assert effects[name].verdict == "no effect", report
    print(report)
