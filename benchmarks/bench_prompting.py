"""What the prompting rows add to the quick profile: resume the stored quick-profile results
log with its scaffold cells taken out (every other cell present), so only they are computed,
and record their wall and CPU time with the load average.

    HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/bench_prompting.py [--out DIR]

On a shared machine the wall time is what the load allowed; the process CPU time divided by
torch's threads is closer to the wall time of an idle machine of the same cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

import torch

from actsteer.atomic import write_json_atomic
from actsteer.paper import multi_behaviour as mb

STORED_LOG = (Path(__file__).resolve().parents[1] / "docs" / "recorded" / "prompting"
              / mb.RESULTS_FILE)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench_prompting")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(STORED_LOG, out / mb.RESULTS_FILE)
    config = mb.profile("quick", out_dir=str(out))
    model = config.model.load()
    mb.run_any(config, model=model, progress=False)  # the vectors (not in the log), no cell
    log = (out / mb.RESULTS_FILE).read_text().splitlines(keepends=True)
    kept = [x for x in log if '"expressed-scaffold' not in x]
    (out / mb.RESULTS_FILE).write_text("".join(kept))  # every cell but the prompting rows
    load_start, cpu, wall = os.getloadavg(), _cpu(), time.perf_counter()
    results = mb.run_any(config, model=model, progress=False)
    record = {"command": "HF_HUB_OFFLINE=1 nice .venv/bin/python benchmarks/bench_prompting.py",
              "stage_wall_s": results["timings"]["prompting"],
              "run_wall_s": round(time.perf_counter() - wall, 1),
              "run_cpu_s": round(_cpu() - cpu, 1), "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "load_average_start": list(load_start),
              "load_average_end": list(os.getloadavg()),
              "scaffold_cells": sum('"expressed-scaffold' in x for x in log)}
    write_json_atomic(out / "bench_prompting.json", record)
    print(record)


if __name__ == "__main__":
    main()
