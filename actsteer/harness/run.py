"""Run (or resume) the harness: vectors, norms, then every cell through the executor.

Cells are keyed ``behaviour/method/strength/half`` (:func:`cell_key`), plus
``behaviour/detection``; each is stored in the results log as soon as it returns, with the
identity of the intervention that made it, so an interrupted run resumes where it stopped
and a changed intervention is generated again. Two cells with one intervention (the
unsteered reference and steering at strength 0, prompting and prompting+steering at 0) are
generated once and stored under both keys.

Example::

    from actsteer import harness
    results = harness.run(harness.profile("quick"))
    print(harness.table(results))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from actsteer.data.expressed import ExpressedBehaviour, load_expressed
from actsteer.executor import Executor, LocalExecutor, Unit, dispatch, unit
from actsteer.extraction import caa_vector
from actsteer.harness import cells, detection  # noqa: F401  (register the tasks run here)
from actsteer.harness.analysis import summarise
from actsteer.harness.config import KIND, HarnessConfig, default_layer
from actsteer.harness.instructions import HALVES, behaviour_instruction, split_instructions
from actsteer.harness.methods import METHODS, Intervention, MethodContext
from actsteer.harness.prepare import LEARN, prepare
from actsteer.likelihood import counted_words
from actsteer.models.info import backend_of, runtime_stamp
from actsteer.norms import ResidualNorms, residual_norms
from actsteer.paper.common import digest, timed
from actsteer.plain_decoding import plain_decoder
from actsteer.results import ResultStore

__all__ = ["REFERENCE", "RESULTS_FILE", "cell_key", "generator_name", "run"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "harness.jsonl"
"""The results log's name inside ``out_dir``."""
REFERENCE = "unsteered"
"""The method name of the reference cells (no plan, no instruction): the mapping's anchor."""


def cell_key(behaviour: str, method: str, strength: float, half: str) -> str:
    """``"sentiment/steering/0.1/select"``."""
    return f"{behaviour}/{method}/{strength:g}/{half}"


def generator_name(model: Any) -> str:
    """What generates the text: the backend and, on a bridge, whether it decodes on the
    plain Hugging Face view (the fast path)."""
    if backend_of(model) == "hooked":
        return "HookedTransformer (TransformerLens KV cache)"
    if plain_decoder(model, None) is not None:
        return "TransformerBridge (plain Hugging Face view, KV-cached)"
    return "TransformerBridge (bridge components, KV-cached)"


def _norms(store: ResultStore, model: Any, layer: int, batch_size: int) -> ResidualNorms:
    stored = store.extra.get("norms")
    if stored is not None:
        norms = ResidualNorms.from_dict(stored)
        norms.check_fits(model)
        return norms
    from actsteer.data.corpora import builtin_text_corpus

    corpus = builtin_text_corpus()
    texts = corpus.texts()[:8]
    norms = residual_norms(model, texts, layers=[layer], max_tokens=128, batch_size=batch_size,
                           source=f"{corpus.name} (8 documents, up to 128 tokens)")
    store.set_extra("norms", norms.to_dict())
    return norms


def _learned(contexts: dict[str, MethodContext]) -> dict[str, Any]:
    """Per behaviour: the learned vector's held-out loss curve, norm and cosine with CAA."""
    out = {}
    for name, context in contexts.items():
        vector = context.vectors["learned"]
        learned, caa = vector.at(context.layer).double(), context.vector.at(context.layer).double()
        out[name] = {"held_out_loss": vector.meta.training["held_out_loss"],
                     "norm": round(float(learned.norm()), 4),
                     "caa_norm": round(float(caa.norm()), 4),
                     "cosine_caa": round(float(learned @ caa / (learned.norm() * caa.norm())), 4)}
    return out


def _planned(config: HarnessConfig, behaviours: dict[str, ExpressedBehaviour],
             contexts: dict[str, MethodContext]) -> dict[str, tuple[str, str, Intervention]]:
    """Every generation cell: key -> (behaviour, half, intervention)."""
    out: dict[str, tuple[str, str, Intervention]] = {}
    for name in behaviours:
        for half in HALVES:
            out[cell_key(name, REFERENCE, 0.0, half)] = (name, half, Intervention())
            for method_name in config.methods:
                method = METHODS[method_name]
                for strength in method.strengths(config.strengths):
                    out[cell_key(name, method_name, strength, half)] = (
                        name, half, method.intervention(contexts[name], strength))
    return out


