"""Results files: written atomically, resumable cell by cell, config recorded inside,
one writer at a time.

Example::

    with ResultStore(out_dir / "multi_behaviour.json", config=cfg.to_dict()) as store:
        if not store.has("grid/behaviour=myopia/layer=12/multiplier=2.0"):
            store.put("grid/behaviour=myopia/layer=12/multiplier=2.0", {...})  # atomic
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from actsteer.atomic import jsonable, write_json_atomic
from actsteer.errors import ActsteerError, InvalidValueError, MissingFileError

logger = logging.getLogger(__name__)


class ResultConfigMismatchError(ActsteerError, ValueError):
    """An existing results file was made with a different config."""


class ResultsLockedError(ActsteerError, RuntimeError):
    """Another run is writing the same results file."""


class ResultStore:
    """A JSON file of named cells plus the config that produced them.

    Re-opening the file with the same config keeps the finished cells, so an interrupted
    sweep resumes where it stopped; a different config raises unless ``overwrite=True``.
    While open, the store holds an exclusive lock (``<file>.lock``), so a second run into
    the same file stops at once with :class:`ResultsLockedError` instead of overwriting
    the first one's cells. The operating system drops the lock if the process dies.
    Close the store (or use it as a context manager) to release it.
    """

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any],
                 *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.config = jsonable(dict(config))
        self.cells: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self._lock: int | None = None
        self._acquire()
        try:
            if self.path.exists() and overwrite:
                self._set_aside(self.path, "replaced")
            elif self.path.exists():
                self._resume()
        except BaseException:
            self.close()
            raise

    # -- locking ----------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ResultsLockedError(
                f"{self.path} is being written by another run ({holder}); wait for it to "
                "finish, or give this run another output folder (--out)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}".encode())
        self._lock = fd

    def close(self) -> None:
        """Release the lock (the file itself is always up to date)."""
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- reading an existing file -----------------------------------------------------
    def _resume(self) -> None:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        try:
            saved = json.loads(text)
            if not isinstance(saved, dict):
                raise InvalidValueError("not a JSON object")
        except ValueError as error:
            saved = self._salvage(text, error)
        if saved.get("config") != self.config:
            stored = saved.get("config") or {}
            changed = sorted(k for k in set(self.config) | set(stored)
                             if self.config.get(k) != stored.get(k))
            raise ResultConfigMismatchError(
                f"{self.path} was made with a different config or data (fields {changed}); "
                "use another output folder (--out), or start it again with --overwrite "
                "(overwrite=True), which keeps the old file beside it")
        self.cells = dict(saved.get("cells", {}))
        self.extra = dict(saved.get("extra", {}))

    def _salvage(self, text: str, error: Exception) -> dict[str, Any]:
        """The config and every complete cell of a damaged (e.g. truncated) file; the
        damaged file is kept beside the new one."""
        decoder = json.JSONDecoder()
        config: Any = None
        cells: dict[str, Any] = {}
        try:
            start = text.index('"config":') + len('"config":')
            config, end = decoder.raw_decode(text, _skip(text, start))
            at = _skip(text, text.index('"cells":', end) + len('"cells":'))
            if text[at] != "{":
                raise InvalidValueError("no cells object")
            at += 1
            while True:
                at = _skip(text, at)
                if text[at] == "}":
                    break
                key, at = decoder.raw_decode(text, at)
                at = _skip(text, at)
                if text[at] != ":":
                    break
                value, at = decoder.raw_decode(text, _skip(text, at + 1))
                cells[key] = value
                at = _skip(text, at)
                if text[at] == ",":
                    at += 1
        except (ValueError, IndexError):
            pass  # keep what was read before the damage
        if config is None:
            raise InvalidValueError(
                f"{self.path} is damaged ({error}) and its config cannot be read; move it "
                "aside and re-run, or start again with --overwrite (overwrite=True)") from None
        kept = self._set_aside(self.path, "damaged")
        logger.warning("%s was damaged (%s); kept %d complete cells, the damaged file is "
                       "at %s", self.path, error, len(cells), kept)
        return {"config": config, "cells": cells, "extra": {}}

    @staticmethod
    def _set_aside(path: Path, why: str) -> Path:
        target = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, target)
        return target

    # -- cells ------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.cells

    def get(self, key: str) -> Any:
        return self.cells[key]

    def put(self, key: str, value: Any) -> None:
        """Record one finished cell and rewrite the file atomically."""
        self.cells[key] = jsonable(value)
        self.flush()

    def set_extra(self, key: str, value: Any) -> None:
        """Record derived, non-cell data (summaries, timings) and rewrite the file."""
        self.extra[key] = jsonable(value)
        self.flush()

    def flush(self) -> None:
        if self._lock is None:
            raise ResultsLockedError(f"{self.path}: this store was closed; open it again")
        # Cells and extras were made JSON-ready when stored; a sweep rewrites this file
        # after every cell, so skip re-conversion and indentation (C encoder).
        write_json_atomic(self.path, {"config": self.config, "cells": self.cells,
                                      "extra": self.extra}, indent=None, convert=False)


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def read_results(path: str | os.PathLike[str], *, needs: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
    """A finished results file as one flat dict: ``config``, ``cells``, each extra, ``path``.

    Raises :class:`FileNotFoundError` / :class:`ValueError` naming the file when it is
    missing, not JSON, not a results file, or lacks one of the extras in ``needs`` (the run
    stopped before writing them: re-run the same command to finish it).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no results file at {path}")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidValueError(f"{path} is not JSON ({error}); re-run the command that made it "
                                "to repair it") from None
    if not isinstance(saved, dict) or not {"config", "cells"} <= saved.keys():
        raise InvalidValueError(f"{path} is not an actsteer results file (no 'config'/'cells')")
    extra = dict(saved.get("extra", {}))
    missing = [key for key in needs if key not in extra]
    if missing:
        raise InvalidValueError(f"{path} is an unfinished run (no {', '.join(missing)}); re-run "
                                "the command that made it to finish, then plot again")
    return {**extra, "config": saved["config"], "cells": saved["cells"], "path": str(path)}
