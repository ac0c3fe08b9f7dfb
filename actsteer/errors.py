"""The errors actsteer raises on purpose, all under one base, :class:`ActsteerError`.

Catch ``ActsteerError`` to tell a mistake in what was asked (a bad value, a missing file,
a vector from another model) from a bug: anything else that escapes actsteer is a bug.
Each class also derives from the matching built-in exception, so ``except ValueError``
keeps working.

Example::

    try:
        actsteer.single(vector, layer=99)
    except actsteer.ActsteerError as error:
        print(error)        # names the bad value and what would be valid
"""

from __future__ import annotations

__all__ = [
    "ActsteerError",
    "InvalidTypeError",
    "InvalidValueError",
    "MissingFileError",
    "MissingKeyError",
]


class ActsteerError(Exception):
    """Base of every error actsteer raises on purpose."""


class InvalidValueError(ActsteerError, ValueError):
    """A value given to actsteer is not valid; the message names it and the fix."""


class InvalidTypeError(ActsteerError, TypeError):
    """An argument of the wrong kind; the message names it and what is accepted."""


class MissingFileError(ActsteerError, FileNotFoundError):
    """A file or folder that was asked for does not exist."""


class MissingKeyError(ActsteerError, KeyError):
    """A name that is not among those available (a layer, a plan, a vector digest)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""
