"""Model loading: offline embedded model, tiny random model, both backends, Llama 2 fail-fast."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import actsteer.models as models
from actsteer import generate, hub, paths
from actsteer.batching import encode
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
    assert models.cache_dir is paths.cache_dir  # one implementation, re-exported
    monkeypatch.delenv("ACTSTEER_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "actsteer"


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


def test_llama2_offline_fails_fast_with_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(models.ModelUnavailableError, match="HF_HUB_OFFLINE") as info:
        models.load_model("meta-llama/Llama-2-7b-chat-hf")
    assert time.perf_counter() - start < 5
    assert "Llama-2-7b-chat-hf" in str(info.value) and "embedded default" in str(info.value)
    assert isinstance(info.value, hub.HubUnavailableError)


def test_llama2_without_network_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(models.ModelUnavailableError, match="Llama-2-7b-hf"):
        models.load_model("meta-llama/Llama-2-7b-hf")
    assert time.perf_counter() - start < 15


# --------------------------------------------------------------------------- the Hub probe


@pytest.fixture()
def online(monkeypatch):
    """Offline flags cleared, so the probe really connects (to the endpoint a test sets)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


def _no_network(*args, **kwargs):
    raise AssertionError("the Hub probe opened a connection in offline mode")


def test_hub_offline_flag_raises_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    start = time.perf_counter()
    with pytest.raises(hub.HubUnavailableError) as info:
        hub.require_hub("fetch x/y", instead="use a local copy")
    assert time.perf_counter() - start < 0.5
    assert str(info.value) == (
        "cannot fetch x/y: offline mode is on (HF_HUB_OFFLINE is set); use a local copy"
    )
    # The caller's subclass is raised, still a HubUnavailableError.
    with pytest.raises(models.ModelUnavailableError):
        hub.require_hub("load m", instead="-", error=models.ModelUnavailableError)


def test_hub_datasets_offline_counts_for_datasets_only(monkeypatch, online):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub.offline_flag("dataset") == "HF_DATASETS_OFFLINE"
    assert hub.offline_flag("model") is None
    with pytest.raises(hub.HubUnavailableError, match="HF_DATASETS_OFFLINE"):
        hub.require_hub("stream d", instead="-", repo_type="dataset")
    with pytest.raises(hub.HubUnavailableError, match="cannot reach"):
        hub.require_hub("load m", instead="-", repo_type="model", timeout=2.0)


def test_hub_unreachable_endpoint_fails_within_the_timeout(monkeypatch, online):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")  # discard port: refused at once
    start = time.perf_counter()
    with pytest.raises(hub.HubUnavailableError) as info:
        hub.require_hub("fetch x/y", instead="use a local copy", timeout=2.0)
    assert time.perf_counter() - start < 2.5
    message = str(info.value)
    assert message.startswith("cannot reach the Hugging Face Hub at http://127.0.0.1:9 within 2 s")
    assert message.endswith("; use a local copy") and "\n" not in message


@pytest.fixture()
def silent_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections (kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_hub_silent_endpoint_times_out_on_the_wall_clock(monkeypatch, online, silent_endpoint):
    monkeypatch.setenv("HF_ENDPOINT", silent_endpoint)
    start = time.perf_counter()
    with pytest.raises(hub.HubUnavailableError, match=r"within 0\.5 s"):
        hub.require_hub("fetch x/y", instead="-", timeout=0.5)
    assert 0.4 < time.perf_counter() - start < 1.5
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got 0"):
        hub.require_hub("fetch x/y", instead="-", timeout=0)


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_hub_any_http_answer_counts_as_reachable(monkeypatch, online):
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("HF_ENDPOINT", url + "/")
        assert hub.require_hub("fetch x/y", instead="-", timeout=5.0) == url
    finally:
        server.shutdown()
        server.server_close()


def test_hub_access_check_passes_for_a_cached_model_offline(monkeypatch, tmp_path: Path):
    repo_id = "meta-llama/Llama-2-7b-hf"
    repo = tmp_path / "models--meta-llama--Llama-2-7b-hf"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    hub.check_access(repo_id, instead="-", error=models.ModelUnavailableError)  # no error
    assert hub.cached_file(repo_id, "config.json") == repo / "snapshots" / commit / "config.json"
    with pytest.raises(models.ModelUnavailableError, match=r"Llama-2-13b-hf.*HF_HUB_OFFLINE"):
        hub.check_access("meta-llama/Llama-2-13b-hf", instead="-",
                         error=models.ModelUnavailableError)


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
    assert info.backend == models.default_backend()
    assert info.weight_processing == "fold_ln+centre"
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


@pytest.mark.hooked
def test_backend_of_is_the_one_backend_question(tiny_model, tiny_bridge):
    """One answer everywhere, by class (a subclass of HookedTransformer is hooked), and a
    clear error for anything that is neither backend."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from actsteer.errors import InvalidTypeError
    from actsteer.models.info import backend_of

    assert backend_of(tiny_model) == "hooked" and backend_of(tiny_bridge) == "bridge"

    class Custom(HookedTransformer):
        pass

    cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=10,
                                  act_fn="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        custom = Custom(cfg)
    assert backend_of(custom) == "hooked"
    assert models.model_info(custom).backend == "hooked"  # not built by load_model
    with pytest.raises(InvalidTypeError, match=r"HookedTransformer or a TransformerBridge.*Linear"):
        backend_of(torch.nn.Linear(2, 2))


def test_tiny_model_folder_keys_every_setting_and_leaves_the_global_rng(tmp_path):
    state = torch.get_rng_state()
    models.tiny_model_folder(tmp_path / "tiny", n_layers=1, d_model=16, d_mlp=32)
    assert torch.equal(torch.get_rng_state(), state)  # a library call seeds nothing global
    default = models.tiny_model_folder()
    for setting, key, value in (("n_heads", "num_attention_heads", 2),
                                ("n_kv_heads", "num_key_value_heads", 4),
                                ("d_mlp", "intermediate_size", 96)):
        folder = models.tiny_model_folder(**{setting: value})
        assert folder != default, setting
        config = json.loads((folder / "config.json").read_text())
        assert config[key] == value, setting
