"""Which behaviours does the embedded model express and steer? Measured, not guessed.

For each built-in expressed behaviour (``actsteer/data/builtin/expressed.json``) a CAA vector
is read over the answer tokens of its 16 contrastive completions (``read="answer_mean"``)
and added at each of ``--layers`` with strengths given as fractions of the median residual
norm there (``--fractions``). On the neutral sentence openings (never used for extraction)
each plan is scored by every behaviour's word-set propensity (log next-token mass on its
words minus on its contrast words), so one sweep gives each behaviour's own effect and its
cross-talk. The tables report, per behaviour and layer:

* **slope**: mean per-item steerability of the behaviour's own propensity per unit of
  fraction [95% CI] (Tan et al. 2024) and its verdict;
* **own Δ** at each positive fraction, paired against the unsteered model [95% CI];
* **ppl x**: perplexity on text under the plan at the largest positive fraction, as a ratio
  to the unsteered model's;
* the cosine between the behaviours' vectors at each layer, and the cross-talk matrix at the
  chosen layer.

A behaviour qualifies (issue 15) when its slope interval excludes 0 at a layer where the
largest fraction of at most 0.25 costs at most 1.5x perplexity.

    python -m experiments.expressed_study --out results/expressed_study.json
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import torch

import actsteer
from actsteer.accuracy import Documents, accuracy_sweep
from actsteer.atomic import write_json_atomic
from actsteer.batching import encode_many
from actsteer.data.corpora import builtin_text_corpus, wikitext_corpus
from actsteer.data.expressed import EXPRESSED_BEHAVIOURS, load_expressed, neutral_prompts
from actsteer.effects import paired_effect
from actsteer.likelihood import word_propensities
from actsteer.norms import residual_norms
from actsteer.plan import empty_plan, single
from actsteer.steerability import propensity_slopes, summarize_steerability


def _texts(n: int) -> list[str]:
    try:
        return wikitext_corpus(max_documents=n).texts()[:n]
    except FileNotFoundError:
        return builtin_text_corpus().texts()[:n]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--behaviours", nargs="+", default=list(EXPRESSED_BEHAVIOURS))
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 10, 14, 18, 22])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--documents", type=int, default=8, help="perplexity documents")
    parser.add_argument("--out", type=Path, default=Path("results/expressed_study.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = actsteer.load_model()
    behaviours = {name: load_expressed(name) for name in args.behaviours}
    vectors = {name: actsteer.caa_vector(model, b.pairs(), read="answer_mean", dataset=name)
               for name, b in behaviours.items()}
    texts = _texts(args.documents)
    norms = residual_norms(model, texts, max_tokens=128, source="perplexity documents")
    steps = sorted({*args.fractions, *(-f for f in args.fractions)})
    grid = list(itertools.product(args.behaviours, args.layers, steps))
    plans = [empty_plan()] + [single(vectors[b], layer, f, norms=norms) for b, layer, f in grid]
    prompts = list(neutral_prompts())
    scores = word_propensities(model, prompts, [b.words for b in behaviours.values()], plans,
                               batch_size=24, progress=True)
    sequences = [ids[:128] for ids in encode_many(model, texts)]
    documents = Documents.build(model, sequences, batch_size=8)
    biggest = max(args.fractions)
    tax_plans = [empty_plan()] + [single(vectors[b], layer, biggest, norms=norms)
                                  for b in args.behaviours for layer in args.layers]
    tax = accuracy_sweep(model, documents, tax_plans, progress=True)
    base_ppl = tax[0].perplexity().value
    rows: list[dict[str, Any]] = []
    print(f"unsteered perplexity {base_ppl:.1f} on {len(texts)} documents; "
          f"{len(prompts)} neutral prompts")
    print(f"{'behaviour':<10}{'layer':>6}  {'slope per unit fraction [CI]':<30}"
          + "".join(f"{'own Δ at +' + format(f, 'g'):<28}" for f in args.fractions)
          + f"{'ppl x':>7}  verdict")
    for b in args.behaviours:
        own = scores[b].summed
        for layer in args.layers:
            index = {f: 1 + grid.index((b, layer, f)) for f in steps}
            ladder = torch.stack([own[0] if f == 0 else own[index[f]]
                                  for f in sorted([0.0, *steps])])
            slopes = propensity_slopes(ladder, sorted([0.0, *steps]))
            summary = summarize_steerability(slopes)
            effects = {f: paired_effect(own[index[f]], own[0]) for f in args.fractions}
            ratio = tax[1 + args.behaviours.index(b) * len(args.layers)
                        + args.layers.index(layer)].perplexity().value / base_ppl
            slope = summary.mean_slope
            verdict = "steers" if slope.low > 0 else "reversed" if slope.high < 0 else "no effect"
            print(f"{b:<10}{layer:>6}  {slope.value:+7.2f} [{slope.low:+6.2f}, {slope.high:+6.2f}]"
                  f"{'':<8}" + "".join(f"{format(effects[f], '.2f'):<28}" for f in args.fractions)
                  + f"{ratio:>7.2f}  {verdict}")
            rows.append({"behaviour": b, "layer": layer, "slope": summary.to_dict(),
                         "effects": {str(f): e.to_dict() for f, e in effects.items()},
                         "perplexity_ratio": ratio})
    print("\ncosine between the behaviours' vectors, per layer")
    for layer in args.layers:
        pairs = []
        for x, y in itertools.combinations(args.behaviours, 2):
            cos = torch.nn.functional.cosine_similarity(vectors[x].at(layer), vectors[y].at(layer),
                                                        dim=0)
            pairs.append(f"{x}/{y} {float(cos):+.2f}")
        print(f"L{layer:<3} " + ", ".join(pairs))
    print(f"\ncross-talk at +{biggest:g}: Δ of each row's metric when steering the column's "
          "vector (paired, nats)")
    for layer in args.layers:
        print(f"L{layer}")
        for metric in args.behaviours:
            cells = []
            for steered in args.behaviours:
                column = 1 + grid.index((steered, layer, biggest))
                effect = paired_effect(scores[metric].summed[column], scores[metric].summed[0])
                cells.append(f"{effect.value:+6.2f}")
            print(f"  {metric:<10} " + " ".join(cells))
    write_json_atomic(args.out, {"rows": rows, "norms": norms.to_dict(),
                                 "unsteered_perplexity": base_ppl,
                                 "seconds": time.perf_counter() - started})
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
