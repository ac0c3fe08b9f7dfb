"""What a loaded model is: its backend, its provenance, and the error when it cannot load.

:func:`model_info` is the provenance that travels with every extracted vector (model name,
backend, depth, width and whether TransformerLens weight processing was on). Models built
by :func:`actsteer.models.load_model` are recorded here without writing onto
TransformerLens's config; any other hooked model is described from its config.
"""

from __future__ import annotations

import functools
import importlib.metadata
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.hub import HubUnavailableError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "Backend",
    "ModelInfo",
    "ModelUnavailableError",
    "SteerableModel",
    "available_backends",
    "backend_of",
    "default_backend",
    "model_info",
    "resolve_backend",
    "runtime_stamp",
    "transformer_lens_major",
]

Backend = Literal["hooked", "bridge"]
BACKENDS: tuple[Backend, ...] = ("hooked", "bridge")
SteerableModel: TypeAlias = "HookedTransformer | TransformerBridge"

# model -> (name, backend, fold_ln) for models built by load_model.
_LOADED: weakref.WeakKeyDictionary[object, tuple[str, Backend, bool]] = (
    weakref.WeakKeyDictionary()
)


class ModelUnavailableError(HubUnavailableError):
    """The requested model cannot be loaded here: no network, token or licence for a Hub
    model (hence a :class:`~actsteer.hub.HubUnavailableError`), or the embedded model's
    package is not installed."""


@dataclass(frozen=True)
class ModelInfo:
    """Provenance that travels with vectors extracted from a model."""

    name: str
    backend: Backend
    n_layers: int
    d_model: int
    weight_processing: str


@functools.cache
def transformer_lens_major() -> int:
    """The installed TransformerLens's major version (3 or 4), read from its package
    metadata without importing it (``actsteer --help`` stays light)."""
    version = importlib.metadata.version("transformer-lens")
    return int(version.split(".", 1)[0])


def default_backend() -> Backend:
    """The backend :func:`~actsteer.models.load_model` uses when none is named.

    ``"hooked"`` (HookedTransformer) on TransformerLens 3.x, the line of the paper's Llama 2
    users and of SAELens; ``"bridge"`` (TransformerBridge in compatibility mode, with the
    same hook names) on TransformerLens 4.x, which has no HookedTransformer. This is the one
    place the default is written; everything that takes ``backend=None`` resolves it here.
    """
    return available_backends()[0]


def available_backends() -> tuple[Backend, ...]:
    """The backends the installed TransformerLens has, its default first: both on 3.x,
    the bridge alone on 4.x."""
    return BACKENDS if transformer_lens_major() < 4 else ("bridge",)


def resolve_backend(backend: str | None) -> Backend:
    """``backend`` checked against the installed TransformerLens, or the line's default.

    Raises:
        InvalidValueError: an unknown name, or ``"hooked"`` on TransformerLens 4.x (the
            message names the fix).
    """
    if backend is None:
        return default_backend()
    if backend not in BACKENDS:
        raise InvalidValueError(f"unknown backend {backend!r}; use 'hooked' or 'bridge' "
                                f"(or None for this TransformerLens line's default, "
                                f"{default_backend()!r})")
    if backend == "hooked" and transformer_lens_major() >= 4:
        installed = importlib.metadata.version("transformer-lens")
        raise InvalidValueError(
            f"backend 'hooked' needs TransformerLens 3.x, whose HookedTransformer was removed "
            f"in 4.0 (installed: {installed}); use backend='bridge' (the default here, same "
            "hook names), or install 'transformer-lens>=3.9,<4' for HookedTransformer")
    return backend  # type: ignore[return-value]


def runtime_stamp(backend: Backend) -> dict[str, object]:
    """What a results log records about the code that ran it: the resolved backend and the
    TransformerLens version and line (see :class:`actsteer.results.ResultStore`)."""
    return {"backend": backend, "transformer_lens": importlib.metadata.version("transformer-lens"),
            "transformer_lens_major": transformer_lens_major()}


def backend_of(model: object) -> Backend:
    """``"hooked"`` for a HookedTransformer, ``"bridge"`` for a TransformerBridge (either
    class or a subclass); :class:`~actsteer.errors.InvalidTypeError` for anything else.

    The one place actsteer tells the backends apart.
    """
    from transformer_lens.model_bridge import TransformerBridge

    try:
        from transformer_lens import HookedTransformer
    except ImportError:  # pragma: no cover - TransformerLens 4.x has no HookedTransformer
        pass
    else:
        if isinstance(model, HookedTransformer):
            return "hooked"
    if isinstance(model, TransformerBridge):
        return "bridge"
    raise InvalidTypeError(f"expected a HookedTransformer or a TransformerBridge (see "
                           f"actsteer.load_model), got {type(model).__name__}")


def record(model: object, name: str, backend: Backend, fold_ln: bool) -> None:
    """Remember how ``model`` was built, for :func:`model_info`."""
    _LOADED[model] = (name, backend, fold_ln)


def model_info(model: SteerableModel) -> ModelInfo:
    """Name, backend, depth, width and weight processing of a loaded model.

    ``weight_processing`` is ``"fold_ln+centre"``, ``"none"``, or ``"unknown"`` for a
    model that :func:`~actsteer.models.load_model` did not build.
    """
    cfg = model.cfg
    name, backend, fold = _LOADED.get(  # type: ignore[arg-type]
        model,
        (
            str(getattr(cfg, "model_name", "unknown")),
            backend_of(model),
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
