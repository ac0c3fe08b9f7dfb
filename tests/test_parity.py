"""Parity across TransformerLens lines: the same steering gives the same numbers on 3.x and 4.x.

The TL 3 leg (``make test``) computes, on both of its backends, the logits of every plan kind
(single, combined, simultaneous) at every site, and greedy steered generations, on the tiny
and the embedded model, and writes them to a reference folder (``.parity/`` or
``$ACTSTEER_PARITY_DIR``). The TL 4 leg (``make test-tl4``) computes the same on its only
backend, the bridge, and compares:

* with the TL 3 bridge (the same backend, another TransformerLens and transformers): max
  |Δ logit| <= 1e-4 and identical generated tokens;
* with the TL 3 default, HookedTransformer (another backend: its own attention and
  processed weights): max |Δ centred logit| <= 1e-4 and identical generated tokens.
  HookedTransformer centres the unembedding, so its logits differ from the bridge's by a
  per-position constant that no softmax sees;
* a reduced quick profile (the expressed comparison) on the embedded model, run by each
  line's default backend: every paired effect and interval within 1e-4, identical verdicts.

On TL 3 the same file checks the two backends against each other before writing, so the
reference is never written from a pair of backends that already disagree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import actsteer
from actsteer.atomic import atomic_write
from actsteer.batching import encode, pad
from actsteer.generation import generate_tokens
from actsteer.models.info import transformer_lens_major
from actsteer.plan import Positions
from actsteer.sites import SITES
from actsteer.vector import SteeringVector, VectorMeta

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("ACTSTEER_PARITY_DIR", ROOT / ".parity"))
SAME_BACKEND = 1e-4
"""max |Δ logit| allowed between the bridge on TL 3 and on TL 4."""
CROSS_BACKEND = 1e-4
"""max |Δ centred logit| allowed between TL 3's HookedTransformer and TL 4's bridge."""
EFFECTS = 1e-4
"""max |Δ| allowed between the quick profile's effects (and interval ends) on the two lines."""
PROMPTS = ("The weather today is", "I think the best way to learn a language is",
           "Once upon a time")
VOCAB_SAMPLE = 4096
"""Logits are stored for this many vocabulary ids (a fixed random sample), at every position:
a check of every id at every position, on the sampled ids, at 1/12 of the file size."""
GENERATE_TOKENS = 12
GENERATED = ("unsteered", "resid_post/single", "resid_post/simultaneous", "attn_out/single",
             "resid_pre/single-from-1", "mlp_out/combined")
"""Plans whose greedy generations are compared on the tiny model (each plan kind, four
sites); the embedded model generates for the first three (HookedTransformer decodes slowly)."""


