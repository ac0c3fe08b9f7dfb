"""sweep_logits with prefix reuse equals one full steered forward per plan (tiny model)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

import actsteer.sweep as sweep_module
from actsteer import Positions, combined, simultaneous, single, steer
from actsteer.accuracy import Documents, accuracy_sweep, count_hits
from actsteer.baking import bake
from actsteer.batching import Batch, encode, length_batches, pad
from actsteer.plan import empty_plan
from actsteer.sites import HookSiteError
from actsteer.sweep import PrefixCache, start_layer, supports_prefix_reuse, sweep_logits

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
        single(first.at(0), 0, 4.0, site="resid_pre"),
        single(first, 1, -3.0),  # resid_post
        single(second.at(2), 2, 5.0, site="attn_out"),
        single(first.at(3), 3, 2.0, site="resid_pre"),
        single(second, 3, 6.0),  # last block's output
        combined({"first": first, "second": second}, 2, weights=[1.0, -2.0], coefficient=2.0),
        simultaneous({"a": (first, 1, 2.0), "b": (second, 3, -1.5)}, scale=1.5),
        single(first, 1, 4.0, positions=Positions.from_index(2)),
        single(second, 2, 4.0, positions=Positions("prompt")),
        single(first.at(1), 1, 3.0, site="resid_pre")
        + single(second.at(1), 1, -2.0, site="mlp_out"),
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


@pytest.mark.hooked  # prefix reuse is HookedTransformer's
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


@pytest.mark.hooked  # prefix reuse is HookedTransformer's
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


def _full_logits(model, batch, plans):
    with torch.no_grad():
        out = []
        for plan in plans:
            with steer(model, plan) as handle:
                handle.new_prompt(batch.starts)
                out.append(model(batch.tokens, attention_mask=batch.attention_mask).float())
    return torch.stack(out)


@pytest.mark.parametrize("side", ["left", "right"])
def test_all_positions_equal_full_steered_forwards(tiny_any, vectors, side):
    plans = _plans(vectors)
    batch = _batch(tiny_any, side)
    got = sweep_logits(tiny_any, batch, plans, positions="all")
    want = _full_logits(tiny_any, batch, plans)
    real = batch.attention_mask.bool()
    assert got.shape == want.shape
    torch.testing.assert_close(got[:, real], want[:, real], atol=1e-4, rtol=1e-4)


@pytest.mark.hooked  # prefix reuse is HookedTransformer's
def test_prefix_cache_reuses_streams_across_calls_and_stays_exact(tiny_model, vectors):
    first, _ = vectors
    batch = _batch(tiny_model, "left")
    cache = PrefixCache()
    calls = []
    counter = [("blocks.0.hook_resid_pre", lambda a, hook: calls.append(1))]
    plans = [single(first, 2, c) for c in (1.0, -2.0, 3.0)] + [empty_plan()]
    want = sweep_logits(tiny_model, batch, plans, reuse_prefix=False)
    with tiny_model.hooks(fwd_hooks=counter):
        got = torch.cat([sweep_logits(tiny_model, batch, [p], cache=cache) for p in plans])
    _assert_same(got, want)
    # block 0 ran for the first call only: later calls resumed from the cached stream at 2
    # (the unsteered plan advanced that stream from 2 to the end, without block 0)
    assert len(calls) == 1
    # kept by content: an equal batch finds the stream, a differently padded one does not
    assert cache.get(tiny_model, _batch(tiny_model, "left"), 2) is not None
    assert cache.get(tiny_model, _batch(tiny_model, "right"), 2) is None


@pytest.mark.hooked  # prefix reuse is HookedTransformer's
def test_prefix_cache_budget_drops_oldest_first(tiny_model, vectors):
    first, _ = vectors
    batches = [_batch(tiny_model, "left", TEXTS[:2]), _batch(tiny_model, "left", TEXTS[2:4])]
    sizes = [b.tokens.numel() * int(tiny_model.cfg.d_model) * 4 for b in batches]
    cache = PrefixCache(max_bytes=max(sizes))  # room for one stream only
    for batch in batches:
        sweep_logits(tiny_model, batch, [single(first, 2, 1.0)], cache=cache)
    assert cache.nbytes <= cache.max_bytes
    assert cache.get(tiny_model, batches[0], 2) is None
    assert cache.get(tiny_model, batches[1], 2) is not None
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(-1)


def test_accuracy_through_the_engine_equals_a_plain_steered_forward(tiny_any, vectors,
                                                                    greedy_sequences):
    """Next-token accuracy has no layer hint to get wrong: a plan at block 1 (and 3) is
    scored exactly as a full forward, with and without the prefix cache."""
    first, second = vectors
    plans = [single(first, 1, 30.0), single(second.at(3), 3, -40.0, site="resid_pre"),
             empty_plan()]
    documents = Documents.build(tiny_any, greedy_sequences, batch_size=3)
    cache = PrefixCache()
    for round_ in range(2):  # the second round resumes every prefix from the cache
        got = accuracy_sweep(tiny_any, documents, plans, k=3, cache=cache)
        for plan, result in zip(plans, got, strict=True):
            for group, batch in zip(documents.groups, documents.batches, strict=True):
                (logits,) = _full_logits(tiny_any, batch, [plan])
                top1, top3 = count_hits(logits, batch, 3)
                rows = torch.as_tensor(group)
                assert torch.equal(result.top1[rows], top1.cpu()), (round_, plan.name)
                assert torch.equal(result.topk[rows], top3.cpu())
    assert got[0].top1.sum() != got[2].top1.sum()  # the steering really changed the hits


def test_positions_must_be_known(tiny_model):
    batch = _batch(tiny_model, "left")
    with pytest.raises(ValueError, match="positions='every'"):
        sweep_logits(tiny_model, batch, [empty_plan()], positions="every")
    with pytest.raises(ValueError, match="one column per row"):
        sweep_logits(tiny_model, batch, [empty_plan()], positions=torch.tensor([0, 1]))


# -- the prefix cache is keyed by what determines a stream (issue 18) --------------------

@contextlib.contextmanager
def _block0_runs(model):
    runs: list[int] = []
    handle = model.blocks[0].register_forward_hook(lambda *args: runs.append(1))
    try:
        yield runs
    finally:
        handle.remove()


@pytest.mark.hooked  # prefix reuse is HookedTransformer's
def test_prefix_cache_is_keyed_by_model_weights_tokens_and_mask(tiny_model, vectors):
    """A new Batch with the same content hits; another model, an in-place weight edit, or
    other tokens or mask miss; every answer equals the uncached path."""
    first, _ = vectors
    model = copy.deepcopy(tiny_model)  # edited in place below
    plan = single(first, 2, 3.0)
    batch = _batch(model, "left")
    cache = PrefixCache()

    def scored(target, which):
        with _block0_runs(target) as runs:
            got = sweep_logits(target, which, [plan], cache=cache)
        want = sweep_logits(target, which, [plan], reuse_prefix=False)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        return len(runs)

    assert scored(model, batch) == 1
    assert scored(model, _batch(model, "left")) == 0  # equal content, new object: a hit
    assert scored(model, batch) == 0
    assert scored(tiny_model, batch) == 1  # same batch, another model
    mask = batch.attention_mask.clone()
    row = int(batch.starts.argmin())
    mask[row, int(batch.starts[row])] = 0  # that row's first token becomes padding
    lengths = batch.lengths.clone()
    lengths[row] -= 1
    assert scored(model, Batch(batch.tokens, mask, lengths, "left")) == 1  # other mask
    assert scored(model, _batch(model, "left", TEXTS[:3])) == 1  # other tokens
    with torch.no_grad():
        model.blocks[0].mlp.W_out.mul_(1.5)  # an in-place edit of one weight
    assert scored(model, batch) == 1
    assert scored(model, batch) == 0
    baked = bake(model, single(first, 0, 2.0))  # a copy with other biases
    assert scored(baked, batch) == 1
