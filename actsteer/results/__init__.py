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

from actsteer.results.errors import (
    ResultConfigMismatchError,
    ResultConflictError,
    ResultsLockedError,
)
from actsteer.results.lock import check_unlocked
from actsteer.results.log import FORMAT, read_results
from actsteer.results.merge import merge_results
from actsteer.results.store import ResultStore

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
