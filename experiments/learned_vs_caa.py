"""A learned (BiPO or RePS) steering vector against CAA on one expressed behaviour, at matched norm.

Trains :func:`actsteer.learned.learn_vector` at one layer, extracts the CAA vector at the
same layer (``read="answer_mean"``), adds each at the same fraction of the residual norm,
and measures the paired effect of each on the behaviour's word-set propensity after the
neutral openings (against the unsteered model), and the paired learned - CAA difference.
Writes one JSON record (config, curves, effects, wall time, load average) atomically.

Usage::

    python -m experiments.learned_vs_caa --out docs/recorded/learned/sentiment_l20.json
    python -m experiments.learned_vs_caa --objective reps --factors 1 2 \
        --out docs/recorded/learned/sentiment_l20_reps.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch

import actsteer
from actsteer.atomic import write_json_atomic
from actsteer.learned import OBJECTIVES, LearnConfig, learn_vector


def _effect(effect: Any) -> dict[str, Any]:
    return {"mean": effect.value, "low": effect.low, "high": effect.high,
            "verdict": effect.verdict, "n": effect.n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--behaviour", default="sentiment")
    parser.add_argument("--layer", type=int, default=20)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--objective", default="bipo", choices=OBJECTIVES)
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0],
                        help="steering factors (RePS draws one per pair)")
    parser.add_argument("--fraction", type=float, default=0.2,
                        help="strength of both vectors, as a fraction of the residual norm")
    parser.add_argument("--prompts", type=int, default=72, help="neutral openings measured")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    model = actsteer.load_model()
    behaviour = actsteer.load_expressed(args.behaviour)
    config = LearnConfig(steps=args.steps, learning_rate=args.learning_rate,
                         batch_size=args.batch_size, objective=args.objective,
                         factors=tuple(args.factors), eval_every=args.steps,
                         checkpoint_every=args.steps)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    learned = learn_vector(model, behaviour, layer=args.layer, config=config, progress=True)
    train_seconds = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    caa = actsteer.caa_vector(model, behaviour.pairs(), read="answer_mean", layers=[args.layer],
                              dataset=behaviour.name, diagnostics=False)
    prompts = list(behaviour.prompts)[:args.prompts]
    norms = actsteer.residual_norms(model, prompts, layers=[args.layer])
    plans = [actsteer.SteeringPlan(),
             actsteer.single(caa, layer=args.layer, coefficient=args.fraction, norms=norms),
             actsteer.single(learned, layer=args.layer, coefficient=args.fraction, norms=norms)]
    scores = actsteer.word_propensities(model, prompts, [behaviour.words], plans)[behaviour.name]
    effects = {
        "caa": _effect(actsteer.paired_effect(scores.summed[1], scores.summed[0])),
        "learned": _effect(actsteer.paired_effect(scores.summed[2], scores.summed[0])),
        "learned_minus_caa": _effect(actsteer.paired_effect(scores.summed[2],
                                                            scores.summed[1])),
    }
    cosine = float(torch.nn.functional.cosine_similarity(learned.at(args.layer),
                                                         caa.at(args.layer), dim=0))
    record = {
        "command": "python -m experiments.learned_vs_caa " + " ".join(sys.argv[1:]),
        "behaviour": behaviour.name, "layer": args.layer, "fraction": args.fraction,
        "n_prompts": len(prompts), "config": {k: getattr(config, k) for k in
                                              config.__dataclass_fields__},
        "training": dict(learned.meta.training), "train_seconds": round(train_seconds, 1),
        "load_average_before_after": [load_before, load_after],
        "cosine_learned_caa": cosine,
        "norms": {"learned": float(learned.directions.norm()),
                  "caa": float(caa.directions.norm())},
        "effects": effects,
    }
    write_json_atomic(args.out, record)
    for name, effect in effects.items():
        print(f"{name:18s} Δ {effect['mean']:+.3f} [{effect['low']:+.3f}, {effect['high']:+.3f}] "
              f"{effect['verdict']}")
    print(f"train {train_seconds:.0f} s, load {load_before:.1f}/{load_after:.1f}, "
          f"held-out loss {record['training']['held_out_loss']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
