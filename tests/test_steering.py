"""Exact effects of steering on the tiny random model, on both backends."""

from __future__ import annotations

import pytest
import torch

import actsteer
from actsteer import Positions, SteeringPlan, combined, run, simultaneous, single, steer
from actsteer.batching import encode, pad
from actsteer.errors import ActsteerError
from actsteer.extraction import ContrastivePair, caa_vector
from actsteer.plan import Injection, empty_plan
from actsteer.sites import SITES, HookSiteError
from actsteer.vector import VectorMismatchError

TEXTS = ["hello there friend", "another, longer text about many things at once", "x y"]


def _actsteer_hooks(model) -> int:
    points = {id(point): point for point in model.hook_dict.values()}  # bridge has aliases
    return sum(len(point.fwd_hooks) for point in points.values())


def _batch(model, side="left"):
    return pad(model, [encode(model, t) for t in TEXTS], padding_side=side)


def test_coefficient_zero_is_bit_identical(tiny_any, vectors):
    batch = _batch(tiny_any)
    base = run(tiny_any, batch)
    vector = vectors[0] if tiny_any.cfg.d_model == vectors[0].d_model else None
    plan = single(vector, 2, 0.0) + single(vector, 0, 0.0, site="resid_pre")
    assert torch.equal(run(tiny_any, batch, plan), base)


def test_hook_adds_exactly_at_target_and_nothing_upstream(tiny_any, vectors):
    vector, layer, coefficient = vectors[0], 2, 3.5
    batch = _batch(tiny_any)
    names = ["blocks.2.hook_resid_post", "blocks.2.hook_resid_mid", "blocks.1.hook_resid_post"]

    def cache_of(plan):
        store = {}
        grabs = [(n, (lambda a, hook, n=n: store.__setitem__(n, a.clone()))) for n in names]
        with torch.no_grad(), steer(tiny_any, plan) as handle:
            handle.new_prompt(batch.starts)
            with tiny_any.hooks(fwd_hooks=grabs):
                tiny_any(batch.tokens, attention_mask=batch.attention_mask)
        return store

    before = cache_of(empty_plan())
    after = cache_of(single(vector, layer, coefficient))
    expected = before[names[0]] + coefficient * vector.at(layer)
    torch.testing.assert_close(after[names[0]], expected, atol=1e-5, rtol=0)
    assert torch.equal(after[names[1]], before[names[1]])
    assert torch.equal(after[names[2]], before[names[2]])


