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
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from actsteer.accuracy import DocumentAccuracy, Documents, accuracy_sweep
from actsteer.batching import encode_many
from actsteer.data.corpora import PYTHON, TEXT
from actsteer.executor import Executor, LocalExecutor, Shard, Unit, dispatch, register_task, unit
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


@register_task("broad-skills-sweep")
def skill_sweep(model: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """One vector at one layer over the coefficient schedule, every evaluation set scored
    at each coefficient, stopped as :func:`adaptive_sweep` stops (the skill's top-1
    relative to the unsteered ``baseline`` hits, below ``stop_below``, or undefined).

    Coefficients in ``known`` (already in the results) are not scored again; their
    relative skill accuracy is used for the stopping rule. Each evaluation set keeps its
    unsteered stream entering the steered block (a :class:`PrefixCache` of
    ``cache_bytes``), so every coefficient runs only the blocks from the layer on.
    Returns ``{"accuracy": {coefficient: {set: DocumentAccuracy}}, "seconds": {...}}``.
    """
    documents = {name: Documents.build(model, sequences, batch_size=payload["batch_size"])
                 for name, sequences in payload["documents"].items()}
    caches = {name: PrefixCache(payload["cache_bytes"]) for name in documents}
    plans, known = payload["plans"], payload["known"]
    skill, baseline = payload["skill"], payload["baseline"]
    scored: dict[float, dict[str, DocumentAccuracy]] = {}
    seconds: dict[float, float] = {}

    def evaluate(coefficient: float) -> float:
        if coefficient == 0:
            return 1.0
        if coefficient in known:
            return float(known[coefficient])
        began = time.perf_counter()
        scored[coefficient] = {
            name: accuracy_sweep(model, docs, [plans[coefficient]], k=payload["k"],
                                 cache=caches[name])[0]
            for name, docs in documents.items()}
        seconds[coefficient] = time.perf_counter() - began
        if baseline == 0:
            return float("nan")
        return float(scored[coefficient][skill].top1.sum()) / baseline

    adaptive_sweep(payload["coefficients"], evaluate, stop_below=payload["stop_below"])
    return {"accuracy": scored, "seconds": seconds}


def _stored_rel(store: ResultStore, key: str, skill: str) -> float:
    value = store.get(key)[skill]["rel_top1"]["value"]
    return float("nan") if value is None else float(value)


def sweep_job(store: ResultStore, config: BroadSkillsConfig, vector: SteeringVector,
              name: str, layer: int, evals: Mapping[str, Documents],
              baseline: Mapping[str, DocumentAccuracy]) -> tuple[Unit, Any] | None:
    """The unit sweeping ``name`` at ``layer`` from where the log stops (None when the
    log already holds the whole sweep), and the callback that stores its cells."""
    skill = skill_of(name)
    known = {c: _stored_rel(store, str(SweepKey(name, layer, c)), skill)
             for c in config.coefficients
             if c != 0 and store.has(str(SweepKey(name, layer, c)))}
    for coefficient in config.coefficients[1:]:  # where adaptive_sweep would stop
        if coefficient not in known:
            break
        if math.isnan(known[coefficient]) or known[coefficient] < config.stop_below:
            return None
    else:
        return None  # the stored cells reach the end of the schedule
    plans = {c: single(vector, layer, c, label=name) for c in config.coefficients
             if c != 0 and c not in known}

    def record(result: Mapping[str, Any]) -> None:
        for coefficient, accuracies in sorted(result["accuracy"].items()):
            plan = plans[coefficient]
            cell: dict[str, Any] = {"vector": name, "layer": layer,
                                    "coefficient": coefficient, "plan_id": plan.identity()}
            for set_name, acc in accuracies.items():
                cell[set_name] = accuracy_cell(acc, baseline[set_name], config)
            cell["seconds"] = result["seconds"][coefficient]
            key = str(SweepKey(name, layer, coefficient))
            store.put(key, cell)
            logger.info("%s: %s", key, ", ".join(
                f"{n} {cell[n]['rel_top1']['value']:.2f}" for n in evals))

    return unit("broad-skills-sweep", {
        "documents": {n: [list(s) for s in docs.sequences] for n, docs in evals.items()},
        "batch_size": config.batch_size, "k": config.k,
        "cache_bytes": config.prefix_cache_mb * 2**20 // len(EVAL_SETS),
        "plans": plans, "known": known, "skill": skill,
        "baseline": int(baseline[skill].top1.sum()),
        "coefficients": config.coefficients, "stop_below": config.stop_below},
        key=f"sweep/{name}/L{layer}"), record


def run(config: BroadSkillsConfig, *, model: Any = None, progress: bool = True,
        overwrite: bool = False, corpora: SkillCorpora | None = None,
        executor: Executor | None = None, shard: Shard | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment; returns a JSON-ready results dict with ``config``,
    ``cells``, ``headline``, ``language_mix``, ``timings`` and ``layers``.

    Corpora, model and layers are loaded and checked before the results file is written;
    a file made with another config raises unless ``overwrite``, which starts afresh.

    ``executor`` runs the units (:mod:`actsteer.executor`; None: in this process): the
    baseline is one unit per evaluation set, and each vector at each layer one unit that
    sweeps its coefficients and stops as the schedule says. With ``shard``, only that
    share of the sweeps runs (the baseline in every shard) and the run stops before the
    headline: merge the shards' logs (:func:`actsteer.results.merge_results`) into the
    output folder and run the same config again to finish, which scores nothing more.
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
                        overwrite=overwrite, runtime=config.model.runtime())
    executor = executor if executor is not None else LocalExecutor()
    try:
        executor.bind(model)
        return _steps(store, model, corpora, config, layers, timings, start, progress,
                      executor, shard)
    finally:
        store.close()


def _steps(store: ResultStore, model: Any, corpora: SkillCorpora, config: BroadSkillsConfig,
           layers: list[int], timings: dict[str, float], start: float,
           progress: bool, executor: Executor, shard: Shard | None) -> dict[str, Any]:
    mix = corpora.language_mix()
    store.set_extra("language_mix", mix)

    step = time.perf_counter()
    vectors = load_or_extract(model, corpora, config, progress)
    store.set_extra("vector_norms", {name: {str(layer): v.norms()[layer] for layer in layers}
                                     for name, v in vectors.items()})
    timings["vectors_s"] = time.perf_counter() - step

    evals = {name: eval_documents(model, corpora.valid[name].texts(), config)
             for name in EVAL_SETS}

    step = time.perf_counter()
    baseline_key = str(BaselineKey())
    if not store.has(baseline_key):
        found: dict[str, dict[str, Any]] = {}

        def record(name: str) -> Callable[[list[DocumentAccuracy]], None]:
            def keep(scored: list[DocumentAccuracy]) -> None:
                docs = evals[name]
                found[name] = {**accuracy_cell(scored[0], None, config),
                               "n_docs": len(docs), "n_tokens": int(docs.tokens.sum())}
            return keep

        dispatch(executor, [(unit("accuracy", {
            "sequences": [list(s) for s in docs.sequences], "plans": [empty_plan()],
            "batch_size": config.batch_size, "k": config.k}, key=f"baseline/{name}"),
            record(name)) for name, docs in evals.items()], progress=progress, desc="baseline")
        store.put(baseline_key, {name: found[name] for name in evals})
    baseline = {name: _from_cell(store.get(baseline_key)[name], docs.tokens, config.k)
                for name, docs in evals.items()}
    timings["baseline_s"] = time.perf_counter() - step

    step = time.perf_counter()
    jobs = [(layer, vector) for layer in layers for vector in config.vectors
            if is_swept(config, vector, layer)]
    if shard is not None:
        jobs = [(layer, vector) for layer, vector in jobs
                if shard.owns(f"sweep/{vector}/L{layer}")]
    units = [job for layer, name in jobs
             if (job := sweep_job(store, config, vectors[name], name, layer, evals,
                                  baseline)) is not None]
    dispatch(executor, units, progress=progress, desc="broad-skill sweeps")
    timings["sweep_s"] = time.perf_counter() - step
    if shard is not None:
        logger.info("shard %d of %d done (%d sweeps); merge the shards' logs and run again "
                    "to finish", shard.index, shard.count, len(jobs))
        return {"config": config.to_dict(), "layers": layers, "cells": dict(store.cells),
                "shard": [shard.index, shard.count], "path": str(store.path)}

    heads = headline(store, evals, config, layers)
    store.set_extra("layers", layers)
    store.set_extra("headline", heads)
    timings["total_s"] = time.perf_counter() - start
    timings["process_cpu_s"] = time.process_time()  # CPU of this process (all threads)
    store.set_extra("timings", timings)
    return {"config": config.to_dict(), "layers": layers, "cells": dict(store.cells),
            "headline": heads, "language_mix": mix, "timings": timings,
            "vector_norms": store.extra["vector_norms"], "path": str(store.path)}
