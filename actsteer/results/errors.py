"""What can go wrong with a results file: another config, another writer, a conflict."""

from __future__ import annotations

from actsteer.errors import ActsteerError

__all__ = ["ResultConfigMismatchError", "ResultConflictError", "ResultsLockedError"]


class ResultConfigMismatchError(ActsteerError, ValueError):
    """An existing results file was made with a different config."""


class ResultsLockedError(ActsteerError, RuntimeError):
    """Another run is writing the same results file."""


class ResultConflictError(ActsteerError, ValueError):
    """Two results files to merge hold different values under one name."""
