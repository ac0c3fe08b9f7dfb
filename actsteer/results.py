"""Results files: an append-only JSON Lines log of named cells, the config that made them
in its first line, resumable cell by cell, one writer at a time.

The file is a header line, then one line per finished cell or extra (chosen settings,
summaries, timings), in compact strict JSON::

    {"format": "actsteer-results/2", "config": {...}, "runtime": {...}}
    {"cell": "grid/behaviour=myopia/layer=12/multiplier=2.0", "value": {...}}
    {"extra": "chosen", "value": {...}}

Each line is appended, flushed and synced to disk as its cell finishes, so writing a cell
costs the same however many cells came before it, and a crash loses at most the line being
written. The header's optional ``runtime`` records what ran the cells (the resolved
backend and the TransformerLens line); a log is resumed only on the same backend and line,
since their numerics differ in the last bits. Reading replays the lines in order; a later
line for a name replaces an earlier one (a cell scored again is appended again). A last
line cut off mid-write is dropped with a warning, and cut away before a resumed run
appends; a damaged line anywhere else is an error. :func:`read_results` also reads
whole-file JSON results (``{"config", "cells", "extra"}``), and :func:`merge_results` joins
the logs of one config written in parallel (shards of a sweep).

Example::

    with ResultStore(out_dir / "multi_behaviour.jsonl", config=cfg.to_dict()) as store:
        if not store.has("grid/behaviour=myopia/layer=12/multiplier=2.0"):
            store.put("grid/behaviour=myopia/layer=12/multiplier=2.0", {...})  # one line
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from actsteer.atomic import atomic_write, jsonable
from actsteer.errors import ActsteerError, InvalidTypeError, InvalidValueError, MissingFileError

__all__ = [
    "FORMAT",
    "ResultConfigMismatchError",
    "ResultConflictError",
    "ResultStore",
    "ResultsLockedError",
    "check_unlocked",
    "merge_results",
    "read_results",
]

logger = logging.getLogger(__name__)

FORMAT = "actsteer-results/2"
"""The format tag in the header line of a results log."""


class ResultConfigMismatchError(ActsteerError, ValueError):
    """An existing results file was made with a different config."""


class ResultsLockedError(ActsteerError, RuntimeError):
    """Another run is writing the same results file."""


class ResultConflictError(ActsteerError, ValueError):
    """Two results files to merge hold different values under one name."""


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
        self._lock = _acquire(self.path)
        try:
            self._open(overwrite)
        except BaseException:
            self.close()
            raise

    @property
    def lock_path(self) -> Path:
        return _lock_path(self.path)

    def _open(self, overwrite: bool) -> None:
        if overwrite and self.path.exists():
            _set_aside(self.path, "replaced")
        unended = False
        if not self.path.exists():
            _write_log(self.path, self.config, {}, {}, self.runtime)
        else:
            saved = _replay(self.path)
            _check_runtime(self.path, self.runtime, saved.runtime)
            if saved.config != self.config:
                raise ResultConfigMismatchError(
                    f"{self.path} was made with a different config or data (fields "
                    f"{_changed(self.config, saved.config)}); use another output folder "
                    "(--out), or start it again with --overwrite (overwrite=True), which "
                    "keeps the old file beside it")
            if saved.legacy:  # a whole-file JSON results file continues as a log
                _write_log(self.path, self.config, saved.cells, saved.extra, self.runtime)
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
            _release(self.path, self._lock)
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
        self._append({"cell": _name(key, "cell"), "value": value})
        self.cells[key] = value

    def set_extra(self, key: str, value: Any) -> None:
        """Record derived, non-cell data (summaries, timings) as one appended line."""
        value = jsonable(value)
        self._append({"extra": _name(key, "extra"), "value": value})
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
        self._append_bytes(_line(record))

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


def read_results(path: str | os.PathLike[str], *, needs: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
    """A finished results file as one flat dict: ``config``, ``cells``, each extra, ``path``.

    Reads results logs and whole-file JSON results. Raises :class:`MissingFileError` /
    :class:`InvalidValueError` naming the file when it is missing, not JSON, not a results
    file, damaged before its last line, or lacks one of the extras in ``needs`` (the run
    stopped before writing them: re-run the same command to finish it).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no results file at {path}")
    saved = _replay(path)
    missing = [key for key in needs if key not in saved.extra]
    if missing:
        raise InvalidValueError(f"{path} is an unfinished run (no {', '.join(missing)}); re-run "
                                "the command that made it to finish, then plot again")
    return {**saved.extra, "config": saved.config, "cells": saved.cells, "path": str(path)}