def _vectors(d_model: int, n_layers: int) -> dict[str, SteeringVector]:
    """Two fixed random vectors per site, every layer, at a tenth of a typical residual
    norm: large enough to move the logits, small enough to keep greedy tokens stable."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    for site in SITES:
        for name in ("a", "b"):
            directions = torch.randn(n_layers, d_model, generator=generator)
            directions = directions / directions.norm(dim=-1, keepdim=True)
            out[f"{site}/{name}"] = SteeringVector(
                directions, tuple(range(n_layers)), site, VectorMeta(dataset=name))
    return out


def _plans(model: Any) -> dict[str, actsteer.SteeringPlan]:
    n_layers, d_model = int(model.cfg.n_layers), int(model.cfg.d_model)
    vectors = _vectors(d_model, n_layers)
    strength = 0.5 * d_model ** 0.5
    mid, late = n_layers // 3, (2 * n_layers) // 3
    plans = {"unsteered": actsteer.SteeringPlan()}
    for site in SITES:
        a, b = vectors[f"{site}/a"], vectors[f"{site}/b"]
        plans[f"{site}/single"] = actsteer.single(a, mid, strength)
        plans[f"{site}/single-from-1"] = actsteer.single(
            a, late, -strength, positions=Positions.from_index(1))
        plans[f"{site}/combined"] = actsteer.combined([a, b], mid, coefficient=strength)
        plans[f"{site}/simultaneous"] = actsteer.simultaneous(
            {"a": (a, mid, strength), "b": (b, late, -strength)})
    return plans


def _measure(model: Any, generated: tuple[str, ...] = GENERATED
             ) -> tuple[dict[str, torch.Tensor], dict[str, list[list[int]]]]:
    """Sampled logits (real positions only, left padding) and greedy steered tokens per plan."""
    vocab = int(model.cfg.d_vocab)
    sample = torch.randperm(vocab, generator=torch.Generator().manual_seed(1))[:VOCAB_SAMPLE]
    sample = sample.sort().values
    batch = pad(model, [encode(model, p) for p in PROMPTS])
    real = batch.attention_mask.bool()
    logits, tokens = {}, {}
    for name, plan in _plans(model).items():
        out = actsteer.run(model, batch, plan)
        logits[name] = out[real][:, sample].float().contiguous()
        if name in generated:
            tokens[name] = generate_tokens(
                model, [encode(model, p) for p in PROMPTS], plan,
                max_new_tokens=GENERATE_TOKENS, stop_at_eos=False)
    return logits, tokens


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _write(folder: Path, key: str, logits: dict[str, torch.Tensor],
           tokens: dict[str, list[list[int]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{key}.safetensors", lambda p: save_file(logits, str(p)))
    atomic_write(folder / f"{key}.json",
                 lambda p: p.write_text(json.dumps({"tokens": tokens}, sort_keys=True)))


def _read(folder: Path, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = folder / f"{key}.safetensors", folder / f"{key}.json"
    if not (tensors.is_file() and meta.is_file()):
        pytest.fail(f"no TL 3 parity reference {tensors}: the TL 3 leg writes it (make test, "
                    "or `make parity-reference`), then the TL 4 leg compares against it")
    return load_file(str(tensors)), json.loads(meta.read_text())["tokens"]


def _gaps(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor],
          centred: bool) -> dict[str, float]:
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
    fix = _centred if centred else (lambda x: x)
    return {name: float((fix(ours[name]) - fix(theirs[name])).abs().max()) for name in ours}


def _check(model_key: str, load: Any, generated: tuple[str, ...] = GENERATED) -> None:
    if transformer_lens_major() < 4:
        hooked = load("hooked")
        hooked_logits, hooked_tokens = _measure(hooked, generated)
        del hooked
        bridge_logits, bridge_tokens = _measure(load("bridge"), generated)
        gaps = _gaps(hooked_logits, bridge_logits, centred=True)
        assert max(gaps.values()) <= CROSS_BACKEND, gaps
        assert hooked_tokens == bridge_tokens
        # Steering moved the logits at every site, so the comparison above has teeth.
        moved = _gaps(hooked_logits, dict.fromkeys(hooked_logits, hooked_logits["unsteered"]),
                      centred=True)
        assert all(gap > 0.01 for name, gap in moved.items() if name != "unsteered"), moved
        _write(REFERENCE, f"{model_key}-hooked", hooked_logits, hooked_tokens)
        _write(REFERENCE, f"{model_key}-bridge", bridge_logits, bridge_tokens)
        return
    logits, tokens = _measure(load(None), generated)
    same_logits, same_tokens = _read(REFERENCE, f"{model_key}-bridge")
    same = _gaps(logits, same_logits, centred=False)
    assert max(same.values()) <= SAME_BACKEND, same
    assert tokens == same_tokens
    other_logits, other_tokens = _read(REFERENCE, f"{model_key}-hooked")
    cross = _gaps(logits, other_logits, centred=True)
    assert max(cross.values()) <= CROSS_BACKEND, cross
    assert tokens == other_tokens
    _record_gaps(model_key, {"same_backend_max": max(same.values()),
                             "cross_backend_centred_max": max(cross.values()),
                             "plans": len(same), "generated_plans": len(tokens)})
    print(f"\nparity {model_key}: TL4 bridge vs TL3 bridge max |Δ logit| "
          f"{max(same.values()):.2e}; vs TL3 hooked max |Δ centred logit| "
          f"{max(cross.values()):.2e} over {len(same)} plans (4 kinds x {len(SITES)} sites and "
          f"unsteered); {len(tokens)} plans' greedy tokens identical")


def _record_gaps(key: str, gaps: dict[str, Any]) -> None:
    """Keep what the TL 4 leg measured (``.parity/gaps-<key>.json``), so that the numbers in
    ``docs/parity.md`` come from a file (a copy is stored under ``docs/recorded/parity/``)."""
    import importlib.metadata

    record = {**gaps, "transformer_lens": importlib.metadata.version("transformer-lens"),
              "transformers": importlib.metadata.version("transformers"),
              "command": "make test-tl4 (tests/test_parity.py)"}
    atomic_write(REFERENCE / f"gaps-{key}.json",
                 lambda p: p.write_text(json.dumps(record, indent=1, sort_keys=True)))


def test_tiny_model_parity_across_lines(tiny_folder: Path) -> None:
    _check("tiny", lambda backend: actsteer.load_model(tiny_folder, backend=backend))


@pytest.mark.slow
def test_embedded_model_parity_across_lines() -> None:
    _check("embedded", lambda backend: actsteer.load_model(backend=backend), GENERATED[:3])


def _quick_effects(tmp: Path) -> dict[str, dict[str, Any]]:
    """Every plan's paired effect on every behaviour in a reduced quick profile."""
    from actsteer.paper import multi_behaviour as mb
    from actsteer.paper.multi_behaviour.expressed import ExpressedConfig, analysis

    config = ExpressedConfig(
        out_dir=str(tmp), n_grid=6, n_test=12, candidate_layers=(6, 14), combined_layer=10,
        generate_prompts=2, generate_tokens=4, steerability_fractions=(-0.15, 0.0, 0.15),
        tax_corpus="builtin", tax_documents=2, tax_max_tokens=32, n_resamples=200)
    results = mb.run_any(config, model=actsteer.load_model(), progress=False)
    plans = sorted(key.split("plan=", 1)[1] for key in results["cells"] if "plan=" in key)
    out = {}
    for plan in plans:
        for behaviour in config.behaviours:
            effect = analysis.effect(results, plan, behaviour)
            if effect is not None:
                out[f"{plan}/{behaviour}"] = {"value": effect.value, "low": effect.low,
                                              "high": effect.high, "verdict": effect.verdict}
    assert len(out) >= 3 * len(config.behaviours), sorted(out)
    return out


@pytest.mark.slow
def test_quick_profile_parity_across_lines(tmp_path: Path) -> None:
    effects = _quick_effects(tmp_path)
    path = REFERENCE / "quick-default.json"
    if transformer_lens_major() < 4:
        assert any(e["verdict"] == "moves" for e in effects.values())  # a profile with teeth
        atomic_write(path, lambda p: p.write_text(json.dumps(effects, sort_keys=True)))
        return
    if not path.is_file():
        pytest.fail(f"no TL 3 parity reference {path}: the TL 3 leg writes it (make test)")
    reference = json.loads(path.read_text())
    assert sorted(effects) == sorted(reference)
    gaps = {name: max(abs(effects[name][k] - reference[name][k]) for k in ("value", "low",
                                                                          "high"))
            for name in effects}
    assert max(gaps.values()) <= EFFECTS, gaps
    assert {n: e["verdict"] for n, e in effects.items()} == {
        n: e["verdict"] for n, e in reference.items()}
    _record_gaps("quick-profile", {"effects_max": max(gaps.values()), "effects": len(effects),
                                   "verdicts_identical": True})
    print(f"\nparity quick profile: {len(effects)} effects, max |Δ| {max(gaps.values()):.2e}, "
          "verdicts identical")
