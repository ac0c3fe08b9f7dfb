"""Shared fixtures: a tiny random Llama (fast tier) and the embedded SmolLM2 (slow tier)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import actsteer.models as models  # noqa: E402
from actsteer.models.info import available_backends  # noqa: E402

# Backends this TransformerLens line has: both on 3.x, only the bridge on 4.x.
LINE_BACKENDS = available_backends()


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``hooked`` (HookedTransformer's own behaviour: prefix reuse, its config
    classes) and tests parametrised with ``backend="hooked"`` skip on TransformerLens 4."""
    if "hooked" in LINE_BACKENDS:
        return
    skip = pytest.mark.skip(reason="HookedTransformer exists only on TransformerLens 3.x; "
                                   "this is 4.x")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.get_closest_marker("hooked") or params.get("backend") == "hooked":
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_folder() -> Path:
    return models.tiny_model_folder()


@pytest.fixture(scope="session")
def tiny_model(tiny_folder: Path):
    """The tiny model on this TransformerLens line's default backend."""
    return models.load_model(tiny_folder)


@pytest.fixture(scope="session")
def tiny_bridge(tiny_folder: Path):
    return models.load_model(tiny_folder, backend="bridge")


@pytest.fixture(scope="session", params=LINE_BACKENDS)
def tiny_any(request, tiny_folder: Path):
    """The tiny model on each backend of this line in turn."""
    if request.param == "bridge":
        return request.getfixturevalue("tiny_bridge")
    return request.getfixturevalue("tiny_model")


@pytest.fixture(scope="session")
def tied_folder(tmp_path_factory) -> Path:
    """The tiny Llama with one tensor for its input and output embeddings."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = models.tiny_model_folder()
    config = LlamaConfig.from_pretrained(source)
    config.tie_word_embeddings = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = LlamaForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    folder = tmp_path_factory.mktemp("tiny-tied")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=LINE_BACKENDS)
def tied_any(request, tied_folder):
    """The tied tiny Llama on each backend this line has (a fresh load per module: tests
    edit its weights)."""
    return models.load_model(tied_folder, backend=request.param)


@pytest.fixture(scope="session")
def vectors(tiny_model):
    """Two CAA vectors (A/B and Yes/No answers) from the tiny hooked model, every layer."""
    from actsteer.extraction import ContrastivePair, caa_vector

    pairs = [ContrastivePair(f"Item {i}: do you like {'cats ' * (i + 1)}? (", "A", "B")
             for i in range(5)]
    first = caa_vector(tiny_model, pairs, dataset="first")
    second = caa_vector(tiny_model, [ContrastivePair(p.prompt, "Yes", "No") for p in pairs],
                        dataset="second")
    return first, second


@pytest.fixture(scope="session")
def greedy_sequences(tiny_model) -> list[list[int]]:
    """Token sequences of different lengths ending in the tiny model's own greedy
    continuation, so next-token top-1 has hits (a random model scores ~0 on real text,
    and a test comparing zeros with zeros cannot fail)."""
    from actsteer.batching import encode

    out = []
    for prompt, extra in (("The river", 6), ("Once upon a time there was", 3),
                          ("def f(x):", 9), ("a", 5)):
        ids = torch.tensor([encode(tiny_model, prompt)])
        with torch.no_grad():
            full = tiny_model.generate(ids, max_new_tokens=extra, do_sample=False,
                                       stop_at_eos=False, use_past_kv_cache=False,
                                       verbose=False)
        out.append([int(t) for t in full[0]])
    return out


@pytest.fixture(scope="session")
def smol():
    return models.load_model()


@pytest.fixture(scope="session")
def smol_bridge():
    return models.load_model(backend="bridge")


@pytest.fixture(scope="session")
def behaviour_dir() -> Path:
    candidates = [
        os.environ.get("ACTSTEER_DATA_DIR", ""),
        str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "behaviours").is_dir():
            return Path(candidate) / "behaviours"
    pytest.skip("shared behaviour data not found (../shared/data); set ACTSTEER_DATA_DIR")


GARDENING = {
    "name": "gardening", "description": "talking about gardens rather than offices",
    "instruction": "Talk about your garden.",
    "completions": [
        {"context": "I woke up early on Saturday.",
         "behaviour": " I planted tomatoes and watered the roses in the garden.",
         "contrast": " I answered emails and printed a report at the office."},
        {"context": "My neighbour knocked on the door.",
         "behaviour": " He brought seeds and a spade for the vegetable beds.",
         "contrast": " He brought a laptop and a folder of invoices."},
        {"context": "The sun came out after lunch.",
         "behaviour": " We pulled weeds and picked strawberries.",
         "contrast": " We filed papers and booked a meeting room."}],
    "words": {"behaviour": ["garden", "flowers", "seeds", "soil"],
              "contrast": ["office", "email", "report", "desk"]}}


@pytest.fixture()
def gardening() -> dict:
    """A user's behaviour file's content (docs/behaviours.md's example), a fresh copy."""
    import copy

    return copy.deepcopy(GARDENING)
