"""Joining the results logs of one config written in parallel (shards of a sweep)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actsteer.errors import InvalidValueError, MissingFileError
from actsteer.results.errors import ResultConfigMismatchError, ResultConflictError
from actsteer.results.lock import acquire, release
from actsteer.results.log import changed_fields, check_runtime, replay, write_log

__all__ = ["MERGE_ABS_TOL", "MERGE_REL_TOL", "merge_results"]

MERGE_REL_TOL = 1e-3
MERGE_ABS_TOL = 1e-6
"""Two numbers of one cell or extra in two shards are the same measurement when they agree
to ``math.isclose(a, b, rel_tol=MERGE_REL_TOL, abs_tol=MERGE_ABS_TOL)`` (floats only:
integers such as counts, strings and structure must be equal): shards that each
extract their own vectors (other hardware, another TransformerLens line, other batching)
differ in float rounding (vector norms ~1e-7 relative in float32, ~1e-3 in bf16), while a
cell scored on other data or with another vector differs far more."""


def _same(a: object, b: object) -> bool:
    """Equal structure, strings and integers (counts); floats within the merge tolerance."""
    numbers = (int, float)
    if ((isinstance(a, float) or isinstance(b, float)) and isinstance(a, numbers)
            and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool)):
        return a == b or math.isclose(a, b, rel_tol=MERGE_REL_TOL, abs_tol=MERGE_ABS_TOL)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def merge_results(paths: Sequence[str | os.PathLike[str]],
                  out_path: str | os.PathLike[str]) -> Path:
    """Join results files made with one config (shards of a sweep) into one log at
    ``out_path``, written atomically; returns its path.

    The same cell or extra in several files must hold the same values: equal strings and
    structure, numbers within :data:`MERGE_REL_TOL` (so shards that each extracted their
    own vectors merge); the first file's value is kept. ``out_path`` may be one of
    ``paths``; any other existing file there is refused rather than replaced.

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
    lock = acquire(out)
    try:
        logs = [(source, replay(source)) for source in sources]
        first, config = sources[0], logs[0][1].config
        for source, saved in logs[1:]:
            if saved.config != config:
                raise ResultConfigMismatchError(
                    f"{source} and {first} were made with different configs (fields "
                    f"{changed_fields(config, saved.config)}); only files of one run can be merged")
            check_runtime(source, logs[0][1].runtime, saved.runtime)
        cells: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        origin: dict[tuple[str, str], Path] = {}
        for source, saved in logs:
            for kind, merged, values in (("cell", cells, saved.cells),
                                         ("extra", extra, saved.extra)):
                for name, value in values.items():
                    if name in merged:
                        if not _same(merged[name], value):
                            raise ResultConflictError(
                                f"{kind} {name!r} has different values in "
                                f"{origin[kind, name]} and {source} (beyond a relative "
                                f"{MERGE_REL_TOL:g}); these are not shards of one run, or one "
                                "of them was scored differently: drop that cell from one "
                                "file, or merge the files separately")
                        continue
                    merged[name] = value
                    origin[kind, name] = source
        write_log(out, config, cells, extra, logs[0][1].runtime)
    finally:
        release(out, lock)
    return out
