"""Next-token accuracy: shifted targets, masked padding, steering at coefficient 0."""

from __future__ import annotations

import math

import pytest
import torch

from actsteer import single
from actsteer.accuracy import next_token_accuracy
from actsteer.batching import encode
from actsteer.stats import bootstrap

DOCS = ["the cat sat on the mat and the cat sat", "one two three four five six",
        "a b", "def f(x):\n    return x + 1\n"]


def _reference(model, ids):
    ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(ids)[0]
    predictions = logits[:-1].topk(5, dim=-1).indices
    targets = ids[0, 1:]
    return int((predictions[:, 0] == targets).sum()), int(
        (predictions == targets[:, None]).any(-1).sum()), len(targets)


@pytest.mark.parametrize("side", ["left", "right"])
def test_matches_one_document_reference(tiny_model, greedy_sequences, side):
    seqs = [*greedy_sequences, *(encode(tiny_model, d) for d in DOCS)]
    assert len({len(s) for s in seqs}) > 3  # padding is exercised
    result = next_token_accuracy(tiny_model, seqs, k=5, batch_size=3, padding_side=side)
    expected = [_reference(tiny_model, ids) for ids in seqs]
    got = [(int(result.top1[i]), int(result.topk[i]), int(result.tokens[i]))
           for i in range(len(seqs))]
    assert got == expected
    assert sum(hits for hits, _, _ in got) >= 20  # real hits, not zeros against zeros


def test_perfect_predictor_scores_one_and_shift_matters(tiny_model):
    seq = encode(tiny_model, "one two three four")

    class Oracle(torch.nn.Module):
        """Predicts the next token of ``seq`` exactly (a model that has memorised it)."""

        def __init__(self):
            super().__init__()
            self.cfg, self.tokenizer, self.hook_dict = tiny_model.cfg, tiny_model.tokenizer, {}

        def hooks(self, fwd_hooks=()):
            import contextlib
            return contextlib.nullcontext(self)

        def forward(self, tokens, attention_mask=None):
            logits = torch.zeros(*tokens.shape, self.cfg.d_vocab)
            nxt = torch.tensor([*seq[1:], 0])
            logits[0, torch.arange(len(seq)), nxt] = 1.0
            return logits

    result = next_token_accuracy(Oracle(), [seq], k=1)
    assert result.top1_rate == 1.0 and int(result.tokens[0]) == len(seq) - 1


def test_coefficient_zero_reproduces_unsteered(tiny_model):
    # The model's own greedy continuations: unsteered top-1 accuracy is 100% by construction.
    seqs = []
    for doc in DOCS[:2]:
        prompt = torch.tensor([encode(tiny_model, doc)[:3]])
        out = tiny_model.generate(prompt, max_new_tokens=8, do_sample=False, verbose=False,
                                  stop_at_eos=False)
        seqs.append(out[0].tolist())
    base = next_token_accuracy(tiny_model, seqs)
    assert int(base.top1.sum()) >= int(base.tokens.sum()) - 2 * 2  # prompt tokens may miss
    vector = torch.randn(64, generator=torch.Generator().manual_seed(0))
    zero = next_token_accuracy(tiny_model, seqs, single(vector, 1, 0.0))
    assert torch.equal(base.top1, zero.top1) and torch.equal(base.topk, zero.topk)
    moved = next_token_accuracy(tiny_model, seqs, single(vector, 1, 50.0))
    assert int(moved.top1.sum()) < int(base.top1.sum())


def test_bootstrap_weighted_mean_and_interval():
    est = bootstrap([1.0, 0.0], weights=[3.0, 1.0], n_resamples=500)
    assert est.value == pytest.approx(0.75)
    assert 0.0 <= est.low <= est.value <= est.high <= 1.0
    narrow = bootstrap([0.5] * 50)
    assert narrow.low == narrow.high == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 weights for 3 values"):
        bootstrap([1.0, 2.0, 3.0], weights=[1.0, 1.0])


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_never_counts_even_when_the_pad_token_would_be_a_hit(tiny_model,
                                                                      greedy_sequences, side):
    # Make the pad token the model's greedy next token after the shortest document, so an
    # unmasked count would score a hit on the first right pad (and on left pads).
    shortest = min(greedy_sequences, key=len)
    with torch.no_grad():
        following = int(tiny_model(torch.tensor([shortest]))[0, -1].argmax())
    tokenizer = tiny_model.tokenizer
    saved = tokenizer.pad_token
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(following)
    try:
        assert tokenizer.pad_token_id == following
        result = next_token_accuracy(tiny_model, greedy_sequences, k=5,
                                     batch_size=len(greedy_sequences), padding_side=side)
    finally:
        tokenizer.pad_token = saved
    got = [(int(result.top1[i]), int(result.topk[i]), int(result.tokens[i]))
           for i in range(len(greedy_sequences))]
    assert got == [_reference(tiny_model, ids) for ids in greedy_sequences]


def test_perplexity_equals_exp_of_the_token_weighted_mean_nll(tiny_model, greedy_sequences):
    from actsteer.accuracy import Documents, accuracy_sweep
    from actsteer.plan import empty_plan

    docs = Documents.build(tiny_model, greedy_sequences, batch_size=3)
    [scored] = accuracy_sweep(tiny_model, docs, [empty_plan()])
    total, count = 0.0, 0
    for seq in greedy_sequences:
        with torch.no_grad():
            logits = tiny_model(torch.tensor([seq]))[0].double()
        logp = torch.log_softmax(logits[:-1], -1)
        total -= float(logp.gather(-1, torch.tensor(seq[1:])[:, None]).sum())
        count += len(seq) - 1
    estimate = scored.perplexity(n_resamples=200)
    assert estimate.value == pytest.approx(math.exp(total / count), rel=1e-4)
    assert estimate.low <= estimate.value <= estimate.high
    assert float(scored.nll.sum()) == pytest.approx(total, rel=1e-4)
