"""What both reproductions share: config plumbing, the model config, the paper's depth,
step timing, content digests and the stamped vector cache."""

from __future__ import annotations

import collections.abc
import hashlib
import json
import logging
import time
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from actsteer.errors import ActsteerError, InvalidValueError
from actsteer.executor import ModelSpec
from actsteer.models import EMBEDDED_MODEL, load_model
from actsteer.models.info import resolve_backend, runtime_stamp
from actsteer.vector import SteeringVector

logger = logging.getLogger(__name__)

PAPER_DEPTH = 32
"""Layers of Llama 2 7B, the model the paper's layer numbers refer to."""

DTYPES = ("float32", "fp32", "bf16", "bfloat16", "fp16", "float16")


class ConfigError(ActsteerError, ValueError):
    """An experiment config field has a value the experiment cannot use."""


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["n_test=300", "model.dtype=bf16"]`` → ``{"n_test": 300, "model.dtype": "bf16"}``
    (values are JSON where they parse as JSON, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        field, sep, raw = item.partition("=")
        if not sep or not field.strip():
            raise ConfigError(f"--set {item!r} is not FIELD=VALUE; e.g. --set n_test=300")
        try:
            out[field.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[field.strip()] = raw
    return out


def config_file_overrides(path: str | Path) -> dict[str, Any]:
    """The fields of a JSON config file (``{"n_test": 300, "model": {"dtype": "bf16"}}``) as
    :meth:`ConfigMixin.with_overrides` keys (``"model.dtype"``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path} is not a JSON file ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of config fields")
    return _flatten(data)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and key == "model":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def invalid(name: str, value: Any, fix: str) -> ConfigError:
    """``ConfigError("name=value is invalid: fix")``: names the field, the value and the fix."""
    return ConfigError(f"{name}={value!r} is invalid: {fix}")


def scale_layer(layer: int, n_layers: int) -> int:
    """A paper layer (of 32) at the same relative depth of an ``n_layers`` model."""
    return min(n_layers - 1, max(0, round(layer * n_layers / PAPER_DEPTH)))


def check_layers(n_layers: int, named: Iterable[tuple[str, int]]) -> None:
    """Raise :class:`ConfigError` for the first ``(what, layer)`` outside ``0..n_layers-1``."""
    for what, layer in named:
        if not 0 <= layer < n_layers:
            raise ConfigError(f"{what} {layer} is outside the model's {n_layers} layers; "
                              f"use 0..{n_layers - 1}")


C = TypeVar("C", bound="ConfigMixin")


class ConfigMixin:
    """JSON round-tripping for frozen config dataclasses (nested configs included).

    ``NOT_RESULTS`` names the fields that never change results (output folder, speed
    knobs); :meth:`results_config` drops them, so changing them never invalidates a
    resumable results file.
    """

    NOT_RESULTS: ClassVar[tuple[str, ...]] = ("out_dir",)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists, nested configs as dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def check_keys(cls, keys: Iterable[str]) -> None:
        """Raise :class:`ConfigError` naming any key that is not a field, and the valid ones."""
        unknown = sorted(set(keys) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: "
                              f"{sorted(cls.field_names())}")

    @classmethod
    def check_types(cls, values: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` naming the first field whose value is not of its
        declared type, and that type (e.g. ``grid_layers=14`` where a list of ints is
        expected)."""
        hints = get_type_hints(cls)
        for name, value in values.items():
            if name in hints and not _matches(value, hints[name]):
                raise ConfigError(f"{name}={value!r} is invalid: expected "
                                  f"{_describe(hints[name])}")

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        cls.check_keys(data)
        # Nested configs arrive as dicts; each config's __post_init__ builds them.
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        cls.check_types(values)
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"bad config values for {cls.__name__}: {error}") from None

    def with_overrides(self: C, overrides: Mapping[str, Any]) -> C:
        """A copy with fields replaced; ``"model.dtype"``-style keys reach nested configs."""
        flat: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            head, _, rest = key.partition(".")
            if rest:
                nested.setdefault(head, {})[rest] = value
            else:
                flat[key] = tuple(value) if isinstance(value, list) else value
        self.check_keys([*flat, *nested])
        self.check_types(flat)
        for head, values in nested.items():
            inner = flat.get(head, getattr(self, head))
            if not isinstance(inner, ConfigMixin):
                raise ConfigError(f"{head} has no fields to set ({sorted(values)})")
            flat[head] = inner.with_overrides(values)
        try:
            return replace(self, **flat)  # type: ignore[type-var]
        except TypeError as error:
            raise ConfigError(f"bad override for {type(self).__name__}: {error}") from None

    def results_config(self) -> dict[str, Any]:
        """The fields that determine results (nested configs' own ``NOT_RESULTS`` too)."""
        out = self.to_dict()
        for key in self.NOT_RESULTS:
            out.pop(key, None)
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ConfigMixin) and f.name in out:
                out[f.name] = value.results_config()
        return out


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON-like ``value`` fits the annotation ``hint`` (configs' field types:
    scalars, ``tuple[X, ...]``, ``Mapping[str, X]``, unions with None, nested configs)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        inner = args[0] if args else Any
        return all(_matches(v, inner) for v in value)
    if origin in (Mapping, dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            return False
        key, item = args if args else (Any, Any)
        return all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    if isinstance(hint, type) and issubclass(hint, ConfigMixin):
        return isinstance(value, (hint, Mapping))
    return True  # a type this checker does not know: let __post_init__ judge


def _describe(hint: Any) -> str:
    """``tuple[int, ...] | None`` → ``"a list of int, or null"``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (", or null" if type(None) in args else "")
    if origin is tuple:
        return f"a list of {_describe(args[0]) if args else 'values'}"
    if origin in (Mapping, dict, collections.abc.Mapping):
        return (f"an object of {_describe(args[1])} by {_describe(args[0])}" if args
                else "an object")
    if isinstance(hint, type):
        return {"int": "int", "float": "number", "str": "string", "bool": "true or false"}.get(
            hint.__name__, hint.__name__)
    return str(hint)


def _plain(value: Any) -> Any:
    if isinstance(value, ConfigMixin):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ModelConfig(ConfigMixin):
    """Which model runs an experiment, and where."""

    NOT_RESULTS: ClassVar[tuple[str, ...]] = ("device",)

    name: str = EMBEDDED_MODEL
    """Model name or local Hugging Face folder, as :func:`actsteer.load_model` takes."""
    backend: str | None = None
    """``"hooked"`` (HookedTransformer, prefix reuse; TransformerLens 3.x) or ``"bridge"``
    (TransformerBridge); None: the installed line's default. Stored resolved, so a results
    log records the backend that ran."""
    device: str | None = None
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... (None: TransformerLens's choice)."""
    dtype: str = "float32"
    """Weights dtype: ``float32``, ``bf16`` or ``fp16``."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise invalid("model.name", self.name, "give a model name or a local folder")
        try:
            object.__setattr__(self, "backend", resolve_backend(self.backend))
        except InvalidValueError as error:
            raise invalid("model.backend", self.backend, str(error)) from None
        if self.dtype not in DTYPES:
            raise invalid("model.dtype", self.dtype, f"use one of {', '.join(DTYPES)}")

    def load(self) -> Any:
        """The model, loaded with :func:`actsteer.load_model`."""
        return load_model(self.name, backend=self.backend,  # type: ignore[arg-type]
                          device=self.device, dtype=self.dtype)

    def runtime(self) -> dict[str, Any]:
        """The results log's ``runtime``: the resolved backend and the TransformerLens line."""
        return runtime_stamp(self.backend)  # type: ignore[arg-type]

    def spec(self) -> ModelSpec:
        """What an executor's workers load (:class:`actsteer.executor.ModelSpec`)."""
        return ModelSpec(self.name, self.backend, self.dtype, self.device)


def digest(parts: Sequence[str]) -> str:
    """Short SHA-1 of a sequence of strings (order and boundaries count)."""
    hasher = hashlib.sha1()
    for part in parts:
        hasher.update(part.encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


@contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[step]`` (seconds), even on errors."""
    start = time.perf_counter()
    logger.info("step %s", step)
    try:
        yield
    finally:
        timings[step] = round(timings.get(step, 0.0) + time.perf_counter() - start, 3)


class VectorCache:
    """Vectors saved under ``folder`` with a stamp of what made them.

    A vector is reused only when its stamp (e.g. the model and a digest of the items it
    was built from) equals the one asked for; otherwise it is rebuilt and replaced, so a
    resumed run never applies a vector made from other data.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.safetensors"

    def get(self, name: str, stamp: str, model: Any) -> SteeringVector | None:
        path, stamps = self.path(name), self._stamps()
        if path.is_file() and stamps.get(name) == stamp:
            return SteeringVector.load(path, model=model)
        if path.is_file():
            logger.warning("%s was made from other data or another model; making it again",
                           path)
        return None

    def put(self, name: str, vector: SteeringVector, stamp: str) -> SteeringVector:
        from actsteer.atomic import write_json_atomic

        vector.save(self.path(name))
        write_json_atomic(self.folder / "stamps.json", {**self._stamps(), name: stamp})
        return vector

    def _stamps(self) -> dict[str, str]:
        path = self.folder / "stamps.json"
        if not path.is_file():
            return {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}  # a damaged stamp file only costs a re-extraction
        return dict(loaded) if isinstance(loaded, dict) else {}


def file_digest(path: str | Path) -> str:
    """Short SHA-1 of a file's bytes (e.g. a vector file given to a run)."""
    hasher = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()[:16]