def run(config: HarnessConfig, model: Any = None, progress: bool = True,
        executor: Executor | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) the harness; returns its results (the log's cells and extras, the
    config and the summary that :func:`actsteer.harness.table` prints)."""
    behaviours = {b.name: b for b in (load_expressed(spec) for spec in config.behaviours)}
    prompted = any(METHODS[m].needs_instruction for m in config.methods)
    instructions = {name: behaviour_instruction(b) if prompted else None
                    for name, b in behaviours.items()}  # a missing one stops before loading
    halves = split_instructions(config.n_instructions, config.seed)
    if model is None:
        model = config.model.load()
    layer = config.layer if config.layer is not None else default_layer(int(model.cfg.n_layers))
    identity = {"behaviours": {name: digest([c for t in b.completions for c in t]
                                            + list(b.words.behaviour) + [instructions[name] or ""])
                               for name, b in behaviours.items()},
                "instructions": digest(halves["select"] + ["|"] + halves["report"])}
    store = ResultStore(Path(config.out_dir) / RESULTS_FILE,
                        {**config.results_config(), "data": identity}, overwrite=overwrite,
                        runtime=runtime_stamp(backend_of(model)))
    executor = executor if executor is not None else LocalExecutor()
    timings: dict[str, float] = {}
    try:
        executor.bind(model)
        needs = {need for m in config.methods for need in METHODS[m].needs}
        with timed(timings, "vectors and norms"):
            norms = _norms(store, model, layer, config.batch_size)
            caa = {name: caa_vector(model, b.pairs(), read="answer_mean", layers=[layer],
                                    dataset=name) for name, b in behaviours.items()}
        with timed(timings, "judged rows' vectors and edits"):
            contexts = {}
            for name, b in behaviours.items():
                vectors, edits = prepare(model, b, layer, needs, out_dir=config.out_dir,
                                         batch_size=config.batch_size, progress=progress)
                contexts[name] = MethodContext(name, caa[name], layer, norms,
                                               instructions[name], vectors, edits,
                                               int(model.cfg.n_layers))
        words = {name: counted_words(model, b.words)["behaviour"]
                 for name, b in behaviours.items()}
        with timed(timings, "cells"):
            _run_cells(config, store, executor, _planned(config, behaviours, contexts),
                       halves, words, contexts, behaviours, layer, progress)
        for key, value in (("kind", KIND), ("behaviours", list(behaviours)),
                           ("layer", layer), ("halves", halves), ("words", words),
                           ("instructions_asked", instructions),
                           ("generator", generator_name(model)), ("timings", timings),
                           *((("learn", asdict(LEARN)), ("learned", _learned(contexts)))
                             if "learned" in needs else ())):
            store.set_extra(key, value)
        results = {**dict(store.extra), "config": config.to_dict(), "cells": dict(store.cells),
                   "path": str(store.path)}
    finally:
        store.close()
    results["summary"] = summarise(results)
    return results


def _run_cells(config: HarnessConfig, store: ResultStore, executor: Executor,
               planned: dict[str, tuple[str, str, Intervention]], halves: dict[str, list[str]],
               words: dict[str, list[str]], contexts: dict[str, MethodContext],
               behaviours: dict[str, ExpressedBehaviour], layer: int, progress: bool) -> None:
    groups: dict[tuple[str, str, str], list[str]] = {}
    for key, (name, half, intervention) in planned.items():
        found = store.cells.get(key)
        if found is None or found.get("id") != intervention.identity():
            groups.setdefault((name, half, intervention.identity()), []).append(key)
    jobs: list[tuple[Unit, Callable[[Any], None]]] = []
    for (name, half, ident), keys in groups.items():
        intervention = planned[keys[0]][2]
        payload = {"instructions": halves[half], "intervention": intervention,
                   "words": words[name], "max_new_tokens": config.max_new_tokens,
                   "vader": name == "sentiment", "batch_size": config.batch_size}

        def record(result: Any, keys: list[str] = keys, ident: str = ident,
                   described: str = intervention.describe()) -> None:
            for key in keys:
                store.put(key, {"id": ident, "intervention": described, **result})

        jobs.append((unit("harness-cell", payload, key=keys[0]), record))
    others = sorted({str(METHODS[m].detection) for m in config.methods} & {"pca", "probe"})
    for name, behaviour in behaviours.items():
        key = f"{name}/detection"
        learned = contexts[name].vectors.get("learned")
        wanted = set(others) | ({"learned"} if learned is not None else set())
        found = store.cells.get(key)
        if (found is not None and found.get("layer") == layer
                and wanted <= set(found.get("by_vector", {}))):
            continue

        def put(result: Any, key: str = key) -> None:
            store.put(key, result)

        jobs.append((unit("harness-detection", {
            "behaviour": behaviour, "layer": layer, "folds": config.detection_folds,
            "seed": config.seed, "batch_size": config.batch_size, "others": others,
            "learned": None if learned is None else (
                learned.at(layer), learned.meta.training["held_out_pairs"])}, key=key), put))
    dispatch(executor, jobs, progress=progress, desc=f"harness ({len(jobs)} units)")
