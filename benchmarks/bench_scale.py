"""Benchmark what changes as sweeps grow: recording results, and running units of work.

Run from the repository root::

    .venv/bin/python benchmarks/bench_scale.py [--only results-log] [--cells 1000 10000]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scale.py --only prefix-reuse \
        executors ray-overhead

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

``executors``
    Cells per second of the ``quick`` multi-behaviour profile (the expressed behaviours on
    the embedded SmolLM2, shrunk by ``QUICK``), on the local executor (one process, 2
    torch threads) and on Ray (2 workers x 1 thread, on a Ray started here with 2 CPUs).
    The vectors are extracted once beforehand and copied into each run's folder, so every
    run scores the same units from an empty log; Ray's start (``ray.init`` and the workers
    loading the model) is timed apart. Runs alternate between the executors
    (``--repeats`` each); medians are reported, with the time spent inside units.

``ray-overhead``
    What Ray adds per unit: the round trip of an ``echo`` unit with an empty payload (one
    at a time, and 200 at once over 2 workers), and with the payload of a real unit of
    the quick profile's test stage (its prompts and plans, pickled both ways), against
    that unit's compute on the local executor.

``prefix-reuse``
    Transformer blocks computed (a forward hook on every block counts calls) and wall time
    of the A/B grid at layer 14 of the ``standard`` profile (multipliers -8, -4, 4, 8;
    ``--grid-items`` grid items of myopia, a vector from ``--vector-items`` items): the
    whole ladder as one unit (the blocks below 14 once per batch) against one unit per
    multiplier (a full forward per plan). Interleaved repeats, medians.

``paper-estimate``
    No model runs: the multi-behaviour ``paper`` profile on Llama-2-7b counted unit by
    unit (prompt lengths measured on the paper's files with the embedded tokenizer, a
    stand-in for Llama's), each unit's FLOP from the blocks it computes, and the wall time
    on 1, 4 and 16 GPUs for assumed sustained throughputs (``--tflops``) with Ray's
    overhead per unit (``--unit-overhead-ms``, from ``ray-overhead``). Each stage waits for
    its slowest worker (units handed out in order to the next free worker); vector
    extraction runs on the driver alone. See ``docs/scale.md``.

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

from timing import interleaved, medians  # noqa: E402  (benchmarks/timing.py)

import actsteer  # noqa: E402
from actsteer.atomic import jsonable, write_json_atomic  # noqa: E402
from actsteer.executor import Executor, LocalExecutor, ModelSpec  # noqa: E402
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


# -- units of work --------------------------------------------------------------------

QUICK = {"n_grid": 8, "n_test": 16, "generate_prompts": 2, "generate_tokens": 8,
         "tax_corpus": "builtin", "tax_documents": 4, "tax_max_tokens": 64, "n_resamples": 200}
"""Overrides of the quick profile for the executor benchmark (about a minute a run)."""


class Timed(Executor):
    """Passes units to ``inner``, timing the map and counting units."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.kind = inner, inner.kind
        self.units, self.seconds = 0, 0.0

    @property
    def workers(self) -> int:
        return self.inner.workers

    def bind(self, model: Any) -> None:
        self.inner.bind(model)

    def map(self, units: Any) -> Iterator[tuple[Any, Any]]:
        began = time.perf_counter()
        for pair in self.inner.map(units):
            self.units += 1
            self.seconds += time.perf_counter() - began
            yield pair
            began = time.perf_counter()


def _embedded() -> Any:
    import torch

    from actsteer.models import load_model

    torch.set_num_threads(2)
    return load_model()


def _start_ray(cpus: int) -> None:
    import logging

    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, object_store_memory=128 * 2**20)


