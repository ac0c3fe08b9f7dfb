"""Per-item steerability: exact slopes and shares, the layer profile, its figures, and
a slow check on SmolLM2 with the paper's sycophancy data."""

from __future__ import annotations

import time

import pytest
import torch

from actsteer.evaluation import answer_token_ids, encode_items, score_items
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
    return encode_items(tiny_model, questions, "AB"), matching, other, letters


def test_layer_profile_equals_scoring_each_plan_alone(tiny_model, vectors, ab_items):
    prompts, matching, other, letters = ab_items
    vector = vectors[0]
    profile = layer_profile(tiny_model, vector, prompts, matching, other,
                            multipliers=MULTIPLIERS, layers=[1, 3], labels=letters,
                            batch_size=4)
    assert profile.scores.logit_diff.shape == (1 + 2 * 4, 6)
    alone = score_items(tiny_model, prompts, matching, other,
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
        layer_profile(tiny_model, vector.select([1, 3]), prompts, matching, other,
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
def test_sycophancy_steerability_on_smollm2_splits_by_answer_letter(smol, behaviour_dir):
    """The paper's sycophancy data, 40 vector and 40 test items of its split, layer 14,
    multipliers -8, 0, 8 (the NOTES' "moves with the sign" setting).

    What the profile found (all layers every 3rd, 100 vector / 40 test items, and this
    setting): at every layer the items split by the matching answer's letter; at layer 14
    A-matching items steer up (slope > 0 for almost all) and B-matching items steer down
    (most anti-steerable), so the mean slope is about 0 here and positive only when A
    items dominate both sets (100 vector items: +0.019 [+0.002, +0.035]). The pair
    differences are inconsistent (mean cosine about 0), as Braun et al. 2025 predict for
    an unreliable vector. The test asserts that split, not a mean the letters produce.
    """
    from actsteer.data.behaviours import load_behaviour
    from actsteer.extraction import ContrastivePair, caa_vector
    from actsteer.prompts import format_item

    if not (behaviour_dir / "sycophancy.json").is_file():
        pytest.skip(f"sycophancy.json is not in {behaviour_dir}")
    start = time.perf_counter()
    splits = load_behaviour("sycophancy", data_dir=behaviour_dir).paper_splits()
    train, test = splits.vector[:40], splits.test[:40]
    pairs = [ContrastivePair(format_item(i.question, i.choices, "paper"),
                             i.matching, i.not_matching) for i in train]
    vector = caa_vector(smol, pairs, layers=[14], dataset="sycophancy", batch_size=20)
    ids = answer_token_ids(smol, test[0].choices)
    prompts = encode_items(smol, [i.question for i in test], test[0].choices)
    profile = layer_profile(smol, vector, prompts, [ids[i.matching] for i in test],
                            [ids[i.not_matching] for i in test], multipliers=(-8.0, 0.0, 8.0),
                            labels=[i.matching for i in test], batch_size=20)
    summary = profile.summary(14)
    a, b = summary.by_label["A"], summary.by_label["B"]
    found = (summary.to_dict(), vector.meta.diagnostics["14"])
    assert a.mean_slope.low > 0 and b.mean_slope.high < 0, found
    assert a.anti_share.value < 0.25 < 0.6 < b.anti_share.value, found
    assert summary.anti_share.low > 0.2, found  # many items move against the vector
    assert abs(vector.meta.diagnostics["14"]["consistency"]) < 0.05, found
    print(found, f"{time.perf_counter() - start:.1f}s")
