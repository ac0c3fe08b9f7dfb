"""Benchmark what changes as sweeps grow: the cost of recording results.

Run from the repository root::

    .venv/bin/python benchmarks/bench_scale.py [--only results-log] [--cells 1000 10000]

Sections (``--only`` picks some; all run by default):

``results-log``
    Bytes written and seconds per cell for :class:`actsteer.results.ResultStore` (one
    appended, fsynced JSON line per cell) against a whole-file atomic rewrite per cell
    (the whole results JSON written to a scratch file, fsynced and renamed into place,
    written here as the baseline), for cells shaped like a multi-behaviour cell (a summary
    with intervals, 60 per-item classes and two lists of 60 per-item floats, the plan).
    The rewrite's cost per cell grows with the cells already written, so its total
    is quadratic. Where running it in full would take longer than ``--budget`` seconds,
    its total is extrapolated: ``--sample`` consecutive writes are timed at five points of
    the run (the store pre-filled in memory to that many cells), a straight line
    ``seconds(k) = a + b * k`` is fitted to them and summed over ``k = 0 .. N-1``. Its
    bytes are exact either way (the file's size after each write, summed). The output
    says which totals are measured and which extrapolated; at sizes run in full both are
    given, as a check of the extrapolation. Runs in full alternate one put of each store,
    so that load from other processes hits both alike.

    Each size runs twice (``--sync both``): with fsync, as the stores run, and with
    ``os.fsync`` made a no-op, which leaves the encoding and writing. On a shared disk
    the fsync latency depends on what other processes write, so the fsync-free rows are
    the steadier measure of the growth; a 50-fsync probe before and after each run is
    reported beside them.

Files go to a scratch folder under ``--dir`` (default: beside this script, on the same
disk as the repository; a tmpfs would make fsync free). Writes
``benchmarks/results/bench_scale.json`` (``results/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Measure the actsteer of this checkout, whichever one the environment has installed.
sys.path.insert(0, str(HERE.parent))

import actsteer  # noqa: E402
from actsteer.atomic import jsonable, write_json_atomic  # noqa: E402
from actsteer.results import ResultStore, read_results  # noqa: E402

RESULTS = HERE / "results" / "bench_scale.json"
CONFIG = {"model": {"name": "SmolLM2-135M-Instruct", "dtype": "float32"}, "n_test": 60,
          "grid_layers": list(range(6, 20)), "grid_multipliers": [-8.0, -4.0, 4.0, 8.0]}


def cell_value(index: int, n_items: int = 60) -> dict[str, Any]:
    """A cell like a multi-behaviour one: the summary with intervals, per-item scores
    (classes and two metrics of ``n_items`` floats each) and the plan."""
    rng = random.Random(index)
    p = [rng.random() for _ in range(n_items)]
    return jsonable({
        "matching_rate": 0.55, "matching_rate_ci": [0.42, 0.67],
        "p_matching": statistics.fmean(p), "p_matching_ci": [0.41, 0.63],
        "logit_diff": 0.21, "logit_diff_ci": [-0.05, 0.48], "n": n_items, "failed": None,
        "items": {"class": [rng.randrange(3) for _ in range(n_items)], "p_matching": p,
                  "logit_diff": [rng.gauss(0.0, 2.0) for _ in range(n_items)]},
        "plan": {"kind": "single", "layer": 6 + index % 14, "coefficient": 4.0,
                 "vector": "myopia", "positions": "all"},
        "plan_id": f"{rng.getrandbits(128):032x}"})


def cell_key(index: int) -> str:
    return f"grid/behaviour=myopia/layer={6 + index % 14}/multiplier=4.0/item_set={index}"


class RewriteStore:
    """The baseline: every put rewrites the whole results file atomically (scratch file,
    fsync, rename), as a single JSON object with the config, the cells and the extras."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path, self.config = path, config
        self.cells: dict[str, Any] = {}
        self.bytes_written = 0

    def put(self, key: str, value: Any) -> None:
        self.cells[key] = value
        write_json_atomic(self.path, {"config": self.config, "cells": self.cells,
                                      "extra": {}}, indent=None, convert=False)
        self.bytes_written += self.path.stat().st_size


