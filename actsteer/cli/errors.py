"""How the command line ends: exit codes, the user-facing error, and telling a mistake in
what was asked (one line, exit 2) from a bug in actsteer (traceback, exit 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from actsteer.errors import ActsteerError

__all__ = ["EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_USAGE", "INTERRUPTED", "CliError",
           "RayUnavailableError", "interrupted", "is_mistake", "one_line"]

EXIT_USAGE = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


class CliError(ActsteerError):
    """A user-facing error: printed as one line, exit code 2."""


class RayUnavailableError(ActsteerError, ImportError):
    """The Ray executor was asked for, and Ray is not installed."""


INTERRUPTED = {
    "extract": "interrupted; nothing was saved",
    "plot": "interrupted; figures already written are complete, the rest were not written",
}
"""What Ctrl-C leaves behind, per command (experiments and the demo: finished cells)."""


def interrupted(args: argparse.Namespace) -> str:
    if args.command in INTERRUPTED:
        return INTERRUPTED[args.command]
    return ("interrupted; every finished cell is saved, run the same command again to resume "
            "where it stopped")


def _user_paths(args: argparse.Namespace) -> list[Path]:
    """The paths given on the command line (an OSError on one of them is the user's)."""
    found = []
    for name in ("out", "results", "config", "data_dir", "text", "dataset"):
        value = getattr(args, name, None)
        if isinstance(value, (str, Path)) and str(value):
            found.append(Path(value).expanduser().absolute())
    return found


def is_mistake(error: BaseException, args: argparse.Namespace) -> bool:
    """An error that is the user's to fix (one line, exit 2), not a bug (traceback, exit 1)."""
    if isinstance(error, ActsteerError):
        return True
    if isinstance(error, OSError) and error.filename:
        where = Path(str(error.filename)).expanduser().absolute()
        return any(where == p or p in where.parents for p in _user_paths(args))
    return False


def one_line(error: BaseException) -> str:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = str(message).splitlines()[0] if str(message) else type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return text
