"""Baked plans: biases that reproduce hook steering exactly, in memory and as HF folders."""

from __future__ import annotations

import pytest
import torch

import actsteer
from actsteer import Positions, SteeringPlan, run, single
from actsteer.baking import PLAN_FILE, BakeError, bake, bias_edits, save_baked_hf
from actsteer.batching import encode, pad
from actsteer.models.info import backend_of
from actsteer.plan import Injection
from actsteer.sites import HookSiteError
from actsteer.vector import VectorMismatchError

TEXTS = ["Human:\nWould you like $5 now or $50 next week?\n\nAI:\nI choose (",
         "The capital of France is", "a"]


def _direction(seed: int, d: int = 64, norm: float = 10.0) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def _batch(model):
    return pad(model, [encode(model, t) for t in TEXTS], padding_side="left")


def _is_bridge(model) -> bool:
    return backend_of(model) == "bridge"


def _assert_bakes(model, plan: SteeringPlan, atol: float = 1e-5) -> None:
    batch = _batch(model)
    hooked = run(model, batch, plan)
    baked = run(bake(model, plan), batch)
    torch.testing.assert_close(baked, hooked, atol=atol, rtol=0)
    # the comparison can fail: steering moved the logits far more than the tolerance
    assert (hooked - run(model, batch)).abs().max() > 1e4 * atol


@pytest.mark.parametrize(("site", "layer"), [("resid_post", 2), ("resid_post", 3),
                                             ("attn_out", 0), ("mlp_out", 1),
                                             ("resid_pre", 1), ("resid_mid", 2)])
def test_each_site_bakes_exactly(tiny_any, site, layer):
    _assert_bakes(tiny_any, single(_direction(layer), layer, 1.5, site=site))


def test_several_injections_at_once(tiny_any):
    sites = [("resid_post", 1, 2.0), ("mlp_out", 1, -1.0), ("resid_pre", 2, 0.5),
             ("attn_out", 3, 3.0), ("resid_post", 0, 1.0), ("attn_out", 3, -0.5)]
    plan = SteeringPlan(tuple(Injection(_direction(i), layer, c, site, label=f"v{i}")
                              for i, (site, layer, c) in enumerate(sites)))
    edits = bias_edits(plan, 4)
    # resid_post(1), mlp_out(1) and resid_pre(2) all land on block 1's MLP bias
    assert set(edits) == {(1, "mlp"), (3, "attn"), (0, "mlp")}
    torch.testing.assert_close(edits[(1, "mlp")],
                               2.0 * _direction(0) - _direction(1) + 0.5 * _direction(2))
    _assert_bakes(tiny_any, plan)


def test_input_model_is_untouched(tiny_any):
    before = {k: v.clone() for k, v in tiny_any.state_dict().items()}
    batch = _batch(tiny_any)
    logits = run(tiny_any, batch)
    baked = bake(tiny_any, single(_direction(0), 2, 4.0) + single(_direction(1), 1, 2.0,
                                                                    site="attn_out"))
    assert baked is not tiny_any
    after = tiny_any.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(run(tiny_any, batch), logits)
    assert not torch.allclose(run(baked, batch), logits)
    assert not any(hook.fwd_hooks for hook in baked.hook_dict.values())  # no hooks needed


def test_baked_generation_matches_hook_generation(tiny_model):
    plan = single(_direction(3, norm=30.0), 2, 1.0)
    prompt = "Once upon a time"
    steered = actsteer.generate(tiny_model, prompt, plan, max_new_tokens=8)
    assert steered != actsteer.generate(tiny_model, prompt, max_new_tokens=8)
    assert actsteer.generate(bake(tiny_model, plan), prompt, max_new_tokens=8) == steered


@pytest.mark.parametrize(("plan", "message"), [
    (single(_direction(0), 2, positions=Positions("prompt")), "limited to positions"),
    (single(_direction(0), 2, positions=Positions.from_index(0)), "limited to positions"),
    (single(_direction(0), 0, site="resid_pre"), "before block 0"),
])
def test_refusals_name_the_reason(tiny_any, plan, message):
    with pytest.raises(BakeError, match=message):
        bake(tiny_any, plan)


