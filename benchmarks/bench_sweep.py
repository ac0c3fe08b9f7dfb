"""Benchmark actsteer's steering sweeps against the paper's per-question loop.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sweep.py [--quick]

Four measurements on the embedded SmolLM2-135M-Instruct (float32, CPU, 2 threads), all on
the same myopia questions rendered with :func:`actsteer.prompts.paper_prompt`:

1. **Paper loop vs sweep.** The reference is written here from the paper's description:
   one greedy 1-token ``model.generate`` per question at batch 1, steering hooks
   registered once per (layer, multiplier) cell, one full pass per cell. actsteer scores
   the same grid with :func:`actsteer.sweep.sweep_logits` (length-bucketed batches,
   prefix reuse, last-position unembedding). The paper loop is timed on the first
   ``--paper-questions`` questions for every cell (its cost per question-evaluation
   does not depend on the grid); the sweep on all questions. Argmax answers are compared
   on the overlap.
2. **Steering overhead.** Full forward of one batch with and without a steering hook.
3. **Extraction.** ``caa_vector`` for every layer from N contrastive pairs vs a naive
   ``run_with_cache`` of every hook at every position; wall time and peak memory. Peak
   memory is the process's resident set size sampled every 2 ms by a thread during the
   call, minus the resident size just before it (torch's CPU allocations are invisible
   to ``tracemalloc``). actsteer's extractor runs first, so allocator memory retained
   from it can only make the naive figure look smaller.
4. **Forward-pass limit.** Tokens/s of a plain forward on one batch (HookedTransformer,
   TransformerBridge, plain transformers); the sweep's time is compared with the time
   that plain forward would need for the blocks the sweep actually runs.

Timings are medians of ``--repeats`` runs after a warm-up. The machine may be shared:
the measurements in each comparison are interleaved so that load hits both sides.
Writes ``benchmarks/results/bench_sweep.json`` (``results/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from timing import interleaved, medians  # benchmarks/timing.py, beside this script

import actsteer
from actsteer.batching import encode, length_batches, pad
from actsteer.data.behaviours import load_builtin
from actsteer.extraction import ContrastivePair, caa_vector
from actsteer.models import embedded_model_path, quiet_deprecation
from actsteer.plan import SteeringPlan, single
from actsteer.prompts import paper_prompt
from actsteer.steering import steer
from actsteer.sweep import start_layer, sweep_logits

RESULTS = Path(__file__).resolve().parent / "results" / "bench_sweep.json"


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


@contextlib.contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Peak resident-set growth (MiB) during the block, sampled every 2 ms."""
    result: dict[str, float] = {}
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        result["peak_mib"] = (peak[0] - base) / 2**20


# --------------------------------------------------------------------------- part 1
def paper_loop(model: Any, sequences: list[list[int]],
               plans: list[SteeringPlan]) -> list[list[int]]:
    """The paper's evaluation: per plan, register hooks; per question, a batch-1 greedy
    one-token ``generate``. Returns the generated token per (plan, question)."""
    answers = []
    for plan in plans:
        row = []
        with steer(model, plan):
            for ids in sequences:
                tokens = torch.tensor([ids])
                out = model.generate(tokens, max_new_tokens=1, do_sample=False, verbose=False)
                row.append(int(out[0, -1]))
        answers.append(row)
    return answers


def actsteer_sweep(model: Any, sequences: list[list[int]], plans: list[SteeringPlan],
                   batch_size: int) -> torch.Tensor:
    """Argmax answer per (plan, question) from length-bucketed :func:`sweep_logits`."""
    answers = torch.zeros(len(plans), len(sequences), dtype=torch.long)
    for group in length_batches([len(s) for s in sequences], batch_size):
        batch = pad(model, [sequences[i] for i in group])
        answers[:, group] = sweep_logits(model, batch, plans, reduce=lambda lg: lg.argmax(-1))
    return answers


def blocks_run(model: Any, plans: list[SteeringPlan]) -> int:
    """Blocks the prefix-reusing sweep runs per batch: the shared stream up to the deepest
    start layer, plus each plan's suffix."""
    n = int(model.cfg.n_layers)
    starts = [start_layer(model, plan) for plan in plans]
    return max(starts) + sum(n - s for s in starts)


