"""Peak memory and load time of ``load_model`` on checkpoints as wide as Llama-2-7b.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_llama_scale.py --layers 2 4
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_llama_scale.py --layers 2 \
        --backend hooked --device cuda          # on a GPU: adds torch.cuda.max_memory_allocated

The checkpoint has Llama-2-7b's width (d_model 4096, 32 heads, d_mlp 11008, vocab 32000)
and ``--layers`` of its 32 layers, random bf16 weights, laid out like the Hub repository:
two safetensors shards, an index json, config.json and a tokenizer. No Llama-family
tokenizer exists offline, so the folder carries the embedded SmolLM2 tokenizer (49,152
tokens) with the config's vocabulary left at Llama's 32,000; the prompt is checked to
encode below 32,000. The shards are written tensor by tensor (header first, then each
tensor's bytes), so writing even 32 layers needs the memory of one tensor.

Each (layers, backend) cell runs in a fresh subprocess that imports actsteer, loads the
folder (``dtype="bf16"``, default processing), runs one steered forward and 8 steered
greedy tokens (``actsteer.single``/``steer``/``generate``), and reports its load time and
its peak resident memory (VmHWM, imports included) after each phase. The parent polls
the child's VmRSS and kills it above ``--cap-gib``, so a loader that blows up is recorded
as such and never takes the machine's memory.

Targets (issue 23): peak <= 1.5x the checkpoint's safetensors bytes, and the 2 -> 4 layer
increment <= 1.5x the added bytes. Writes ``benchmarks/results/bench_llama_scale.json``
(``results/`` is git-ignored) with the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bench_llama_scale.json"

WIDTH = {"d_model": 4096, "n_heads": 32, "d_mlp": 11008, "vocab": 32000}
PROMPT = "The quick brown fox jumps over the lazy dog because"
TARGET = 1.5
GIB = 2**30
PAPER_MULTIPLIERS = (-10.0, -5.0, -3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
"""The paper profile's grid multipliers: one grid unit scores all of them at one layer."""
PAPER_GRID_ITEMS = 200
PAPER_LAYERS = 32


def _llama_tensors(n_layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of a Llama-2-width checkpoint, in the Hub repository's order."""
    d, m, v = WIDTH["d_model"], WIDTH["d_mlp"], WIDTH["vocab"]
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, d))]
    for layer in range(n_layers):
        p = f"model.layers.{layer}."
        out += [(p + "input_layernorm.weight", (d,)),
                (p + "self_attn.q_proj.weight", (d, d)),
                (p + "self_attn.k_proj.weight", (d, d)),
                (p + "self_attn.v_proj.weight", (d, d)),
                (p + "self_attn.o_proj.weight", (d, d)),
                (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (m, d)),
                (p + "mlp.up_proj.weight", (m, d)),
                (p + "mlp.down_proj.weight", (d, m))]
    out += [("model.norm.weight", (d,)), ("lm_head.weight", (v, d))]
    return out


def _write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]], seed: int) -> int:
    """Write a bf16 safetensors file one tensor at a time; return its tensor bytes."""
    import torch

    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        size = 2 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "BF16", "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    generator = torch.Generator().manual_seed(seed)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in tensors:
            if name.endswith("norm.weight"):  # norms near 1, as trained models have
                value = 1.0 + 0.1 * torch.randn(shape, generator=generator)
            else:
                value = 0.02 * torch.randn(shape, generator=generator)
            handle.write(value.to(torch.bfloat16).view(torch.uint8).numpy().tobytes())
            del value
    return offset


