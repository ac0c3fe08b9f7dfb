"""Validity of the harness's scorers (issue 25): each separates or ranks what it should on
real text, and each matches an independent computation on the tiny model."""

from __future__ import annotations

import random

import pytest
import torch

from actsteer.batching import encode, encode_continuations
from actsteer.data.expressed import EXPRESSED_BEHAVIOURS, load_expressed
from actsteer.harness.detection import detection_auc, roc_auc
from actsteer.harness.mapping import Thresholds, combined
from actsteer.harness.scorers import (
    NEUTRAL_INSTRUCTION,
    concept_rate,
    mean_logprobs,
    plain_scores,
    scaffold,
    vader_compound,
)
from actsteer.likelihood import counted_words

# Everyday instructions and an answer to each, written here: the relevance scorer should
# make each answer more likely after its own instruction than after another one.
MATCHED = (
    ("How do I make a cup of tea?", " Boil the water, pour it over the tea bag and let it "
                                    "steep for three minutes before adding milk."),
    ("What should I pack for a beach holiday?", " Pack sunscreen, a swimsuit, a towel, "
                                                "sunglasses and a hat for the sunny beach."),
    ("How can I keep a houseplant alive?", " Water the plant once a week, keep it near a "
                                           "bright window and repot it when the roots fill "
                                           "the pot."),
    ("Give me a tip for running my first marathon.", " Build up your weekly running distance "
                                                     "slowly and practise long runs before "
                                                     "the race."),
    ("How do I bake bread at home?", " Mix flour, yeast, salt and water into a dough, let it "
                                     "rise, then bake the loaf in a hot oven."),
    ("What is a good way to learn French?", " Practise French every day with a tutor, read "
                                            "simple French books and learn common verbs."),
)


def test_concept_separates_behaviour_from_contrast_completions(tiny_model) -> None:
    """The concept score the harness rates (words per 100 tokens, counted words only;
    VADER's compound for sentiment) ranks each built-in behaviour's completions above its
    contrast completions: ROC-AUC >= 0.8 for every behaviour. (Sentiment's words alone reach
    0.78 here: several completions carry the sentiment without a listed word, which is why
    the harness rates sentiment by VADER.)"""
    pytest.importorskip("vaderSentiment")
    for name in EXPRESSED_BEHAVIOURS:
        behaviour = load_expressed(name)
        good_texts = [g for _, g, _ in behaviour.completions]
        bad_texts = [b for _, _, b in behaviour.completions]
        if name == "sentiment":
            good, bad = vader_compound(good_texts), vader_compound(bad_texts)
            assert good is not None and bad is not None
        else:
            words = counted_words(tiny_model, behaviour.words)["behaviour"]
            good, bad = ([concept_rate(t, words, len(encode_continuations(tiny_model, [t])[0]))
                          for t in texts] for texts in (good_texts, bad_texts))
        assert roc_auc(good, bad) >= 0.8, name


def test_concept_rate_by_hand() -> None:
    # "Happy" (any case) and "happy" count, "unhappy" and "happiness" do not: 2 of 10 tokens
    text = "Happy days! I was unhappy, then happy; happiness is rare."
    assert concept_rate(text, ["happy"], 10) == pytest.approx(20.0)
    assert concept_rate("nothing here", ["happy"], 4) == 0.0


def test_roc_auc_by_hand() -> None:
    # 3 x 2 pairs: (3>1, 3>2), (2>1, 2=2 -> 0.5), (0<1, 0<2): 3.5 / 6
    assert roc_auc([3.0, 2.0, 0.0], [1.0, 2.0]) == pytest.approx(3.5 / 6)