def test_positions_from_index_respects_left_padding(tiny_model, vectors):
    vector = vectors[0]
    plan = single(vector, 1, 2.0, positions=Positions.from_index(2))
    for side in ("left", "right"):
        batch = _batch(tiny_model, side)
        store: dict = {}

        def grab(a, hook, store=store):
            store["post"] = a.clone()

        for key, p in (("base", empty_plan()), ("steer", plan)):
            with torch.no_grad(), steer(tiny_model, p) as handle:
                handle.new_prompt(batch.starts)
                with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", grab)]):
                    tiny_model(batch.tokens, attention_mask=batch.attention_mask)
            store[key] = store.pop("post")
        added = (store["steer"] - store["base"]).norm(dim=-1) > 1e-3
        for row in range(len(TEXTS)):
            start, n = int(batch.starts[row]), int(batch.lengths[row])
            expected = torch.zeros_like(added[row])
            expected[start + 2 : start + n] = True
            if side == "right":  # pads after the text are past index 2 as well
                expected[start + 2 :] = True
            assert torch.equal(added[row], expected), (side, row)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_one_at_a_time(tiny_any, vectors, side):
    plan = single(vectors[0], 1, 4.0)
    batch = _batch(tiny_any, side)
    batched = run(tiny_any, batch, plan)
    for row, text in enumerate(TEXTS):
        alone = run(tiny_any, [text], plan)[0]
        start, n = int(batch.starts[row]), int(batch.lengths[row])
        torch.testing.assert_close(batched[row, start : start + n], alone, atol=1e-4, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_extraction_batched_equals_unbatched(tiny_any, side):
    pairs = [ContrastivePair(f"Prompt number {i} {'word ' * i}(", "A", "B") for i in range(5)]
    together = caa_vector(tiny_any, pairs, batch_size=5, padding_side=side)
    alone = caa_vector(tiny_any, pairs, batch_size=1)
    torch.testing.assert_close(together.directions, alone.directions, atol=1e-4, rtol=1e-5)


def test_combined_equals_single_with_summed_vector(tiny_model, vectors):
    first, second = vectors
    batch = _batch(tiny_model)
    merged = combined({"a": first, "b": second}, 2, weights={"a": 2.0, "b": -1.0})
    summed = single(2.0 * first - second, 2, 1.0)
    torch.testing.assert_close(run(tiny_model, batch, merged), run(tiny_model, batch, summed),
                               atol=1e-5, rtol=0)
    mean = combined([first, second], 2, mode="mean")
    torch.testing.assert_close(run(tiny_model, batch, mean),
                               run(tiny_model, batch, single(first + second, 2, 0.5)),
                               atol=1e-5, rtol=0)


def test_simultaneous_equals_single_plans_together(tiny_any, vectors):
    first, second = vectors
    batch = _batch(tiny_any)
    plan = simultaneous({"a": (first, 1, 2.0), "b": (second, 3, -1.5)}, scale=0.5)
    together = single(first, 1, 1.0) + single(second, 3, -0.75)
    assert torch.equal(run(tiny_any, batch, plan), run(tiny_any, batch, together))
    assert not torch.allclose(run(tiny_any, batch, plan), run(tiny_any, batch))


def test_two_injections_on_one_hook_add_up(tiny_model, vectors):
    first, _ = vectors
    batch = _batch(tiny_model)
    twice = single(first, 2, 1.5) + single(first, 2, 1.5)
    torch.testing.assert_close(run(tiny_model, batch, twice),
                               run(tiny_model, batch, single(first, 2, 3.0)), atol=1e-5, rtol=0)


def test_context_restores_model_on_exception(tiny_any, vectors):
    batch = _batch(tiny_any)
    before_hooks = _actsteer_hooks(tiny_any)
    base = run(tiny_any, batch)
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_any, single(vectors[0], 1, 9.0)):
        assert _actsteer_hooks(tiny_any) == before_hooks + 1
        raise RuntimeError("boom")
    assert _actsteer_hooks(tiny_any) == before_hooks
    assert torch.equal(run(tiny_any, batch), base)


def test_failure_half_way_through_registration_leaves_no_hook(tiny_model, vectors):
    plan = single(vectors[0], 1, 1.0) + single(vectors[0], 2, 1.0)
    before = _actsteer_hooks(tiny_model)
    original = tiny_model.hook_dict["blocks.2.hook_resid_post"].add_hook

    def failing(*args, **kwargs):
        raise RuntimeError("registration failed")

    tiny_model.hook_dict["blocks.2.hook_resid_post"].add_hook = failing
    try:
        with pytest.raises(RuntimeError, match="registration failed"), steer(tiny_model, plan):
            pass
    finally:
        tiny_model.hook_dict["blocks.2.hook_resid_post"].add_hook = original
    assert _actsteer_hooks(tiny_model) == before


def test_nests_with_run_with_cache(tiny_model, vectors):
    batch = _batch(tiny_model)
    with steer(tiny_model, single(vectors[0], 1, 2.0)):
        _, cache = tiny_model.run_with_cache(
            batch.tokens, attention_mask=batch.attention_mask,
            names_filter="blocks.1.hook_resid_post")
    _, base_cache = tiny_model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask,
                                              names_filter="blocks.1.hook_resid_post")
    diff = cache["blocks.1.hook_resid_post"] - base_cache["blocks.1.hook_resid_post"]
    torch.testing.assert_close(diff, (2.0 * vectors[0].at(1)).expand_as(diff), atol=1e-4,
                               rtol=0)


