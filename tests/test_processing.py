"""The lean weight loader (actsteer.models.processing) against TransformerLens's own route.

The reference is TransformerLens's ``load_and_process_state_dict`` on the state dict of
the Hugging Face model (what ``load_model`` did before the lean loader): same config,
same processing, computed on whole float32 state dicts by TransformerLens's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from actsteer.errors import InvalidValueError
from actsteer.models import ModelUnavailableError, load_model, model_info, tiny_model_folder
from actsteer.models.checkpoint import Checkpoint
from actsteer.models.embedded import embedded_tokenizer_path
from actsteer.models.info import available_backends
from actsteer.models.loading import quiet_deprecation
from actsteer.models.processing import LEAN_ARCHITECTURES, lean_supported

TOL = 1e-5

HAS_HOOKED = "hooked" in available_backends()  # TransformerLens 4 has only the bridge


def _random_weights(model: torch.nn.Module, seed: int) -> None:
    """Large random weights, and random norm weights/biases (so folding them matters)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
            elif "norm" in name or "ln" in name:
                param.uniform_(0.5, 1.5) if name.endswith("weight") else param.normal_(0, 0.3)
            else:
                param.normal_(0.0, 0.3)


def _save(model: torch.nn.Module, folder: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded_tokenizer_path()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vocab() -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(embedded_tokenizer_path()))


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory, vocab) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=96,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    _random_weights(model, 1)
    return _save(model, tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, vocab) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=3, n_head=4, n_positions=128,
                     n_ctx=128)  # TL reads n_ctx, which transformers 5 no longer writes
    model = GPT2LMHeadModel(cfg)
    _random_weights(model, 2)
    return _save(model, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory) -> Path:
    """The tiny Llama, with random (not all-ones) RMSNorm weights."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_model_folder())
    _random_weights(model, 3)
    # No "llama" in the path: TransformerLens would read it as a model name.
    return _save(model, tmp_path_factory.mktemp("tiny-rms"))


def _reference(folder: Path, fold_ln: bool, dtype: torch.dtype = torch.float32):
    """TransformerLens's own route: HF model -> TL state dict -> load_and_process_state_dict."""
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    cfg = loading.get_pretrained_model_config(str(folder), fold_ln=fold_ln, device="cpu",
                                              dtype=dtype)
    state_dict = loading.get_pretrained_state_dict(str(folder), cfg, hf_model, dtype=dtype)
    with quiet_deprecation():
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, fold_ln=fold_ln, center_writing_weights=fold_ln,
                                      center_unembed=fold_ln, fold_value_biases=fold_ln)
    return model.eval(), hf_model.eval()


TOKENS = torch.tensor([[1, 17, 400, 2048, 5, 99, 31000, 7], [3, 3, 3, 9000, 12, 44, 1, 0]])

FOLDERS = ["llama_folder", "qwen2_folder", "gpt2_folder"]


