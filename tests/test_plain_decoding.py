"""Bridge generation on the plain Hugging Face view: the bridge's function, the bridge's
additions, and the bridge's own loop wherever the view would not be exact."""

from __future__ import annotations

import pytest
import torch

from actsteer import Positions, single
from actsteer.batching import encode_many, pad
from actsteer.generation import _BridgeDecoder, _decoder, generate_tokens
from actsteer.models.plain import plain_view
from actsteer.plain_decoding import PlainDecoder
from actsteer.sites import SITES

PROMPTS = ["The weather", "Once upon a time there was a small", "a", "def f(x): return"]


def _vector(model, seed: int = 0) -> torch.Tensor:
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed)) * 3


def _our_hooks(module: torch.nn.Module) -> int:
    """Hooks of actsteer's on ``module`` and below (transformers adds its own output
    recorders on a first forward pass and keeps them)."""
    return sum(fn.__module__ == "actsteer.plain_decoding"
               for m in module.modules()
               for fn in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))


def _assert_same_logits(bridge, view) -> None:
    """The view's logits are the bridge's on a left-padded batch (its real positions)."""
    batch = pad(bridge, encode_many(bridge, PROMPTS), padding_side="left")
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = bridge(batch.tokens, attention_mask=batch.attention_mask)
        ours = view.module(input_ids=batch.tokens, attention_mask=batch.attention_mask,
                           position_ids=positions).logits
    real = batch.attention_mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=1e-5)


def test_view_shares_the_bridges_weights_and_computes_its_logits(tiny_bridge):
    view = plain_view(tiny_bridge)
    assert view is not None
    bridge_storage = {p.data_ptr() for p in tiny_bridge.parameters()}
    assert {p.data_ptr() for p in view.module.parameters()} <= bridge_storage  # no copies
    names = {type(m).__name__ for m in view.module.modules()}
    assert not any(name.endswith("Bridge") or name == "HookPoint" for name in names)
    assert view.module.config._attn_implementation == "sdpa"
    assert tiny_bridge.original_model.config._attn_implementation != "sdpa"  # bridge untouched
    _assert_same_logits(tiny_bridge, view)


@pytest.mark.parametrize(("site", "mode"), [(site, "from") for site in SITES] + [
    ("resid_pre", mode) for mode in ("all", "prompt", "generated")])
def test_every_site_and_position_adds_what_the_bridge_adds(tiny_bridge, site, mode):
    """Prompt pass and five decode steps on the view against the bridge's own loop (its
    hook points), logits at every step; and the plan changes them."""
    batch = pad(tiny_bridge, encode_many(tiny_bridge, PROMPTS), padding_side="left")
    plan = single(_vector(tiny_bridge), 1, 2.0, site=site,
                  positions=Positions(mode, 2))
    steps = torch.randint(0, tiny_bridge.cfg.d_vocab, (5, len(PROMPTS), 1),
                          generator=torch.Generator().manual_seed(1))

    def run(decoder, steered: bool) -> list[torch.Tensor]:
        with torch.no_grad(), decoder.steering(plan if steered else single(
                _vector(tiny_bridge), 1, 0.0)) as handle:
            handle.new_prompt(batch.starts)
            out = [decoder.start(batch.tokens, batch.attention_mask)]
            out += [decoder.step(tokens) for tokens in steps]
        return out

    plain = _decoder(tiny_bridge, True, plan)
    assert isinstance(plain, PlainDecoder)
    ours, theirs = run(plain, True), run(_BridgeDecoder(tiny_bridge, True), True)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=f"step {step}")
    unsteered = run(_decoder(tiny_bridge, True, plan), False)
    assert any(not torch.allclose(a, b, atol=1e-3) for a, b in zip(ours, unsteered, strict=True))
    assert _our_hooks(plain.view.module) == 0  # type: ignore[attr-defined]


def test_hooks_leave_the_view_on_an_exception(tiny_bridge):
    decoder = _decoder(tiny_bridge, True, None)
    assert isinstance(decoder, PlainDecoder)
    with pytest.raises(RuntimeError, match="boom"), decoder.steering(
            single(_vector(tiny_bridge), 1, 2.0)):
        raise RuntimeError("boom")
    assert _our_hooks(decoder.view.module) == 0


def test_a_users_hook_point_keeps_the_bridges_loop_and_fires(tiny_bridge):
    seen: list[tuple[int, ...]] = []

    def record(activation, hook):
        seen.append(tuple(activation.shape))

    sequences = encode_many(tiny_bridge, PROMPTS[:2])
    plan = single(_vector(tiny_bridge), 1, 2.0)
    fast = generate_tokens(tiny_bridge, sequences, plan, max_new_tokens=4, stop_at_eos=False)
    with tiny_bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_post", record)]):
        assert isinstance(_decoder(tiny_bridge, True, plan), _BridgeDecoder)
        slow = generate_tokens(tiny_bridge, sequences, plan, max_new_tokens=4,
                               stop_at_eos=False)
    assert len(seen) == 4  # the prompt pass and three decode steps
    assert slow == fast
    assert isinstance(_decoder(tiny_bridge, True, plan), PlainDecoder)  # hook gone again
    assert isinstance(_decoder(tiny_bridge, False, plan), _BridgeDecoder)  # the reference


def test_a_bridge_processed_by_transformerlens_has_no_plain_view(tiny_folder):
    """TransformerLens's own processing keeps its results outside the HF modules' weights
    as far as actsteer knows, so the view would not be this bridge's function."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(tiny_folder), device="cpu")
    bridge.enable_compatibility_mode(disable_warnings=True)
    assert plain_view(bridge) is None
    assert isinstance(_decoder(bridge, True, None), _BridgeDecoder)



def test_a_soft_capped_model_keeps_its_attention_and_the_bridges_numbers(tmp_path):
    """Fused attention cannot soft-cap attention logits (Gemma 2), so the view keeps the
    bridge's attention there, and still computes the bridge's logits."""
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

    from actsteer.models import embedded_tokenizer_path, load_model

    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_path())
    cfg = Gemma2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=16, max_position_embeddings=128, attn_logit_softcapping=5.0,
                       final_logit_softcapping=3.0, sliding_window=16)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(cfg)
    with torch.no_grad():  # attention logits well past the cap, so capping them matters
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(40)
            layer.self_attn.k_proj.weight.mul_(40)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    bridge = load_model(tmp_path, backend="bridge", fold_ln=False)
    view = plain_view(bridge)
    assert view is not None and view.module.config._attn_implementation != "sdpa"
    _assert_same_logits(bridge, view)