def merge_results(paths: Sequence[str | os.PathLike[str]],
                  out_path: str | os.PathLike[str]) -> Path:
    """Join results files made with one config (shards of a sweep) into one log at
    ``out_path``, written atomically; returns its path.

    The same cell or extra in several files must hold equal values. ``out_path`` may be
    one of ``paths``; any other existing file there is refused rather than replaced.

    Example::

        merge_results(["shard0/multi_behaviour.jsonl", "shard1/multi_behaviour.jsonl"],
                      "all/multi_behaviour.jsonl")
    """
    sources = [Path(p) for p in paths]
    out = Path(out_path)
    if not sources:
        raise InvalidValueError("merge_results needs at least one results file to merge")
    for source in sources:
        if not source.is_file():
            raise MissingFileError(f"no results file at {source}")
    if out.exists() and not any(out.resolve() == s.resolve() for s in sources):
        raise InvalidValueError(f"{out} exists and is not among the files to merge; choose "
                                "another output name, or list it among the files")
    lock = _acquire(out)
    try:
        logs = [(source, _replay(source)) for source in sources]
        first, config = sources[0], logs[0][1].config
        for source, saved in logs[1:]:
            if saved.config != config:
                raise ResultConfigMismatchError(
                    f"{source} and {first} were made with different configs (fields "
                    f"{_changed(config, saved.config)}); only files of one run can be merged")
            _check_runtime(source, logs[0][1].runtime, saved.runtime)
        cells: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        origin: dict[tuple[str, str], Path] = {}
        for source, saved in logs:
            for kind, merged, values in (("cell", cells, saved.cells),
                                         ("extra", extra, saved.extra)):
                for name, value in values.items():
                    if name in merged and merged[name] != value:
                        raise ResultConflictError(
                            f"{kind} {name!r} has different values in {origin[kind, name]} "
                            f"and {source}; these are not shards of one run, or one of them "
                            "was scored differently: drop that cell from one file, or merge "
                            "the files separately")
                    merged[name] = value
                    origin.setdefault((kind, name), source)
        _write_log(out, config, cells, extra, logs[0][1].runtime)
    finally:
        _release(out, lock)
    return out


# -- the log on disk -------------------------------------------------------------------


@dataclass
class _Replay:
    """What a results file holds, and where its last complete line ends."""

    config: Any
    cells: dict[str, Any]
    extra: dict[str, Any]
    end: int
    torn: bool = False
    legacy: bool = False
    unended: bool = False
    """Whether the complete lines end without a newline (a header written by hand)."""
    runtime: Any = None
    """The header's ``runtime`` (backend and TransformerLens line), None in older logs."""


def _line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()


def _write_log(path: Path, config: Any, cells: Mapping[str, Any],
               extra: Mapping[str, Any], runtime: Any = None) -> None:
    """A whole results log, written atomically (a fresh header, a conversion, a merge)."""
    header = {"format": FORMAT, "config": config}
    if runtime is not None:
        header["runtime"] = runtime

    def write(scratch: Path) -> None:
        with open(scratch, "wb") as handle:
            handle.write(_line(header))
            for key, value in cells.items():
                handle.write(_line({"cell": key, "value": value}))
            for key, value in extra.items():
                handle.write(_line({"extra": key, "value": value}))
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)


def _record(line: bytes) -> tuple[str, str, Any] | None:
    """``(kind, name, value)`` of a cell or extra line, or None if it is not one."""
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if isinstance(record, dict) and len(record) == 2 and "value" in record:
        for kind in ("cell", "extra"):
            if isinstance(record.get(kind), str):
                return kind, record[kind], record["value"]
    return None


def _replay(path: Path) -> _Replay:
    data = path.read_bytes()
    newline = data.find(b"\n")
    at = len(data) if newline < 0 else newline + 1
    try:
        header = json.loads(data[:at])
    except ValueError:
        header = None
    if not (isinstance(header, dict) and "format" in header):
        return _read_whole_file(path, data)
    if header["format"] != FORMAT or not isinstance(header.get("config"), dict):
        raise InvalidValueError(f"{path} is a results log of format {header['format']!r} "
                                f"(this actsteer reads {FORMAT!r})")
    saved = _Replay(config=header["config"], cells={}, extra={}, end=at,
                    runtime=header.get("runtime"))
    number = 1
    while at < len(data):
        number += 1
        newline = data.find(b"\n", at)
        stop = len(data) if newline < 0 else newline + 1
        line = data[at:stop]
        record = _record(line) if newline >= 0 else None  # no newline: cut off mid-write
        if record is None and line.strip() and not data[stop:].strip():
            saved.torn = True
            logger.warning("%s: its last line was cut off (the run stopped while writing "
                           "it); dropped that line and kept %d cells", path, len(saved.cells))
            break
        if record is None and line.strip():
            raise InvalidValueError(
                f"{path}: line {number} is damaged (not a cell or extra record: "
                f"{line[:80]!r}); the lines after it are whole, so the file was changed "
                "after it was written: mend or delete that line, or start again with "
                "--overwrite (overwrite=True), which keeps the old file beside it")
        if record is not None:
            kind, name, value = record
            (saved.cells if kind == "cell" else saved.extra)[name] = value
        at = saved.end = stop
    saved.unended = not data[:saved.end].endswith(b"\n")
    return saved


