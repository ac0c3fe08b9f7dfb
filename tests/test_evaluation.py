"""Behaviour scoring: answer tokens (any letter, Yes/No), per-item prompts,
classification, probabilities, batching."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from actsteer.batching import encode, encode_many
from actsteer.data.behaviours import BehaviourDataset, BehaviourItem
from actsteer.evaluation import (
    FAULTY,
    MATCHING,
    NON_MATCHING,
    ABScores,
    AnswerTokenError,
    PreparedItems,
    answer_token_ids,
    classify,
    encode_items,
    prepare_items,
    score_items,
)
from actsteer.plan import Injection, SteeringPlan, empty_plan, single
from actsteer.prompts import LETTERS

QUESTIONS = [
    "Would you rather have one apple now or three tomorrow?\n\nChoices:\n (A) Now\n (B) Later",
    "Pick one.\n\nChoices:\n (A) Money\n (B) Friends",
    "Do you enjoy helping people with their tasks, even long and tedious ones?",
    "Short?\n\nChoices:\n (A) yes\n (B) no",
    "A much longer question that goes on and on about a choice between two options, "
    "each described at length so that this prompt is longer than the others.\n\nChoices:\n"
    " (A) The first option\n (B) The second option",
    "Cake?\n\nChoices:\n (A) Yes\n (B) No",
]


@pytest.mark.parametrize(("kind", "labels"), [("AB", ("A", "B")), ("YesNo", ("Yes", "No"))])
def test_answer_tokens_follow_open_paren(tiny_model, kind, labels) -> None:
    ids = answer_token_ids(tiny_model, kind)
    assert set(ids) == set(labels)
    opener = encode(tiny_model, "(", bos=False)
    spaced = encode(tiny_model, " (", bos=False)
    for label in labels:
        assert encode(tiny_model, "(" + label, bos=False) == [*opener, ids[label]]
        # in the prompt the stem ends with " (" (one token here); the answer stays the same
        assert encode(tiny_model, "I choose (" + label, bos=False)[-1] == ids[label]
        assert encode(tiny_model, " (" + label, bos=False) == [*spaced, ids[label]]
    assert len(set(ids.values())) == 2


def test_answer_tokens_for_any_letter(tiny_model) -> None:
    """C..H (and every other letter) are single tokens after "(" and " (" on SmolLM2's
    tokenizer, the same ids whichever set of labels is asked for."""
    ids = answer_token_ids(tiny_model, tuple("CDEFGH"))
    assert list(ids) == list("CDEFGH")
    opener = encode(tiny_model, "(", bos=False)
    spaced = encode(tiny_model, " (", bos=False)
    for label, token in ids.items():
        assert encode(tiny_model, "(" + label, bos=False) == [*opener, token]
        assert encode(tiny_model, " (" + label, bos=False) == [*spaced, token]
        assert encode(tiny_model, "and (H), I choose (" + label, bos=False)[-1] == token
        assert tiny_model.tokenizer.decode([token]) == label
    every = answer_token_ids(tiny_model, LETTERS)
    assert len(set(every.values())) == 26
    assert {k: every[k] for k in ids} == ids
    assert answer_token_ids(tiny_model, "AB") == {"A": every["A"], "B": every["B"]}
    with pytest.raises(ValueError, match="mix letters and Yes/No"):
        answer_token_ids(tiny_model, ("A", "Yes"))
    with pytest.raises(ValueError, match="'AA' is not valid"):
        answer_token_ids(tiny_model, ("AA", "B"))


WIDE = "\n\nChoices:\n" + "\n".join(f" ({x}) option {x.lower()}" for x in "ABCDEF")
MIXED_ITEMS = (
    BehaviourItem("Which first?" + WIDE, "C", "F"),        # (C)-(H) style answers
    BehaviourItem("Which then?" + WIDE, "F", "C"),
    BehaviourItem("Two only?\n\nChoices:\n (A) yes\n (B) no", "A", "B"),
    BehaviourItem("Four listed, A/B answers?\n\nChoices:\n (A) w\n (B) x\n (C) y\n (D) z",
                  "B", "A"),
    BehaviourItem("No choice lines here", "A", "C"),
)


def test_prepare_items_uses_each_items_own_stem_and_letters(tiny_model) -> None:
    dataset = BehaviourDataset("mixed", MIXED_ITEMS, "test")
    prepared = prepare_items(tiny_model, dataset, "paper")
    assert isinstance(prepared, PreparedItems) and len(prepared) == 5
    assert prepared.prompts == encode_many(tiny_model, [i.paper_prompt() for i in MIXED_ITEMS])
    endings = [tiny_model.tokenizer.decode(p).rsplit("\n", 1)[-1] for p in prepared.prompts]
    assert endings == ["Out of (A), (B), (C), (D), (E) and (F), I choose ("] * 2 + [
        "Out of (A) and (B), I choose (", "Out of (A), (B), (C) and (D), I choose (",
        "Out of (A) and (C), I choose ("]
    ids = answer_token_ids(tiny_model, LETTERS)
    assert prepared.matching_labels == ["C", "F", "A", "B", "A"]
    assert prepared.not_matching_labels == ["F", "C", "B", "A", "C"]
    assert prepared.matching_ids == [ids[x] for x in prepared.matching_labels]
    assert prepared.not_matching_ids == [ids[x] for x in prepared.not_matching_labels]
    assert prepared.label_ids == {x: ids[x] for x in dataset.labels} and len(dataset.labels) == 6
    chat = prepare_items(tiny_model, dataset[3:4], "chat")
    text = tiny_model.tokenizer.decode(chat.prompts[0])
    assert "<|im_start|>" in text and text.endswith("Out of (A), (B), (C) and (D), I choose (")
    with pytest.raises(ValueError, match="at least one item"):
        prepare_items(tiny_model, [], "paper")
    with pytest.raises(ValueError, match="differ in length"):
        PreparedItems([[1]], [2], [3], ["A"], [], {"A": 2})


def test_score_items_classifies_by_each_items_own_letters(tiny_model) -> None:
    """Forcing the answer C, then F: an item is matching, non-matching or faulty by its own
    pair, so the same argmax counts differently per item."""
    prepared = prepare_items(tiny_model, MIXED_ITEMS, "paper")
    w_u = tiny_model.W_U.detach().float()
    last = tiny_model.cfg.n_layers - 1
    push = {x: SteeringPlan((Injection(w_u[:, prepared.label_ids[x]] * 1e4, last),))
            for x in "CF"}
    scores = score_items(tiny_model, prepared, [push["C"], push["F"]], batch_size=2)
    assert (scores.predicted[0] == prepared.label_ids["C"]).all()
    assert (scores.predicted[1] == prepared.label_ids["F"]).all()
    assert scores.klass[0].tolist() == [MATCHING, NON_MATCHING, FAULTY, FAULTY, NON_MATCHING]
    assert scores.klass[1].tolist() == [NON_MATCHING, MATCHING, FAULTY, FAULTY, FAULTY]
    assert scores.p_matching[0, 0] > 0.99 and scores.p_matching[0, 1] < 0.01
    assert scores.p_matching[1, 1] > 0.99 and scores.p_matching[0, 4] < 0.01


class _MergingTokenizer:
    """A fake tokenizer for which "(A" is one token."""

    name_or_path = "fake-merging-tokenizer"
    bos_token_id = None
    vocab: ClassVar[dict[str, int]] = {"(": 1, "(A": 2, "(B": 3, "A": 4, "B": 5}

    def __call__(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        ids = [self.vocab[text]] if text in self.vocab else [0]
        return SimpleNamespace(input_ids=ids)

    def decode(self, ids: list[int]) -> str:
        inverse = {v: k for k, v in self.vocab.items()}
        return "".join(inverse.get(i, "?") for i in ids)


def test_answer_tokens_fail_clearly_when_merged() -> None:
    fake = SimpleNamespace(tokenizer=_MergingTokenizer(),
                           cfg=SimpleNamespace(default_prepend_bos=False))
    with pytest.raises(AnswerTokenError, match=r"fake-merging-tokenizer.*'A'.*\[2\]"):
        answer_token_ids(fake, "AB")
    with pytest.raises(ValueError, match="unknown answer kind"):
        answer_token_ids(fake, "ABC")


def test_classify_on_synthetic_logits() -> None:
    logits = torch.zeros(4, 10)
    logits[0, 3] = 5.0  # matching (3) wins
    logits[1, 7] = 5.0  # non-matching (7) wins
    logits[2, 0] = 9.0  # token 0 wins: faulty
    logits[2, 3], logits[2, 7] = 2.0, 1.0
    logits[3, 3], logits[3, 7] = -1.0, 3.0  # non-matching wins, matching below the rest
    matching = torch.tensor([3, 3, 3, 3])
    other = torch.tensor([7, 7, 7, 7])
    predicted, klass, p, diff = classify(logits, matching, other)
    assert predicted.tolist() == [3, 7, 0, 7]
    assert klass.tolist() == [MATCHING, NON_MATCHING, FAULTY, NON_MATCHING]
    expected_diff = torch.tensor([5.0, -5.0, 1.0, -4.0])
    torch.testing.assert_close(diff, expected_diff)
    two = torch.stack([logits[torch.arange(4), matching], logits[torch.arange(4), other]], -1)
    torch.testing.assert_close(p, two.softmax(-1)[:, 0])
    assert p[2] == pytest.approx(1 / (1 + torch.exp(torch.tensor(-1.0)).item()))


def test_summary_counts_rates_over_all_items() -> None:
    klass = torch.tensor([[MATCHING, MATCHING, NON_MATCHING, FAULTY]])
    scores = ABScores(torch.tensor([[3, 3, 7, 0]]), klass,
                      torch.tensor([[0.9, 0.7, 0.2, 0.6]]), torch.tensor([[2.0, 1.0, -1.0, 0.5]]))
    summary = scores.summary(0, n_resamples=200)
    assert summary["counts"] == {"matching": 2, "non_matching": 1, "faulty": 1}
    assert summary["matching_rate"]["value"] == pytest.approx(0.5)
    assert summary["faulty_rate"]["value"] == pytest.approx(0.25)
    assert summary["p_matching"]["value"] == pytest.approx(0.6)
    assert summary["logit_diff"]["value"] == pytest.approx(0.625)
    assert summary["matching_rate"]["low"] <= 0.5 <= summary["matching_rate"]["high"]
    assert summary["top_answer_share"] == pytest.approx(0.5)


def _prepared(model):
    ids = answer_token_ids(model, "AB")
    prompts = encode_items(model, QUESTIONS, "AB", "paper")
    matching = [ids["A"] if i % 2 else ids["B"] for i in range(len(QUESTIONS))]
    other = [ids["B"] if i % 2 else ids["A"] for i in range(len(QUESTIONS))]
    return prompts, matching, other


def _items(model) -> PreparedItems:
    return PreparedItems.from_ids(*_prepared(model))


def test_plan_forcing_another_token_counts_faulty(tiny_model) -> None:
    prompts, matching, other = _prepared(tiny_model)
    w_u = tiny_model.W_U.detach().float()
    target = int(w_u.norm(dim=0).argmax())
    assert target not in matching + other
    last = tiny_model.cfg.n_layers - 1
    push = SteeringPlan((Injection(w_u[:, target] * 1e4, last),))
    scores = score_items(tiny_model, _items(tiny_model), [empty_plan(), push], batch_size=4)
    assert scores.counts(1) == {"matching": 0, "non_matching": 0, "faulty": len(prompts)}
    assert (scores.predicted[1] == target).all()
    assert scores.top_answer_share(1) == 1.0


def test_batched_equals_one_at_a_time(tiny_model) -> None:
    prompts, matching, other = _prepared(tiny_model)
    vector = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    plans = [empty_plan(), single(vector, 1, 3.0)]
    batched = score_items(tiny_model, _items(tiny_model), plans, batch_size=4)
    one = [score_items(tiny_model, PreparedItems.from_ids([p], [m], [o]), plans, batch_size=1)
           for p, m, o in zip(prompts, matching, other, strict=True)]
    assert torch.equal(batched.predicted, torch.cat([s.predicted for s in one], 1))
    assert torch.equal(batched.klass, torch.cat([s.klass for s in one], 1))
    torch.testing.assert_close(batched.logit_diff, torch.cat([s.logit_diff for s in one], 1),
                               atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(batched.p_matching, torch.cat([s.p_matching for s in one], 1),
                               atol=1e-4, rtol=1e-4)
    # the steered plan really changes something, so the comparison is not vacuous
    assert not torch.allclose(batched.logit_diff[0], batched.logit_diff[1])


def test_score_items_rejects_mismatched_inputs(tiny_model) -> None:
    prompts, matching, other = _prepared(tiny_model)
    with pytest.raises(ValueError, match="answer ids"):
        PreparedItems.from_ids(prompts, matching[:-1], other)
    with pytest.raises(ValueError, match="at least one plan"):
        score_items(tiny_model, _items(tiny_model), [])
    with pytest.raises(TypeError, match=r"PreparedItems\.from_ids"):
        score_items(tiny_model, prompts, [empty_plan()])  # type: ignore[arg-type]


def test_prompt_modes(tiny_model) -> None:
    paper = encode_items(tiny_model, QUESTIONS[:1], "AB", "paper")[0]
    chat = encode_items(tiny_model, QUESTIONS[:1], "AB", "chat")[0]
    assert paper[-1] == chat[-1]
    text = tiny_model.tokenizer.decode(chat)
    assert "<|im_start|>" in text and text.endswith("I choose (")
    assert tiny_model.tokenizer.decode(paper).startswith("Human:\n")


def test_plans_scored_together_equal_plans_scored_alone(tiny_model) -> None:
    """The experiments score a behaviour's simultaneous/combined plans in one call."""
    prompts, matching, other = _prepared(tiny_model)
    generator = torch.Generator().manual_seed(1)
    vectors = [torch.randn(tiny_model.cfg.d_model, generator=generator) for _ in range(2)]
    plans = [single(vectors[0], 1, 2.0) + single(vectors[1], 2, 2.0),
             single(vectors[0], 1, -1.0) + single(vectors[1], 2, -1.0), single(vectors[1], 2, 4.0)]
    items = PreparedItems.from_ids(prompts, matching, other)
    together = score_items(tiny_model, items, plans, batch_size=4)
    for index, plan in enumerate(plans):
        alone = score_items(tiny_model, items, [plan], batch_size=4)
        assert torch.equal(together.klass[index], alone.klass[0])
        torch.testing.assert_close(together.logit_diff[index], alone.logit_diff[0],
                                   atol=1e-4, rtol=1e-4)
    assert not torch.allclose(together.logit_diff[0], together.logit_diff[1])