def _fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y = a + b * x``."""
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x, slope


def _summary(per_put: list[float]) -> dict[str, Any]:
    head = min(100, len(per_put))
    return {"seconds": sum(per_put), "seconds_per_cell": statistics.fmean(per_put),
            "first_100_ms_per_cell": 1e3 * statistics.fmean(per_put[:head]),
            "last_100_ms_per_cell": 1e3 * statistics.fmean(per_put[-head:]), "measured": True}


def _timed_puts(put: Callable[[str, Any], None], cells: list[tuple[str, Any]]) -> list[float]:
    times = []
    for key, value in cells:
        began = time.perf_counter()
        put(key, value)
        times.append(time.perf_counter() - began)
    return times


@contextlib.contextmanager
def _sync(enabled: bool) -> Iterator[None]:
    """With ``enabled`` false, ``os.fsync`` does nothing: what is left is the encoding and
    the writes, without the disk's (on a shared machine, other processes') flush latency."""
    real = os.fsync
    if not enabled:
        os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def fsync_latency_ms(folder: Path, count: int = 50) -> float:
    """Median milliseconds of one fsync after appending a cell-sized line, right now."""
    path = folder / "fsync-probe"
    times = []
    with open(path, "ab", buffering=0) as handle:
        for _ in range(count):
            handle.write(b"x" * 2900)
            began = time.perf_counter()
            os.fsync(handle.fileno())
            times.append(time.perf_counter() - began)
    path.unlink()
    return 1e3 * statistics.median(times)


def _rewrite_sizes(cells: list[tuple[str, Any]]) -> list[int]:
    """The rewritten file's size after each put, from the JSON encoder's own layout
    (``", "`` between cells, ``": "`` after a key), without writing anything."""
    empty = len(json.dumps({"config": CONFIG, "cells": {}, "extra": {}}))
    sizes, total = [], empty
    for index, (key, value) in enumerate(cells):
        total += len(json.dumps(key)) + 2 + len(json.dumps(value)) + (2 if index else 0)
        sizes.append(total)
    return sizes


def _rewrite_estimate(folder: Path, cells: list[tuple[str, Any]], sizes: list[int],
                      sample: int) -> dict[str, Any]:
    """The rewrite's total seconds from ``sample`` timed writes at five points of the run."""
    n = len(cells)
    sample = max(1, min(sample, n // 5))
    points: list[tuple[float, float]] = []
    for start in sorted({round(f * (n - sample)) for f in (0.0, 0.25, 0.5, 0.75, 1.0)}):
        store = RewriteStore(folder / f"sample-{start}.json", CONFIG)
        store.cells = dict(cells[:start])
        for offset, time_taken in enumerate(_timed_puts(store.put,
                                                        cells[start:start + sample])):
            points.append((start + offset, time_taken))
        if store.path.stat().st_size != sizes[start + sample - 1]:
            raise RuntimeError("the size formula disagrees with the file written")
        store.path.unlink()
    a, b = _fit_line(points)
    return {"sampled_writes": len(points), "fit_ms": [1e3 * a, 1e3 * b],
            "extrapolated_seconds": n * a + b * n * (n - 1) / 2,
            "extrapolated_ms_per_cell_at_end": 1e3 * (a + b * (n - 1)),
            "last_100_sampled_ms_per_cell": 1e3 * statistics.fmean(t for _, t in points[-100:])}


def _compare(folder: Path, cells: list[tuple[str, Any]], *, sample: int,
             budget: float) -> dict[str, Any]:
    """Append-only and rewrite at one size; in full and interleaved (one put of each in
    turn, so load from other processes hits both alike) when the rewrite fits the
    budget, else the log in full and the rewrite extrapolated."""
    sizes = _rewrite_sizes(cells)
    estimate = _rewrite_estimate(folder, cells, sizes, sample)
    log_path = folder / "append.jsonl"
    rewrite: dict[str, Any] = {"bytes_written": sum(sizes), "file_bytes": sizes[-1], **estimate}
    with ResultStore(log_path, CONFIG) as store:
        if estimate["extrapolated_seconds"] > budget:
            append = _summary(_timed_puts(store.put, cells))
            seconds = estimate["extrapolated_seconds"]
            rewrite.update(seconds=seconds, seconds_per_cell=seconds / len(cells),
                           measured=False)
        else:
            baseline = RewriteStore(folder / "rewrite.json", CONFIG)
            times: dict[str, list[float]] = {"append": [], "rewrite": []}
            for key, value in cells:
                for name, put in (("append", store.put), ("rewrite", baseline.put)):
                    began = time.perf_counter()
                    put(key, value)
                    times[name].append(time.perf_counter() - began)
            if baseline.bytes_written != sum(sizes):
                raise RuntimeError("the size formula disagrees with the bytes written")
            append = _summary(times["append"])
            rewrite.update(_summary(times["rewrite"]))
    began = time.perf_counter()
    replayed = read_results(log_path)
    append["replay_seconds"] = time.perf_counter() - began
    if len(replayed["cells"]) != len(cells):
        raise RuntimeError(f"{log_path}: replayed {len(replayed['cells'])} of {len(cells)}")
    append["bytes_written"] = append["file_bytes"] = log_path.stat().st_size
    return {"append": append, "rewrite": rewrite}


def results_log(args: argparse.Namespace) -> dict[str, Any]:
    """Append-only log vs whole-file rewrite per cell, at each of ``--cells``, with fsync
    (as the stores run) and, with ``--sync both``, without it."""
    rows: dict[str, Any] = {}
    for n in args.cells:
        cells = [(cell_key(i), cell_value(i)) for i in range(n)]
        line = len(json.dumps({"cell": cells[-1][0], "value": cells[-1][1]},
                              separators=(",", ":"))) + 1
        for sync in ("on", "off") if args.sync == "both" else (args.sync,):
            folder = Path(tempfile.mkdtemp(prefix="bench_scale-", dir=args.dir))
            print(f"results-log: {n} cells, fsync {sync} ...", file=sys.stderr, flush=True)
            try:
                probe = fsync_latency_ms(folder)
                with _sync(sync == "on"):
                    row = _compare(folder, cells, sample=args.sample, budget=args.budget)
                row.update(cells=n, fsync=sync, cell_line_bytes=line,
                           fsync_probe_ms=[probe, fsync_latency_ms(folder)])
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            rows[f"{n} cells, fsync {sync}"] = row
    return rows


def _print_results_log(rows: dict[str, Any]) -> None:
    print("\nresults-log: bytes written and seconds per cell "
          "(append-only JSON Lines vs whole-file atomic rewrite per cell)")
    print(f"{'cells':>6} {'fsync':>5} {'store':>8} {'MB written':>11} {'file MB':>8} "
          f"{'total s':>9} {'ms/cell':>8} {'first 100':>10} {'last 100':>9}")
    for row in rows.values():
        for name in ("append", "rewrite"):
            r = row[name]
            total = f"{r['seconds']:.1f}" + ("" if r["measured"] else "*")
            first = f"{r['first_100_ms_per_cell']:.2f}" if r["measured"] else "-"
            last = r.get("last_100_ms_per_cell", r.get("last_100_sampled_ms_per_cell"))
            print(f"{row['cells']:>6} {row['fsync']:>5} {name:>8} "
                  f"{r['bytes_written'] / 1e6:>11.1f} {r['file_bytes'] / 1e6:>8.1f} "
                  f"{total:>9} {1e3 * r['seconds_per_cell']:>8.2f} {first:>10} {last:>9.2f}")
        a, r = row["append"], row["rewrite"]
        note = ("measured in full, interleaved; extrapolation from "
                f"{r['sampled_writes']} sampled writes gave {r['extrapolated_seconds']:.1f} s"
                if r["measured"] else f"extrapolated from {r['sampled_writes']} sampled writes")
        print(f"{'':>13} rewrite/append: {r['bytes_written'] / a['bytes_written']:.0f}x "
              f"bytes, {r['seconds'] / a['seconds']:.0f}x time ({note}); cell line "
              f"{row['cell_line_bytes']} B; log replay {a['replay_seconds']:.2f} s; "
              "fsync probe before/after {:.1f}/{:.1f} ms".format(*row["fsync_probe_ms"]))
    if any(not row["rewrite"]["measured"] for row in rows.values()):
        print("* extrapolated: rewrite times sampled at five points of the run, a line "
              "a + b*k fitted and summed over k = 0..N-1 (bytes are exact)")


SECTIONS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]],
                          Callable[[dict[str, Any]], None]]] = {
    "results-log": (results_log, _print_results_log),
}
"""Section name -> (measure, print its table)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--cells", nargs="+", type=int, default=[1000, 10000],
                        help="results-log: numbers of cells (default: 1000 10000)")
    parser.add_argument("--sample", type=int, default=50,
                        help="results-log: rewrites timed at each of five points (default 50)")
    parser.add_argument("--budget", type=float, default=180.0,
                        help="results-log: longest rewrite run measured in full, in seconds; "
                             "longer ones are extrapolated (default 180)")
    parser.add_argument("--sync", choices=("on", "off", "both"), default="both",
                        help="results-log: fsync as the stores do (on), skipped to isolate "
                             "encoding and writing from disk latency (off), or both")
    parser.add_argument("--dir", type=Path, default=HERE,
                        help="where scratch files go (default: beside this script)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report: dict[str, Any] = {"config": dict(
        python=sys.version.split()[0], platform=platform.platform(),
        cpu_count=os.cpu_count(), load_avg_start=os.getloadavg(), cells=args.cells,
        sample=args.sample, budget_s=args.budget, sync=args.sync,
        actsteer=str(Path(actsteer.__file__).parent))}
    for name in args.only:
        measure, show = SECTIONS[name]
        report[name] = measure(args)
        show(report[name])
    report["config"]["load_avg_end"] = os.getloadavg()
    config = report["config"]
    print(f"load avg {config['load_avg_start'][0]:.1f} -> {config['load_avg_end'][0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
