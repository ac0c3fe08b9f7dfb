"""Atomic file and folder writes: a reader (or a crash) never sees half a file.

Everything actsteer writes (results, vectors, plans, figures, converted models) goes
through here: the content is written to a scratch path beside the target and renamed
into place. Files get the mode a plain ``open`` gives (0666 less the umask): the scratch
file is created that way, and the kernel's answer is read back from it and restored
after writers that recreate the file (safetensors does); the umask is never set.

Example::

    write_json_atomic("results/run.json", {"cells": {}})
    atomic_write("v.safetensors", lambda tmp: save_file(tensors, tmp))
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_dir", "atomic_write", "jsonable", "write_json_atomic"]


def _scratch_file(target: Path, suffix: str) -> tuple[Path, int]:
    """A new empty file beside ``target`` under a name nobody else holds, and its mode:
    created with 0666 for the kernel to apply the umask, as ``open`` does (``mkstemp``
    would make it 0600)."""
    for _ in range(100):
        scratch = target.parent / f".{target.name}-{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(scratch, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        try:
            return scratch, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    raise FileExistsError(f"no free scratch name beside {target} after 100 tries")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], *,
                 suffix: str = "") -> Path:
    """Call ``write(scratch)`` on a scratch file beside ``path``, then rename it to ``path``.

    ``suffix`` is given to the scratch name for writers that look at it (plotly writes
    ``plotly.min.js`` beside a ``.html`` path). On any exception, the scratch file is
    removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch, mode = _scratch_file(target, suffix)
    try:
        write(scratch)
        os.chmod(scratch, mode)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    return target


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists, tensor/numpy scalars as numbers, tensor/numpy arrays
    as (nested) lists, paths as strings and non-finite floats as ``null`` / ``"inf"`` /
    ``"-inf"`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch, any shape
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: str | os.PathLike[str], payload: Any, *,
                      indent: int | None = 1, convert: bool = True) -> Path:
    """Write ``payload`` as JSON atomically (see :func:`atomic_write`).

    ``convert=False`` skips :func:`jsonable` (for payloads that are already plain JSON);
    ``indent=None`` writes compactly with the C encoder, much faster for large files.
    """
    text = json.dumps(jsonable(payload) if convert else payload, indent=indent)

    def write(scratch: Path) -> None:
        with open(scratch, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a scratch folder that becomes ``final`` only if the block succeeds.

    If another process created ``final`` meanwhile, theirs is kept and the scratch
    folder is discarded.
    """
    target = Path(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield scratch
        if not target.exists():
            os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
