"""Build a hookable model (HookedTransformer or TransformerBridge) from a name or folder.

:func:`load_model` covers three sources and two backends:

* the embedded default, SmolLM2-135M-Instruct (:mod:`actsteer.models.embedded`), offline;
* Llama 2 chat/base (7B, 13B, 70B) from the Hugging Face Hub, failing fast through
  :func:`actsteer.hub.check_access` when the Hub, a token or the licence is missing;
* any local Hugging Face folder of an architecture TransformerLens supports.

``backend="hooked"`` builds a :class:`~transformer_lens.HookedTransformer` (TransformerLens
3.x only); ``backend="bridge"`` builds a ``TransformerBridge`` in compatibility mode, which
exposes the same hook names. Without a backend, the installed line chooses
(:func:`~actsteer.models.info.default_backend`): hooked on 3.x, the bridge on 4.x.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from actsteer.errors import InvalidValueError
from actsteer.hub import check_access, fetch_snapshot
from actsteer.models.bridge_processing import fold_llama_in_place, lean_bridge_supported
from actsteer.models.embedded import EMBEDDED_MODEL, embedded_model_path
from actsteer.models.info import (
    Backend,
    ModelUnavailableError,
    SteerableModel,
    record,
    resolve_backend,
)
from actsteer.models.processing import lean_supported, load_weights

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = ["LLAMA2_MODELS", "load_model", "quiet_deprecation", "resolve_dtype"]

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

_HUB_TIMEOUT_S = 10.0
_SNAPSHOT_FILES = ("*.json", "*.safetensors", "tokenizer.model")
"""What a Hub model's hooked load needs: config, tokenizer and weights (never the .bin
copies that Llama 2 repos carry beside the safetensors)."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Turn ``"bf16"``, ``"float16"``, a ``torch.dtype`` or ``None`` (float32) into a dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise InvalidValueError(
            f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))} or a torch.dtype"
            ) from None


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
        cfg = loading.get_pretrained_model_config(
            str(folder),
            fold_ln=fold_ln,
            device=device,
            n_devices=n_devices,
            dtype=dtype,
            default_prepend_bos=_tokenizer_adds_bos(tokenizer),
        )
        # init_weights=False (TL's choice for pretrained configs): parameters are allocated
        # uninitialised, so the skeleton costs nothing until the weights are written.
        with quiet_deprecation():
            model = HookedTransformer(cfg, tokenizer, move_to_device=False)
        if lean_supported(folder, cfg.original_architecture):
            load_weights(model, folder, fold_ln=fold_ln)
        else:  # TL's own route: whole state dicts in float32 (~8x the weights' bytes)
            hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
            state_dict = loading.get_pretrained_state_dict(str(folder), cfg, hf_model, dtype=dtype)
            del hf_model
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

    from actsteer.models.compat import pass_cache_to_attention
    from actsteer.models.plain import mark_plain_exact

    bridge = TransformerBridge.boot_transformers(source, device=device, dtype=dtype)
    # The bridge's own processing peaks at ~7.5x the weights (whole float32 state dicts);
    # for a Llama the same processing is done in place, and its hooks installed unchanged.
    lean = fold_ln and lean_bridge_supported(bridge.original_model)
    if lean:
        fold_llama_in_place(bridge.original_model)
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=lean or not fold_ln)
    pass_cache_to_attention(bridge)
    if lean or not fold_ln:  # the bridge runs on the HF model's own weights
        mark_plain_exact(bridge)
    if Path(source).is_dir():  # same BOS convention as the hooked backend
        from transformers import AutoTokenizer

        bridge.cfg.default_prepend_bos = _tokenizer_adds_bos(AutoTokenizer.from_pretrained(source))
    return bridge.eval()


def load_model(
    name: str | os.PathLike[str] = EMBEDDED_MODEL,
    *,
    backend: Backend | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    n_devices: int = 1,
    fold_ln: bool = True,
) -> SteerableModel:
    """Load ``name`` as a hookable model.

    Args:
        name: ``"smollm2-135m-instruct"`` (embedded, offline), a Llama 2 Hub name from
            :data:`LLAMA2_MODELS`, or a local Hugging Face folder.
        backend: ``"hooked"`` (HookedTransformer, TransformerLens 3.x) or ``"bridge"``
            (TransformerBridge in compatibility mode). Both expose
            ``blocks.{L}.hook_resid_pre/mid/post``. None: the installed TransformerLens
            line's default (hooked on 3.x, bridge on 4.x).
        device: ``"cpu"``, ``"cuda"``, ... (default: TransformerLens's choice).
        dtype: ``"float32"`` (default), ``"bf16"``, ``"fp16"`` or a ``torch.dtype``.
        n_devices: split the layers over this many GPUs (hooked backend only).
        fold_ln: TransformerLens's default weight processing (fold norms, centre
            writing weights and unembedding). Vectors record this flag.

    Raises:
        ModelUnavailableError: the weights cannot be had here (offline, no token, no
            licence, package missing); the message says which.
        ValueError: unknown backend, dtype or model name, or ``backend="hooked"`` on
            TransformerLens 4.x.

    Example::

        model = load_model()                       # embedded SmolLM2-135M, offline
        model.generate("Hello", max_new_tokens=5)
    """
    backend = resolve_backend(backend)
    if n_devices < 1:
        raise InvalidValueError(f"n_devices must be >= 1, got {n_devices}")
    if backend == "bridge" and n_devices != 1:
        raise InvalidValueError("n_devices > 1 is only supported with backend='hooked'")
    torch_dtype = resolve_dtype(dtype)
    name_str = os.fspath(name)

    if name_str == EMBEDDED_MODEL:
        folder: Path | None = embedded_model_path()
    elif Path(name_str).expanduser().is_dir():
        folder = Path(name_str).expanduser()
        if not (folder / "config.json").exists():
            raise InvalidValueError(
                f"{folder} has no config.json; pass a Hugging Face model folder")
    elif name_str in LLAMA2_MODELS:
        folder = None
        check_access(
            name_str,
            instead=f"connect to the network, or use the embedded default {EMBEDDED_MODEL!r}",
            timeout=_HUB_TIMEOUT_S,
            error=ModelUnavailableError,
        )
    else:
        raise InvalidValueError(
            f"unknown model {name_str!r}: use {EMBEDDED_MODEL!r}, a local Hugging Face "
            f"folder, or one of {', '.join(LLAMA2_MODELS)}"
            )

    model: SteerableModel
    if backend == "bridge":
        model = _bridge(  # type: ignore[assignment]
            str(folder) if folder else name_str, device=device, dtype=torch_dtype, fold_ln=fold_ln
        )
    else:
        # A Hub name loads from its cached snapshot like any local folder, so it takes the
        # lean tensor-by-tensor processing (TL's from_pretrained holds whole float32 copies).
        source = folder or fetch_snapshot(
            name_str, _SNAPSHOT_FILES, instead=f"connect to the network, or use the embedded "
            f"default {EMBEDDED_MODEL!r}", error=ModelUnavailableError)
        model = _hooked_from_folder(
            source, device=device, dtype=torch_dtype, n_devices=n_devices, fold_ln=fold_ln
        )
    name_recorded = name_str if folder is None or name_str == EMBEDDED_MODEL else str(folder)
    record(model, name_recorded, backend, fold_ln)
    return model