def test_bridge_bakes_resid_mid_as_the_attention_output_bias(tiny_bridge, tiny_model):
    """On the bridge, hook steering adds resid_mid at attn_out (its hook_resid_mid is the
    MLP norm's input); bake does the same with the attention output bias, as on
    HookedTransformer, and both backends agree."""
    plan = single(_direction(0), 2, 1.5, site="resid_mid")
    baked = bake(tiny_bridge, plan)  # verified against hook steering inside bake
    batch = _batch(tiny_bridge)
    torch.testing.assert_close(run(baked, batch),
                               run(bake(tiny_bridge, single(_direction(0), 2, 1.5,
                                                            site="attn_out")), batch),
                               atol=1e-5, rtol=0)
    _assert_bakes(tiny_bridge, plan)
    _assert_bakes(tiny_model, plan)


def test_plans_that_do_not_fit_raise_before_copying(tiny_model):
    with pytest.raises(HookSiteError, match=r"layers 0\.\.3"):
        bake(tiny_model, single(_direction(0), 7))
    with pytest.raises(VectorMismatchError, match="d_model 65"):
        bake(tiny_model, single(torch.ones(65), 1))


def test_verification_catches_an_edit_the_model_ignores(tiny_model, monkeypatch):
    import actsteer.baking as bake_module
    from actsteer.models.info import backend_of

    monkeypatch.setattr(bake_module, f"_edit_{backend_of(tiny_model)}", lambda *args: None)
    with pytest.raises(BakeError, match="differs from hook steering"):
        bake(tiny_model, single(_direction(0), 2, 1.0))


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _assert_folder_matches_hooks(model, folder, plan, atol):
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    batch = pad(model, [encode(model, t) for t in TEXTS], padding_side="right")
    with torch.no_grad():
        theirs = reloaded(batch.tokens, attention_mask=batch.attention_mask).logits
    ours = run(model, batch, plan)
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(_centred(theirs)[mask], _centred(ours)[mask], atol=atol, rtol=0)
    assert (_centred(run(model, batch)) - _centred(ours))[mask].abs().max() > 100 * atol
    return reloaded


def test_saved_folder_is_plain_transformers(tiny_model, tiny_folder, tmp_path):
    plan = (single(_direction(0), 2, 2.0) + single(_direction(1), 1, -1.0, site="attn_out")
            + single(_direction(2), 3, 1.0, site="resid_pre"))
    folder = save_baked_hf(plan, tmp_path / "baked", source=tiny_folder)
    reloaded = _assert_folder_matches_hooks(tiny_model, folder, plan, atol=1e-4)
    assert reloaded.config.attention_bias and reloaded.config.mlp_bias
    layers = reloaded.model.layers
    torch.testing.assert_close(layers[2].mlp.down_proj.bias, 2.0 * _direction(0) + _direction(2))
    torch.testing.assert_close(layers[1].self_attn.o_proj.bias, -_direction(1))
    zero = [layers[0].mlp.down_proj.bias, layers[3].self_attn.o_proj.bias,
            *(getattr(layer.self_attn, n).bias for layer in layers for n in ("q_proj", "k_proj",
                                                                          "v_proj")),
            *(getattr(layer.mlp, n).bias for layer in layers for n in ("gate_proj", "up_proj"))]
    assert all(not bias.any() for bias in zero)
    assert SteeringPlan.load(folder / PLAN_FILE).identity() == plan.identity()


def test_save_accepts_a_loaded_model_and_refuses_existing_folders(tiny_model, tmp_path):
    plan = single(_direction(0), 1, 1.0)
    folder = save_baked_hf(plan, tmp_path / "baked", source=tiny_model)
    _assert_folder_matches_hooks(tiny_model, folder, plan, atol=1e-4)
    with pytest.raises(FileExistsError, match="not empty"):
        save_baked_hf(plan, folder, source=tiny_model)
    with pytest.raises(ValueError, match="not a local Hugging Face folder"):
        save_baked_hf(plan, tmp_path / "other", source=tmp_path / "nowhere")
    with pytest.raises(BakeError, match="limited to positions"):
        save_baked_hf(single(_direction(0), 1, positions=Positions("generated")),
                      tmp_path / "other", source=tiny_model)
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_embedded_bakes_in_memory_and_as_a_folder(smol, tmp_path):
    vector = _direction(5, d=576, norm=8.0)
    plan = single(vector, 15, 1.0) + single(_direction(6, d=576, norm=4.0), 10, 1.0,
                                            site="attn_out")
    _assert_bakes(smol, plan, atol=1e-4)
    folder = save_baked_hf(plan, tmp_path / "smol-baked")
    _assert_folder_matches_hooks(smol, folder, plan, atol=1e-4)  # hooked vs HF: ~4e-5
