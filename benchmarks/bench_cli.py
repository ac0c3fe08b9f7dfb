"""Wall time of ``actsteer --help`` (the front door), cold and warm, for one or more checkouts.

* **cold**: a fresh interpreter with an empty bytecode cache (``PYTHONPYCACHEPREFIX`` set to a
  new folder), so every module the command imports is compiled from source, as on the first
  run after installing;
* **warm**: the median of ``--repeats`` runs with the bytecode cache filled.

Each run is ``python -m actsteer.cli --help`` with the checkout as the working directory, so
the checkout's own ``actsteer`` is imported. Compare two versions by passing both::

    git worktree add /tmp/old 15ab25f
    python benchmarks/bench_cli.py --checkout /tmp/old . --repeats 5

Machine load moves these numbers a lot: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _help_seconds(checkout: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "actsteer.cli", "--help"], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or "usage: actsteer" not in done.stdout:
        raise SystemExit(f"{checkout}: actsteer --help failed:\n{done.stderr[-2000:]}")
    return elapsed


def measure(checkout: Path, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cold_cache:
        cold = _help_seconds(checkout, Path(cold_cache))
    with tempfile.TemporaryDirectory() as warm_cache:
        _help_seconds(checkout, Path(warm_cache))  # fill the cache
        warm = statistics.median(_help_seconds(checkout, Path(warm_cache))
                                 for _ in range(repeats))
    return {"cold_s": cold, "warm_s": warm}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", type=Path, nargs="+",
                        default=[Path(__file__).resolve().parents[1]])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the numbers, with the load average and commits, as JSON")
    args = parser.parse_args(argv)
    rows = []
    for checkout in args.checkout:
        found = measure(checkout.resolve(), args.repeats)
        load = os.getloadavg()[0]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout,
                                capture_output=True, text=True).stdout.strip()
        rows.append({"checkout": str(checkout), "commit": commit, **found,
                     "repeats": args.repeats, "load_average": round(load, 2)})
        print(f"{checkout} ({commit}): cold {found['cold_s']:.2f} s, warm {found['warm_s']:.2f} s "
              f"(median of {args.repeats}; load average {load:.1f})")
    if args.out is not None:
        from actsteer.atomic import write_json_atomic

        write_json_atomic(args.out, {"command": " ".join(["bench_cli.py", *(argv or sys.argv[1:])]),
                                     "cpu_count": os.cpu_count(), "runs": rows})


if __name__ == "__main__":
    main()
