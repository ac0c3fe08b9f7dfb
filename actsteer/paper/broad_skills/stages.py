"""The broad-skills experiment, step by step (van der Weij, Poesio & Schoots 2024, §2).

1. **corpora** — text, general code and Python, split into disjoint training and
   validation documents (:func:`~actsteer.paper.broad_skills.corpora.build_corpora`);
2. **vectors** — corpus means of each document's last-token block output (``resid_post``)
   at every layer: ``general = mean(text) − mean(code)``, ``python = mean(text) −
   mean(python)``, not normalised; controls with the same norm per layer (entries
   permuted, the paper's control, or a random direction). Saved under ``out_dir/vectors``
   and reused while their stamp (model and documents) matches;
3. **baseline** — unsteered next-token top-1/top-k accuracy on ``text``, ``code``
   (non-Python) and ``python`` validation documents;
4. **sweep** — per layer × vector, the vector added at every position with an increasing
   coefficient, every evaluation set scored at each, stopping after the first coefficient
   where the skill's relative top-1 falls below ``stop_below``;
5. **headline** — the relative text accuracy at the interpolated coefficient where the
   skill's accuracy is halved, with a bootstrap interval over documents.

Every coefficient (and vector, and layer) is scored on the SAME validation documents,
tokenised once; the paper streamed its data, so its curves also moved with the documents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from actsteer.accuracy import DocumentAccuracy, Documents, accuracy_sweep
from actsteer.batching import encode_many
from actsteer.data.corpora import PYTHON, TEXT
from actsteer.extraction import corpus_mean
from actsteer.models import model_info
from actsteer.paper.broad_skills.config import BASE_VECTORS, EVAL_SETS, BroadSkillsConfig
from actsteer.paper.broad_skills.corpora import SkillCorpora, build_corpora
from actsteer.paper.broad_skills.curves import (
    adaptive_sweep,
    bootstrap_half_skill,
    other_of,
    paired_relative,
    skill_of,
)
from actsteer.paper.broad_skills.keys import BaselineKey, SweepKey
from actsteer.paper.common import VectorCache, check_layers, scale_layer
from actsteer.plan import empty_plan, single
from actsteer.results import ResultStore
from actsteer.sweep import PrefixCache
from actsteer.vector import SteeringVector, VectorMeta

logger = logging.getLogger(__name__)

RESULTS_FILE = "broad_skills.jsonl"
PAPER_LAYER = 15


def skill_vectors(model: Any, corpora: SkillCorpora, config: BroadSkillsConfig,
                  *, progress: bool = False) -> dict[str, SteeringVector]:
    """``general = mean(text) − mean(code)`` and ``python = mean(text) − mean(python)``
    (last-token ``resid_post`` at every layer, one pass per corpus) plus the controls
    named in ``config.vectors``."""
    layers = tuple(range(int(model.cfg.n_layers)))
    means = {name: corpus_mean(model, corpora.train[name].texts(), layers=layers,
                               read="last", max_tokens=config.max_tokens,
                               batch_size=config.batch_size, progress=progress,
                               desc=f"mean of {name}")
             for name in (TEXT, "code", PYTHON)}
    info = model_info(model)
    out: dict[str, SteeringVector] = {}
    for base, minus in (("general", "code"), ("python", PYTHON)):
        meta = VectorMeta(model=info.name, backend=info.backend,
                          weight_processing=info.weight_processing,
                          model_n_layers=info.n_layers, read_position="last",
                          method="corpus_mean_diff", dataset=f"text-minus-{minus}",
                          n_items=len(corpora.train[TEXT]) + len(corpora.train[minus]))
        out[base] = SteeringVector(means[TEXT] - means[minus], layers, "resid_post", meta)
    for name in config.vectors:
        if name in out:
            continue
        base, control = name.split("_", 1)
        out[name] = (out[base].permuted(config.seed) if control == "permuted"
                     else out[base].random_like(config.seed))
    return {name: out[name] for name in dict.fromkeys((*BASE_VECTORS, *config.vectors))}


def load_or_extract(model: Any, corpora: SkillCorpora, config: BroadSkillsConfig,
                    progress: bool) -> dict[str, SteeringVector]:
    """The saved vectors when every one's stamp matches this model and these documents,
    else all of them extracted again (they come from the same corpus means)."""
    cache = VectorCache(Path(config.out_dir) / "vectors")
    stamp = f"{config.model.name} {corpora.fingerprint()}"
    wanted = list(dict.fromkeys((*BASE_VECTORS, *config.vectors)))
    found = {name: cache.get(name, stamp, model) for name in wanted}
    if all(v is not None for v in found.values()):
        logger.info("reusing vectors in %s", cache.folder)
        return {k: v for k, v in found.items() if v is not None}
    return {name: cache.put(name, vector, stamp)
            for name, vector in skill_vectors(model, corpora, config, progress=progress).items()}


def is_swept(config: BroadSkillsConfig, vector: str, layer: int) -> bool:
    """Whether ``vector`` is swept at ``layer`` (controls only at ``control_layers``)."""
    return vector in BASE_VECTORS or config.control_layers is None or (
        layer in config.control_layers)


def eval_documents(model: Any, texts: Sequence[str], config: BroadSkillsConfig) -> Documents:
    """Tokenise once, truncate to ``max_tokens``, drop documents under 2 tokens, and pad
    into right-padded, length-bucketed batches."""
    sequences = [ids[: config.max_tokens] for ids in encode_many(model, list(texts))]
    return Documents.build(model, [s for s in sequences if len(s) >= 2],
                           batch_size=config.batch_size)


def accuracy_cell(acc: DocumentAccuracy, base: DocumentAccuracy | None,
                  config: BroadSkillsConfig) -> dict[str, Any]:
    """Accuracies with intervals, per-document counts and (against ``base``) relative
    accuracy with a paired bootstrap interval over documents."""
    cell: dict[str, Any] = {
        "top1": acc.estimate("top1", n_resamples=config.n_resamples, seed=config.seed).as_dict(),
        "topk": acc.estimate("topk", n_resamples=config.n_resamples, seed=config.seed).as_dict(),
        "top1_docs": acc.top1.tolist(),
        "topk_docs": acc.topk.tolist(),
    }
    if base is not None:
        for metric, ours, theirs in (("top1", acc.top1, base.top1), ("topk", acc.topk, base.topk)):
            if int(theirs.sum()) == 0:  # e.g. a random model: relative accuracy undefined
                nan = float("nan")
                cell[f"rel_{metric}"] = {"value": nan, "low": nan, "high": nan,
                                         "n": len(ours)}
                continue
            cell[f"rel_{metric}"] = paired_relative(
                ours, theirs, acc.tokens, n_resamples=config.n_resamples,
                seed=config.seed).as_dict()
    return cell


def _from_cell(cell: Mapping[str, Any], tokens: torch.Tensor, k: int) -> DocumentAccuracy:
    return DocumentAccuracy(torch.tensor(cell["top1_docs"]), torch.tensor(cell["topk_docs"]),
                            tokens, k)


def headline(store: ResultStore, evals: Mapping[str, Documents], config: BroadSkillsConfig,
             layers: Sequence[int]) -> dict[str, Any]:
    """Half-skill point per layer × vector: interpolated coefficient where the skill's
    relative top-1 is halved, and relative text top-1 (and other code set) there."""
    base = store.get(str(BaselineKey()))
    out: dict[str, Any] = {}
    for layer in layers:
        for vector in config.vectors:
            if not is_swept(config, vector, layer):
                continue
            skill, other = skill_of(vector), other_of(vector)
            coefs = [c for c in config.coefficients
                     if c == 0 or store.has(str(SweepKey(vector, layer, c)))]
            cells = [base if c == 0 else store.get(str(SweepKey(vector, layer, c)))
                     for c in coefs]

            def docs(name: str, cells: list[Any] = cells) -> torch.Tensor:
                return torch.tensor([cell[name]["top1_docs"] for cell in cells])

            entry: dict[str, Any] = {"vector": vector, "layer": layer, "skill": skill,
                                     "coefficients": coefs}
            for label, companion in ((TEXT, TEXT), ("other", other)):
                if min(sum(base[skill]["top1_docs"]), sum(base[companion]["top1_docs"])) == 0:
                    entry[label] = None  # no unsteered hit: relative accuracy undefined
                    continue
                found = bootstrap_half_skill(
                    coefs, docs(skill), evals[skill].tokens, docs(companion),
                    evals[companion].tokens, n_resamples=config.n_resamples,
                    seed=config.seed)
                entry[label] = None if found is None else found.as_dict()
            out[f"{vector}/L{layer}"] = entry
    return out


def run(config: BroadSkillsConfig, *, model: Any = None, progress: bool = True,
        overwrite: bool = False, corpora: SkillCorpora | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment; returns a JSON-ready results dict with ``config``,
    ``cells``, ``headline``, ``language_mix``, ``timings`` and ``layers``.

    Corpora, model and layers are loaded and checked before the results file is written;
    a file made with another config raises unless ``overwrite``, which starts afresh.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    corpora = corpora if corpora is not None else build_corpora(config)
    timings["corpora_s"] = time.perf_counter() - start
    step = time.perf_counter()
    if model is None:
        model = config.model.load()
    timings["load_model_s"] = time.perf_counter() - step
    n_layers = int(model.cfg.n_layers)
    layers = list(config.layers) if config.layers is not None else [
        scale_layer(PAPER_LAYER, n_layers)]
    check_layers(n_layers, (("layer", layer) for layer in layers))
    # The documents are part of what determines results: text_path=None or code_roots=None
    # can resolve to other files on another machine with the same config.
    store = ResultStore(Path(config.out_dir) / RESULTS_FILE,
                        config={**config.results_config(), "corpora": corpora.fingerprint()},
                        overwrite=overwrite)
    try:
        return _steps(store, model, corpora, config, layers, timings, start, progress)
    finally:
        store.close()


def _steps(store: ResultStore, model: Any, corpora: SkillCorpora, config: BroadSkillsConfig,
           layers: list[int], timings: dict[str, float], start: float,
           progress: bool) -> dict[str, Any]:
    mix = corpora.language_mix()
    store.set_extra("language_mix", mix)

    step = time.perf_counter()
    vectors = load_or_extract(model, corpora, config, progress)
    store.set_extra("vector_norms", {name: {str(layer): v.norms()[layer] for layer in layers}
                                     for name, v in vectors.items()})
    timings["vectors_s"] = time.perf_counter() - step

    evals = {name: eval_documents(model, corpora.valid[name].texts(), config)
             for name in EVAL_SETS}
    caches = {name: PrefixCache(config.prefix_cache_mb * 2**20 // len(EVAL_SETS))
              for name in EVAL_SETS}

    step = time.perf_counter()
    baseline_key = str(BaselineKey())
    if not store.has(baseline_key):
        store.put(baseline_key, {
            name: {**accuracy_cell(accuracy_sweep(model, docs, [empty_plan()], k=config.k,
                                                  cache=caches[name])[0], None, config),
                   "n_docs": len(docs), "n_tokens": int(docs.tokens.sum())}
            for name, docs in evals.items()})
    baseline = {name: _from_cell(store.get(baseline_key)[name], docs.tokens, config.k)
                for name, docs in evals.items()}
    timings["baseline_s"] = time.perf_counter() - step

    step = time.perf_counter()
    jobs = [(layer, vector) for layer in layers for vector in config.vectors
            if is_swept(config, vector, layer)]
    for layer, vector in tqdm(jobs, desc="broad-skill sweeps", disable=not progress):
        skill = skill_of(vector)

        def evaluate(coefficient: float, layer: int = layer, vector: str = vector,
                     skill: str = skill) -> float:
            if coefficient == 0:
                return 1.0
            key = str(SweepKey(vector, layer, coefficient))
            if not store.has(key):
                began = time.perf_counter()
                plan = single(vectors[vector], layer, coefficient, label=vector)
                cell: dict[str, Any] = {"vector": vector, "layer": layer,
                                        "coefficient": coefficient,
                                        "plan_id": plan.identity()}
                for name, docs in evals.items():
                    (acc,) = accuracy_sweep(model, docs, [plan], k=config.k,
                                            cache=caches[name])
                    cell[name] = accuracy_cell(acc, baseline[name], config)
                cell["seconds"] = time.perf_counter() - began
                store.put(key, cell)
                logger.info("%s: %s", key, ", ".join(
                    f"{n} {cell[n]['rel_top1']['value']:.2f}" for n in evals))
            value = store.get(key)[skill]["rel_top1"]["value"]
            return float("nan") if value is None else float(value)

        adaptive_sweep(config.coefficients, evaluate, stop_below=config.stop_below)
    for cache in caches.values():
        cache.clear()
    timings["sweep_s"] = time.perf_counter() - step

    heads = headline(store, evals, config, layers)
    store.set_extra("layers", layers)
    store.set_extra("headline", heads)
    timings["total_s"] = time.perf_counter() - start
    timings["process_cpu_s"] = time.process_time()  # CPU of this process (all threads)
    store.set_extra("timings", timings)
    return {"config": config.to_dict(), "layers": layers, "cells": dict(store.cells),
            "headline": heads, "language_mix": mix, "timings": timings,
            "vector_norms": store.extra["vector_norms"], "path": str(store.path)}
