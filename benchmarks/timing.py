"""Timing shared by the benchmarks: interleaved repeats, so that load from other processes
on a shared machine hits every variant alike."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, *, verbose: bool = False
                ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Wall times of each function over ``repeats`` rounds (each round runs every function
    once, in turn), and what each returned on its untimed warm-up run."""
    outputs = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            if verbose:
                print(f"  {name}: {times[name][-1]:.2f}s", file=sys.stderr, flush=True)
    return times, outputs


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """Median of each function's wall times."""
    return {name: statistics.median(values) for name, values in times.items()}
