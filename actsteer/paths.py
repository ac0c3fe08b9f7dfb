"""Where actsteer looks for things on disk: its cache, the reference data, and env flags.

Every folder lookup of the package lives here, so there is one rule for each:

* :func:`cache_dir`: converted models and other rebuildable files;
* :func:`data_dir`: the read-only reference data (paper behaviour files, WikiText-2),
  normally kept beside the repository as ``../shared/data``;
* :func:`env_flag`: whether a boolean environment variable (``HF_HUB_OFFLINE``, ...) is on.

Example::

    data_dir("behaviours")      # Path('/work/shared/data/behaviours') or None
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from actsteer.errors import InvalidValueError

__all__ = ["CACHE_DIR_ENV", "DATA_DIR_ENV", "cache_dir", "data_dir", "env_flag"]

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "ACTSTEER_CACHE_DIR"
"""Environment variable that overrides :func:`cache_dir`."""

DATA_DIR_ENV = "ACTSTEER_DATA_DIR"
"""Environment variable naming the reference data folder (the one holding
``behaviours/`` and ``wikitext-2/``); overrides the search of :func:`data_dir`."""

_TRUE = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is on: ``1``, ``true``, ``yes`` or ``on``
    (any case, surrounding spaces ignored); unset or anything else is off.

    Example::

        env_flag("HF_HUB_OFFLINE")     # True after `export HF_HUB_OFFLINE=True`
    """
    return os.environ.get(name, "").strip().lower() in _TRUE


def cache_dir() -> Path:
    """Where actsteer keeps converted models and other rebuildable files.

    ``$ACTSTEER_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/actsteer``, else
    ``~/.cache/actsteer``. The folder is not created here.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "actsteer"


def _check_sub(sub: str) -> None:
    parts = Path(sub).parts
    if not sub or Path(sub).is_absolute() or ".." in parts:
        raise InvalidValueError(
            f"sub must be a relative folder name inside the data folder such as 'behaviours' "
            f"or 'wikitext-2', got {sub!r}"
            )


def data_dir(sub: str | None = None) -> Path | None:
    """The reference data folder (or its subfolder ``sub``), or ``None`` if there is none.

    One rule, used for every kind of reference data:

    1. ``$ACTSTEER_DATA_DIR`` when set: ``$ACTSTEER_DATA_DIR/<sub>``, or ``None`` (with a
       warning) when that folder does not exist; nothing else is searched.
    2. Otherwise the first ``shared/data/<sub>`` folder found in the current directory,
       then its parents, then the package's directory and its parents (the project keeps
       the data beside the repository, as ``../shared/data``).

    Args:
        sub: A folder inside the data folder, e.g. ``"behaviours"`` or ``"wikitext-2"``;
            ``None`` for the data folder itself.

    Raises:
        ValueError: ``sub`` is absolute or climbs out with ``..``.

    Example:
        >>> data_dir("behaviours")  # doctest: +SKIP
        PosixPath('/work/shared/data/behaviours')
    """
    if sub is not None:
        _check_sub(sub)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        path = path / sub if sub is not None else path
        if path.is_dir():
            return path
        logger.warning("%s is set but %s is not a folder", DATA_DIR_ENV, path)
        return None
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data"
            candidate = candidate / sub if sub is not None else candidate
            if candidate.is_dir():
                return candidate
    return None
