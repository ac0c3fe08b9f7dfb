"""Model Surgery against activation steering, on equal terms, on the embedded model.

For each behaviour (built-in expressed behaviours, default sentiment) and each direction
(raise it, lower it), from the behaviour's 16 contrastive completions read over their
answer tokens at ``--layer``: a logistic probe and a CAA vector; then
(:mod:`actsteer.paper.surgery_vs_steering.arms`)

* ``steer:probe`` / ``steer:caa`` — the probe's unit direction / the CAA vector added at
  ``--layer`` (all positions), strength a fraction of the median residual norm there;
* ``surgery`` — the paper's edit against the side to remove: the ``--k`` gate rows over
  all layers most inversely aligned with that side's probe (default the authors' 4.65%
  of all rows), each given strength x the probe direction;
* ``surgery:random`` — the same recipe for a random direction (the control: what any
  edit of that many rows does);
* ``surgery:folded`` — the paper's edit in the folded basis: rows compared with the probe,
  and stepped, as ``ln2.weight ⊙ row`` (the basis the probe lives in, see
  :mod:`actsteer.surgery.gates`), so the table shows whether the basis matters;

each measured by :func:`actsteer.paper.surgery_vs_steering.compare.compare` on the 72
held-out neutral prompts (word-set propensity), the VADER score of greedy continuations
(sentiment), the perplexity and top-1 on text, and generation speed, with matched-effect
rows (:func:`actsteer.paper.surgery_vs_steering.run_study`). Each (behaviour, direction)
is a cell of the results log ``<out>/surgery_vs_steering.jsonl``, stored as soon as it is
done, so an interrupted run resumes; other settings are refused unless ``--overwrite``.
Writes the log and ``<out>/table.txt``::

    python -m experiments.surgery_vs_steering --out results/surgery
    python -m experiments.surgery_vs_steering --behaviours sentiment french --directions 1
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from actsteer.data.expressed import EXPRESSED_BEHAVIOURS, neutral_prompts
from actsteer.paper.surgery_vs_steering.study import (
    RESULTS_FILE,
    TABLE_FILE,
    StudySettings,
    run_study,
    study_table,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--behaviours", nargs="+", default=["sentiment"],
                        choices=EXPRESSED_BEHAVIOURS)
    parser.add_argument("--directions", type=int, nargs="+", default=[1, -1], choices=[1, -1],
                        help="1: raise the behaviour, -1: lower it")
    parser.add_argument("--layer", type=int, default=18,
                        help="probe, CAA vector and steering layer (resid_post)")
    parser.add_argument("--k", type=int, default=None,
                        help="gate rows edited over all layers (default: the authors' 4.65%%)")
    parser.add_argument("--steer", type=float, nargs="+", default=[0.1, 0.25],
                        help="steering ladder, fractions of the median residual norm")
    parser.add_argument("--surgery", type=float, nargs="+", default=[4.0, 8.0],
                        help="surgery ladder, the step added to each gate row")
    parser.add_argument("--no-control", action="store_true",
                        help="skip the random-direction surgery")
    parser.add_argument("--no-folded", action="store_true",
                        help="skip the folded-basis surgery (surgery:folded)")
    parser.add_argument("--folded-surgery", type=float, nargs="+", default=None,
                        help="ladder of the folded-basis surgery (default: --surgery's)")
    parser.add_argument("--target", type=float, default=None,
                        help="fixed effect (nats, > 0) to match; default the weakest arm's reach")
    parser.add_argument("--prompts", type=int, default=len(neutral_prompts()))
    parser.add_argument("--documents", type=int, default=8, help="perplexity documents")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per document")
    parser.add_argument("--generate", type=int, default=8,
                        help="prompts continued greedily (VADER, throughput)")
    parser.add_argument("--new-tokens", type=int, default=24, help="tokens per continuation")
    parser.add_argument("--repeats", type=int, default=3, help="timed throughput rounds")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default torch's; 1 is faster on a busy machine)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the results log afresh if it was made with other settings")
    parser.add_argument("--out", type=Path, default=Path("results/surgery"))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = StudySettings(
        layer=args.layer, k=args.k, steer=tuple(args.steer), surgery=tuple(args.surgery),
        no_control=args.no_control, no_folded=args.no_folded,
        folded_surgery=None if args.folded_surgery is None else tuple(args.folded_surgery),
        target=args.target,
        prompts=args.prompts, documents=args.documents, max_tokens=args.max_tokens,
        generate=args.generate, new_tokens=args.new_tokens, repeats=args.repeats,
        resamples=args.resamples)
    cells = run_study(settings, args.behaviours, args.directions, args.out,
                      overwrite=args.overwrite)
    print(study_table(cells))
    print(f"\nwrote {args.out / RESULTS_FILE} and {args.out / TABLE_FILE} in "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
