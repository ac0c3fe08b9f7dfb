"""What a loaded model is: its backend, its provenance, and the error when it cannot load.

:func:`model_info` is the provenance that travels with every extracted vector (model name,
backend, depth, width and whether TransformerLens weight processing was on). Models built
by :func:`actsteer.models.load_model` are recorded here without writing onto
TransformerLens's config; any other hooked model is described from its config.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from actsteer.errors import InvalidTypeError
from actsteer.hub import HubUnavailableError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "Backend",
    "ModelInfo",
    "ModelUnavailableError",
    "SteerableModel",
    "backend_of",
    "model_info",
]

Backend = Literal["hooked", "bridge"]
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
