"""The results log of one run, open for appending: :class:`ResultStore`."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock

from actsteer.atomic import jsonable
from actsteer.results.errors import ResultConfigMismatchError, ResultsLockedError
from actsteer.results.lock import acquire, lock_path, release
from actsteer.results.log import (
    changed_fields,
    check_runtime,
    encode_line,
    record_name,
    replay,
    set_aside,
    write_log,
)

__all__ = ["ResultStore"]


class ResultStore:
    """A results log of named cells plus the config that produced them.

    Re-opening the file with the same config keeps the finished cells, so an interrupted
    sweep resumes where it stopped; a different config raises (before anything on disk
    changes) unless ``overwrite=True``, which sets the old file aside and starts afresh.
    While open, the store holds an exclusive lock (``<file>.lock``), so a second run into
    the same file stops at once with :class:`ResultsLockedError` instead of interleaving
    its cells with the first one's. The operating system drops the lock if the process
    dies. Close the store (or use it as a context manager) to release it.
    """

    # Class-level defaults, so that close() (and __del__) work on a half-built store.
    _lock: FileLock | None = None
    _log: io.FileIO | None = None

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any],
                 *, overwrite: bool = False, runtime: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.config = jsonable(dict(config))
        self.runtime = None if runtime is None else jsonable(dict(runtime))
        self.cells: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self._lock = acquire(self.path)
        try:
            self._open(overwrite)
        except BaseException:
            self.close()
            raise

    @property
    def lock_path(self) -> Path:
        return lock_path(self.path)

    def _open(self, overwrite: bool) -> None:
        if overwrite and self.path.exists():
            set_aside(self.path, "replaced")
        unended = False
        if not self.path.exists():
            write_log(self.path, self.config, {}, {}, self.runtime)
        else:
            saved = replay(self.path)
            check_runtime(self.path, self.runtime, saved.runtime)
            if saved.config != self.config:
                raise ResultConfigMismatchError(
                    f"{self.path} was made with a different config or data (fields "
                    f"{changed_fields(self.config, saved.config)}); use another output folder "
                    "(--out), or start it again with --overwrite (overwrite=True), which "
                    "keeps the old file beside it")
            if saved.legacy:  # a whole-file JSON results file continues as a log
                write_log(self.path, self.config, saved.cells, saved.extra, self.runtime)
            elif saved.torn:  # the next line must not start on the end of a broken one
                os.truncate(self.path, saved.end)
            self.cells, self.extra = saved.cells, saved.extra
            unended = not saved.legacy and saved.unended
        self._log = open(self.path, "ab", buffering=0)  # noqa: SIM115 - held until close()
        self._size = os.fstat(self._log.fileno()).st_size
        if unended:  # a header line written by hand, without its newline
            self._append_bytes(b"\n")

    def close(self) -> None:
        """Release the lock (everything recorded is already on disk)."""
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock is not None:
            release(self.path, self._lock)
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- cells ------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.cells

    def get(self, key: str) -> Any:
        return self.cells[key]

    def put(self, key: str, value: Any) -> None:
        """Record one finished cell: one line appended to the log and synced to disk."""
        value = jsonable(value)
        self._append({"cell": record_name(key, "cell"), "value": value})
        self.cells[key] = value

    def set_extra(self, key: str, value: Any) -> None:
        """Record derived, non-cell data (summaries, timings) as one appended line."""
        value = jsonable(value)
        self._append({"extra": record_name(key, "extra"), "value": value})
        self.extra[key] = value

    def flush(self) -> None:
        """Sync the log to disk (each line already is as it is written; the header
        is on disk from the moment the store opens)."""
        os.fsync(self._open_log().fileno())

    def _open_log(self) -> io.FileIO:
        if self._log is None:
            raise ResultsLockedError(f"{self.path}: this store was closed; open it again")
        return self._log

    def _append(self, record: dict[str, Any]) -> None:
        self._append_bytes(encode_line(record))

    def _append_bytes(self, data: bytes) -> None:
        log = self._open_log()
        line = memoryview(data)
        try:
            written = 0
            while written < len(line):
                written += log.write(line[written:]) or 0
            os.fsync(log.fileno())
        except BaseException:
            # A half-written line would become a damaged middle line once more follow.
            with contextlib.suppress(OSError):
                os.ftruncate(log.fileno(), self._size)
            raise
        self._size += len(line)
