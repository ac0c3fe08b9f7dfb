"""Which prompt format and read position should the embedded model use? Measured, not guessed.

For each behaviour file and each (prompt format, read position), a CAA vector is extracted
from the first ``--n-vector`` items of the paper's vector split and profiled on the first
``--n-test`` test items at ``--layers``; the table reports what the issue asks:

* **valid**: share of unsteered answers that are one of the two answers (not faulty);
* **top share**: share of unsteered answers that are the single most common token (letter
  collapse: 1.0 means the model answers the same letter whatever the question);
* **steers / reversed**: at how many profiled layers the mean per-item steerability has an
  interval above / below 0 (Tan et al. 2024), and the best layer's mean slope;
* the vector's held-out **separation** at that layer (extraction diagnostics).

For one-token answers (letters, Yes/No) the ``last``, ``answer`` and ``answer_mean`` read
positions are the same token, so the study compares ``last`` with ``mean``. A fifth row per
behaviour extracts from the letter-balanced part of the same vector items (``paper``,
``last``, as many A-matching as B-matching pairs), which removes the answer letter from
the vector. Each row is saved as it finishes; a second run with the same ``--out`` skips
the rows already there.

    python -m experiments.prompt_study --data-dir ../shared/data/behaviours
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import actsteer
from actsteer.atomic import write_json_atomic
from actsteer.data.behaviours import PAPER_BEHAVIOURS, load_behaviour
from actsteer.evaluation import FAULTY, prepare_items, score_items
from actsteer.plan import empty_plan
from actsteer.steerability import layer_profile

VARIANTS = (("paper", "last", False), ("paper", "mean", False), ("chat", "last", False),
            ("chat", "mean", False), ("paper", "last", True))
"""(prompt format, read position, letter-balanced vector items)."""


def measure(model: Any, name: str, data_dir: Path, fmt: str, read: str, balanced: bool, *,
            n_vector: int, n_test: int, layers: Sequence[int], multiplier: float
            ) -> dict[str, Any]:
    """One behaviour × format × read position (× letter balance)."""
    splits = load_behaviour(name, data_dir=data_dir).paper_splits()
    items = splits.vector[:n_vector]
    items = items.letter_balanced() if balanced else items
    pairs = items.pairs(fmt, model.tokenizer)  # type: ignore[arg-type]
    vector = actsteer.caa_vector(model, pairs, read=read, dataset=name)  # type: ignore[arg-type]
    test = prepare_items(model, splits.test[:n_test], fmt)  # type: ignore[arg-type]
    unsteered = score_items(model, test, [empty_plan()])
    profile = layer_profile(model, vector, test, multipliers=(-multiplier, 0.0, multiplier),
                            layers=layers)
    summaries = {layer: profile.summary(layer).to_dict() for layer in layers}
    best = max(layers, key=lambda layer: summaries[layer]["mean_slope"]["low"])
    return {
        "behaviour": name, "format": fmt, "read": read, "balanced": balanced,
        "valid": float((unsteered.klass[0] != FAULTY).double().mean()),
        "top_share": unsteered.top_answer_share(0),
        "steers": sum(s["mean_slope"]["low"] > 0 for s in summaries.values()),
        "reversed": sum(s["mean_slope"]["high"] < 0 for s in summaries.values()),
        "best_layer": best, "best_slope": summaries[best]["mean_slope"],
        "separation": (vector.meta.diagnostics.get(str(best)) or {}).get("separation"),
        "layers": {str(layer): s for layer, s in summaries.items()},
    }


def table(found: dict[str, Any]) -> str:
    lines = [f"{'behaviour':<18}{'format':<7}{'read':<10}{'valid':>6}{'top':>6}{'steers':>8}"
             f"{'reversed':>9}  best layer: mean slope [95% CI], separation"]
    for row in found.values():
        read = row["read"] + ("+bal" if row["balanced"] else "")
        slope = row["best_slope"]
        separation = "-" if row["separation"] is None else f"{row['separation']:.2f}"
        lines.append(f"{row['behaviour']:<18}{row['format']:<7}{read:<10}{row['valid']:>6.2f}"
                     f"{row['top_share']:>6.2f}{row['steers']:>8}{row['reversed']:>9}  "
                     f"L{row['best_layer']}: {slope['value']:+.4f} [{slope['low']:+.4f}, "
                     f"{slope['high']:+.4f}], {separation}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--behaviours", nargs="+", default=list(PAPER_BEHAVIOURS))
    parser.add_argument("--n-vector", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 10, 14, 18, 22])
    parser.add_argument("--multiplier", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("results/prompt_study.json"))
    args = parser.parse_args(argv)
    model = actsteer.load_model()
    found: dict[str, Any] = {}
    if args.out.is_file():
        found = json.loads(args.out.read_text(encoding="utf-8")).get("results", {})
    started = time.perf_counter()
    for behaviour in args.behaviours:
        for fmt, read, balanced in VARIANTS:
            key = f"{behaviour}|{fmt}|{read}" + ("|balanced" if balanced else "")
            if key in found:
                continue
            found[key] = measure(model, behaviour, args.data_dir, fmt, read, balanced,
                                 n_vector=args.n_vector, n_test=args.n_test,
                                 layers=args.layers, multiplier=args.multiplier)
            print(table({key: found[key]}).splitlines()[-1], flush=True)
            write_json_atomic(args.out, {"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": found})
    print(table(found))
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
