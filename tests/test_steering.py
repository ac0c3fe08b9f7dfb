"""Exact effects of steering on the tiny random model, on both backends."""

from __future__ import annotations

import pytest
import torch

import actsteer
from actsteer import Positions, combined, encode, pad, run, simultaneous, single, steer
from actsteer.extraction import ContrastivePair, caa_vector

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

    before = cache_of(actsteer.empty_plan())
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

        for key, p in (("base", actsteer.empty_plan()), ("steer", plan)):
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
def test_cached_and_uncached_generation_agree(tiny_any, vectors, mode):
    plan = single(vectors[0], 1, 6.0, positions=Positions(mode, 3))
    cached = actsteer.generate(tiny_any, "The weather today is", plan, max_new_tokens=6)
    uncached = actsteer.generate(tiny_any, "The weather today is", plan, max_new_tokens=6,
                                 use_past_kv_cache=False)
    assert cached == uncached
    if mode != "all":
        assert cached != actsteer.generate(tiny_any, "The weather today is", None,
                                           max_new_tokens=6)


def test_wrong_plans_raise_before_forward(tiny_model, vectors):
    deep = actsteer.SteeringPlan((actsteer.Injection(vectors[0].at(1), 7),))
    wide = actsteer.SteeringPlan((actsteer.Injection(torch.ones(65), 1),))
    nan = actsteer.SteeringPlan((actsteer.Injection(torch.full((64,), float("nan")), 1),))
    cases = [(deep, actsteer.HookSiteError, r"layers 0\.\.3"),
             (wide, actsteer.VectorMismatchError, "d_model 65"), (nan, ValueError, "not finite")]
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