def executors(args: argparse.Namespace) -> dict[str, Any]:
    """The quick profile's cells per second on each executor."""
    import ray

    from actsteer.models import EMBEDDED_MODEL
    from actsteer.paper import multi_behaviour as mb
    from actsteer.ray_executor import RayExecutor

    model = _embedded()
    folder = Path(tempfile.mkdtemp(prefix="bench_scale-", dir=args.dir))
    rows: dict[str, Any] = {"quick": QUICK, "runs": {"local": [], "ray": []}}
    try:
        print("executors: extracting the vectors once ...", file=sys.stderr, flush=True)
        mb.run_any(mb.profile("quick", out_dir=str(folder / "warm"), **QUICK), model=model,
                   progress=False)
        _start_ray(2)
        began = time.perf_counter()
        pool = RayExecutor(ModelSpec(EMBEDDED_MODEL, device="cpu"), workers=2, threads=1)
        pool.bind(model)
        pool._check()  # the workers have loaded the model
        rows["ray_start_s"] = time.perf_counter() - began
        for repeat in range(args.repeats):
            for name, inner in (("local", LocalExecutor()), ("ray", pool)):
                out = folder / f"{name}{repeat}"
                shutil.copytree(folder / "warm" / "vectors", out / "vectors")
                timed = Timed(inner)
                began = time.perf_counter()
                results = mb.run_any(mb.profile("quick", out_dir=str(out), **QUICK),
                                     model=model, progress=False, executor=timed)
                wall = time.perf_counter() - began
                cells = len(results["cells"])
                rows["runs"][name].append({"wall_s": wall, "units_s": timed.seconds,
                                           "units": timed.units, "cells": cells})
                print(f"  {name}: {cells} cells in {wall:.1f} s ({timed.units} units, "
                      f"{timed.seconds:.1f} s in units)", file=sys.stderr, flush=True)
        pool.close()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    for name, runs in rows["runs"].items():
        wall = statistics.median(r["wall_s"] for r in runs)
        rows[name] = {"cells": runs[0]["cells"], "units": runs[0]["units"], "wall_s": wall,
                      "units_s": statistics.median(r["units_s"] for r in runs),
                      "cells_per_s": runs[0]["cells"] / wall}
    return rows


def _print_executors(rows: dict[str, Any]) -> None:
    print("\nexecutors: the quick profile (shrunk) from an empty log, vectors given")
    print(f"{'executor':>22} {'cells':>6} {'units':>6} {'wall s':>8} {'in units s':>11} "
          f"{'cells/s':>8}")
    for name, label in (("local", "local 1 proc x 2 thr"), ("ray", "ray 2 workers x 1 thr")):
        r = rows[name]
        print(f"{label:>22} {r['cells']:>6} {r['units']:>6} {r['wall_s']:>8.1f} "
              f"{r['units_s']:>11.1f} {r['cells_per_s']:>8.2f}")
    print(f"{'':>22} Ray start (ray.init + 2 workers loading the model): "
          f"{rows['ray_start_s']:.1f} s, once per run of the CLI")


def ray_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Round trips of empty and realistic units against a real unit's compute."""
    import ray

    from actsteer.executor import partition, unit
    from actsteer.models import EMBEDDED_MODEL
    from actsteer.paper import multi_behaviour as mb
    from actsteer.paper.multi_behaviour.expressed import stages as expressed
    from actsteer.ray_executor import RayExecutor
    from actsteer.sweep import start_layer

    model = _embedded()
    folder = Path(tempfile.mkdtemp(prefix="bench_scale-", dir=args.dir))
    try:
        config = mb.profile("quick", out_dir=str(folder), **QUICK)
        state = expressed.open_run(config, model, progress=False)
        layers = sorted({6, 10, 14, 15})  # the layers the plans below use
        expressed.extract_vectors(state, layers)
        norms = expressed.measure_norms(state, layers)
        own = {name: layer for name, layer in zip(state.vectors, (6, 10, 15), strict=False)}
        plans = {**expressed.comparison_plans(state.vectors, own, 14, config.fraction, norms,
                                              config.combined_recipes),
                 **expressed.steerability_plans(state, own)}
        state.store.close()
        names = list(plans)
        rows_of = partition([start_layer(model, plans[n]) for n in names], 2,
                            int(model.cfg.n_layers))[0]
        payload = {"prompts": state.prompts["test"],
                   "word_sets": [b.words for b in state.behaviours.values()],
                   "plans": [plans[names[i]] for i in rows_of], "batch_size": config.batch_size}
        real = unit("word-propensities", payload, key="test/real")
        local = LocalExecutor(model)
        compute = []
        for _ in range(3):
            began = time.perf_counter()
            list(local.map([real]))
            compute.append(time.perf_counter() - began)
        _start_ray(2)
        pool = RayExecutor(ModelSpec(EMBEDDED_MODEL, device="cpu"), workers=2, threads=1)
        pool.bind(model)
        pool._check()

        def one_at_a_time(body: dict[str, Any], count: int) -> list[float]:
            times = []
            for index in range(count):
                began = time.perf_counter()
                list(pool.map([unit("echo", body, key=f"e{index}")]))
                times.append(time.perf_counter() - began)
            return times

        one_at_a_time({}, 20)  # warm-up
        empty = one_at_a_time({}, 200)
        began = time.perf_counter()
        list(pool.map([unit("echo", {}, key=f"b{i}") for i in range(200)]))
        batch = (time.perf_counter() - began) / 200
        heavy = one_at_a_time(payload, 50)
        on_ray = []
        for _ in range(3):
            began = time.perf_counter()
            list(pool.map([real]))
            on_ray.append(time.perf_counter() - began)
        pool.close()
        import pickle

        return {"empty_ms": 1e3 * statistics.median(empty),
                "empty_p90_ms": 1e3 * sorted(empty)[int(0.9 * len(empty))],
                "empty_pipelined_ms": 1e3 * batch,
                "payload_bytes": len(pickle.dumps(payload)),
                "payload_ms": 1e3 * statistics.median(heavy),
                "unit_plans": len(payload["plans"]), "unit_prompts": len(payload["prompts"]),
                "unit_local_s": statistics.median(compute),
                "unit_ray_s": statistics.median(on_ray)}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def _print_ray_overhead(r: dict[str, Any]) -> None:
    print("\nray-overhead: per-unit round trip on 2 Ray workers vs a unit's compute")
    print(f"  empty unit, one at a time: {r['empty_ms']:.2f} ms (p90 {r['empty_p90_ms']:.2f}); "
          f"200 at once: {r['empty_pipelined_ms']:.2f} ms a unit")
    print(f"  a quick-profile test unit's payload ({r['payload_bytes'] / 1e3:.0f} kB: "
          f"{r['unit_plans']} plans, {r['unit_prompts']} prompts) echoed: "
          f"{r['payload_ms']:.2f} ms")
    print(f"  that unit's compute: {r['unit_local_s']:.2f} s local (2 threads), "
          f"{r['unit_ray_s']:.2f} s on a Ray worker (1 thread); overhead "
          f"{100 * r['payload_ms'] / 1e3 / r['unit_ray_s']:.2f}% of it")


