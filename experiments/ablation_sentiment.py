"""Does ablating the sentiment direction at every writing site take sentiment away?

Issue 26's acceptance claim, measured on the embedded model: on openings that already
carry a positive tone (:func:`actsteer.data.laden.laden_prompts`), ablating the sentiment
direction wherever the residual stream is written (:func:`actsteer.project` with
``every_site=True``: ``resid_pre`` of block 0 and ``attn_out``/``mlp_out`` of every block,
Arditi et al. 2024) should move the word-set propensity at least halfway towards the
neutral openings' level, while on the neutral openings it should stay below the design's
minimum detectable effect (:func:`actsteer.effects.minimum_detectable_effect`, 95%/80%).

The direction is the CAA sentiment vector (``read="answer_mean"``) at one layer,
normalised; each layer given is tried on its own. For each: the gap (mean laden − mean
neutral propensity, unablated), the paired effect on the laden openings and the share of
the gap it closes with its interval, and the paired effect on the neutral openings with
its MDE. Writes ``<out>/sentiment_every_site.json`` (atomically) with the wall time and
the machine's load average::

    python -m experiments.ablation_sentiment --out docs/recorded/ablation
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import actsteer
from actsteer.atomic import write_json_atomic
from actsteer.data.laden import laden_prompts
from actsteer.effects import paired_effect
from actsteer.models.info import backend_of, runtime_stamp
from actsteer.plan import empty_plan

RESULTS_FILE = "sentiment_every_site.json"


def measure(model: Any, layers: list[int], *, n_resamples: int = 1000,
            neutral_step: int = 1) -> dict[str, Any]:
    """The claim's numbers at each of ``layers`` (see the module docstring), on every
    ``neutral_step``-th neutral opening."""
    behaviour = actsteer.load_expressed("sentiment")
    laden = list(laden_prompts("sentiment"))
    neutral = list(behaviour.prompts)[::neutral_step]
    vector = actsteer.caa_vector(model, behaviour.pairs(), layers=layers, read="answer_mean",
                                 dataset="sentiment")
    plans = [empty_plan(), *(actsteer.project(vector, layer, every_site=True,
                                              n_layers=int(model.cfg.n_layers))
                             for layer in layers)]
    scores = actsteer.word_propensities(model, laden + neutral, [behaviour.words], plans,
                                        batch_size=48, progress=True)["sentiment"].summed
    n = len(laden)
    base_laden, base_neutral = scores[0, :n], scores[0, n:]
    gap = float(base_laden.mean() - base_neutral.mean())
    by_layer: dict[str, Any] = {}
    for row, layer in enumerate(layers, start=1):
        on_laden = paired_effect(scores[row, :n], base_laden, metric="laden", direction=-1,
                                 n_resamples=n_resamples)
        on_neutral = paired_effect(scores[row, n:], base_neutral, metric="neutral",
                                   n_resamples=n_resamples)
        by_layer[str(layer)] = {
            "laden": on_laden.to_dict(),
            "share_of_gap": {"value": -on_laden.value / gap, "low": -on_laden.high / gap,
                             "high": -on_laden.low / gap},
            "laden_halfway": on_laden.high < -gap / 2,
            "neutral": on_neutral.to_dict(),
            "neutral_below_mde": abs(on_neutral.value) < on_neutral.mde(),
            "neutral_within_half_gap": max(abs(on_neutral.low), abs(on_neutral.high)) < gap / 2,
        }
    return {"n_laden": n, "n_neutral": len(neutral), "laden_mean": float(base_laden.mean()),
            "neutral_mean": float(base_neutral.mean()), "gap": gap, "layers": by_layer,
            "vector_norms": {str(layer): float(vector.at(layer).norm()) for layer in layers}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 10, 15, 18, 20, 22],
                        help="layers whose CAA row is ablated (each on its own); default "
                             "the expressed study's candidate layers")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--neutral-step", type=int, default=1,
                        help="use every n-th neutral opening (the slow test uses 3)")
    parser.add_argument("--out", type=Path, default=Path("results/ablation"))
    args = parser.parse_args(argv)
    began = time.perf_counter()
    model = actsteer.load_model()
    if args.neutral_step < 1:
        parser.error(f"--neutral-step must be >= 1, got {args.neutral_step}")
    result = measure(model, args.layers, n_resamples=args.resamples,
                     neutral_step=args.neutral_step)
    result.update({"command": "python -m experiments.ablation_sentiment "
                              + " ".join(argv if argv is not None else sys.argv[1:]),
                   "wall_s": round(time.perf_counter() - began, 1),
                   "load_average": os.getloadavg(), "runtime": runtime_stamp(backend_of(model))})
    path = write_json_atomic(args.out / RESULTS_FILE, result)
    for layer, row in result["layers"].items():
        share = row["share_of_gap"]
        print(f"L{layer}: laden Δ {row['laden']['value']:+.2f} [{row['laden']['low']:+.2f}, "
              f"{row['laden']['high']:+.2f}], share of the gap {share['value']:.2f} "
              f"[{share['low']:.2f}, {share['high']:.2f}]; neutral Δ "
              f"{row['neutral']['value']:+.2f} [{row['neutral']['low']:+.2f}, "
              f"{row['neutral']['high']:+.2f}], MDE {row['neutral']['mde']:.2f}")
    print(f"gap {result['gap']:+.2f} nats; wrote {path}")


if __name__ == "__main__":
    main()
