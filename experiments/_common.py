"""What both experiments share: config plumbing, the paper's depth, and config errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

PAPER_DEPTH = 32
"""Layers of Llama 2 7B, the model the paper's layer numbers refer to."""


class ConfigError(ValueError):
    """An experiment config field has a value the experiment cannot use."""


def invalid(name: str, value: Any, fix: str) -> ConfigError:
    """``ConfigError("name=value is invalid: fix")``: names the field, the value and the fix."""
    return ConfigError(f"{name}={value!r} is invalid: {fix}")


def scale_layer(layer: int, n_layers: int) -> int:
    """A paper layer (of 32) at the same relative depth of an ``n_layers`` model."""
    return min(n_layers - 1, max(0, round(layer * n_layers / PAPER_DEPTH)))


C = TypeVar("C", bound="ConfigMixin")


class ConfigMixin:
    """JSON round-tripping for the experiments' frozen config dataclasses.

    ``NOT_RESULTS`` names the fields that do not change results (output folder, speed
    knobs); :meth:`results_config` drops them, so changing them never invalidates a
    resumable results file.
    """

    NOT_RESULTS: ClassVar[tuple[str, ...]] = ("out_dir",)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        out = asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def check_keys(cls, keys: Iterable[str]) -> None:
        """Raise :class:`ConfigError` naming any key that is not a field, and the valid ones."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(keys) - names)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        cls.check_keys(data)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def results_config(self) -> dict[str, Any]:
        """The fields that determine results."""
        out = self.to_dict()
        for key in self.NOT_RESULTS:
            out.pop(key)
        return out
