"""Typed keys of results cells: frozen values that format and parse themselves.

A key prints as ``step/field=value/...`` (e.g. ``grid/behaviour=myopia/layer=14/
multiplier=4.0``), readable in the JSON and exact to parse back: floats use ``repr``,
so ``parse(str(key)) == key`` for every key. Each experiment declares its keys as
subclasses with a ``STEP`` name; :func:`parse` finds the class by that name.

Example::

    @dataclass(frozen=True)
    class GridKey(CellKey):
        STEP: ClassVar[str] = "grid"
        behaviour: str
        layer: int

    key = parse("grid/behaviour=myopia/layer=14")    # GridKey("myopia", 14)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar, get_type_hints

from actsteer.errors import ActsteerError, InvalidTypeError

__all__ = ["CellKey", "CellKeyError", "parse", "try_parse"]

_REGISTRY: dict[str, type[CellKey]] = {}


class CellKeyError(ActsteerError, ValueError):
    """A results key that does not parse."""


K = TypeVar("K", bound="CellKey")


@dataclass(frozen=True)
class CellKey:
    """Base class of results keys; subclasses set ``STEP`` and declare typed fields."""

    STEP: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.STEP:
            if cls.STEP in _REGISTRY and _REGISTRY[cls.STEP].__qualname__ != cls.__qualname__:
                raise InvalidTypeError(f"two key classes for step {cls.STEP!r}")
            _REGISTRY[cls.STEP] = cls

    def __post_init__(self) -> None:
        types = get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if types[f.name] is float and isinstance(value, int):
                value = float(value)  # so that 4 and 4.0 give one key string
                object.__setattr__(self, f.name, value)
            elif types[f.name] is int and isinstance(value, float) and value.is_integer():
                value = int(value)
                object.__setattr__(self, f.name, value)
            if isinstance(value, str) and ("/" in value or "=" in value):
                raise CellKeyError(f"{f.name}={value!r} cannot be part of a results key: it "
                                "contains '/' or '='; rename it")

    def __str__(self) -> str:
        parts = [self.STEP]
        for f in fields(self):
            value = getattr(self, f.name)
            parts.append(f"{f.name}={value!r}" if isinstance(value, float)
                         else f"{f.name}={value}")
        return "/".join(parts)

    @classmethod
    def parse(cls: type[K], text: str) -> K:
        """The key ``text`` names; raises :class:`CellKeyError` if it is not a ``cls`` key."""
        key = parse(text)
        if not isinstance(key, cls):
            raise CellKeyError(f"{text!r} is a {type(key).__name__}, not a {cls.__name__}")
        return key


def parse(text: str) -> CellKey:
    """Parse any registered key from its string form."""
    step, *parts = text.split("/")
    if step not in _REGISTRY:
        raise CellKeyError(f"{text!r} is not a results key; known steps: {sorted(_REGISTRY)}")
    cls = _REGISTRY[step]
    types = get_type_hints(cls)
    values: dict[str, Any] = {}
    for part in parts:
        name, sep, raw = part.partition("=")
        if not sep or name not in types:
            raise CellKeyError(f"{text!r}: {part!r} is not a field of {cls.__name__}")
        kind = types[name]
        try:
            values[name] = int(raw) if kind is int else float(raw) if kind is float else raw
        except ValueError:
            raise CellKeyError(f"{text!r}: {name}={raw!r} is not a {kind.__name__}") from None
    try:
        return cls(**values)
    except TypeError as error:
        raise CellKeyError(f"{text!r}: {error}") from None


def try_parse(text: str) -> CellKey | None:
    """:func:`parse`, or ``None`` for strings that are not results keys."""
    try:
        return parse(text)
    except CellKeyError:
        return None
