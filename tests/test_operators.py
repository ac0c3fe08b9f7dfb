"""Projection operators: ablate, clamp, ablate-then-add, at one layer, several or every
site that writes the residual stream; exact effects at the hook, and every path a plan
takes (positions, KV-cached generation, the shared-prefix sweep, padding, saving)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from actsteer import Positions, SteeringPlan, project, run, single, steer
from actsteer.batching import encode, encode_many, pad
from actsteer.errors import InvalidValueError
from actsteer.generation import generate_tokens
from actsteer.models.info import backend_of
from actsteer.norms import ResidualNorms
from actsteer.operators import AblateThenAdd, Project
from actsteer.plain_decoding import plain_decoder
from actsteer.projection import every_site_hooks
from actsteer.sweep import sweep_logits

TEXTS = ["The capital of France is", "Once upon a time there was a small", "a",
         "def f(x): return"]
MODES = ["all", "prompt", "generated", "from"]


def _vec(seed: int, norm: float = 5.0) -> torch.Tensor:
    v = torch.randn(64, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def _unit(seed: int) -> torch.Tensor:
    v = _vec(seed).double()
    return v / v.norm()


def _at_hook(model, plan: SteeringPlan | None, name: str, texts=TEXTS, side="left"):
    """The activation at ``name`` as the steering hook leaves it (a capture hook added after
    the plan's fires after it), or unsteered; float64."""
    batch = pad(model, [encode(model, t) for t in texts], padding_side=side)
    seen: list[torch.Tensor] = []

    def grab(activation, hook):
        seen.append(activation.detach().double().clone())

    with torch.no_grad(), steer(model, plan or SteeringPlan()) as handle:
        handle.new_prompt(batch.starts)
        with model.hooks(fwd_hooks=[(name, grab)]):
            model(batch.tokens, attention_mask=batch.attention_mask)
    return seen[0], batch.attention_mask.bool()


def _scale(x: torch.Tensor) -> float:
    return float(x.norm(dim=-1).max())


def test_ablation_leaves_no_component_and_nothing_else_changes(tiny_any):
    name = "blocks.2.hook_resid_post"
    before, mask = _at_hook(tiny_any, None, name)
    after, _ = _at_hook(tiny_any, project(_vec(0), 2), name)
    d = _unit(0)
    assert (after @ d).abs().max() <= 1e-6 * _scale(before)
    assert (before @ d)[mask].abs().min() > 1e-3  # there was something to remove
    rest = before - (before @ d)[..., None] * d
    torch.testing.assert_close(after, rest, atol=1e-5 * _scale(before), rtol=0)


def test_clamp_sets_the_component_to_c_in_each_unit(tiny_any):
    name = "blocks.1.hook_attn_out"
    before, _ = _at_hook(tiny_any, None, name)
    d = _unit(1)
    raw = project(_vec(1), 1, 3.0, site="attn_out")
    norms = ResidualNorms("attn_out", {1: 8.0}, 10)
    by_norm = project(_vec(1), 1, 0.25, site="attn_out", norms=norms)
    examples = torch.randn(7, 64, generator=torch.Generator().manual_seed(9)) + 2 * d.float()
    by_mean = project(_vec(1), 1, 1.5, site="attn_out", examples=examples)
    mean = float((examples.double() @ d).mean())
    for plan, c in ((raw, 3.0), (by_norm, 0.25 * 8.0), (by_mean, 1.5 * mean)):
        after, _ = _at_hook(tiny_any, plan, name)
        torch.testing.assert_close(after @ d, torch.full_like(after @ d, c),
                                   atol=1e-5 * _scale(before), rtol=0)
        rest = before - (before @ d)[..., None] * d
        torch.testing.assert_close(after - (after @ d)[..., None] * d, rest,
                                   atol=1e-5 * _scale(before), rtol=0)
    recorded = [p.injections[0].to_dict()["operator"] for p in (raw, by_norm, by_mean)]
    assert recorded == [{"kind": "project", "units": "raw", "unit_size": 1.0},
                        {"kind": "project", "units": "norm", "unit_size": 8.0},
                        {"kind": "project", "units": "mean", "unit_size": pytest.approx(mean)}]
    assert project(_vec(1), 1, 3.0, examples=mean).injections[0].coefficient == \
        pytest.approx(3.0 * mean)  # a number computed elsewhere is the same unit


def test_ablate_then_add_removes_one_direction_and_adds_another(tiny_any):
    name = "blocks.3.hook_mlp_out"
    before, _ = _at_hook(tiny_any, None, name)
    d, v = _unit(2), _vec(3, norm=2.0)
    plan = project(_vec(2), 3, then_add=v, coefficient=1.5, site="mlp_out")
    operator = plan.injections[0].operator
    assert isinstance(operator, AblateThenAdd)
    after, _ = _at_hook(tiny_any, plan, name)
    want = before - (before @ d)[..., None] * d + 1.5 * v.double()
    torch.testing.assert_close(after, want, atol=1e-5 * _scale(before), rtol=0)
    # not a clamp renamed: v has a part orthogonal to d, which the result keeps
    assert float((v.double() - (v.double() @ d) * d).norm()) > 1.0


def test_every_site_ablation_keeps_the_stream_orthogonal_to_d(tiny_any):
    n_layers = int(tiny_any.cfg.n_layers)
    plan = project(_vec(4), 2, every_site=True, n_layers=n_layers)
    assert [(i.layer, i.site) for i in plan.injections] == every_site_hooks(n_layers)
    assert {i.to_dict()["vector"] for i in plan.injections} == {
        plan.injections[0].to_dict()["vector"]}  # one direction everywhere
    d = _unit(4)
    for layer in range(n_layers):
        name = f"blocks.{layer}.hook_resid_post"
        before, mask = _at_hook(tiny_any, None, name)
        after, _ = _at_hook(tiny_any, plan, name)
        assert (after @ d).abs().max() <= 1e-5 * _scale(before), name
        assert (before @ d)[mask].abs().max() > 1e-2


def test_builder_refusals_name_the_problem():
    with pytest.raises(InvalidValueError, match="every_site=True ablates one direction"):
        project(_vec(0), 1, 2.0, every_site=True, n_layers=4)
    with pytest.raises(InvalidValueError, match="model's depth"):
        project(_vec(0), 1, every_site=True)
    with pytest.raises(InvalidValueError, match="ablate-then-add"):
        project(_vec(0), 1, 1.0, then_add=_vec(1))
    with pytest.raises(InvalidValueError, match="not both"):
        project(_vec(0), 1, norms=ResidualNorms("resid_post", {1: 1.0}, 1), examples=1.0)
    with pytest.raises(InvalidValueError, match="norm 0"):
        project(torch.zeros(64), 1)
    with pytest.raises(InvalidValueError, match="mapping"):
        project(_vec(0), [1, 2], 1.0, examples=torch.ones(3, 64))


@pytest.mark.parametrize("mode", MODES)
def test_cached_generation_equals_recomputation(tiny_any, mode):
    """KV-cached (the plain view on the bridge) equals use_cache=False, token for token."""
    n_layers = int(tiny_any.cfg.n_layers)
    where = Positions(mode, 2)
    plan = (project(_vec(5, 30.0), 1, 40.0, positions=where)
            + project(_vec(6), 2, then_add=_vec(7, 20.0), positions=where)
            + project(_vec(8), 0, every_site=True, n_layers=n_layers, positions=where))
    if backend_of(tiny_any) == "bridge":  # the fast path, not the bridge's own loop
        assert plain_decoder(tiny_any, plan) is not None
    sequences = encode_many(tiny_any, TEXTS)
    cached = generate_tokens(tiny_any, sequences, plan, max_new_tokens=10, stop_at_eos=False)
    assert cached == generate_tokens(tiny_any, sequences, plan, max_new_tokens=10,
                                     stop_at_eos=False, use_cache=False)
    assert cached != generate_tokens(tiny_any, sequences, None, max_new_tokens=10,
                                     stop_at_eos=False)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_single_on_both_padding_sides(tiny_any, side):
    plan = (project(_vec(0), 1, 2.0, positions=Positions.from_index(1))
            + project(_vec(1), 0, every_site=True, n_layers=int(tiny_any.cfg.n_layers)))
    batch = pad(tiny_any, [encode(tiny_any, t) for t in TEXTS], padding_side=side)
    together = run(tiny_any, batch, plan)
    for row, text in enumerate(TEXTS):
        alone = run(tiny_any, [text], plan)[0]
        real = batch.attention_mask[row].bool()
        torch.testing.assert_close(together[row][real], alone, atol=1e-4, rtol=0)


def test_sweep_with_prefix_reuse_equals_one_plan_at_a_time(tiny_any):
    """Every-site ablation starts at block 0 (no shared prefix); the others share one."""
    n_layers = int(tiny_any.cfg.n_layers)
    plans = [SteeringPlan(),
             project(_vec(0), 0, every_site=True, n_layers=n_layers),
             project(_vec(1), 2, 3.0),
             project(_vec(2), [1, 3], then_add=_vec(3), coefficient=2.0, site="attn_out"),
             project(_vec(4), 2, positions=Positions("from", 2)),
             single(_vec(5), 2, 1.0)]
    batch = pad(tiny_any, [encode(tiny_any, t) for t in TEXTS], padding_side="left")
    shared = sweep_logits(tiny_any, batch, plans, positions="all")
    alone = torch.stack([run(tiny_any, batch, plan).float() for plan in plans])
    torch.testing.assert_close(shared, alone, atol=1e-4, rtol=0)
    assert (alone[1] - alone[0]).abs().max() > 0.1  # the block-0 plan does something


def test_hooks_are_removed_on_exit_and_on_exceptions(tiny_any):
    plan = project(_vec(0), 0, every_site=True, n_layers=int(tiny_any.cfg.n_layers))
    points = {id(p): p for p in tiny_any.hook_dict.values()}.values()
    plain = run(tiny_any, TEXTS)
    with pytest.raises(RuntimeError, match="inside"), steer(tiny_any, plan):
        assert sum(len(p.fwd_hooks) for p in points) == len(plan.injections)
        raise RuntimeError("inside")
    assert sum(len(p.fwd_hooks) for p in points) == 0
    assert not tiny_any._forward_pre_hooks
    assert torch.equal(run(tiny_any, TEXTS), plain)


def test_projection_plans_save_load_and_keep_their_identity(tmp_path):
    plan = (project(_vec(0), 1, 0.3, norms=ResidualNorms("resid_post", {1: 4.0}, 5))
            + project(_vec(1), 2, then_add=_vec(2)))
    loaded = SteeringPlan.load(plan.save(tmp_path / "plan.json"))
    assert loaded.identity() == plan.identity()
    assert isinstance(loaded.injections[0].operator, Project)
    assert torch.equal(loaded.injections[1].removed, plan.injections[1].removed)
    # the operator is part of the identity: the same vector added is another plan
    added = SteeringPlan((replace(plan.injections[0], operator=None),))
    assert added.identity() != SteeringPlan(plan.injections[:1]).identity()


def test_additive_plans_keep_their_identity():
    """Identities stored in results logs stay valid: this value was computed on main
    before operators existed (8e7e9ba)."""
    v = torch.arange(64, dtype=torch.float32) / 64 - 0.5
    w = torch.linspace(-1, 1, 64)
    plan = (single(v, 2, 1.5, positions=Positions("from", 3), label="known")
            + single(w, 1, 0.25, site="attn_out",
                     norms=ResidualNorms("attn_out", {1: 3.0}, 10)))
    assert plan.identity() == "af99bb58c482a13bdff91aacd02040bad0edba9c4736a585d5959484833a31a3"
    assert "operator" not in plan.to_dict()["injections"][0]
