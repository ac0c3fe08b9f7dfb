"""The results log on disk: its format, reading it back line by line (a torn last line
dropped with a warning), writing a whole log atomically, and :func:`read_results`."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actsteer.atomic import atomic_write
from actsteer.errors import InvalidTypeError, InvalidValueError, MissingFileError
from actsteer.results.errors import ResultConfigMismatchError

__all__ = ["FORMAT", "Replay", "changed_fields", "check_runtime", "encode_line", "read_results",
           "record_name", "replay", "set_aside", "write_log"]

logger = logging.getLogger(__name__)

FORMAT = "actsteer-results/2"
"""The format tag in the header line of a results log."""


@dataclass
class Replay:
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


def encode_line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()


def write_log(path: Path, config: Any, cells: Mapping[str, Any],
               extra: Mapping[str, Any], runtime: Any = None) -> None:
    """A whole results log, written atomically (a fresh header, a conversion, a merge)."""
    header = {"format": FORMAT, "config": config}
    if runtime is not None:
        header["runtime"] = runtime

    def write(scratch: Path) -> None:
        with open(scratch, "wb") as handle:
            handle.write(encode_line(header))
            for key, value in cells.items():
                handle.write(encode_line({"cell": key, "value": value}))
            for key, value in extra.items():
                handle.write(encode_line({"extra": key, "value": value}))
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


def replay(path: Path) -> Replay:
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
    saved = Replay(config=header["config"], cells={}, extra={}, end=at,
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


def _read_whole_file(path: Path, data: bytes) -> Replay:
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
    return Replay(config=saved["config"], cells=dict(saved["cells"]),
                   extra=dict(saved.get("extra") or {}), end=len(data), legacy=True)


def check_runtime(path: Path, mine: Any, stored: Any) -> None:
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


def changed_fields(mine: Mapping[str, Any], stored: Any) -> list[str]:
    stored = stored if isinstance(stored, Mapping) else {}
    return sorted(k for k in set(mine) | set(stored) if mine.get(k) != stored.get(k))


def record_name(key: Any, kind: str) -> str:
    if not isinstance(key, str):
        raise InvalidTypeError(f"a {kind} name must be a string, not {key!r} "
                               f"({type(key).__name__})")
    return key


def set_aside(path: Path, why: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    count = 1
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}.{why}-{stamp}-{count}")
    os.replace(path, target)
    return target


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
    saved = replay(path)
    missing = [key for key in needs if key not in saved.extra]
    if missing:
        raise InvalidValueError(f"{path} is an unfinished run (no {', '.join(missing)}); re-run "
                                "the command that made it to finish, then plot again")
    return {**saved.extra, "config": saved.config, "cells": saved.cells, "path": str(path)}
