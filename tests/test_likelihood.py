"""Likelihood propensities and norm-relative strengths, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from actsteer.batching import encode
from actsteer.errors import InvalidValueError
from actsteer.likelihood import (
    ContrastItem,
    WordSets,
    continuation_propensities,
    counted_words,
    word_ids,
    word_propensities,
)
from actsteer.norms import ResidualNorms, residual_norms
from actsteer.plan import SteeringPlan, combined, empty_plan, simultaneous, single
from actsteer.steering import steer

ITEMS = [
    ContrastItem("I went to the cafe.", (" It was lovely.",), (" It was awful and cold.",)),
    ContrastItem("The film ended", (" well", " happily ever after"), (" badly",)),
    ContrastItem("Tell me about dogs", (" They are friends.",), (" No.", " Dogs bite.")),
]


def _logprob(model, prompt: str, continuation: str, plan: SteeringPlan) -> float:
    """log P(continuation | prompt) by one plain forward of the unpadded sequence."""
    head = encode(model, prompt)
    tail = encode(model, continuation, bos=False)
    tokens = torch.tensor([head + tail])
    with torch.no_grad():
        if plan.injections:
            with steer(model, plan):
                logits = model(tokens)
        else:
            logits = model(tokens)
    logp = torch.log_softmax(logits[0].double(), -1)
    return sum(float(logp[len(head) - 1 + i, t]) for i, t in enumerate(tail))


@pytest.fixture(scope="module")
def plan(vectors) -> SteeringPlan:
    return single(vectors[0], 2, 3.0)


def test_continuation_propensity_equals_a_hand_computation(tiny_model, plan) -> None:
    scores = continuation_propensities(tiny_model, ITEMS, [empty_plan(), plan], batch_size=2)
    assert scores.summed.shape == (2, len(ITEMS))
    for row, current in enumerate([empty_plan(), plan]):
        for index, item in enumerate(ITEMS):
            good = [_logprob(tiny_model, item.prompt, t, current) for t in item.behaviour]
            bad = [_logprob(tiny_model, item.prompt, t, current) for t in item.contrast]
            expected = (torch.logsumexp(torch.tensor(good), 0)
                        - torch.logsumexp(torch.tensor(bad), 0))
            assert float(scores.summed[row, index]) == pytest.approx(float(expected), abs=1e-3)
            lengths_good = [len(encode(tiny_model, t, bos=False)) for t in item.behaviour]
            lengths_bad = [len(encode(tiny_model, t, bos=False)) for t in item.contrast]
            per_token = (sum(g / n for g, n in zip(good, lengths_good, strict=True))
                         / len(good)
                         - sum(b / n for b, n in zip(bad, lengths_bad, strict=True)) / len(bad))
            assert float(scores.per_token[row, index]) == pytest.approx(per_token, abs=1e-3)
    # the plan changes the propensities (so the comparison above could fail)
    assert not torch.allclose(scores.summed[0], scores.summed[1], atol=1e-3)


def test_continuation_propensities_do_not_depend_on_batching(tiny_model, plan) -> None:
    one = continuation_propensities(tiny_model, ITEMS, [empty_plan(), plan], batch_size=1)
    many = continuation_propensities(tiny_model, ITEMS, [empty_plan(), plan], batch_size=8)
    torch.testing.assert_close(one.summed, many.summed, atol=1e-4, rtol=0)


def _vocabulary_ids(model, words) -> list[int]:
    """Ids of the vocabulary entries "Ġword" (the tiny model's byte-level BPE writes a
    leading space as Ġ), looked up in the vocabulary, not through encoding."""
    vocab = model.tokenizer.get_vocab()
    return [vocab["Ġ" + word] for word in words]


def test_word_propensity_equals_the_log_mass_ratio(tiny_model, plan) -> None:
    sets = [WordSets("mood", ("good", "happy", "great"), ("bad", "sad")),
            WordSets("topic", ("cat", "dog"), ("table", "car"))]
    prompts = ["The day was", "I think that the", "Honestly"]
    scores = word_propensities(tiny_model, prompts, sets, [empty_plan(), plan], batch_size=2)
    for row, current in enumerate([empty_plan(), plan]):
        for index, prompt in enumerate(prompts):
            tokens = torch.tensor([encode(tiny_model, prompt)])
            with torch.no_grad():
                if current.injections:
                    with steer(tiny_model, current):
                        logits = tiny_model(tokens)
                else:
                    logits = tiny_model(tokens)
            p = torch.softmax(logits[0, -1].double(), -1)
            for words in sets:
                good = p[_vocabulary_ids(tiny_model, words.behaviour)].sum()
                bad = p[_vocabulary_ids(tiny_model, words.contrast)].sum()
                expected = math.log(float(good)) - math.log(float(bad))
                got = float(scores[words.name].summed[row, index])
                assert got == pytest.approx(expected, abs=1e-4)


def test_word_ids_drop_words_that_are_not_one_token(tiny_model) -> None:
    with pytest.warns(UserWarning, match="not counted: antidisestablishmentarianism"):
        ids = word_ids(tiny_model, ["good", "antidisestablishmentarianism"])
    assert ids == _vocabulary_ids(tiny_model, ["good"])
    words = WordSets("w", ("good", "antidisestablishmentarianism", "happy"), ("bad",))
    assert counted_words(tiny_model, words) == {"behaviour": ["good", "happy"],
                                                "contrast": ["bad"]}
    with pytest.raises(InvalidValueError, match="none of the words"):
        word_ids(tiny_model, ["antidisestablishmentarianism"])


def test_bad_items_are_refused() -> None:
    with pytest.raises(InvalidValueError, match="one string"):
        ContrastItem("p", " yes", (" no",))  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="both sides"):
        WordSets("x", ("a", "b"), ("b",))


# -- strength in units of the residual norm ---------------------------------------------


def test_residual_norms_are_the_median_over_real_tokens_without_the_first(tiny_model) -> None:
    texts = ["The river runs to the sea.", "One two", "A longer text about many things here."]
    norms = residual_norms(tiny_model, texts, layers=[1, 3], batch_size=2)
    for layer in (1, 3):
        values = []
        for text in texts:
            tokens = torch.tensor([encode(tiny_model, text)])
            _, cache = tiny_model.run_with_cache(tokens)
            values.append(cache[f"blocks.{layer}.hook_resid_post"][0, 1:].norm(dim=-1))
        assert norms.median(layer) == pytest.approx(float(torch.cat(values).median()), rel=1e-5)
    assert norms.n_tokens == sum(len(encode(tiny_model, t)) - 1 for t in texts)


def test_norm_relative_coefficients_give_the_fraction_of_the_median_norm(vectors) -> None:
    first, second = vectors
    norms = ResidualNorms("resid_post", {1: 40.0, 2: 12.5, 3: 80.0}, 100)
    plan = single(first, 2, 0.1, norms=norms)
    injection = plan.injections[0]
    assert injection.fraction == 0.1
    assert injection.coefficient * float(first.at(2).norm()) == pytest.approx(0.1 * 12.5)
    both = simultaneous({"a": (first, 1, 0.2), "b": (second, 3, 0.05)}, scale=-2.0, norms=norms)
    for inj, (vector, layer, fraction) in zip(both.injections,
                                              [(first, 1, -0.4), (second, 3, -0.1)],
                                              strict=True):
        assert inj.fraction == pytest.approx(fraction)
        assert inj.coefficient * float(vector.at(layer).norm()) == pytest.approx(
            fraction * norms.median(layer))
    mixed = combined({"a": first, "b": second}, 3, mode="mean", coefficient=0.25, norms=norms)
    merged = mixed.injections[0]
    assert float(merged.delta.norm()) == pytest.approx(0.25 * 80.0, rel=1e-5)
    # recorded in the plan: saved and reloaded plans keep it, scaling scales it
    assert plan.to_dict()["injections"][0]["fraction"] == 0.1
    assert plan.scaled(-2.0).injections[0].fraction == pytest.approx(-0.2)
    again = SteeringPlan.from_dict(plan.to_dict(), {d: i.vector for i in plan.injections
                                                    for d in [i.to_dict()["vector"]]})
    assert again.injections[0].fraction == 0.1
    assert again.identity() == plan.identity()


def test_norms_refuse_unmeasured_layers_and_zero_vectors(vectors) -> None:
    norms = ResidualNorms("resid_post", {1: 40.0}, 10)
    with pytest.raises(Exception, match="no residual norm measured at layer 2"):
        single(vectors[0], 2, 0.1, norms=norms)
    with pytest.raises(InvalidValueError, match="zero vector"):
        norms.coefficient(torch.zeros(8), 1, 0.1)
    with pytest.raises(InvalidValueError, match="positive"):
        ResidualNorms("resid_post", {1: 0.0}, 10)


def test_norms_refuse_a_vector_added_at_another_site(vectors) -> None:
    norms = ResidualNorms("resid_post", {1: 40.0, 2: 12.5}, 100)
    for site in ("attn_out", "mlp_out", "resid_mid"):
        with pytest.raises(InvalidValueError, match=f"measured at 'resid_post'.*{site}"):
            single(vectors[0].at(2), 2, 0.1, site=site, norms=norms)
    pre = ResidualNorms("resid_pre", {2: 12.5}, 100)
    with pytest.raises(InvalidValueError, match=r"measured at 'resid_pre'.*'attn_out'"):
        pre.coefficient(vectors[0].at(2), 2, 0.1, site="attn_out")


def test_resid_pre_takes_the_resid_post_norm_of_the_layer_below(tiny_model, vectors) -> None:
    texts = ["The river runs to the sea.", "A longer text about many things here."]
    post = residual_norms(tiny_model, texts, layers=[1, 2])
    pre = residual_norms(tiny_model, texts, layers=[2], site="resid_pre")
    # the mapping's premise, measured: block 2's input is block 1's output
    assert pre.median(2) == post.median(1) and post.median(1) != post.median(2)
    direction = vectors[0].at(2)
    plan = single(direction, 2, 0.1, site="resid_pre", norms=post)
    added = plan.injections[0].coefficient * float(direction.double().norm())
    assert added == pytest.approx(0.1 * post.median(1), rel=1e-9)
    assert pre.median(1, "resid_post") == pre.median(2)  # and the other way round
    with pytest.raises(Exception, match="no residual norm measured at layer 0 of resid_pre"):
        post.median(0, "resid_pre")


def test_norms_record_their_model_and_refuse_another(tiny_model, vectors) -> None:
    from dataclasses import replace

    from actsteer.models import model_info
    from actsteer.vector import VectorMismatchError

    norms = residual_norms(tiny_model, ["The river runs to the sea."], layers=[2])
    info = model_info(tiny_model)
    assert (norms.model, norms.n_layers, norms.d_model) == (info.name, info.n_layers,
                                                            info.d_model)
    assert ResidualNorms.from_dict(norms.to_dict()) == norms
    norms.check_fits(tiny_model)
    single(vectors[0], 2, 0.1, norms=norms)  # its own model: accepted
    for other in (replace(norms, model="another/model"), replace(norms, n_layers=40)):
        with pytest.raises(VectorMismatchError, match="measured on another model"):
            single(vectors[0], 2, 0.1, norms=other)
        with pytest.raises(VectorMismatchError, match="measured on another model"):
            other.check_fits(tiny_model)
    with pytest.raises(VectorMismatchError, match="d_model"):
        single(torch.ones(info.d_model + 1), 2, 0.1, norms=norms)


def test_word_sets_strip_words_before_checking_overlap() -> None:
    with pytest.raises(InvalidValueError, match=r"\['bad'\] on both sides"):
        WordSets("x", ("good", " bad"), ("bad ",))
    assert WordSets("x", (" good ",), ("bad",)).behaviour == ("good",)
    with pytest.raises(InvalidValueError, match="blank behaviour words"):
        WordSets("x", ("good", "  "), ("bad",))
