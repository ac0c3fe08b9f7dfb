"""One writer per results file: ``<file>.lock``, taken at once or refused naming its
holder (kept in ``<file>.lock.owner``); the operating system drops it if the process dies."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from actsteer.atomic import atomic_write
from actsteer.results.errors import ResultsLockedError

__all__ = ["acquire", "check_unlocked", "lock_path", "release"]


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _owner_path(path: Path) -> Path:
    # Who holds the lock lives beside it: filelock may empty the lock file itself when
    # another process tries to take it.
    return path.with_name(path.name + ".lock.owner")


def acquire(path: Path) -> FileLock:
    """Take ``<path>.lock`` at once, or raise :class:`ResultsLockedError` naming its holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(path)), timeout=0, thread_local=False)
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
    if not lock_path(target).exists():
        return
    lock = FileLock(str(lock_path(target)), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise _locked(target) from None
    lock.release()


def release(path: Path, lock: FileLock) -> None:
    # The owner file goes first: once the lock is free, it may be the next holder's.
    with contextlib.suppress(OSError):
        _owner_path(path).unlink()
    lock.release()