def _read_whole_file(path: Path, data: bytes) -> _Replay:
    """A results file written whole: ``{"config": ..., "cells": {...}, "extra": {...}}``."""
    try:
        saved = json.loads(data)
    except ValueError as error:
        raise InvalidValueError(
            f"{path} is not JSON ({error}), so not a results file; re-run the command that "
            "made it with --overwrite (overwrite=True), which sets it aside and starts "
            "afresh") from None
    if not (isinstance(saved, dict) and {"config", "cells"} <= saved.keys()
            and isinstance(saved["cells"], dict)):
        raise InvalidValueError(f"{path} is not an actsteer results file (no {FORMAT!r} "
                                "header line, no 'config'/'cells')")
    return _Replay(config=saved["config"], cells=dict(saved["cells"]),
                   extra=dict(saved.get("extra") or {}), end=len(data), legacy=True)


def _check_runtime(path: Path, mine: Any, stored: Any) -> None:
    """Refuse to resume a log that another backend or TransformerLens line wrote."""
    if not (isinstance(mine, Mapping) and isinstance(stored, Mapping)):
        return  # a log from before runtimes were recorded, or a caller that records none
    keys = ("backend", "transformer_lens_major")
    if all(mine.get(key) == stored.get(key) for key in keys):
        return
    raise ResultConfigMismatchError(
        f"{path} was written by backend {stored.get('backend')!r} on TransformerLens "
        f"{stored.get('transformer_lens')} and this run uses backend {mine.get('backend')!r} "
        f"on TransformerLens {mine.get('transformer_lens')}: their numerics differ in the last "
        "bits, so its cells cannot be mixed with this run's; resume it on the line that wrote "
        "it, or use another output folder (--out), or start again with --overwrite "
        "(overwrite=True), which keeps the old file beside it")


def _changed(mine: Mapping[str, Any], stored: Any) -> list[str]:
    stored = stored if isinstance(stored, Mapping) else {}
    return sorted(k for k in set(mine) | set(stored) if mine.get(k) != stored.get(k))


def _name(key: Any, kind: str) -> str:
    if not isinstance(key, str):
        raise InvalidTypeError(f"a {kind} name must be a string, not {key!r} "
                               f"({type(key).__name__})")
    return key


def _set_aside(path: Path, why: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    count = 1
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}.{why}-{stamp}-{count}")
    os.replace(path, target)
    return target


# -- one writer per file -----------------------------------------------------------------


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _owner_path(path: Path) -> Path:
    # Who holds the lock lives beside it: filelock may empty the lock file itself when
    # another process tries to take it.
    return path.with_name(path.name + ".lock.owner")


def _acquire(path: Path) -> FileLock:
    """Take ``<path>.lock`` at once, or raise :class:`ResultsLockedError` naming its holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(_lock_path(path)), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise _locked(path) from None
    owner = (f"pid {os.getpid()} on {socket.gethostname()}, since "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}")

    def write(scratch: Path) -> None:
        scratch.write_text(owner, encoding="utf-8")

    try:
        atomic_write(_owner_path(path), write)
    except BaseException:
        lock.release()
        raise
    return lock


def _locked(path: Path) -> ResultsLockedError:
    try:
        holder = _owner_path(path).read_text(encoding="utf-8").strip()
    except OSError:
        holder = ""
    return ResultsLockedError(
        f"{path} is being written by another run ({holder or 'another process'}); wait "
        "for it to finish, or give this run another output folder (--out)")


def check_unlocked(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ResultsLockedError` now if another run is writing ``path``: a quick
    check before long work (loading data and a model), so a second run into the same
    folder stops at once. The store takes the lock itself when it opens."""
    target = Path(path)
    if not _lock_path(target).exists():
        return
    lock = FileLock(str(_lock_path(target)), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise _locked(target) from None
    lock.release()


def _release(path: Path, lock: FileLock) -> None:
    # The owner file goes first: once the lock is free, it may be the next holder's.
    with contextlib.suppress(OSError):
        _owner_path(path).unlink()
    lock.release()
