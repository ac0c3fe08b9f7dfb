"""Model Surgery against activation steering, on equal terms, on the embedded model.

For each behaviour (built-in expressed behaviours, default sentiment) and each direction
(raise it, lower it), from the behaviour's 16 contrastive completions read over their
answer tokens at ``--layer``: a logistic probe and a CAA vector; then
(:mod:`actsteer.surgery.arms`)

* ``steer:probe`` / ``steer:caa`` — the probe's unit direction / the CAA vector added at
  ``--layer`` (all positions), strength a fraction of the median residual norm there;
* ``surgery`` — the paper's edit against the side to remove: the ``--k`` gate rows over
  all layers most inversely aligned with that side's probe (default the authors' 4.65%
  of all rows), each given strength x the probe direction;
* ``surgery:random`` — the same recipe for a random direction (the control: what any
  edit of that many rows does);

each measured by :func:`actsteer.surgery.compare.compare` on the 72 held-out neutral
prompts (word-set propensity), the VADER score of greedy continuations (sentiment), the
perplexity and top-1 on text, and generation speed, with matched-effect rows. Each
(behaviour, direction) is stored as soon as it is done, so an interrupted run resumes;
a changed setting recomputes everything. Writes ``<out>/comparison.json`` and
``<out>/table.txt``::

    python -m experiments.surgery_vs_steering --out results/surgery
    python -m experiments.surgery_vs_steering --behaviours sentiment french --directions 1
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

import actsteer
from actsteer.accuracy import Documents
from actsteer.atomic import atomic_write, write_json_atomic
from actsteer.batching import encode_many
from actsteer.data.corpora import builtin_text_corpus, wikitext_corpus
from actsteer.data.expressed import EXPRESSED_BEHAVIOURS, load_expressed, neutral_prompts
from actsteer.norms import residual_norms
from actsteer.surgery.arms import build_arms
from actsteer.surgery.compare import compare, vader_compound

RESULTS_FILE = "comparison.json"
TABLE_FILE = "table.txt"

logger = logging.getLogger("surgery_vs_steering")


def _texts(n: int) -> tuple[str, list[str]]:
    try:
        return "wikitext-2", wikitext_corpus(max_documents=n).texts()[:n]
    except FileNotFoundError:
        return "built-in English corpus", builtin_text_corpus().texts()[:n]


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
    parser.add_argument("--out", type=Path, default=Path("results/surgery"))
    return parser


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """What determines the results (the resume key)."""
    return {key: value for key, value in vars(args).items()
            if key not in ("out", "behaviours", "directions", "threads")}


def _load(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("settings") == settings:
            return dict(stored)
        logger.warning("%s was made with other settings; starting again", path)
    return {"settings": settings, "comparisons": {}}


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    settings = _settings(args)
    path = args.out / RESULTS_FILE
    state = _load(path, settings)
    todo = [(b, d) for b in args.behaviours for d in args.directions
            if f"{b}:{d:+d}" not in state["comparisons"]]
    if todo:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        model = actsteer.load_model()
        source, texts = _texts(args.documents)
        sequences = [ids[:args.max_tokens] for ids in encode_many(model, texts)]
        norms = residual_norms(model, sequences, source=source)
        documents = Documents.build(model, sequences, batch_size=8)
        prompts = list(neutral_prompts())[:args.prompts]
    for behaviour, direction in todo:
        began = time.perf_counter()
        data = load_expressed(behaviour)
        arms = build_arms(model, data.pairs(), layer=args.layer, norms=norms,
                          direction=direction, k=args.k, control=not args.no_control)
        ladders = {name: tuple(args.steer if arm.kind == "steering" else args.surgery)
                   for name, arm in arms.arms.items()}
        result = compare(model, arms.arms, data.words, prompts, ladders=ladders,
                         direction=direction, documents=documents,
                         generate_prompts=prompts[:args.generate],
                         generate_tokens=args.new_tokens,
                         text_score=vader_compound if behaviour == "sentiment" else None,
                         throughput_repeats=args.repeats, audit_items=data.items(),
                         target=args.target, n_resamples=args.resamples, progress=True)
        cosine = torch.nn.functional.cosine_similarity(arms.probe.direction, arms.vector, dim=0)
        setup = {"layer": args.layer, "probe_accuracy": arms.probe.accuracy,
                 "probe_caa_cosine": float(cosine), "caa_norm": float(arms.vector.norm()),
                 "median_norm": norms.median(args.layer), "k": arms.region.n_rows,
                 "rows_per_layer": {str(k): len(v) for k, v in arms.region.rows.items()},
                 "perplexity_text": source}
        state["comparisons"][f"{behaviour}:{direction:+d}"] = {
            "setup": setup, "result": result.to_dict(), "table": result.table(),
            "seconds": round(time.perf_counter() - began, 1)}
        write_json_atomic(path, state)
    tables = []
    for key, entry in state["comparisons"].items():
        setup = entry["setup"]
        tables.append(f"[{key}] probe at layer {setup['layer']}: training accuracy "
                      f"{setup['probe_accuracy']:.2f}, cosine with the CAA vector "
                      f"{setup['probe_caa_cosine']:.2f}; surgery edits {setup['k']} gate rows; "
                      f"perplexity on {setup['perplexity_text']}; {entry['seconds']:.0f} s\n"
                      + entry["table"])
    text = "\n\n".join(tables)
    print(text)

    def write(scratch: Path) -> None:
        scratch.write_text(text + "\n", encoding="utf-8")

    atomic_write(args.out / TABLE_FILE, write)
    print(f"\nwrote {path} and {args.out / TABLE_FILE} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
