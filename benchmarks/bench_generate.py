"""Benchmark batched steered generation against Hugging Face ``generate`` with a hook.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_generate.py [--quick | --batched-only]

``bench_generate_lines.py`` runs the batched part under both TransformerLens lines' venvs
and writes one JSON.

On the embedded SmolLM2-135M-Instruct (float32, CPU, ``--threads`` torch threads: 2 as in
``bench_sweep.py``; on a shared 2-core machine 1 thread gives steadier numbers), 8 chat
prompts of different lengths, ``--new-tokens`` greedy tokens each (end-of-sequence ignored,
so every row makes the same number), one steering vector added to the output of block
``--layer`` at every position:

1. **Batched vs transformers.** The reference is written here from the paper's method:
   ``transformers`` ``generate`` on the plain ``LlamaForCausalLM`` (left-padded batch,
   attention mask, KV cache) with a forward hook adding the vector to
   ``model.layers[layer]``'s output. Against it, :func:`actsteer.generation.generate_tokens`
   on the same prompts, on TransformerBridge and (TransformerLens 3.x) HookedTransformer.
   Interleaved repeats after an untimed warm-up, medians (and the best run); target:
   the bridge >= 0.95x the reference's new tokens/s.
``--batched-only`` stops there. Otherwise:

2. **Batched vs one at a time**, per backend (the same function, one prompt per call).
3. **The previous ``actsteer.steering.generate``**: TransformerLens's own
   ``model.generate`` loop with the steering hooks live, one prompt per call (all it took).

Tokens are compared too: batched vs one at a time must be identical (the tests check
this); agreement with the reference and across backends is reported, not required
(TransformerLens's weight processing changes float rounding). Writes
``benchmarks/results/bench_generate.json`` (``results/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from timing import interleaved  # benchmarks/timing.py, beside this script

import actsteer
from actsteer.batching import encode_many, pad
from actsteer.generation import generate_tokens
from actsteer.models import embedded_model_path, quiet_deprecation
from actsteer.models.info import available_backends
from actsteer.plan import single
from actsteer.prompts import chat_prompt
from actsteer.steering import steer

RESULTS = Path(__file__).resolve().parent / "results" / "bench_generate.json"

QUESTIONS = [
    "What is the capital of France?",
    "Name a colour.",
    "Write one sentence about the sea.",
    "Would you rather have $5 now or $50 in a year? Explain your choice briefly.",
    "List three fruits.",
    "How do I boil an egg? Give me the steps, as short as you can, and tell me how long "
    "each one takes.",
    "Hi!",
    "Why is the sky blue?",
]


@contextlib.contextmanager
def block_output_addition(hf_model: Any, layer: int, delta: torch.Tensor) -> Iterator[None]:
    """Reference steering: add ``delta`` to decoder block ``layer``'s output."""

    def add(module: Any, inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    handle = hf_model.model.layers[layer].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--layer", type=int, default=10)
    parser.add_argument("--coefficient", type=float, default=4.0)
    parser.add_argument("--slow-repeats", type=int, default=3,
                        help="repeats of parts 2-3 (one prompt per call: slow)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batched-only", action="store_true",
                        help="part 1 only (batched vs transformers)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    new_tokens = args.new_tokens or (12 if args.quick else 40)
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    from transformers import AutoModelForCausalLM

    log("loading models")
    models = {backend: actsteer.load_model(backend=backend) for backend in available_backends()}
    bridge = models["bridge"]
    hf_model = AutoModelForCausalLM.from_pretrained(embedded_model_path()).eval()
    prompts = [chat_prompt(bridge.tokenizer, question) for question in QUESTIONS]
    sequences = encode_many(bridge, prompts)
    batch = pad(bridge, sequences, padding_side="left")
    direction = torch.randn(576, generator=torch.Generator().manual_seed(0))
    vector = direction / direction.norm() * 2.0
    plan = single(vector, args.layer, args.coefficient)
    delta = args.coefficient * vector
    n_tokens = len(prompts) * new_tokens
    pad_token = int(bridge.tokenizer.pad_token_id)

    def reference() -> list[list[int]]:
        with torch.no_grad(), block_output_addition(hf_model, args.layer, delta):
            out = hf_model.generate(batch.tokens, attention_mask=batch.attention_mask,
                                    max_new_tokens=new_tokens, min_new_tokens=None,
                                    do_sample=False, eos_token_id=None,
                                    pad_token_id=pad_token)
        return [row.tolist() for row in out[:, batch.tokens.shape[1]:]]

    def ours(model: Any) -> Callable[[], list[list[int]]]:
        return lambda: generate_tokens(model, sequences, plan, max_new_tokens=new_tokens,
                                       stop_at_eos=False)

    def one_at_a_time(model: Any) -> Callable[[], list[list[int]]]:
        return lambda: [generate_tokens(model, [s], plan, max_new_tokens=new_tokens,
                                        stop_at_eos=False)[0] for s in sequences]

    def previous(model: Any) -> Callable[[], list[list[int]]]:
        def run() -> list[list[int]]:
            rows = []
            for sequence in sequences:
                tokens = torch.tensor([sequence])
                with torch.no_grad(), steer(model, plan) as handle, quiet_deprecation():
                    handle.new_prompt()
                    out = model.generate(tokens, max_new_tokens=new_tokens, do_sample=False,
                                         stop_at_eos=False, use_past_kv_cache=True,
                                         verbose=False)
                rows.append(out[0, len(sequence):].tolist())
            return rows
        return run

    report: dict[str, Any] = {"config": dict(
        quick=args.quick, threads=args.threads, prompts=len(prompts), new_tokens=new_tokens,
        prompt_lengths=[len(s) for s in sequences], layer=args.layer,
        coefficient=args.coefficient, repeats=repeats, slow_repeats=args.slow_repeats,
        python=platform.python_version(), torch=torch.__version__,
        transformer_lens=version("transformer-lens"), transformers=version("transformers"),
        batched_only=args.batched_only, cpu_count=os.cpu_count(),
        load_avg_start=os.getloadavg())}

    log("part 1: batched vs transformers")
    part1, tokens = interleaved({"transformers": reference,
                                 **{name: ours(model) for name, model in models.items()}},
                                repeats, verbose=True)
    part2: dict[str, list[float]] = {}
    if not args.batched_only:
        log("parts 2-3: one at a time, previous generate")
        slow = {f"{name}_one_at_a_time": one_at_a_time(model) for name, model in models.items()}
        if "hooked" in models:
            slow["hooked_previous"] = previous(models["hooked"])
        part2, more = interleaved(slow, args.slow_repeats, verbose=True)
        tokens.update(more)
    same: dict[str, bool] = {}
    for name in models:
        same[f"{name}_vs_transformers"] = tokens[name] == tokens["transformers"]
        if f"{name}_one_at_a_time" in tokens:
            same[f"{name}_batched_vs_one_at_a_time"] = (tokens[name]
                                                        == tokens[f"{name}_one_at_a_time"])
    if "hooked_previous" in tokens:
        same["hooked_vs_previous_generate"] = tokens["hooked"] == tokens["hooked_previous"]
    report["tokens_identical"] = same
    unsteered = generate_tokens(bridge, sequences, None, max_new_tokens=new_tokens,
                                stop_at_eos=False)
    report["steering_changed_rows"] = sum(a != b for a, b in zip(unsteered, tokens["bridge"],
                                                                 strict=True))
    times = {**part1, **part2}
    rate = {name: n_tokens / statistics.median(values) for name, values in times.items()}
    report["seconds"] = times
    report["tokens_per_s"] = rate
    report["tokens_per_s_best"] = {name: n_tokens / min(values) for name, values in times.items()}
    report["ratio_to_transformers"] = {name: value / rate["transformers"]
                                       for name, value in rate.items()}
    report["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    load = (report["config"]["load_avg_start"][0], report["load_avg_end"][0])
    print(f"\n{len(prompts)} prompts x {new_tokens} greedy tokens, SmolLM2-135M float32, "
          f"{args.threads} threads (medians; load {load[0]:.1f} -> {load[1]:.1f})")
    print(f"{'method':38s} {'tok/s':>8s} {'vs transformers':>16s} {'best tok/s':>11s}")
    labels = {"transformers": "transformers generate + hook (batched)",
              "bridge": "actsteer generate, bridge (batched)",
              "hooked": "actsteer generate, hooked (batched)",
              "bridge_one_at_a_time": "actsteer generate, bridge, 1 at a time",
              "hooked_one_at_a_time": "actsteer generate, hooked, 1 at a time",
              "hooked_previous": "previous steering.generate (TL loop)"}
    for name, label in labels.items():
        if name not in rate:
            continue
        print(f"{label:38s} {rate[name]:8.1f} {report['ratio_to_transformers'][name]:15.2f}x "
              f"{report['tokens_per_s_best'][name]:11.1f}")
    print("tokens identical:", json.dumps(report["tokens_identical"]))
    print(f"steering changed {report['steering_changed_rows']} of {len(prompts)} rows")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
