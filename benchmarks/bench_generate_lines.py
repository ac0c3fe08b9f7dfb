"""Steered generation vs ``transformers`` on both TransformerLens lines, one JSON.

Run from the repository root (after ``make setup`` and ``make setup-tl4``)::

    HF_HUB_OFFLINE=1 python3 benchmarks/bench_generate_lines.py

Runs part 1 of ``bench_generate.py`` (``--batched-only``) under fixed conditions, once in
each venv, one after the other: the embedded model, 8 prompts x 40 greedy tokens, 2 torch
threads, 3 interleaved repeats after a warm-up in one process, medians. ``.venv`` is
TransformerLens 3.9 (bridge and HookedTransformer), ``.venv-tl4`` TransformerLens 4.3
(bridge only). Writes ``benchmarks/results/bench_generate_lines.json``: the command, each
line's versions, load averages, tokens/s and ratio to ``transformers`` per backend, and
the per-line reports in full. Target: the bridge >= 0.95x on both lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bench_generate_lines.json"
LINES = {"tl3": ".venv", "tl4": ".venv-tl4"}
FIXED = ["--batched-only", "--new-tokens", "40", "--repeats", "3", "--threads", "2"]
TARGET = 0.95


def run_line(venv: str, out: Path) -> dict[str, Any]:
    """The batched benchmark under ``venv``'s Python; its JSON report."""
    python = ROOT / venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing; run make setup (.venv) and make setup-tl4 "
                         "(.venv-tl4) first")
    command = [str(python), str(ROOT / "benchmarks" / "bench_generate.py"), *FIXED,
               "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", nargs="+", choices=sorted(LINES), default=list(LINES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    summary: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                               "fixed_arguments": FIXED, "target_bridge_ratio": TARGET,
                               "load_avg_start": os.getloadavg(), "lines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for line in args.lines:
            report = run_line(LINES[line], Path(tmp) / f"{line}.json")
            config = report["config"]
            summary["lines"][line] = {
                "venv": LINES[line],
                "transformer_lens": config["transformer_lens"],
                "transformers": config["transformers"], "torch": config["torch"],
                "load_avg": [config["load_avg_start"], report["load_avg_end"]],
                "tokens_per_s": report["tokens_per_s"],
                "ratio_to_transformers": report["ratio_to_transformers"],
                "tokens_identical": report["tokens_identical"],
                "report": report,
            }
    summary["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"\n{'line':5s} {'TL':>6s} {'backend':8s} {'tok/s':>7s} {'HF tok/s':>9s} "
          f"{'ratio':>6s}  load")
    for line, result in summary["lines"].items():
        rate, ratio = result["tokens_per_s"], result["ratio_to_transformers"]
        load = f"{result['load_avg'][0][0]:.1f} -> {result['load_avg'][1][0]:.1f}"
        for backend in ("bridge", "hooked"):
            if backend in rate:
                print(f"{line:5s} {result['transformer_lens']:>6s} {backend:8s} "
                      f"{rate[backend]:7.1f} {rate['transformers']:9.1f} "
                      f"{ratio[backend]:5.2f}x  {load}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