def _by_hand(model, context: list[int], continuation: list[int]) -> float:
    """Mean log-probability of the continuation from one unpadded forward pass."""
    tokens = torch.tensor([context + continuation])
    with torch.no_grad():
        logits = model(tokens)[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    picked = [float(logp[len(context) - 1 + i, token]) for i, token in enumerate(continuation)]
    return sum(picked) / len(picked)


def test_fluency_and_relevance_match_a_hand_computation(tiny_any) -> None:
    """Relevance and fluency on ragged generations (padded in one batch) equal their
    definitions computed one sequence at a time from the model's logits."""
    model = tiny_any
    instructions = ["Describe a walk in the park.", "Hi", "What should I cook tonight?"]
    generations = [encode_continuations(model, [text])[0] for text in
                   (" The trees were green and the air was fresh.", " Hello!",
                    " Pasta with tomatoes")]
    scored = plain_scores(model, instructions, generations, batch_size=2)
    neutral = encode(model, scaffold(model.tokenizer, NEUTRAL_INSTRUCTION))
    for i, (instruction, generation) in enumerate(zip(instructions, generations, strict=True)):
        given = _by_hand(model, encode(model, scaffold(model.tokenizer, instruction)), generation)
        alone = _by_hand(model, neutral, generation)
        assert scored["fluency"][i] == pytest.approx(alone, abs=2e-4)
        assert scored["relevance"][i] == pytest.approx(given - alone, abs=2e-4)


def test_mean_logprobs_refuses_an_empty_continuation(tiny_model) -> None:
    with pytest.raises(ValueError, match="row 1 has an empty"):
        mean_logprobs(tiny_model, [[1, 2], [1, 2]], [[3], []])


def test_detection_folds_hold_pairs_out(tiny_model) -> None:
    """The AUC is the Mann-Whitney statistic of the held-out projections it returns, over
    every pair, in the number of folds asked for."""
    found = detection_auc(tiny_model, load_expressed("wedding"), 1, folds=4)
    assert found["folds"] == 4 and len(found["behaviour"]) == len(found["contrast"]) == 16
    assert found["auc"] == pytest.approx(roc_auc(found["behaviour"], found["contrast"]), abs=1e-4)


def test_mapping_and_combined_by_hand() -> None:
    reference = Thresholds.from_reference([0.0, 0.0, 0.0, 4.0], [0.2, 0.4, 0.6], [-3.0, -2.0,
                                                                                    -1.0])
    assert reference.concept_low == pytest.approx(1.0)  # 75th percentile of 0, 0, 0, 4
    assert [reference.concept(x) for x in (1.0, 3.0, 6.0)] == [0, 1, 2]
    assert [reference.relevance(x) for x in (-0.1, 0.1, 0.2)] == [0, 1, 2]  # half of 0.4
    assert [reference.fluency(x, 1.0) for x in (-2.5, -3.0, -4.0)] == [2, 1, 0]
    assert reference.fluency(-2.0, 0.4) == 0  # degenerate repetition
    assert combined(2, 1, 2) == pytest.approx(1.5)  # 3 / (1/2 + 1 + 1/2)
    assert combined(2, 0, 2) == 0.0


@pytest.mark.slow
def test_relevance_ranks_matched_pairs_above_shuffled(smol) -> None:
    """On the embedded model, each answer's PMI with its own instruction is above its PMI
    with the other instructions (ROC-AUC of matched against mismatched >= 0.8)."""
    instructions = [q for q, _ in MATCHED]
    answers = encode_continuations(smol, [a for _, a in MATCHED])
    shifted = [instructions[shift:] + instructions[:shift] for shift in (0, 1, 3)]
    scored = plain_scores(smol, [q for row in shifted for q in row], answers * 3,
                          batch_size=len(answers) * 3)["relevance"]
    n = len(answers)
    assert roc_auc(scored[:n], scored[n:]) >= 0.8


@pytest.mark.slow
def test_fluency_ranks_real_text_above_token_shuffled(smol) -> None:
    """Each answer scores a higher per-token log-likelihood than the same tokens shuffled."""
    answers = encode_continuations(smol, [a for _, a in MATCHED])
    rng = random.Random(0)
    shuffled = [rng.sample(ids, len(ids)) for ids in answers]
    instructions = [q for q, _ in MATCHED] * 2
    fluency = plain_scores(smol, instructions, answers + shuffled,
                           batch_size=len(instructions))["fluency"]
    n = len(answers)
    assert all(r > m for r, m in zip(fluency[:n], fluency[n:], strict=True))


def _behaviour_file(folder, data: dict, instruction: str | None) -> str:
    import json

    data = {k: v for k, v in data.items() if k != "instruction"}
    if instruction is not None:
        data["instruction"] = instruction
    path = folder / f"gardening_{instruction is not None}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_behaviour_files_get_detection_and_their_own_instruction(tiny_model, tmp_path,
                                                                 gardening) -> None:
    """A user's behaviour file: its own instruction is used, a file without one is refused
    for prompting (built-ins fall back to the harness's table), and its detection AUC is
    computed over folds of its pairs (3 pairs: 3 folds)."""
    from actsteer.harness.instructions import behaviour_instruction, fallback_instructions

    own = load_expressed(_behaviour_file(tmp_path, gardening, "Talk about your garden."))
    assert behaviour_instruction(own) == "Talk about your garden."
    with pytest.raises(ValueError, match="has no instruction"):
        behaviour_instruction(load_expressed(_behaviour_file(tmp_path, gardening, None)))
    builtin = load_expressed("wedding")
    assert behaviour_instruction(builtin) == (builtin.instruction
                                              or fallback_instructions()["wedding"])
    found = detection_auc(tiny_model, own, 1, folds=4)
    assert found["folds"] == 3 and len(found["behaviour"]) == 3
