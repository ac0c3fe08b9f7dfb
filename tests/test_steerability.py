"""Per-item steerability: exact slopes and shares, the layer profile, its figures, and
a slow check on SmolLM2 with the paper's sycophancy data."""

from __future__ import annotations

import time

import pytest
import torch

from actsteer.evaluation import PreparedItems, answer_token_ids, encode_items, score_items
from actsteer.figures.steerability import steerability_by_layer, steerability_distributions
from actsteer.plan import empty_plan, single
from actsteer.stats import Estimate, bootstrap
from actsteer.steerability import (
    check_multipliers,
    layer_profile,
    propensity_slopes,
    summarize_steerability,
    symmetric_multipliers,
)

MULTIPLIERS = symmetric_multipliers(2.0)


def test_symmetric_multipliers_and_their_checks():
    assert MULTIPLIERS == (-2.0, -1.0, 0.0, 1.0, 2.0)
    assert symmetric_multipliers(9.0, per_side=3) == (-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0)
    with pytest.raises(ValueError, match="two distinct"):
        check_multipliers([1.0, 1.0])
    with pytest.warns(UserWarning, match="symmetric"):
        check_multipliers([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        symmetric_multipliers(0.0)


def test_slopes_are_exact_on_linear_items():
    m = torch.tensor(MULTIPLIERS, dtype=torch.float64)
    slopes = torch.tensor([0.5, -0.25, 0.0, 2.0], dtype=torch.float64)
    intercepts = torch.tensor([1.0, -3.0, 0.2, 0.0], dtype=torch.float64)
    propensity = intercepts + m[:, None] * slopes  # [multiplier, item]
    assert torch.allclose(propensity_slopes(propensity, MULTIPLIERS), slopes, atol=1e-12)
    # batched over layers, and least squares (not endpoints) when items are not linear
    bent = propensity.clone()
    bent[2] += 1.0  # a bump at 0 leaves a symmetric design's slope unchanged
    both = torch.stack([propensity, bent])
    assert torch.allclose(propensity_slopes(both, MULTIPLIERS), slopes.expand(2, 4),
                          atol=1e-12)
    with pytest.raises(ValueError, match="axis -2 of length 5"):
        propensity_slopes(propensity[:3], MULTIPLIERS)


def test_summary_shares_and_label_split_are_exact():
    slopes = torch.tensor([0.4, -0.2, 0.1, -0.3, 0.2, 0.6])
    labels = ["A", "B", "A", "B", "B", "A"]
    found = summarize_steerability(slopes, labels, n_resamples=200, seed=1)
    assert found.n == 6
    assert found.mean_slope.value == pytest.approx(float(slopes.double().mean()))
    assert found.anti_share.value == pytest.approx(2 / 6)
    assert found.mean_slope == bootstrap(slopes, n_resamples=200, seed=1)
    assert found.by_label["A"].anti_share.value == 0.0
    assert found.by_label["B"].anti_share.value == pytest.approx(2 / 3)
    assert found.by_label["A"].mean_slope.value == pytest.approx(1.1 / 3)
    assert found.by_label["B"].n == 3
    assert found.to_dict()["by_label"]["B"]["anti_share"]["value"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="5 labels for 6"):
        summarize_steerability(slopes, labels[:5])


@pytest.fixture(scope="module")
def ab_items(tiny_model):
    questions = [f"Do you like {'green ' * (i + 1)}tea?\n\nChoices:\n (A) yes\n (B) no"
                 for i in range(6)]
    ids = answer_token_ids(tiny_model, "AB")
    letters = ["A", "B", "A", "A", "B", "B"]
    matching = [ids[x] for x in letters]
    other = [ids["B" if x == "A" else "A"] for x in letters]
    others = ["B" if x == "A" else "A" for x in letters]
    return PreparedItems.from_ids(encode_items(tiny_model, questions, "AB"), matching, other,
                                  matching_labels=letters, not_matching_labels=others)


def test_layer_profile_equals_scoring_each_plan_alone(tiny_model, vectors, ab_items):
    vector = vectors[0]
    profile = layer_profile(tiny_model, vector, ab_items, multipliers=MULTIPLIERS,
                            layers=[1, 3], batch_size=4)
    assert profile.scores.logit_diff.shape == (1 + 2 * 4, 6)
    alone = score_items(tiny_model, ab_items,
                        [empty_plan(), single(vector, 3, -2.0), single(vector, 1, 1.0)])
    assert torch.allclose(profile.scores.logit_diff[0], alone.logit_diff[0], atol=1e-5)
    assert torch.allclose(profile.scores.logit_diff[profile.plan_index(3, -2.0)],
                          alone.logit_diff[1], atol=1e-5)
    assert torch.allclose(profile.propensity[0, 3], alone.logit_diff[2].double(), atol=1e-5)
    assert torch.equal(profile.propensity[0, 2], profile.propensity[1, 2])  # 0: unsteered
    assert torch.allclose(profile.slopes, propensity_slopes(profile.propensity, MULTIPLIERS))
    summary = profile.summary(3, n_resamples=100)
    assert summary.anti_share.value == pytest.approx(float((profile.slopes[1] < 0).double()
                                                           .mean()))
    assert set(summary.by_label) == {"A", "B"}
    assert set(profile.summaries(n_resamples=50)) == {1, 3}
    with pytest.raises(KeyError, match="layer 2"):
        profile.plan_index(2, 1.0)
    with pytest.raises(ValueError, match=r"layers \[7\]"):
        layer_profile(tiny_model, vector.select([1, 3]), ab_items,
                      multipliers=MULTIPLIERS, layers=[7])


def test_figures_carry_the_numbers_given():
    slopes = {"myopia": [0.5, -0.1, 0.3, 0.2], "sycophancy": torch.tensor([-0.2, -0.1, 0.4])}
    fig = steerability_distributions(slopes)
    assert [trace.name for trace in fig.data] == ["myopia", "sycophancy"]
    assert list(fig.data[0].x) == [0.5, -0.1, 0.3, 0.2]
    assert list(fig.data[1].x) == pytest.approx([-0.2, -0.1, 0.4])
    texts = [a.text for a in fig.layout.annotations]
    assert "anti-steerable 25% of 4" in texts and "anti-steerable 67% of 3" in texts
    by_layer = {"myopia": {14: Estimate(0.3, 0.1, 0.6, 60), 2: Estimate(-0.1, -0.3, 0.0, 60)},
                "sycophancy": {14: {"value": 0.2, "low": 0.15, "high": 0.3, "n": 60}}}
    fig = steerability_by_layer(by_layer)
    first, second = fig.data
    assert list(first.x) == [2, 14] and list(first.y) == [-0.1, 0.3]
    assert list(first.error_y.array) == pytest.approx([0.1, 0.3])
    assert list(first.error_y.arrayminus) == pytest.approx([0.2, 0.2])
    assert list(second.y) == [0.2] and list(second.error_y.array) == pytest.approx([0.1])
    with pytest.raises(ValueError, match="value, low and high"):
        steerability_by_layer({"x": {1: {"value": 1.0}}})


@pytest.mark.slow
@pytest.mark.heavy
def test_sycophancy_steers_on_smollm2_and_the_letter_split_shows_why(smol, behaviour_dir):
    """The paper's sycophancy data: 100 vector and 60 test items of its split, layer 14 (the
    paper's 15-of-32 scaled), multipliers -8, 0, 8.

    Measured: mean slope +0.018 [+0.002, +0.034], positive, but the items split by their
    matching letter (A +0.068, B -0.042): 60 of the 100 vector items match with (A), so the
    vector also encodes "answer A". Its letter-balanced twin (as many A- as B-matching
    items) moves neither letter (A +0.001, B -0.003), and with it the mean slope is about 0
    (-0.0007 [-0.0025, +0.0009]): on this model most of the effect is the letter.
    """
    from actsteer.data.behaviours import BehaviourDataset, load_behaviour
    from actsteer.evaluation import prepare_items
    from actsteer.extraction import caa_vector

    if not (behaviour_dir / "sycophancy.json").is_file():
        pytest.skip(f"sycophancy.json is not in {behaviour_dir}")
    start = time.perf_counter()
    splits = load_behaviour("sycophancy", data_dir=behaviour_dir).paper_splits()
    test = prepare_items(smol, splits.test[:60], "paper")
    pool = splits.vector[:200].letter_balanced()
    balanced_items = BehaviourDataset("sycophancy", tuple(
        [i for i in pool if i.matching == "A"][:50] + [i for i in pool if i.matching == "B"][:50]),
        pool.source)
    found = {}
    for name, items in (("as extracted", splits.vector[:100]),
                        ("letter-balanced", balanced_items)):
        vector = caa_vector(smol, items.pairs(), layers=[14], dataset="sycophancy",
                            batch_size=20)
        profile = layer_profile(smol, vector, test, multipliers=(-8.0, 0.0, 8.0),
                                batch_size=20)
        found[name] = profile.summary(14)
    plain, balanced = found["as extracted"], found["letter-balanced"]
    report = {k: v.to_dict() for k, v in found.items()}
    assert plain.mean_slope.low > 0, report  # it steers, with an interval above 0
    a, b = plain.by_label["A"].mean_slope, plain.by_label["B"].mean_slope
    assert a.low > 0 and b.high < 0, report  # ... by moving the letter A
    letter_size = min(abs(a.value), abs(b.value))
    assert all(abs(s.mean_slope.value) < letter_size / 4
               for s in balanced.by_label.values()), report
    print(report, f"{time.perf_counter() - start:.1f}s")