@pytest.mark.parametrize("mode", ["all", "prompt", "generated", "from"])
def test_transformer_lens_generate_cached_and_uncached_agree(tiny_any, vectors, mode):
    """TransformerLens's own generate loop: HookedTransformer's calls forward() directly
    (the tracker falls back to sequence lengths), the bridge's calls the model."""
    plan = single(vectors[0], 1, 6.0, positions=Positions(mode, 3))
    tokens = torch.tensor([encode(tiny_any, "The weather today is")])

    def continuation(plan, use_cache):
        with torch.no_grad(), steer(tiny_any, plan) as handle:
            handle.new_prompt()
            out = tiny_any.generate(tokens, max_new_tokens=6, do_sample=False, verbose=False,
                                    use_past_kv_cache=use_cache, stop_at_eos=False)
        return out[0, tokens.shape[1]:].tolist()

    cached = continuation(plan, True)
    assert cached == continuation(plan, False)
    if mode != "all":
        assert cached != continuation(empty_plan(), True)


def test_wrong_plans_raise_before_forward(tiny_model, vectors):
    deep = SteeringPlan((Injection(vectors[0].at(1), 7),))
    wide = SteeringPlan((Injection(torch.ones(65), 1),))
    nan = SteeringPlan((Injection(torch.full((64,), float("nan")), 1),))
    cases = [(deep, HookSiteError, r"layers 0\.\.3"),
             (wide, VectorMismatchError, "d_model 65"), (nan, ValueError, "not finite")]
    for plan, error, message in cases:
        with pytest.raises(error, match=message), steer(tiny_model, plan):
            pass
    assert _actsteer_hooks(tiny_model) == 0


def test_other_sites_steer(tiny_model, vectors):
    batch = _batch(tiny_model)
    base = run(tiny_model, batch)
    for site in ("attn_out", "mlp_out", "resid_pre", "resid_mid"):
        moved = run(tiny_model, batch, single(vectors[0].at(2), 2, 3.0, site=site))
        assert not torch.allclose(moved, base), site


# -- regression tests for defects found by an independent probe (issue 12) ----------------

def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _parity(hooked, bridge, layer: int, width: int) -> None:
    batch = _batch(hooked)
    vector = torch.randn(width, generator=torch.Generator().manual_seed(3)) * 4
    real = batch.attention_mask.bool()
    for site in SITES:
        plan = single(vector, layer, 3.0, site=site, positions=Positions.from_index(1))
        ours, theirs = run(hooked, batch, plan), run(bridge, batch, plan)
        gap = (_centred(ours) - _centred(theirs))[real].abs().max()
        assert gap < 1e-3, (site, float(gap))
        moved = (_centred(ours) - _centred(run(hooked, batch)))[real].abs().max()
        assert moved > 0.1, site


def test_every_site_steers_the_same_on_both_backends(tiny_model, tiny_bridge):
    """The bridge's hook_resid_mid is the MLP norm's input; resid_mid must still reach
    the residual stream, as on HookedTransformer."""
    _parity(tiny_model, tiny_bridge, 2, 64)


@pytest.mark.slow
def test_every_site_steers_the_same_on_both_backends_smol(smol, smol_bridge):
    _parity(smol, smol_bridge, 5, 576)


@pytest.mark.hooked
def test_resid_mid_goes_to_attn_out_only_where_it_is_the_mlp_input(tiny_model, tiny_bridge,
                                                                   vectors):
    from actsteer.steering import injection_hook

    injection = single(vectors[0].at(2), 2, 1.0, site="resid_mid").injections[0]
    assert injection_hook(tiny_model, injection) == "blocks.2.hook_resid_mid"
    assert injection_hook(tiny_bridge, injection) == "blocks.2.hook_attn_out"


def _left_padded(model):
    batch = _batch(model, "left")
    assert int(batch.starts.max()) > 0  # the test needs rows that do not start at column 0
    return batch


def test_direct_call_counts_from_each_rows_first_token(tiny_any, vectors):
    """``with steer(...): model(tokens, attention_mask=...)`` reads row starts itself."""
    batch = _left_padded(tiny_any)
    plan = single(vectors[0], 1, 4.0, positions=Positions.from_index(2))
    with torch.no_grad(), steer(tiny_any, plan):
        direct = tiny_any(batch.tokens, attention_mask=batch.attention_mask)
    torch.testing.assert_close(direct, run(tiny_any, batch, plan), atol=0, rtol=0)
    for row, text in enumerate(TEXTS):  # and each row as if alone
        start = int(batch.starts[row])
        torch.testing.assert_close(direct[row, start:], run(tiny_any, [text], plan)[0],
                                   atol=1e-4, rtol=0)


