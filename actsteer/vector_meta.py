"""Where a steering vector came from (:class:`VectorMeta`), and the JSON header that
carries it and the vector's layers and site inside its ``.safetensors`` file, read back
field by field (:func:`parse_header`): a bad file raises :class:`VectorFileError` naming
the entry and the fix, never a raw ``KeyError`` or ``JSONDecodeError``."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from actsteer._version import __version__
from actsteer.errors import ActsteerError, InvalidTypeError
from actsteer.sites import SITES

__all__ = ["VectorFileError", "VectorMeta", "parse_header", "vector_digest"]


def vector_digest(vector: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of a tensor's dtype, shape and exact bytes."""
    data = vector.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


class VectorFileError(ActsteerError, ValueError):
    """A vector file that is not a valid actsteer safetensors file."""


@dataclass(frozen=True)
class VectorMeta:
    """Where a vector came from. Travels with the vector through operations and files."""

    model: str = "unknown"
    backend: str = "unknown"
    weight_processing: str = "unknown"
    """TransformerLens processing of the source model (``fold_ln+centre`` or ``none``)."""
    read_position: str = "last"
    method: str = "mean_diff"
    dataset: str = ""
    n_items: int = 0
    model_n_layers: int = 0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    actsteer_version: str = __version__
    history: tuple[str, ...] = ()
    """Operations applied since extraction, oldest first (e.g. ``"scaled(2.0)"``)."""
    diagnostics: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Measured at extraction, no steering needed (see :mod:`actsteer.diagnostics`):
    per layer, how consistent the pair differences are and how well the vector separates
    the two sides. Empty when not measured. JSON-like (string keys; str, int, float, bool,
    None, lists and mappings), so that it round-trips through files; tuples become lists."""
    training: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """How a vector trained by gradient was made (:mod:`actsteer.learned`): objective,
    steps, learning rate, seed, the train and held-out loss curves, the split's sizes.
    Empty for vectors read from activations. JSON-like, as ``diagnostics``."""

    def __post_init__(self) -> None:
        for name in ("diagnostics", "training"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise InvalidTypeError(f"{name} must be a mapping, got {type(value).__name__}")
            object.__setattr__(self, name, _plain_json(value, name))

    def then(self, operation: str) -> VectorMeta:
        return replace(self, history=(*self.history, operation))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``history`` as a list); :meth:`from_dict` reads it back.

        ``training`` is left out when empty, so that a vector read from activations writes
        the same header as before the field existed (older versions still read it, and
        digests of such vectors do not change)."""
        entries = asdict(self)
        if not entries["training"]:
            del entries["training"]
        return entries

    @classmethod
    def from_dict(cls, entries: Mapping[str, Any], *, source: str = "vector metadata"
                  ) -> VectorMeta:
        """Inverse of :meth:`to_dict`, checking every field's name and JSON type.

        Raises :class:`VectorFileError` naming ``source`` and the bad field (missing
        fields take their defaults, so files from older versions still load).
        """
        return _parse_meta(dict(entries), lambda problem: VectorFileError(f"{source}: {problem}"))


_REMEDY = "re-save the vector with SteeringVector.save (or repair the header's JSON)"


def parse_header(source: Path, text: str) -> tuple[tuple[int, ...], str, VectorMeta]:
    """Layers, site and metadata from the ``actsteer`` header entry, checked field by field.

    Every problem raises :class:`VectorFileError` naming ``source``, the bad entry and the
    fix, never a raw ``KeyError``/``TypeError``/``JSONDecodeError``.
    """

    def bad(problem: str) -> VectorFileError:
        return VectorFileError(f"{source}: {problem}; {_REMEDY}")

    try:
        info = json.loads(text)
    except json.JSONDecodeError as error:
        raise bad(f"its actsteer metadata is not valid JSON ({error})") from None
    if not isinstance(info, dict):
        raise bad(f"its actsteer metadata is a JSON {type(info).__name__}, expected an object "
                  "with 'site', 'layers' and 'meta'")
    missing = [key for key in ("site", "layers", "meta") if key not in info]
    if missing:
        raise bad(f"its actsteer metadata lacks {missing}")
    unknown = sorted(set(info) - {"site", "layers", "meta"})
    if unknown:
        raise bad(f"its actsteer metadata has unknown entries {unknown}")
    site, layers, meta = info["site"], info["layers"], info["meta"]
    if not isinstance(site, str) or site not in SITES:
        raise bad(f"site {site!r} is not one of {', '.join(SITES)}")
    if not isinstance(layers, list) or not all(_is_int(layer) for layer in layers):
        raise bad(f"layers {layers!r} is not a list of integers")
    if not isinstance(meta, dict):
        raise bad(f"meta is a JSON {type(meta).__name__}, expected an object")
    return tuple(layers), site, _parse_meta(meta, bad)


def _parse_meta(entries: dict[str, Any],
                bad: Callable[[str], VectorFileError]) -> VectorMeta:
    unknown = sorted(set(entries) - set(_META_KINDS))
    if unknown:
        raise bad(f"meta has unknown fields {unknown} (known: {', '.join(_META_KINDS)}); if a "
                  "newer actsteer wrote it, upgrade actsteer")
    values: dict[str, Any] = {}
    for name, value in entries.items():
        kind = _META_KINDS[name]
        if kind is int:
            ok = _is_int(value)
        elif kind is tuple:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        else:
            ok = isinstance(value, kind)
        if not ok:
            expected = {int: "an integer", str: "a string", dict: "an object",
                        tuple: "a list of strings"}[kind]
            raise bad(f"meta field {name!r} is {value!r}, expected {expected}")
        values[name] = value
    try:
        return VectorMeta(**values)
    except (TypeError, ValueError) as error:
        raise bad(f"meta is invalid ({error})") from None


# What each VectorMeta field holds in JSON, read off its annotation (a new field with a
# new kind of annotation fails here, at import, rather than when a file is read).
_JSON_KINDS = {"str": str, "int": int, "tuple[str, ...]": tuple, "Mapping[str, Any]": dict}
_META_KINDS: dict[str, type] = {f.name: _JSON_KINDS[str(f.type)] for f in fields(VectorMeta)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain_json(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (dicts with string keys, lists, scalars), or TypeError
    naming the entry at ``where`` that JSON cannot hold exactly."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidTypeError(
                    f"{where} has key {key!r} ({type(key).__name__}); JSON keys are "
                    f"strings: use {str(key)!r}")
            out[key] = _plain_json(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise InvalidTypeError(f"{where} holds {type(value).__name__} {value!r}; store plain numbers, "
                           "strings, lists or mappings (e.g. float(x) for a tensor)")
