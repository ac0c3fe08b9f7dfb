"""Projections baked into weights (Arditi et al.'s weight-space ablation): orthogonalised
embedding and output projections equal hook ablation, in memory and as a transformers
folder, on an untied and a tied tiny Llama."""

from __future__ import annotations

import pytest
import torch

from actsteer import bake, project, run, save_baked_hf, single
from actsteer.baking import BakeError
from actsteer.batching import encode, pad
from actsteer.models import load_model, tiny_model_folder
from actsteer.models.info import backend_of

TEXTS = ["The capital of France is", "Once upon a time there was a small", "a"]


def _vec(seed: int, norm: float = 5.0) -> torch.Tensor:
    v = torch.randn(64, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def _ablation(model, seed: int = 0):
    return project(_vec(seed), 1, every_site=True, n_layers=int(model.cfg.n_layers))


def _assert_baked_equals_hooks(model, plan) -> None:
    batch = pad(model, [encode(model, t) for t in TEXTS], padding_side="left")
    hooked = run(model, batch, plan)
    baked = bake(model, plan)
    got = run(baked, batch)
    scale = float(hooked.abs().max())
    torch.testing.assert_close(got, hooked, atol=100 * torch.finfo(torch.float32).eps * scale,
                               rtol=0)
    assert (hooked - run(model, batch)).abs().max() > 0.1  # ablation moved the logits
    assert not any(point.fwd_hooks for point in baked.hook_dict.values())


def test_every_site_ablation_bakes_on_an_untied_model(tiny_any):
    _assert_baked_equals_hooks(tiny_any, _ablation(tiny_any))


def test_every_site_ablation_bakes_on_a_tied_model(tied_any):
    """The copy's unembedding is the original's: only the input side is orthogonalised."""
    _assert_baked_equals_hooks(tied_any, _ablation(tied_any))
    if backend_of(tied_any) == "bridge":
        baked = bake(tied_any, _ablation(tied_any)).original_model
        original = tied_any.original_model
        assert baked.lm_head.weight is not baked.model.embed_tokens.weight
        assert torch.equal(baked.lm_head.weight, original.lm_head.weight)


def test_clamp_and_ablate_then_add_bake_at_the_writers(tiny_any):
    plan = (project(_vec(1), 2, 3.0, site="attn_out")
            + project(_vec(2), 1, then_add=_vec(3), coefficient=0.5, site="mlp_out")
            + project(_vec(4), 0, 2.0, site="resid_pre")
            + single(_vec(5), 2, 1.0, site="mlp_out"))
    _assert_baked_equals_hooks(tiny_any, plan)


@pytest.mark.parametrize(("plan", "message"), [
    (project(_vec(0), 1), "accumulated residual stream"),
    (project(_vec(0), 2, site="resid_pre"), "accumulated residual stream"),
    (project(_vec(0), 1, site="attn_out") + single(_vec(1), 1, site="attn_out"),
     "same hook point"),
])
def test_projections_no_weight_carries_are_refused(tiny_model, plan, message):
    with pytest.raises(BakeError, match=message):
        bake(tiny_model, plan)


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


@pytest.mark.parametrize("tied", [False, True])
def test_export_is_a_plain_transformers_folder(request, tmp_path, tied):
    """AutoModelForCausalLM loads the orthogonalised folder and gives hook ablation's
    logits (centred: TransformerLens centres the unembedding) within 1e-4."""
    from transformers import AutoModelForCausalLM

    folder = request.getfixturevalue("tied_folder") if tied else tiny_model_folder()
    model = load_model(folder)
    plan = _ablation(model, seed=7) + single(_vec(8), 2, 1.5)  # removal, then a bias
    exported = save_baked_hf(plan, tmp_path / "ablated", source=folder)
    reloaded = AutoModelForCausalLM.from_pretrained(exported).eval()
    original = AutoModelForCausalLM.from_pretrained(folder)
    assert not reloaded.config.tie_word_embeddings
    assert torch.equal(reloaded.lm_head.weight, original.lm_head.weight)  # untied, unchanged
    batch = pad(model, [encode(model, t) for t in TEXTS], padding_side="right")
    with torch.no_grad():
        theirs = reloaded(batch.tokens, attention_mask=batch.attention_mask).logits
    ours = run(model, batch, plan)
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(_centred(theirs)[mask], _centred(ours)[mask], atol=1e-4, rtol=0)
    assert (_centred(run(model, batch)) - _centred(ours))[mask].abs().max() > 0.1
