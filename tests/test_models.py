"""Model loading: offline embedded model, tiny random model, both backends, Llama 2 fail-fast."""

from __future__ import annotations

import time
import warnings

import pytest
import torch

import actsteer.models as models
from actsteer import encode, generate
from actsteer.prompts import chat_prompt, llama2_chat, paper_prompt
from actsteer.sites import HookSiteError, check_layers, hook_name


def _centred(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(-1, keepdim=True)


def test_cache_dir_respects_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ACTSTEER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "actsteer"
    monkeypatch.setenv("ACTSTEER_CACHE_DIR", str(tmp_path / "over"))
    assert models.cache_dir() == tmp_path / "over"


def test_resolve_dtype_names_bad_value():
    assert models.resolve_dtype("bf16") is torch.bfloat16
    assert models.resolve_dtype(None) is torch.float32
    with pytest.raises(ValueError, match="'half'"):
        models.resolve_dtype("half")


def test_unknown_model_and_backend_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'gpt-5'"):
        models.load_model("gpt-5")
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        models.load_model(backend="jax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no config\.json"):
        models.load_model(tmp_path)


def test_llama2_offline_fails_fast_with_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(models.ModelUnavailableError, match="HF_HUB_OFFLINE"):
        models.load_model("meta-llama/Llama-2-7b-chat-hf")
    assert time.perf_counter() - start < 5


def test_llama2_without_network_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(models.ModelUnavailableError, match="Llama-2-7b-hf"):
        models.load_model("meta-llama/Llama-2-7b-hf")
    assert time.perf_counter() - start < 15


def test_tiny_model_backends_agree(tiny_model, tiny_bridge):
    tokens = torch.tensor([encode(tiny_model, "a small test sentence")])
    with torch.no_grad():
        hooked, bridge = tiny_model(tokens), tiny_bridge(tokens)
    assert hooked.shape == bridge.shape == (1, tokens.shape[1], tiny_model.cfg.d_vocab)
    assert hooked.std() > 0.1  # random weights large enough to give non-flat logits
    torch.testing.assert_close(_centred(hooked), _centred(bridge), atol=1e-3, rtol=0)


def test_hook_names_exist_on_both_backends(tiny_any):
    layers = list(range(tiny_any.cfg.n_layers))
    for site in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
        assert check_layers(tiny_any, layers, site) == [hook_name(i, site) for i in layers]


def test_hook_site_errors_list_valid_choices(tiny_model):
    with pytest.raises(HookSiteError, match=r"layers 0\.\.3"):
        check_layers(tiny_model, [4], "resid_post")
    with pytest.raises(HookSiteError, match="valid sites"):
        hook_name(0, "resid")


def test_model_info_records_provenance(tiny_model, tiny_folder):
    info = models.model_info(tiny_model)
    assert info.n_layers == 4 and info.d_model == 64
    assert info.backend == "hooked" and info.weight_processing == "fold_ln+centre"
    assert info.name == str(tiny_folder)


def test_deprecation_warning_routed_not_hidden(tiny_folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        models.load_model(tiny_folder)
        warnings.warn("unrelated", DeprecationWarning, stacklevel=1)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert "unrelated" in messages
    assert not any("HookedTransformer" in m and "deprecated" in m for m in messages)


def test_prompt_formats(tiny_model):
    assert paper_prompt("Q?", "AB") == "Human:\nQ?\n\nAI:\nOut of (A) and (B), I choose ("
    assert paper_prompt("Q?", "YesNo").endswith("Out of (Yes) and (No), I choose (")
    assert llama2_chat("hi", system="be kind") == "[INST] <<SYS>>\nbe kind\n<</SYS>>\n\nhi [/INST]"
    text = chat_prompt(tiny_model.tokenizer, "hi", assistant_prefix="(")
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n(")
    with pytest.raises(ValueError, match="'Maybe'"):
        paper_prompt("Q?", "Maybe")


@pytest.mark.slow
def test_embedded_matches_transformers_and_answers_paris(smol):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(models.embedded_model_path()).eval()
    tokens = torch.tensor([encode(smol, "The quick brown fox jumps over")])
    with torch.no_grad():
        torch.testing.assert_close(
            _centred(smol(tokens)), _centred(hf(tokens).logits), atol=1e-3, rtol=0
        )
    prompt = chat_prompt(smol.tokenizer, "What is the capital of France?")
    assert "Paris" in generate(smol, prompt, max_new_tokens=12)


@pytest.mark.slow
def test_embedded_backends_agree(smol, smol_bridge):
    tokens = torch.tensor([encode(smol, "Activation steering adds vectors")])
    with torch.no_grad():
        torch.testing.assert_close(
            _centred(smol(tokens)), _centred(smol_bridge(tokens)), atol=1e-3, rtol=0
        )
    names = check_layers(smol_bridge, list(range(30)), "resid_post")
    assert len(names) == 30 and smol.cfg.n_layers == 30


@pytest.mark.slow
def test_second_embedded_load_uses_cache():
    models.embedded_model_path()
    start = time.perf_counter()
    path = models.embedded_model_path()
    assert time.perf_counter() - start < 0.5 and (path / "model.safetensors").exists()