def test_resumed_forward_counts_from_each_rows_first_token(tiny_model, vectors):
    """The sweep's path: a forward resumed with start_at_layer, tokens= and attention_mask=."""
    batch = _left_padded(tiny_model)
    plan = single(vectors[0], 2, 4.0, positions=Positions.from_index(2))
    with torch.no_grad():
        resid = tiny_model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=2)
        with steer(tiny_model, plan):
            resumed = tiny_model(resid, start_at_layer=2, tokens=batch.tokens,
                                 attention_mask=batch.attention_mask)
    torch.testing.assert_close(resumed, run(tiny_model, batch, plan), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["prompt", "generated", "from"])
def test_each_new_prompt_resets_positions(tiny_any, vectors, mode):
    """Unrelated calls in one steer block do not inherit each other's prompt length or
    row starts (a short unpadded prompt first, then a longer left-padded batch)."""
    plan = single(vectors[0], 1, 4.0, positions=Positions(mode, 2))
    batch = _left_padded(tiny_any)
    short = pad(tiny_any, [encode(tiny_any, "x y")])
    assert short.tokens.shape[1] < batch.tokens.shape[1]
    with torch.no_grad(), steer(tiny_any, plan):
        tiny_any(short.tokens, attention_mask=short.attention_mask)
        second = tiny_any(batch.tokens, attention_mask=batch.attention_mask)
        third = tiny_any(short.tokens)
    torch.testing.assert_close(second, run(tiny_any, batch, plan), atol=0, rtol=0)
    torch.testing.assert_close(third, run(tiny_any, short, plan), atol=0, rtol=0)


def test_steer_removes_its_forward_pre_hook(tiny_any, vectors):
    before = len(tiny_any._forward_pre_hooks)
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_any, single(vectors[0], 1, 1.0)):
        assert len(tiny_any._forward_pre_hooks) == before + 1
        raise RuntimeError("boom")
    assert len(tiny_any._forward_pre_hooks) == before


def test_overflowing_delta_is_refused_before_any_forward(tiny_model):
    huge = SteeringPlan((Injection(torch.full((64,), 1e30), 1, 1e10,
                                                     label="huge"),))
    with pytest.raises(ValueError, match=r"huge at blocks\.1\.hook_resid_post.*overflows.*"
                                         r"smaller coefficient"), steer(tiny_model, huge):
        pass
    assert _actsteer_hooks(tiny_model) == 0 and len(tiny_model._forward_pre_hooks) == 0


def test_delta_overflowing_only_in_the_models_dtype_is_refused(tiny_folder, tiny_model):
    half = actsteer.load_model(tiny_folder, dtype="float16")
    plan = SteeringPlan((Injection(torch.full((64,), 1e5), 1, 1e3,
                                                     label="big"),))
    assert torch.isfinite(plan.injections[0].delta).all()  # finite in float32
    with pytest.raises(ValueError, match=r"big at .*overflows float32/float16"), \
            steer(half, plan):
        pass
    assert _actsteer_hooks(half) == 0 and len(half._forward_pre_hooks) == 0
    with steer(tiny_model, plan):  # a float32 model holds it
        pass


# -- the position tracker raises where it cannot know (issue 16) -------------------------

def test_from_positions_without_a_mask_on_a_left_padded_batch_raise(tiny_any, vectors):
    """Without attention_mask the rows' starts are unknown: refuse, do not count from 0."""
    batch = _left_padded(tiny_any)
    plan = single(vectors[0], 1, 4.0, positions=Positions.from_index(2))
    with torch.no_grad(), steer(tiny_any, plan), pytest.raises(
            ActsteerError, match=r"blocks\.1\.hook_resid_post with Positions\(mode='from', "
                                 r"start=2\).*attention_mask=.*new_prompt\(row_starts\)"):
        tiny_any(batch.tokens)
    assert _actsteer_hooks(tiny_any) == 0
    with torch.no_grad(), steer(tiny_any, plan) as handle:  # the fixes it names work
        handle.new_prompt(batch.starts)
        forced = tiny_any(batch.tokens, attention_mask=batch.attention_mask)
    torch.testing.assert_close(forced, run(tiny_any, batch, plan), atol=0, rtol=0)


