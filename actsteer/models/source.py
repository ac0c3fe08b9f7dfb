"""The local Hugging Face folder a model was loaded from: what exports and weight reads
that need the checkpoint itself (not TransformerLens's processed weights) open."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from actsteer.errors import InvalidValueError
from actsteer.models.embedded import EMBEDDED_MODEL, embedded_model_path
from actsteer.models.info import model_info

__all__ = ["source_folder"]


def source_folder(source: Any) -> Path:
    """The Hugging Face folder of ``source``: the embedded model's name (or None), a local
    folder, or a model from :func:`actsteer.load_model` built from one.

    Raises:
        InvalidValueError: ``source`` is not a local folder with a ``config.json`` (a Hub
            name, say): pass the folder the model was loaded from.
    """
    if source is not None and not isinstance(source, (str, os.PathLike)):
        source = model_info(source).name
    name = os.fspath(source) if source is not None else EMBEDDED_MODEL
    if name == EMBEDDED_MODEL:
        return embedded_model_path()
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise InvalidValueError(
            f"source {name!r} is not a local Hugging Face folder (no config.json); "
            f"pass the folder the model was loaded from, or {EMBEDDED_MODEL!r}")
    return folder
