"""sweep_logits with prefix reuse equals one full steered forward per plan (tiny model)."""

from __future__ import annotations

import pytest
import torch

import actsteer.sweep as sweep_module
from actsteer import (
    HookSiteError,
    Positions,
    combined,
    empty_plan,
    encode,
    pad,
    simultaneous,
    single,
    steer,
)
from actsteer.batching import length_batches
from actsteer.sweep import start_layer, supports_prefix_reuse, sweep_logits

TEXTS = [
    "hello there friend",
    "another, longer text about many things at once and then some more",
    "x y",
    "Human:\nDo you prefer now or later?\n\nAI:\nOut of (A) and (B), I choose (",
    "a medium length sentence for the batch",
]


def _plans(vectors):
    first, second = vectors
    return [
        empty_plan(),
        single(first, 0, 4.0, site="resid_pre"),
        single(first, 1, -3.0),  # resid_post
        single(second, 2, 5.0, site="attn_out"),
        single(first, 3, 2.0, site="resid_pre"),
        single(second, 3, 6.0),  # last block's output
        combined({"first": first, "second": second}, 2, weights=[1.0, -2.0], coefficient=2.0),
        simultaneous({"a": (first, 1, 2.0), "b": (second, 3, -1.5)}, scale=1.5),
        single(first, 1, 4.0, positions=Positions.from_index(2)),
        single(second, 2, 4.0, positions=Positions("prompt")),
        single(first, 1, 3.0, site="resid_pre") + single(second, 1, -2.0, site="mlp_out"),
    ]


def _reference(model, batch, plans):
    """The straightforward path: steer, full forward, take each row's last real token."""
    rows = torch.arange(batch.tokens.shape[0])
    out = []
    with torch.no_grad():
        for plan in plans:
            with steer(model, plan) as handle:
                handle.new_prompt(batch.starts)
                logits = model(batch.tokens, attention_mask=batch.attention_mask)
            out.append(logits[rows, batch.last].float())
    return torch.stack(out)


def _batch(model, side, texts=TEXTS):
    return pad(model, [encode(model, t) for t in texts], padding_side=side)


def _assert_same(got, want):
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("side", ["left", "right"])
def test_sweep_equals_full_forward_per_plan(tiny_any, vectors, side):
    plans = _plans(vectors)
    batch = _batch(tiny_any, side)
    got = sweep_logits(tiny_any, batch, plans)
    want = _reference(tiny_any, batch, plans)
    _assert_same(got, want)
    # Every steered plan really changes the logits, so equality above is not vacuous.
    for index in range(1, len(plans)):
        assert (want[index] - want[0]).abs().max() > 1e-2, plans[index].describe()


@pytest.mark.parametrize("side", ["left", "right"])
def test_full_path_equals_prefix_path(tiny_model, vectors, side):
    plans = _plans(vectors)
    batch = _batch(tiny_model, side)
    _assert_same(sweep_logits(tiny_model, batch, plans),
                 sweep_logits(tiny_model, batch, plans, reuse_prefix=False))


def test_prefix_is_computed_once(tiny_model, vectors):
    """Block 0 runs once for all plans starting later; block 2 once per steered plan,
    plus once to carry the shared stream on to the unsteered plan's end."""
    assert supports_prefix_reuse(tiny_model)
    first, _ = vectors
    plans = [empty_plan()] + [single(first, 2, c) for c in (1.0, 2.0, 3.0)]
    calls = {0: 0, 2: 0}

    def count(layer):
        def hook(activation, hook):
            calls[layer] += 1
        return hook

    batch = _batch(tiny_model, "left")
    with tiny_model.hooks(fwd_hooks=[(f"blocks.{k}.hook_resid_pre", count(k)) for k in calls]):
        sweep_logits(tiny_model, batch, plans)
    assert calls == {0: 1, 2: 4}


def test_broken_prefix_is_detected(tiny_model, vectors, monkeypatch):
    """If plans resumed one block too late (their injection skipped), the test's
    comparison would catch it: the equivalence tests can fail."""
    plans = _plans(vectors)[1:6]
    batch = _batch(tiny_model, "left")
    want = _reference(tiny_model, batch, plans)
    monkeypatch.setattr(sweep_module, "start_layer",
                        lambda model, plan: min(start_layer(model, plan) + 1,
                                                int(model.cfg.n_layers)))
    got = sweep_logits(tiny_model, batch, plans)
    assert not torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
def test_length_bucketed_equals_unbucketed(tiny_any, vectors, side):
    plans = _plans(vectors)[:4]
    sequences = [encode(tiny_any, t) for t in TEXTS]
    whole = sweep_logits(tiny_any, pad(tiny_any, sequences, padding_side=side), plans)
    pieces = torch.zeros_like(whole)
    for group in length_batches([len(s) for s in sequences], 2, bucket=True):
        part = pad(tiny_any, [sequences[i] for i in group], padding_side=side)
        pieces[:, group] = sweep_logits(tiny_any, part, plans)
    _assert_same(pieces, whole)


def test_positions_and_reduce(tiny_model, vectors):
    plans = _plans(vectors)[:5]
    batch = _batch(tiny_model, "right")
    chosen = torch.zeros_like(batch.last) + 1  # the second token of every row
    with torch.no_grad():
        want = []
        for plan in plans:
            with steer(tiny_model, plan) as handle:
                handle.new_prompt(batch.starts)
                logits = tiny_model(batch.tokens, attention_mask=batch.attention_mask)
            want.append(logits[torch.arange(len(chosen)), chosen])
    _assert_same(sweep_logits(tiny_model, batch, plans, positions=chosen), torch.stack(want))
    answers = torch.tensor([10, 20])
    reduced = sweep_logits(tiny_model, batch, plans, reduce=lambda lg: lg[:, answers])
    full = sweep_logits(tiny_model, batch, plans)
    assert reduced.shape == (len(plans), len(TEXTS), 2)
    torch.testing.assert_close(reduced, full[..., answers])


def test_bad_plan_raises_before_any_forward(tiny_model, vectors):
    first, _ = vectors
    calls = []
    batch = _batch(tiny_model, "left")
    counter = [("blocks.0.hook_resid_pre", lambda a, hook: calls.append(1))]
    with tiny_model.hooks(fwd_hooks=counter), pytest.raises(HookSiteError):
        sweep_logits(tiny_model, batch, [empty_plan(), single(first.at(0), 99, 1.0)])
    assert calls == []
    with pytest.raises(ValueError):
        sweep_logits(tiny_model, batch, [])