@pytest.mark.hooked
@pytest.mark.parametrize("fold_ln", [True, False])
@pytest.mark.parametrize("folder_fixture", FOLDERS)
def test_lean_logits_and_weights_equal_transformerlens(request, folder_fixture, fold_ln,
                                                       monkeypatch):
    import actsteer.models.loading as loading
    from actsteer.models.processing import load_weights

    folder = request.getfixturevalue(folder_fixture)
    calls = []
    monkeypatch.setattr(loading, "load_weights",
                        lambda *a, **k: calls.append(a) or load_weights(*a, **k))
    lean = load_model(folder, backend="hooked", device="cpu", fold_ln=fold_ln)
    ref, _ = _reference(folder, fold_ln)
    assert len(calls) == 1 and lean_supported(folder, lean.cfg.original_architecture)
    lean_params, ref_params = dict(lean.named_parameters()), dict(ref.named_parameters())
    assert lean_params.keys() == ref_params.keys()
    for name, value in ref_params.items():
        torch.testing.assert_close(lean_params[name], value, atol=TOL, rtol=0, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(lean(TOKENS), ref(TOKENS), atol=TOL, rtol=0)
    assert model_info(lean).weight_processing == ("fold_ln+centre" if fold_ln else "none")


@pytest.mark.hooked
@pytest.mark.parametrize("folder_fixture", FOLDERS)
def test_processed_model_still_computes_the_hf_model(request, folder_fixture):
    """Independent of TL's processing code: processing keeps log-probs (softmax is shift
    invariant) and the folded model equals the plain HF model up to centring."""
    folder = request.getfixturevalue(folder_fixture)
    lean = load_model(folder, backend="hooked", device="cpu")
    _, hf_model = _reference(folder, fold_ln=False)
    with torch.no_grad():
        got = lean(TOKENS).log_softmax(-1)
        want = hf_model(TOKENS).logits.log_softmax(-1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.hooked
def test_processing_is_not_a_no_op(llama_folder):
    """The comparison above can fail: unprocessed weights differ from processed ones."""
    folded = load_model(llama_folder, backend="hooked", device="cpu")
    plain = load_model(llama_folder, backend="hooked", device="cpu", fold_ln=False)
    assert not torch.allclose(folded.blocks[0].attn.W_Q, plain.blocks[0].attn.W_Q, atol=1e-3)
    assert not torch.allclose(folded.W_U, plain.W_U, atol=1e-3)


@pytest.mark.hooked
def test_bf16_lean_equals_reference_in_bf16(llama_folder):
    """In bf16 both compute in float32 and round once: the weights agree to bf16 rounding."""
    lean = load_model(llama_folder, backend="hooked", device="cpu", dtype="bf16")
    ref, _ = _reference(llama_folder, True, torch.bfloat16)
    assert lean.W_U.dtype == torch.bfloat16
    for name, value in dict(ref.named_parameters()).items():
        got = dict(lean.named_parameters())[name]
        torch.testing.assert_close(got.float(), value.float(), atol=0, rtol=2**-7, msg=name)


@pytest.mark.hooked
def test_sharded_checkpoint_reads_like_a_single_file(llama_folder, tmp_path):
    """An index json and two shards (the real Llama-2 layout) give the same model."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(llama_folder / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for path in llama_folder.iterdir():
        if path.name != "model.safetensors":
            (sharded / path.name).write_bytes(path.read_bytes())
    for shard, keys in halves.items():
        save_file({k: tensors[k].contiguous() for k in keys}, sharded / shard)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: s for s, ks in halves.items() for k in ks}}))
    ck = Checkpoint(sharded)
    assert sorted(ck.keys()) == names
    for name in names:
        assert torch.equal(ck.get(name, tensors[name].dtype), tensors[name])
    a = load_model(llama_folder, backend="hooked", device="cpu")
    b = load_model(sharded, backend="hooked", device="cpu")
    with torch.no_grad():
        assert torch.equal(a(TOKENS), b(TOKENS))


@pytest.mark.hooked
def test_unsupported_architecture_falls_back_to_transformerlens(tmp_path, monkeypatch):
    """Outside LEAN_ARCHITECTURES the loader is TransformerLens's, so numerics do not move."""
    import actsteer.models.processing as processing

    called = []
    monkeypatch.setattr(processing, "LEAN_ARCHITECTURES", ())
    monkeypatch.setattr(processing, "load_weights", lambda *a, **k: called.append(a))
    folder = tiny_model_folder()
    assert not processing.lean_supported(folder, "LlamaForCausalLM")
    model = load_model(folder, backend="hooked", device="cpu")
    ref, _ = _reference(folder, True)
    assert not called
    with torch.no_grad():
        torch.testing.assert_close(model(TOKENS), ref(TOKENS), atol=TOL, rtol=0)


def test_checkpoint_errors_name_the_problem(tmp_path, llama_folder):
    with pytest.raises(InvalidValueError, match=r"no model\.safetensors"):
        Checkpoint(tmp_path)
    with pytest.raises(InvalidValueError, match="'nope' is not in the checkpoint"):
        Checkpoint(llama_folder).get("nope", torch.float32)
    assert "LlamaForCausalLM" in LEAN_ARCHITECTURES


@pytest.mark.hooked
def test_mismatched_config_is_refused(tmp_path, llama_folder):
    """A config.json whose width does not match the weights names the tensor and the cause."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in llama_folder.iterdir():
        (bad / path.name).write_bytes(path.read_bytes())
    config = json.loads((bad / "config.json").read_text())
    config["intermediate_size"] = 2 * config["intermediate_size"]
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidValueError, match="does not match the weights"):
        load_model(bad, backend="hooked", device="cpu")


# --- the bridge: its processing done in place on the HF model (bridge_processing) ---


@pytest.fixture(scope="module")
def tied_llama_folder(tmp_path_factory) -> Path:
    """A tiny Llama with tied embeddings (as the embedded SmolLM2 has)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_model_folder())
    config.tie_word_embeddings = True
    model = LlamaForCausalLM(config)
    _random_weights(model, 4)
    return _save(model, tmp_path_factory.mktemp("tiny-rms-tied"))


def _reference_bridge(folder: Path, dtype: torch.dtype = torch.float32):
    """The bridge's own processing (whole state dicts), as load_model did it."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=dtype)
    bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge.eval()


@pytest.mark.parametrize("folder_fixture", ["llama_folder", "tied_llama_folder"])
def test_lean_bridge_equals_the_bridges_own_processing(request, folder_fixture, monkeypatch):
    from transformers import AutoModelForCausalLM

    import actsteer.models.loading as loading
    from actsteer.models.bridge_processing import fold_llama_in_place, lean_bridge_supported

    folder = request.getfixturevalue(folder_fixture)
    assert lean_bridge_supported(AutoModelForCausalLM.from_pretrained(folder))
    folded = []
    monkeypatch.setattr(loading, "fold_llama_in_place",
                        lambda hf: folded.append(hf) or fold_llama_in_place(hf))
    lean, ref = load_model(folder, backend="bridge", device="cpu"), _reference_bridge(folder)
    assert folded == [lean.original_model]  # the lean path ran, not the bridge's own
    got, want = dict(lean.original_model.named_parameters()), dict(
        ref.original_model.named_parameters())
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, atol=TOL, rtol=0, msg=name)
    sites = [f"blocks.{layer}.hook_resid_{s}" for layer in range(lean.cfg.n_layers)
             for s in ("pre", "mid", "post")]
    with torch.no_grad():
        logits, cache = lean.run_with_cache(TOKENS, names_filter=lambda n: n in sites)
        ref_logits, ref_cache = ref.run_with_cache(TOKENS, names_filter=lambda n: n in sites)
    torch.testing.assert_close(logits, ref_logits, atol=TOL, rtol=0)
    for site in sites:  # the same hook values as the bridge's own processing gives
        torch.testing.assert_close(cache[site], ref_cache[site], atol=TOL, rtol=0, msg=site)
    if HAS_HOOKED:  # and still those of the hooked model
        hooked = load_model(folder, backend="hooked", device="cpu")
        with torch.no_grad():
            _, hooked_cache = hooked.run_with_cache(TOKENS, names_filter=lambda n: n in sites)
        for site in sites:
            torch.testing.assert_close(cache[site], hooked_cache[site], atol=1e-4, rtol=0,
                                       msg=site)
    assert model_info(lean).weight_processing == "fold_ln+centre"


def test_lean_bridge_leaves_a_tied_embedding_alone(tied_llama_folder):
    from transformers import LlamaForCausalLM

    lean = load_model(tied_llama_folder, backend="bridge", device="cpu")
    plain = LlamaForCausalLM.from_pretrained(tied_llama_folder)
    hf = lean.original_model
    assert hf.lm_head.weight.data_ptr() != hf.model.embed_tokens.weight.data_ptr()
    assert torch.equal(hf.model.embed_tokens.weight, plain.model.embed_tokens.weight)
    assert not torch.allclose(hf.lm_head.weight, plain.lm_head.weight, atol=1e-3)


def test_lean_bridge_bf16_equals_the_bridges_own_processing(llama_folder):
    lean = load_model(llama_folder, backend="bridge", device="cpu", dtype="bf16")
    ref = _reference_bridge(llama_folder, torch.bfloat16)
    want = dict(ref.original_model.named_parameters())
    for name, value in lean.original_model.named_parameters():
        assert value.dtype == torch.bfloat16
        torch.testing.assert_close(value.float(), want[name].float(), atol=0, rtol=2**-7,
                                   msg=name)


def test_bridge_outside_llama_keeps_its_own_processing(qwen2_folder, monkeypatch):
    """Qwen2 (value biases) is not folded in place: the bridge's own processing runs."""
    from transformers import AutoModelForCausalLM

    from actsteer.models.bridge_processing import lean_bridge_supported

    assert not lean_bridge_supported(AutoModelForCausalLM.from_pretrained(qwen2_folder))
    import actsteer.models.loading as loading

    monkeypatch.setattr(loading, "fold_llama_in_place", lambda hf: pytest.fail("folded"))
    lean, ref = load_model(qwen2_folder, backend="bridge", device="cpu"), _reference_bridge(
        qwen2_folder)
    with torch.no_grad():
        torch.testing.assert_close(lean(TOKENS), ref(TOKENS), atol=0, rtol=0)


@pytest.mark.hooked
def test_a_hub_name_loads_its_cached_snapshot_on_the_lean_path(tiny_folder, tmp_path,
                                                               monkeypatch):
    """Llama 2 by name: the cached snapshot's safetensors go through the lean loader (TL's
    from_pretrained would build Llama-2-7b's 32-layer config and hold float32 copies)."""
    import shutil

    from actsteer.models import loading
    from actsteer.models.processing import load_weights

    name = "meta-llama/Llama-2-7b-hf"
    repo = tmp_path / "models--meta-llama--Llama-2-7b-hf"
    revision = "0" * 40
    shutil.copytree(tiny_folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls: list = []
    monkeypatch.setattr(loading, "load_weights",
                        lambda *a, **k: calls.append(a) or load_weights(*a, **k))
    model = loading.load_model(name)
    assert len(calls) == 1 and model.cfg.n_layers == 4
    assert model_info(model).name == name
    reference = loading.load_model(tiny_folder)
    tokens = torch.tensor([[1, 5, 9, 200, 3000]])
    with torch.no_grad():
        assert torch.equal(model(tokens), reference(tokens))
    shutil.rmtree(repo / "snapshots" / revision)
    with pytest.raises(ModelUnavailableError, match="offline mode is on"):
        loading.load_model(name)
