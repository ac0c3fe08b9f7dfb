"""``actsteer harness``: the AxBench-protocol harness with local scorers, one command.

    actsteer harness                                   # quick: sentiment, 8 instructions
    actsteer harness --profile standard --out results/harness    # every built-in behaviour
    actsteer harness --behaviours sentiment my_behaviour.json --instructions 20

Its flags are in :mod:`actsteer.cli.parser` (built without importing torch).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from actsteer.cli.commands import check_device, check_output, demo_record
from actsteer.cli.executors import make_executor
from actsteer.cli.parser import MODEL_FLAGS

__all__ = ["HARNESS_RECORD", "cmd_harness", "harness_config"]

HARNESS_RECORD = "harness_run.json"
"""What ``actsteer harness`` writes beside its results: wall time and conditions."""

_SHORTCUTS = {"behaviours": "behaviours", "instructions": "n_instructions",
              "strengths": "strengths", "methods": "methods", "layer": "layer"}


def harness_config(args: argparse.Namespace) -> Any:
    """The profile, then the shortcut and model flags, then ``--set``, then ``--out``."""
    from actsteer.harness import profile
    from actsteer.paper.common import parse_set

    overrides: dict[str, Any] = {}
    for flag, field in _SHORTCUTS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    for attr, field in MODEL_FLAGS.items():
        if getattr(args, attr, None) is not None:
            overrides[field] = getattr(args, attr)
    overrides.update(parse_set(args.set))
    if args.out is not None:
        overrides["out_dir"] = str(args.out)
    return profile(args.profile, **overrides)


def cmd_harness(args: argparse.Namespace) -> None:
    from actsteer.atomic import write_json_atomic
    from actsteer.harness import RESULTS_FILE, run, table, write_figures
    from actsteer.results import check_unlocked

    config = harness_config(args)
    check_device(config.model.device)
    executor = make_executor(args, config)  # builds nothing yet; refuses missing Ray
    out = Path(config.out_dir)
    check_output(out)
    check_unlocked(out / RESULTS_FILE)
    behaviours = f" --behaviours {' '.join(args.behaviours)}" if args.behaviours else ""
    record = demo_record(f"actsteer harness --profile {args.profile}{behaviours} --out {out}")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if executor is not None:
            stack.enter_context(executor)
        results = run(config, progress=not args.quiet, executor=executor,
                      overwrite=args.overwrite)
    figures = write_figures(results, out / "figures")
    wall = time.perf_counter() - started
    record.update(wall_time_s=round(wall, 1), load_average_end=list(os.getloadavg()),
                  timings=results.get("timings", {}), generator=results.get("generator"))
    record.pop("experiments_s", None)
    write_json_atomic(out / HARNESS_RECORD, record)
    print(table(results))
    print("figures:")
    for figure in figures:
        print(f"  {figure}")
    print(f"results: {out / RESULTS_FILE}   wall time: {wall:.0f} s ({HARNESS_RECORD})")