@pytest.mark.hooked
def test_from_positions_read_the_mask_transformer_lens_infers(tiny_model, vectors):
    """HookedTransformer masks leading pad tokens itself when its tokenizer pads on the
    left: those row starts are knowable, and they are the ones the model uses."""
    batch = _left_padded(tiny_model)
    plan = single(vectors[0], 1, 4.0, positions=Positions.from_index(2))
    tokenizer = tiny_model.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        with torch.no_grad(), steer(tiny_model, plan):
            inferred = tiny_model(batch.tokens)
    finally:
        tokenizer.padding_side = side
    torch.testing.assert_close(inferred, run(tiny_model, batch, plan), atol=1e-5, rtol=0)


def test_unpadded_rows_without_a_mask_start_at_column_0(tiny_any, vectors):
    batch = _batch(tiny_any, "right")  # no row begins with padding
    plan = single(vectors[0], 1, 4.0, positions=Positions.from_index(2))
    with torch.no_grad(), steer(tiny_any, plan):
        direct = tiny_any(batch.tokens)
    reference = run(tiny_any, batch, plan)
    for row in range(len(TEXTS)):
        n = int(batch.lengths[row])
        torch.testing.assert_close(direct[row, :n], reference[row, :n], atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["prompt", "generated"])
def test_a_call_extending_the_previous_one_is_not_taken_for_generation(tiny_any, vectors,
                                                                       mode):
    """Scoring a prompt, then the prompt with an answer, is two prompts, not a generation:
    with no KV cache the second call is ambiguous, so a prompt/generated plan refuses it."""
    plan = single(vectors[0], 1, 4.0, positions=Positions(mode))
    prompt = encode(tiny_any, "The weather today is")
    short, longer = torch.tensor([prompt]), torch.tensor([prompt + encode(tiny_any, " warm")])
    with torch.no_grad(), steer(tiny_any, plan) as handle:
        tiny_any(short)
        with pytest.raises(ActsteerError, match=r"extend.*new_prompt.*generate"):
            tiny_any(longer)
        handle.new_prompt()  # the fix the error names: say it is a new prompt
        second = tiny_any(longer)
    torch.testing.assert_close(second, run(tiny_any, pad(tiny_any, [longer[0].tolist()]), plan),
                               atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["prompt", "from"])
def test_passes_outside_model_call_need_new_prompt(tiny_model, vectors, mode):
    """Passes through forward() directly are not seen; after the first, only a generation
    started with new_prompt() is read (one-token steps, or the sequence one token longer)."""
    plan = single(vectors[0], 1, 4.0, positions=Positions(mode, 1))
    first = torch.tensor([encode(tiny_model, "The weather today is")])
    other = torch.tensor([encode(tiny_model, "An unrelated and much longer prompt than that")])
    with torch.no_grad(), steer(tiny_model, plan) as handle:
        tiny_model.forward(first)
        with pytest.raises(ActsteerError, match=r"forward.*new_prompt"):
            tiny_model.forward(other)
        handle.new_prompt()
        tiny_model.forward(first)
        with pytest.raises(ActsteerError, match=r"new_prompt"):
            tiny_model.forward(other)


def test_transformer_lens_generate_of_several_rows_needs_row_starts(tiny_model, vectors):
    plan = single(vectors[0], 1, 6.0, positions=Positions.from_index(2))
    batch = _left_padded(tiny_model)
    with torch.no_grad(), steer(tiny_model, plan) as handle:
        handle.new_prompt()
        with pytest.raises(ActsteerError, match=r"row.*new_prompt\(row_starts\)"):
            tiny_model.generate(batch.tokens, max_new_tokens=2, do_sample=False,
                                verbose=False, stop_at_eos=False)
        handle.new_prompt(batch.starts)
        tiny_model.generate(batch.tokens, max_new_tokens=2, do_sample=False, verbose=False,
                            stop_at_eos=False)
