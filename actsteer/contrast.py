"""Contrast data as plain values: what a behaviour looks like next to its opposite.

Leaf module (it imports nothing from actsteer), so data modules and compute modules can
share these types:

* :class:`ContrastivePair` — a prompt with the answer that shows a behaviour and the one
  that does not (extraction: :func:`actsteer.caa_vector`);
* :class:`ContrastItem` — a prompt with continuations that show a behaviour and
  continuations that do not (measurement: :mod:`actsteer.likelihood`);
* :class:`WordSets` — a behaviour's words against contrast words (measurement of the next
  token).
"""

from __future__ import annotations

from dataclasses import dataclass

from actsteer.errors import InvalidValueError

__all__ = ["ContrastItem", "ContrastivePair", "WordSets"]


@dataclass(frozen=True)
class ContrastivePair:
    """A prompt with the answer showing the behaviour and the one that does not."""

    prompt: str
    positive: str
    negative: str


@dataclass(frozen=True)
class ContrastItem:
    """A prompt with continuations that show a behaviour and continuations that do not.

    Continuations are appended to the prompt as they are, so give them their leading
    space (``" It was lovely."``); each is tokenised on its own, so its tokens are exactly
    the ones scored.
    """

    prompt: str
    behaviour: tuple[str, ...]
    contrast: tuple[str, ...]

    def __post_init__(self) -> None:
        for side in ("behaviour", "contrast"):
            texts = getattr(self, side)
            if isinstance(texts, str):
                raise InvalidValueError(f"{side}={texts!r} is one string; give a tuple of "
                                        f"continuations, e.g. ({texts!r},)")
            object.__setattr__(self, side, tuple(texts))
            if not texts or any(not isinstance(t, str) or not t for t in texts):
                raise InvalidValueError(f"{side} continuations {texts!r} must be non-empty "
                                        "strings, at least one")


@dataclass(frozen=True)
class WordSets:
    """A behaviour measured by the next token: its words against contrast words."""

    name: str
    behaviour: tuple[str, ...]
    contrast: tuple[str, ...]

    def __post_init__(self) -> None:
        for side in ("behaviour", "contrast"):
            given = getattr(self, side)
            if isinstance(given, str) or any(not isinstance(w, str) for w in given):
                raise InvalidValueError(f"word set {self.name!r}: {side} words must be a "
                                        f"sequence of strings, got {given!r}")
            # A word is counted as " word" whatever spaces surround it, so it is stored bare.
            words = tuple(w.strip() for w in given)
            blank = [w for w, bare in zip(given, words, strict=True) if not bare]
            if blank:
                raise InvalidValueError(f"word set {self.name!r} has blank {side} words "
                                        f"{blank!r}; remove them")
            object.__setattr__(self, side, words)
            if not words:
                raise InvalidValueError(f"word set {self.name!r} has no {side} words")
        shared = set(self.behaviour) & set(self.contrast)
        if shared:
            raise InvalidValueError(f"word set {self.name!r} lists {sorted(shared)} on both "
                                    "sides; a word counts for one side only")