def prefix_reuse(args: argparse.Namespace) -> dict[str, Any]:
    """The standard profile's grid at layer 14: one unit per ladder vs one per plan."""
    from actsteer.executor import dispatch
    from actsteer.paper import multi_behaviour as mb
    from actsteer.paper.multi_behaviour import stages
    from actsteer.plan import single

    model = _embedded()
    folder = Path(tempfile.mkdtemp(prefix="bench_scale-", dir=args.dir))
    layer = 14
    try:
        config = mb.profile("standard", behaviours=("myopia",), n_vector=args.vector_items,
                            n_grid=args.grid_items, n_test=2, out_dir=str(folder),
                            tax_corpus="none", letter_free_items=0)
        run = stages.open_run(config, model, progress=False)
        stages.extract_vectors(run)
        vector = run.vectors["myopia"]
        plans = [single(vector, layer, m) for m in config.grid_multipliers]
        computed = [0]

        def count(*_: Any) -> None:
            computed[0] += 1

        hooks = [block.register_forward_hook(count) for block in model.blocks]

        def ladder() -> int:
            computed[0] = 0
            dispatch(run.executor, [run.job("myopia", "grid", plans, "grid/ladder",
                                            lambda scores: None)])
            return computed[0]

        def per_plan() -> int:
            computed[0] = 0
            dispatch(run.executor, [run.job("myopia", "grid", [plan], f"grid/{index}",
                                            lambda scores: None)
                                    for index, plan in enumerate(plans)])
            return computed[0]

        try:
            times, blocks = interleaved({"one unit per ladder": ladder,
                                         "one unit per multiplier": per_plan}, args.repeats)
        finally:
            for hook in hooks:
                hook.remove()
        run.store.close()
        wall = medians(times)
        return {"layer": layer, "n_layers": int(model.cfg.n_layers), "items": args.grid_items,
                "multipliers": list(config.grid_multipliers), "batch_size": config.batch_size,
                "blocks": blocks, "wall_s": wall, "times": times}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _print_prefix_reuse(r: dict[str, Any]) -> None:
    ours, theirs = "one unit per ladder", "one unit per multiplier"
    print(f"\nprefix-reuse: the standard grid at layer {r['layer']} of {r['n_layers']}, "
          f"{len(r['multipliers'])} multipliers, {r['items']} items (batch {r['batch_size']})")
    for name in (ours, theirs):
        print(f"{name:>24}: {r['blocks'][name]:>5} blocks, {r['wall_s'][name]:.2f} s")
    print(f"{'':>24}  ratio: {r['blocks'][ours] / r['blocks'][theirs]:.2f}x blocks, "
          f"{r['wall_s'][ours] / r['wall_s'][theirs]:.2f}x time")


