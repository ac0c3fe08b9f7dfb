"""On the embedded model, a CAA vector from the paper's data moves P(matching) the way its
sign says (issue 3's acceptance).

Measured on SmolLM2-135M-Instruct, 100 vector items and 60 test items of the paper's
shuffled split, mean P(matching | two answers) at coefficients -8, -4, 0, +4, +8:

* sycophancy L14: 0.466 0.470 0.494 0.512 0.537 (monotonic; logit diff -0.14 .. +0.15)
* myopia L14: 0.487 0.517 0.540 0.547 0.529 (+4 > -4, but not monotonic)
* wealth_seeking L14: 0.525 0.523 0.512 0.498 0.484 (reversed: on this model the vector
  lowers the matching answer's probability)

So the test uses sycophancy at layer 14 of 30 (the paper's mid-depth), the behaviour where
the direction holds on this small model; the others are reported, not hidden.
"""

from __future__ import annotations

import pytest

import actsteer
from actsteer.data.behaviours import load_behaviour
from actsteer.evaluation import answer_token_ids, encode_items, score_items
from actsteer.prompts import format_item

pytestmark = pytest.mark.slow


def test_sycophancy_vector_shifts_p_matching_in_its_direction(smol, behaviour_dir) -> None:
    splits = load_behaviour("sycophancy", data_dir=behaviour_dir).paper_splits()
    train, test = splits.vector[:100], splits.test[:60]
    pairs = [actsteer.ContrastivePair(format_item(i.question, i.kind, "paper", smol.tokenizer),
                                      i.matching, i.not_matching) for i in train]
    vector = actsteer.caa_vector(smol, pairs, dataset="sycophancy", batch_size=16)
    ids = answer_token_ids(smol, test[0].kind)
    prompts = encode_items(smol, [i.question for i in test], test[0].kind)
    coefficients = (-8.0, 0.0, 8.0)
    scores = score_items(smol, prompts, [ids[i.matching] for i in test],
                         [ids[i.not_matching] for i in test],
                         [actsteer.single(vector, 14, c) for c in coefficients], batch_size=20)
    subtract, unsteered, add = (float(scores.p_matching[k].mean()) for k in range(3))
    assert subtract < unsteered < add, (subtract, unsteered, add)
    assert add - subtract > 0.04  # measured 0.071
    diffs = [float(scores.logit_diff[k].mean()) for k in range(3)]
    assert diffs == sorted(diffs)
    # Not a few outliers: a majority of items move towards matching (measured 36 of 60).
    moved = (scores.p_matching[2] > scores.p_matching[0]).float().mean()
    assert moved > 0.5, float(moved)