def build_checkpoint(folder: Path, n_layers: int) -> int:
    """A Llama-2-width folder with ``n_layers`` layers (reused when complete); its bytes."""
    from transformers import AutoTokenizer, LlamaConfig

    from actsteer.models.embedded import embedded_tokenizer_path

    index = folder / "model.safetensors.index.json"
    if index.exists():
        return int(json.loads(index.read_text())["metadata"]["total_size"])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_path())
    tensors = _llama_tensors(n_layers)
    split = 1 + 9 * ((n_layers + 1) // 2)  # embeddings and the first half of the layers
    shards = {"model-00001-of-00002.safetensors": tensors[:split],
              "model-00002-of-00002.safetensors": tensors[split:]}
    total = sum(_write_shard(folder / name, part, seed=i)
                for i, (name, part) in enumerate(shards.items()))
    LlamaConfig(
        vocab_size=WIDTH["vocab"], hidden_size=WIDTH["d_model"],
        intermediate_size=WIDTH["d_mlp"], num_hidden_layers=n_layers,
        num_attention_heads=WIDTH["n_heads"], num_key_value_heads=WIDTH["n_heads"],
        max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        torch_dtype="bfloat16", architectures=["LlamaForCausalLM"],
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # The index last: its presence marks a complete folder.
    weight_map = {name: shard for shard, part in shards.items() for name, _ in part}
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


_CHILD = r"""
import json, sys, time
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
folder, backend, device, fold = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
unit_items = int(sys.argv[5])
out = {}
t = time.perf_counter()
import torch
import actsteer
out["import_s"] = time.perf_counter() - t
out["hwm_import"] = hwm()
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
model = actsteer.load_model(folder, backend=backend, dtype="bf16", device=device, fold_ln=fold)
out["load_s"] = time.perf_counter() - t
out["hwm_load"] = hwm()
ids = model.tokenizer(PROMPT).input_ids
assert max(ids) < model.cfg.d_vocab, f"prompt token {max(ids)} outside the vocabulary"
layer = model.cfg.n_layers // 2
vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
plan = actsteer.single(vector, layer, 4.0)
t = time.perf_counter()
with torch.no_grad(), actsteer.steer(model, plan):
    logits = model(torch.tensor([ids], device=model.cfg.device))
out["forward_s"] = time.perf_counter() - t
out["logits_finite"] = bool(torch.isfinite(logits.float()).all())
out["hwm_forward"] = hwm()
t = time.perf_counter()
text = actsteer.generate(model, PROMPT, plan, max_new_tokens=8, stop_at_eos=False)
out["generate_s"] = time.perf_counter() - t
out["generated_chars"] = len(text)
out["hwm_peak"] = hwm()
if device == "cuda":
    out["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
if unit_items:
    # One unit of the paper profile's grid: one behaviour, one layer, its 12 multipliers,
    # scored on A/B items (here the first unit_items of builtin:myopia; the paper's unit
    # has 200). Token ids past the checkpoint's 32,000 are folded into it: the weights are
    # random, so only the cost counts.
    from actsteer.data.behaviours.sources import load_behaviour
    from actsteer.evaluation import PreparedItems, prepare_items, score_items
    vocab = model.cfg.d_vocab
    real = prepare_items(model, list(load_behaviour("builtin:myopia"))[:unit_items], "paper")
    items = PreparedItems.from_ids([[i % vocab for i in p] for p in real.prompts],
                                   [i % vocab for i in real.matching_ids],
                                   [i % vocab for i in real.not_matching_ids])
    plans = [actsteer.single(vector, layer, m) for m in MULTIPLIERS]
    t = time.perf_counter()
    score_items(model, items, plans, batch_size=16)
    out["unit_s"] = time.perf_counter() - t
    out["unit_items"], out["unit_plans"], out["unit_layer"] = len(items.prompts), len(plans), layer
    out["hwm_unit"] = hwm()
print("RESULT " + json.dumps(out), flush=True)
""".replace("PROMPT", repr(PROMPT)).replace("MULTIPLIERS", repr(PAPER_MULTIPLIERS))


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def run_capped(args: list[str], cap_bytes: int, timeout_s: float) -> dict[str, object]:
    """Run the child; kill it when its RSS passes ``cap_bytes`` or time runs out."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    seen, start, killed = 0, time.monotonic(), None
    while child.poll() is None:
        seen = max(seen, _rss(child.pid))
        if seen > cap_bytes:
            killed = f"RSS {seen / GIB:.2f} GiB passed the cap {cap_bytes / GIB:.2f} GiB"
        elif time.monotonic() - start > timeout_s:
            killed = f"ran past {timeout_s:.0f} s"
        if killed:
            child.kill()
            break
        time.sleep(0.02)
    stdout, stderr = child.communicate()
    results = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if killed or not results:
        return {"error": killed or f"exit {child.returncode}: {stderr.strip()[-2000:]}",
                "rss_seen_gib": round(seen / GIB, 3)}
    return json.loads(results[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--backend", nargs="+", choices=["hooked", "bridge"],
                        default=["hooked", "bridge"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-fold", action="store_true", help="load with fold_ln=False")
    parser.add_argument("--cap-gib", type=float, default=6.0,
                        help="kill a cell whose RSS passes this (default 6)")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--cache", type=Path, default=None,
                        help="checkpoint folder root (default: actsteer's cache dir)")
    parser.add_argument("--unit-items", type=int, default=0,
                        help="also time one paper-profile grid unit on this many A/B items "
                             "(0: skip) and extrapolate it to the paper's 200 items and 32 layers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from actsteer.paths import cache_dir

    root = args.cache or cache_dir() / "bench-l2width"
    cells = []
    for n_layers in args.layers:
        folder = root / f"width4096-l{n_layers}"
        t = time.perf_counter()
        size = build_checkpoint(folder, n_layers)
        print(f"{n_layers} layers: {size / GIB:.3f} GiB in {folder} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
        for backend in args.backend:
            child_args = [str(folder), backend, args.device, "0" if args.no_fold else "1",
                          str(args.unit_items)]
            got = run_capped(child_args, int(args.cap_gib * GIB), args.timeout_s)
            cell = {"layers": n_layers, "backend": backend, "checkpoint_bytes": size, **got}
            if "hwm_peak" in got:
                cell["peak_x_weights"] = round(int(got["hwm_peak"]) / size, 3)  # type: ignore[call-overload]
            if "unit_s" in got:
                # Linear in items; blocks scale with depth (an over-estimate: the unembedding
                # and the shared prefix below the steered layer do not grow with it).
                per_item = float(got["unit_s"]) / int(got["unit_items"])  # type: ignore[arg-type]
                cell["paper_unit_estimate_s"] = round(
                    per_item * PAPER_GRID_ITEMS * PAPER_LAYERS / n_layers, 1)
            cells.append(cell)
            print(json.dumps(cell), flush=True)
    increments = {}
    for backend in args.backend:
        done = sorted((c["layers"], c) for c in cells if c["backend"] == backend
                      and "hwm_peak" in c)
        if len(done) >= 2:
            (l0, a), (l1, b) = done[0], done[-1]
            added = int(b["checkpoint_bytes"]) - int(a["checkpoint_bytes"])
            grew = int(b["hwm_peak"]) - int(a["hwm_peak"])
            increments[backend] = {"from_layers": l0, "to_layers": l1,
                                   "added_bytes": added, "peak_growth_bytes": grew,
                                   "x_added": round(grew / added, 3),
                                   "per_layer_gib": round(grew / (l1 - l0) / GIB, 3)}
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
              "target_x": TARGET, "device": args.device, "fold_ln": not args.no_fold,
              "machine": platform.platform(), "cells": cells, "increments": increments}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(increments, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