LLAMA2_7B = {"n_layers": 32, "d_model": 4096, "d_mlp": 11008, "d_vocab": 32000}


def _paper_units(lengths: dict[str, float], workers: int) -> dict[str, list[float]]:
    """FLOP of each unit of every stage of the paper profile on ``workers`` GPUs (grid
    ladders scored in full: an upper bound, the search stops at a failed cell)."""
    from actsteer.executor import partition
    from actsteer.paper import multi_behaviour as mb

    config = mb.profile("paper", out_dir="unused")
    n, d, dm, vocab = (LLAMA2_7B[k] for k in ("n_layers", "d_model", "d_mlp", "d_vocab"))
    block = 2 * (4 * d * d + 3 * d * dm)  # FLOP per token per block (the matmuls)
    unembed = 2 * d * vocab
    split = {"vector": 500, "grid": 200, "test": 300}
    sim_start = min((config.simultaneous_layers or {}).values())
    scales = [s for s in config.scales if s != 0]
    steps = [m for m in config.steerability_multipliers if m != 0]

    def items(count: int, tokens: float, blocks: int, reads: int) -> float:
        return count * (tokens * blocks * block + reads * unembed)

    def ab(count: int, tokens: float, starts: list[int]) -> float:
        """One A/B unit: the shared stream to the deepest start, a suffix per plan."""
        return items(count, tokens, max(starts) + sum(n - x for x in starts), len(starts))

    def split_ab(count: int, tokens: float, starts: list[int], jobs: int) -> list[float]:
        """A job of the stage as the units the run makes of it (one per job, or more
        when the stage has fewer jobs than workers)."""
        parts = -(-workers // jobs)
        return [ab(count, tokens, [starts[i] for i in chunk])
                for chunk in partition(starts, parts, n)]

    stages: dict[str, list[float]] = {name: [] for name in (
        "vectors", "default", "grid", "individual", "combined", "simultaneous",
        "letter-free", "steerability", "tax")}
    layer, jobs = mb.PAPER_LAYER, len(lengths)
    for tokens in lengths.values():
        stages["vectors"].append(items(2 * split["vector"], tokens + 2, n, 0))
        stages["default"] += [ab(split[s], tokens, [n]) for s in ("grid", "test")]
        stages["grid"] += [ab(split["grid"], tokens, [x] * len(config.grid_multipliers))
                           for x in config.grid_layers or ()]
        stages["individual"] += split_ab(split["test"], tokens, [layer, layer], jobs)
        stages["combined"] += split_ab(split["test"], tokens,
                                       [layer] * 2 * len(config.combined_variants), jobs)
        stages["simultaneous"] += [unit for s in ("grid", "test") for unit in split_ab(
            split[s], tokens, [sim_start] * len(scales), 2 * jobs)]
        texts = tokens + 15  # the answer texts after the question, every position read
        # unsteered, individual and combined both ways, simultaneous
        free = [n, layer, layer, layer, layer, sim_start]
        stages["letter-free"] += [
            items(2 * split["test"], texts, max(free[i] for i in chunk) + sum(
                n - free[i] for i in chunk), len(chunk) * int(texts))
            for chunk in partition(free, -(-workers // jobs), n)]
        starts = [x for x in range(n) for _ in steps]
        stages["steerability"] += [ab(split["test"], tokens, [starts[i] for i in chunk])
                                   for chunk in partition(starts, -(-workers // jobs), n)]
    tax = [sim_start] * (len(scales) + 1)
    docs, doc_tokens = config.tax_documents, config.tax_max_tokens
    stages["tax"] = [items(docs, doc_tokens, max(tax[i] for i in chunk)
                           + sum(n - tax[i] for i in chunk), doc_tokens * len(chunk))
                     for chunk in partition(tax, workers, n)]
    return stages


def _stage_seconds(units: list[float], workers: int, flops: float, overhead: float) -> float:
    """Wall time of a stage: units handed out in order to the next free worker."""
    free = [0.0] * workers
    for cost in units:
        first = free.index(min(free))
        free[first] += cost / flops + overhead
    return max(free)


def paper_estimate(args: argparse.Namespace) -> dict[str, Any]:
    """Unit counts, FLOP and wall-time estimates of the paper profile."""
    lengths = _prompt_lengths()
    out: dict[str, Any] = {"prompt_tokens": lengths, "tflops": args.tflops,
                           "unit_overhead_ms": args.unit_overhead_ms, "gpus": {}}
    for gpus in (1, 4, 16):
        stages = _paper_units(lengths, gpus)
        row: dict[str, Any] = {"units": {k: len(v) for k, v in stages.items()},
                               "pflop": {k: sum(v) / 1e15 for k, v in stages.items()},
                               "largest_unit_pflop": {k: max(v) / 1e15
                                                      for k, v in stages.items()}}
        for tflops in args.tflops:
            rate, overhead = tflops * 1e12, args.unit_overhead_ms / 1e3
            seconds = {name: _stage_seconds(units, 1 if name == "vectors" else gpus, rate,
                                            0.0 if name == "vectors" else overhead)
                       for name, units in stages.items()}
            row[f"seconds_at_{tflops:g}"] = seconds
        out["gpus"][str(gpus)] = row
    return out


def _prompt_lengths() -> dict[str, float]:
    """Mean prompt tokens per paper behaviour (embedded tokenizer), measured on the files
    when they are here; else the values measured on this machine."""
    try:
        from transformers import AutoTokenizer

        from actsteer.models import embedded_tokenizer_path
        from actsteer.paper import multi_behaviour as mb
        from actsteer.paper.multi_behaviour.data import load_datasets
        from actsteer.prompts import format_item

        tokenizer = AutoTokenizer.from_pretrained(str(embedded_tokenizer_path()))
        datasets = load_datasets(mb.profile("paper", out_dir="unused"))
        return {name: statistics.fmean(
            1 + len(tokenizer(format_item(i.question, i.choices, "paper", tokenizer),
                              add_special_tokens=False).input_ids) for i in data)
            for name, data in datasets.items()}
    except (OSError, ValueError, ImportError) as error:
        print(f"paper-estimate: measured lengths used ({error})", file=sys.stderr)
        return {"myopia": 81.1, "wealth_seeking": 78.1, "sycophancy": 152.9,
                "agreeableness": 42.9, "anti_immigration": 47.3}


def _print_paper_estimate(r: dict[str, Any]) -> None:
    one = r["gpus"]["1"]
    print("\npaper-estimate: multi-behaviour paper profile on Llama-2-7b (grid ladders in full)")
    print("  prompt tokens: " + ", ".join(f"{k} {v:.0f}" for k, v in r["prompt_tokens"].items()))
    print(f"{'stage':>13} {'PFLOP':>7} {'units@1':>8} {'units@16':>9} {'largest unit PFLOP':>19}")
    for name, pflop in one["pflop"].items():
        label = f"{name} (driver)" if name == "vectors" else name
        print(f"{label:>13} {pflop:>7.1f} {one['units'][name]:>8} "
              f"{r['gpus']['16']['units'][name]:>9} "
              f"{one['largest_unit_pflop'][name]:>19.2f}")
    print(f"{'total':>13} {sum(one['pflop'].values()):>7.1f}")
    for tflops in r["tflops"]:
        times = {g: sum(row[f"seconds_at_{tflops:g}"].values()) / 60
                 for g, row in r["gpus"].items()}
        print(f"  at {tflops:g} TFLOP/s a GPU, {r['unit_overhead_ms']:g} ms a unit: "
              + ", ".join(f"{g} GPU {t:.1f} min" for g, t in times.items()))


SECTIONS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]],
                          Callable[[dict[str, Any]], None]]] = {
    "results-log": (results_log, _print_results_log),
    "executors": (executors, _print_executors),
    "ray-overhead": (ray_overhead, _print_ray_overhead),
    "prefix-reuse": (prefix_reuse, _print_prefix_reuse),
    "paper-estimate": (paper_estimate, _print_paper_estimate),
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
    parser.add_argument("--repeats", type=int, default=2,
                        help="executors, prefix-reuse: timed runs of each variant (default 2)")
    parser.add_argument("--grid-items", type=int, default=16,
                        help="prefix-reuse: grid items scored (default 16)")
    parser.add_argument("--vector-items", type=int, default=32,
                        help="prefix-reuse: items the vector is extracted from (default 32)")
    parser.add_argument("--tflops", type=float, nargs="+", default=[137.0, 350.0],
                        help="paper-estimate: sustained TFLOP/s a GPU (default: 137, the "
                             "issue's 165 PFLOP in 20 minutes on one H100, and 350)")
    parser.add_argument("--unit-overhead-ms", type=float, default=2.0,
                        help="paper-estimate: Ray's cost a unit (default 2, see ray-overhead)")
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