# --------------------------------------------------------------------------- part 3
def naive_extraction(model: Any, pairs: list[ContrastivePair], batch_size: int) -> torch.Tensor:
    """Mean difference at every layer's resid_post from a full ``run_with_cache``."""
    from actsteer.batching import encode, encode_many

    n_layers = int(model.cfg.n_layers)
    prompts = [encode(model, p.prompt) for p in pairs]
    answers = encode_many(model, [a for p in pairs for a in (p.positive, p.negative)], bos=False)
    sequences = [prompts[i // 2] + answers[i] for i in range(2 * len(pairs))]
    acts = torch.zeros(len(sequences), n_layers, int(model.cfg.d_model))
    for group in length_batches([len(s) for s in sequences], batch_size):
        batch = pad(model, [sequences[i] for i in group])
        with torch.no_grad():
            _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
        stacked = torch.stack([cache[f"blocks.{layer}.hook_resid_post"]
                               for layer in range(n_layers)], dim=1)  # [b, layer, pos, d]
        acts[torch.as_tensor(group)] = stacked[:, :, -1].float()
        del cache, stacked
    return (acts[0::2] - acts[1::2]).mean(0)


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer questions and cells")
    parser.add_argument("--questions", type=int, default=None)
    parser.add_argument("--paper-questions", type=int, default=None,
                        help="questions per cell timed in the paper loop")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--pairs", type=int, default=None, help="contrastive pairs (part 3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    quick = args.quick
    n_questions = args.questions or (16 if quick else 100)
    paper_questions = args.paper_questions or (2 if quick else 6)
    repeats = args.repeats or (2 if quick else 3)
    layers = [10, 20] if quick else [10, 15, 20]
    multipliers = [-4.0, 2.0, 4.0] if quick else [-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0]
    n_pairs = args.pairs or (8 if quick else 32)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    report: dict[str, Any] = {
        "config": dict(quick=quick, threads=2, batch_size=args.batch_size, layers=layers,
                       multipliers=multipliers, repeats=repeats, n_pairs=n_pairs,
                       python=platform.python_version(), torch=torch.__version__,
                       cpu_count=os.cpu_count(), load_avg_start=os.getloadavg()),
    }
    started = time.perf_counter()

    def save() -> None:  # after every part, so a long run interrupted still leaves data
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    log("loading models")
    model = actsteer.load_model()
    n_layers = int(model.cfg.n_layers)
    items = list(load_builtin("myopia"))
    questions = items[: min(n_questions, len(items))]
    prompts = [paper_prompt(item.question, item.kind) for item in questions]
    sequences = [encode(model, p) for p in prompts]
    report["config"].update(n_questions=len(sequences), paper_questions=paper_questions,
                            mean_tokens=statistics.mean(len(s) for s in sequences))

    # Vector from the same items' contrastive pairs (a speed benchmark, not an evaluation).
    pairs = [ContrastivePair(paper_prompt(item.question, item.kind), item.matching,
                             item.not_matching) for item in items[:n_pairs]]
    log(f"extracting vector from {len(pairs)} pairs")
    vector = caa_vector(model, pairs, layers=layers, dataset="myopia")
    plans = [single(vector, layer, coefficient) for layer in layers for coefficient in multipliers]

    # ---- part 2
    log("part 2: steering overhead")
    batch = pad(model, sequences[: args.batch_size])
    steered_plan = single(vector, layers[len(layers) // 2], 4.0)

    def plain() -> None:
        with torch.no_grad():
            model(batch.tokens, attention_mask=batch.attention_mask)

    def steered() -> None:
        with torch.no_grad(), steer(model, steered_plan) as handle:
            handle.new_prompt(batch.starts)
            model(batch.tokens, attention_mask=batch.attention_mask)

    times = medians(interleaved({"unsteered": plain, "steered": steered}, repeats + 1)[0])
    report["part2_steering_overhead"] = dict(
        unsteered_s=times["unsteered"], steered_s=times["steered"],
        ratio=times["steered"] / times["unsteered"], target_ratio=1.05)
    # Would stacking two plans' rows into one larger suffix forward help? Only if time
    # per row falls with batch size; on CPU the matmuls are already large at batch 16.
    middle = layers[len(layers) // 2]
    with torch.no_grad():
        resid = model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=middle)
    double = (torch.cat([resid, resid]), torch.cat([batch.tokens, batch.tokens]),
              torch.cat([batch.attention_mask, batch.attention_mask]))

    def suffix(stream: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        with torch.no_grad():
            model(stream, start_at_layer=middle, stop_at_layer=n_layers, tokens=tokens,
                  attention_mask=mask)

    batching = medians(interleaved(
        {"one": lambda: suffix(resid, batch.tokens, batch.attention_mask),
         "two": lambda: suffix(*double)}, repeats)[0])
    report["part2_steering_overhead"]["plan_batching_probe"] = dict(
        suffix_from_layer=middle, one_plan_s=batching["one"], two_plans_stacked_s=batching["two"],
        per_plan_ratio=batching["two"] / (2 * batching["one"]))
    save()

    # ---- part 3
    log(f"part 3: extraction from {len(pairs)} pairs, all {n_layers} layers")
    caa_vector(model, pairs[:2])  # warm-up
    with peak_rss() as caa_mem:
        t0 = time.perf_counter()
        caa_vector(model, pairs, batch_size=args.batch_size)
        caa_s = time.perf_counter() - t0
    with peak_rss() as naive_mem:
        t0 = time.perf_counter()
        naive = naive_extraction(model, pairs, args.batch_size)
        naive_s = time.perf_counter() - t0
    check = caa_vector(model, pairs[:4], layers=[5], batch_size=args.batch_size).at(5)
    naive_check = naive_extraction(model, pairs[:4], args.batch_size)[5]
    report["part3_extraction"] = dict(
        pairs=len(pairs), layers=n_layers, caa_vector_s=caa_s,
        caa_vector_peak_mib=caa_mem["peak_mib"], naive_run_with_cache_s=naive_s,
        naive_peak_mib=naive_mem["peak_mib"], time_ratio=naive_s / caa_s,
        memory_method="peak RSS growth, 2 ms sampling thread",
        max_abs_diff_layer5=float((check - naive_check).abs().max()))
    del naive
    save()

    # ---- part 4
    log("part 4: plain forward of each backend")
    with quiet_deprecation():
        bridge = actsteer.load_model(backend="bridge")
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(embedded_model_path(), dtype=torch.float32).eval()

    def forward_of(m: Any) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                if m is hf:
                    m(input_ids=batch.tokens, attention_mask=batch.attention_mask)
                else:
                    m(batch.tokens, attention_mask=batch.attention_mask)
        return run

    fwd = medians(interleaved({"hooked": forward_of(model), "bridge": forward_of(bridge),
                               "transformers": forward_of(hf)}, repeats)[0])

    # ---- part 1 (last: the longest; the limit of part 4 needs its time)
    log(f"part 1: paper loop ({len(plans)} cells x {paper_questions} questions)")
    subset = sequences[:paper_questions]
    t0 = time.perf_counter()
    paper_answers = paper_loop(model, subset, plans)
    paper_s = time.perf_counter() - t0
    paper_rate = len(plans) * len(subset) / paper_s
    log(f"part 1: sweep ({len(plans)} cells x {len(sequences)} questions)")
    actsteer_sweep(model, sequences[: args.batch_size // 2], plans[:2], args.batch_size)  # warm
    sweep_times = []
    for _ in range(max(1, repeats - 1)):
        t0 = time.perf_counter()
        sweep_answers = actsteer_sweep(model, sequences, plans, args.batch_size)
        sweep_times.append(time.perf_counter() - t0)
    sweep_s = statistics.median(sweep_times)
    sweep_rate = len(plans) * len(sequences) / sweep_s
    agree = (sweep_answers[:, : len(subset)] == torch.tensor(paper_answers)).float().mean()
    report["part1_sweep_vs_paper_loop"] = dict(
        cells=len(plans), paper_loop_evaluations=len(plans) * len(subset),
        paper_loop_s=paper_s, paper_loop_eval_per_s=paper_rate,
        sweep_evaluations=len(plans) * len(sequences), sweep_s=sweep_s,
        sweep_eval_per_s=sweep_rate, speedup=sweep_rate / paper_rate, target_speedup=5.0,
        argmax_agreement=float(agree), agreement_evaluations=len(plans) * len(subset))
    save()

    padded_tokens = batch.tokens.numel()
    tokens_per_s = {name: padded_tokens / s for name, s in fwd.items()}
    # Work the sweep needed: per bucketed batch, (blocks run / n_layers) full forwards of
    # that batch's padded tokens. The limit is that work at the plain forward's speed.
    sweep_tokens = sum(len(group) * max(len(sequences[i]) for i in group)
                       for group in length_batches([len(s) for s in sequences], args.batch_size))
    forward_equivalents = blocks_run(model, plans) / n_layers
    needed_tokens = sweep_tokens * forward_equivalents
    limit = {name: needed_tokens / rate for name, rate in tokens_per_s.items()}
    report["part4_forward_limit"] = dict(
        batch_shape=list(batch.tokens.shape), forward_s=fwd, tokens_per_s=tokens_per_s,
        sweep_padded_tokens=sweep_tokens, blocks_run_per_batch=blocks_run(model, plans),
        full_forward_blocks=len(plans) * n_layers, forward_equivalents=forward_equivalents,
        limit_s=limit, sweep_s=sweep_s,
        sweep_over_limit={name: sweep_s / s for name, s in limit.items()}, target=1.5)
    report["config"]["load_avg_end"] = os.getloadavg()
    report["total_s"] = time.perf_counter() - started

    save()
    print_table(report)
    print(f"\nwritten {args.out}")


def print_table(report: dict[str, Any]) -> None:
    p1, p2 = report["part1_sweep_vs_paper_loop"], report["part2_steering_overhead"]
    p3, p4 = report["part3_extraction"], report["part4_forward_limit"]
    c = report["config"]
    rows = [
        ("1 paper loop (batch-1 generate)", f"{p1['paper_loop_eval_per_s']:.2f} eval/s",
         f"{p1['paper_loop_evaluations']} evals in {p1['paper_loop_s']:.1f}s"),
        ("1 actsteer sweep_logits", f"{p1['sweep_eval_per_s']:.2f} eval/s",
         f"{p1['sweep_evaluations']} evals in {p1['sweep_s']:.1f}s"),
        ("1 speedup (target >= 5x)", f"{p1['speedup']:.1f}x",
         f"argmax agreement {p1['argmax_agreement']:.3f} on {p1['agreement_evaluations']}"),
        ("2 steered / unsteered (<= 1.05)", f"{p2['ratio']:.3f}",
         f"{p2['steered_s']:.2f}s vs {p2['unsteered_s']:.2f}s"),
        ("3 caa_vector, all layers", f"{p3['caa_vector_s']:.1f}s",
         f"peak +{p3['caa_vector_peak_mib']:.0f} MiB"),
        ("3 naive run_with_cache", f"{p3['naive_run_with_cache_s']:.1f}s",
         f"peak +{p3['naive_peak_mib']:.0f} MiB"),
    ]
    for name, rate in p4["tokens_per_s"].items():
        rows.append((f"4 plain forward {name}", f"{rate:.0f} tok/s",
                     f"{p4['forward_s'][name]:.2f}s for {p4['batch_shape']}"))
    for name, ratio in p4["sweep_over_limit"].items():
        rows.append((f"4 sweep / limit ({name}) (<= 1.5)", f"{ratio:.2f}",
                     f"limit {p4['limit_s'][name]:.1f}s = "
                     f"{p4['forward_equivalents']:.1f} forward-equivalents"))
    width = max(len(r[0]) for r in rows)
    print(f"\nbench_sweep: {c['n_questions']} myopia questions, {p1['cells']} cells "
          f"(layers {c['layers']} x {len(c['multipliers'])} multipliers), "
          f"load avg {c['load_avg_start'][0]:.1f} -> {c['load_avg_end'][0]:.1f}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")


if __name__ == "__main__":
    main()
