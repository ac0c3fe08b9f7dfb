"""The errors :mod:`actsteer.surgery` raises on purpose (both are
:class:`~actsteer.errors.ActsteerError`)."""

from __future__ import annotations

from actsteer.errors import ActsteerError

__all__ = ["SurgeryError", "SurgeryFileError"]


class SurgeryError(ActsteerError, ValueError):
    """A model surgery cannot edit exactly (no gated MLP, no way back to checkpoint
    coordinates), an edit that does not fit the model, or a revert that would undo
    someone else's change. The message names the reason and what to do instead."""


class SurgeryFileError(ActsteerError, ValueError):
    """A file that is not a valid surgery edit written by :meth:`SurgeryEdit.save`."""
