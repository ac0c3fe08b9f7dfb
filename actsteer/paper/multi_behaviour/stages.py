"""The multi-behaviour experiment, step by step (van der Weij, Poesio & Schoots 2024, §3-4).

1. **vectors** — a CAA vector per behaviour (every layer, with its extraction diagnostics)
   from the vector split, saved to ``out_dir/vectors/`` and reused while its stamp matches
   (or a vector file given in ``vector_files``);
2. **default** — the unsteered model on the grid and test splits;
3. **grid** — per behaviour, layers × multipliers on the grid split, each layer swept
   outward from 0 in each direction and stopped at the first failed cell (collapse, or
   more faulty answers than allowed); a setting is chosen only when its paired effect
   moves the behaviour the intended way (:mod:`~actsteer.paper.multi_behaviour.choose`);
4. **individual** — each behaviour on its test split with its chosen settings;
5. **combined** — one vector from all behaviours at one layer, added and subtracted,
   scored on every behaviour;
6. **simultaneous** — each behaviour's vector at its own layer, one global scale, scored
   on the grid split (a positive scale is chosen per behaviour by the same rule) and the
   test split;
7. **letter-free** (:mod:`~actsteer.paper.multi_behaviour.beyond`, as the tax) — the
   reported plans measured on the answer *texts* of the test items
   (no letters: log P(matching text) − log P(other text), :mod:`actsteer.likelihood`);
8. **steerability** — per-item propensity slopes of each behaviour's own vector at every
   profiled layer (Tan et al. 2024), on the test split;
9. **alignment tax** — next-token top-1 accuracy on text under the simultaneous plan.

Every cell is stored as soon as it is scored, under a typed key, the identity of the plan
that made it and its paired effects against the unsteered model on the same items, so an
interrupted run resumes and a changed plan is scored again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actsteer.data.behaviours.texts import letter_free_pairs
from actsteer.evaluation import ABScores
from actsteer.executor import Executor, LocalExecutor
from actsteer.extraction import caa_vector
from actsteer.paper.common import ConfigError, VectorCache, file_digest, timed
from actsteer.paper.keys import CellKey
from actsteer.paper.multi_behaviour import choose as decide
from actsteer.paper.multi_behaviour.beyond import alignment_tax, score_letter_free
from actsteer.paper.multi_behaviour.cells import (
    Job,
    Layers,
    Run,
    cell_effects,
    cell_of,
    fresh,
    simultaneous_plan,
)
from actsteer.paper.multi_behaviour.config import MultiBehaviourConfig
from actsteer.paper.multi_behaviour.data import (
    data_identity,
    load_datasets,
    load_tax_texts,
    prepare,
    split_dataset,
)
from actsteer.paper.multi_behaviour.keys import (
    DIRECTIONS,
    CombinedKey,
    DefaultKey,
    GridKey,
    IndividualKey,
    SimultaneousKey,
)
from actsteer.paper.multi_behaviour.steerability import steerability_profile
from actsteer.plan import SteeringPlan, empty_plan, single
from actsteer.results import ResultStore
from actsteer.vector import SteeringVector

logger = logging.getLogger(__name__)

RESULTS_FILE = "multi_behaviour.jsonl"


def open_run(config: MultiBehaviourConfig, model: Any, progress: bool,
             overwrite: bool = False, executor: Executor | None = None) -> Run:
    """Load and check everything, then open the results store.

    Data, model and layers are checked before the results file is written, so a typo
    in a model name or a layer leaves nothing behind that would block the corrected run.
    The executor's workers start loading the model while the driver extracts vectors.
    """
    timings: dict[str, float] = {}
    with timed(timings, "load"):
        datasets = load_datasets(config)
        splits = {b: split_dataset(d, config) for b, d in datasets.items()}
        if config.balance_letters:
            _check_balanced(config, splits)
        texts = load_tax_texts(config)
        if model is None:
            model = config.model.load()
        layers = Layers.resolve(config, list(splits), int(model.cfg.n_layers))
        data = {b: {name: prepare(model, getattr(split, name), config.prompt_format)
                    for name in ("grid", "test")} for b, split in splits.items()}
        identity = data_identity(splits, texts)
        identity["vector_files"] = {b: file_digest(f)
                                    for b, f in (config.vector_files or {}).items()}
        store = ResultStore(Path(config.out_dir) / RESULTS_FILE,
                            {**config.results_config(), "data": identity},
                            overwrite=overwrite, runtime=config.model.runtime())
        store.flush()  # the identity is on disk before any vector is saved beside it
    executor = executor if executor is not None else LocalExecutor()
    executor.bind(model)
    return Run(config, model, store, splits, layers, texts, progress, executor, data,
               timings=timings)


def _check_balanced(config: MultiBehaviourConfig, splits: Mapping[str, Any]) -> None:
    """With ``balance_letters``, each extracted vector needs two balanced pairs at least."""
    given = config.vector_files or {}
    for behaviour, split in splits.items():
        if behaviour in given:
            continue
        kept = len(split.vector.letter_balanced())
        if kept < 2:
            raise ConfigError(
                f"balance_letters=True leaves {kept} of the {len(split.vector)} vector items "
                f"of {behaviour} (matching answers {split.vector.balance_report()}); raise "
                "n_vector or set balance_letters=false")
        logger.info("%s: %d of %d vector items are letter-balanced", behaviour, kept,
                    len(split.vector))


def extract_vectors(run: Run) -> None:
    config, model = run.config, run.model
    cache = VectorCache(Path(config.out_dir) / "vectors")
    identity = run.store.config["data"]["behaviours"]
    given = dict(config.vector_files or {})
    for behaviour, split in run.splits.items():
        if behaviour in given:
            run.vectors[behaviour] = SteeringVector.load(given[behaviour], model=model)
            continue
        stamp = (f"{config.model.name} {config.prompt_format} {config.read_position} "
                 f"{identity[behaviour]['vector']}"
                 + (" letter-balanced" if config.balance_letters else "")
                 + " stratified-diagnostics")
        if config.vector_source == "texts":
            stamp += " answer-texts"
        vector = cache.get(behaviour, stamp, model)
        if vector is None:
            items = split.vector.letter_balanced() if config.balance_letters else split.vector
            if config.vector_source == "texts":
                # no letter in the pairs, so nothing to stratify the diagnostics by
                pairs = letter_free_pairs(items, config.prompt_format,  # type: ignore[arg-type]
                                          model.tokenizer)
                read, strata = "answer_mean", None
            else:
                pairs = items.pairs(config.prompt_format, model.tokenizer)  # type: ignore[arg-type]
                read, strata = config.read_position, [item.matching for item in items]
            vector = cache.put(behaviour, caa_vector(
                model, pairs, dataset=behaviour, read=read,  # type: ignore[arg-type]
                strata=strata, batch_size=config.batch_size, progress=run.progress), stamp)
        run.vectors[behaviour] = vector


def score_defaults(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    splits = ("grid", "test")
    run.execute([job for b in run.behaviours for split in splits
                 for job in run.cell_jobs(b, split, [(DefaultKey(b, split), empty_plan(), {})])],
                "default")
    return {b: {split: run.store.get(str(DefaultKey(b, split))) for split in splits}
            for b in run.behaviours}


def ladders(config: MultiBehaviourConfig) -> dict[int, list[float]]:
    """Each direction's multipliers (``-1``, ``1``), outward from 0."""
    return {direction: sorted((m for m in config.grid_multipliers
                               if math.copysign(1, m) == direction), key=abs)
            for direction in (-1, 1)}


def grid_job(run: Run, behaviour: str, layer: int, base: Mapping[str, Any]) -> list[Job]:
    """One unit with the whole ladder of ``layer`` that is still to be scored, both
    directions (every plan starts at ``layer``, so one pass computes the blocks below it
    once for all). When it returns, each direction's cells are stored outward from 0 up
    to and including the first failed one; later cells were computed for nothing and are
    dropped, so the log holds what a cell-by-cell search would have scored."""
    vector, config = run.vectors[behaviour], run.config
    needed: dict[float, SteeringPlan] = {}
    for ladder in ladders(config).values():
        for position, multiplier in enumerate(ladder):
            key = GridKey(behaviour, layer, multiplier)
            if not fresh(run.store, key, single(vector, layer, multiplier)):
                needed.update({m: single(vector, layer, m) for m in ladder[position:]})
                break
            if decide.failure(run.store.get(str(key)), base, config):
                break
    if not needed:
        return []
    order = list(needed)

    def record(rows: list[int], scores: ABScores) -> None:
        del rows  # one unit: every plan, in order
        for direction, ladder in ladders(config).items():
            for multiplier in ladder:
                key = GridKey(behaviour, layer, multiplier)
                if multiplier in needed:
                    cell = cell_of(scores, order.index(multiplier), config, needed[multiplier],
                                   layer=layer, multiplier=multiplier, direction=direction)
                    cell["effects"] = cell_effects(cell, run.store.get(str(DefaultKey(
                        behaviour, "grid"))), direction, config.n_resamples)
                    failed = decide.failure(cell, base, config)
                    if failed:  # the reason is in the file (a cell that did not fail has none)
                        cell["failed"] = failed
                    run.store.put(str(key), cell)
                else:  # fresh in the log
                    cell = run.store.get(str(key))
                if decide.failure(cell, base, config):
                    break

    return run.score_jobs(behaviour, "grid", [needed[m] for m in order],
                          f"grid/{behaviour}/L{layer}", record)


def grid_search(run: Run, defaults: Mapping[str, Mapping[str, Any]]
                ) -> dict[str, dict[str, Any]]:
    """Each layer's ladder of multipliers outward from 0, stopped at the first failed
    cell (every layer of every behaviour is one unit, all submitted at once); returns
    the subtract/add choice per behaviour (with its evidence or reason)."""
    config = run.config
    for behaviour in run.behaviours:
        base = defaults[behaviour]["grid"]
        if base["top_answer_share"] > config.max_top_share:
            logger.warning(
                "%s: the unsteered model already gives one answer for %.0f%% of grid items, "
                "so mode collapse cannot be detected; stopping on faulty answers only",
                behaviour, 100 * base["top_answer_share"])
    run.execute([job for behaviour in run.behaviours for layer in run.layers.grid
                 for job in grid_job(run, behaviour, layer, defaults[behaviour]["grid"])],
                "grid")
    chosen: dict[str, dict[str, Any]] = {}
    for behaviour in run.behaviours:
        base = defaults[behaviour]["grid"]
        tried: list[dict[str, Any]] = []
        for layer in run.layers.grid:
            for ladder in ladders(config).values():
                for multiplier in ladder:
                    key = GridKey(behaviour, layer, multiplier)
                    cell = run.store.get(str(key))
                    failed = decide.failure(cell, base, config)
                    if cell.get("failed") != failed:
                        cell = {**cell, "failed": failed}
                        run.store.put(str(key), cell)  # the reason is in the file too
                    tried.append(cell)
                    if failed:
                        logger.info("%s: %s; stopping this direction", key, failed)
                        break
        chosen[behaviour] = {name: decide.choose(tried, int(sign), config.choose_metric)
                             for name, sign in DIRECTIONS.items()}
        logger.info("%s: subtract %s; add %s", behaviour,
                    *(decide.describe_pick(chosen[behaviour][d]) for d in DIRECTIONS))
    run.store.set_extra("chosen", chosen)
    return chosen


def score_individual(run: Run, chosen: Mapping[str, Mapping[str, Any]]) -> None:
    jobs: list[tuple[str, list[tuple[CellKey, SteeringPlan, Mapping[str, Any]]]]] = []
    for behaviour in run.behaviours:
        wanted: list[tuple[CellKey, SteeringPlan, Mapping[str, Any]]] = []
        for direction, sign in DIRECTIONS.items():
            pick = chosen[behaviour][direction]
            if not pick["steerable"]:
                logger.warning("%s, %s: %s", behaviour, direction, decide.describe_pick(pick))
                continue
            plan = single(run.vectors[behaviour], pick["layer"], pick["multiplier"])
            wanted.append((IndividualKey(behaviour, direction), plan,
                           {"layer": pick["layer"], "multiplier": pick["multiplier"],
                            "direction": int(sign)}))
        jobs.append((behaviour, wanted))
    parts = run.parts(len(jobs))
    run.execute([job for behaviour, wanted in jobs
                 for job in run.cell_jobs(behaviour, "test", wanted, parts)], "individual")


def score_combined(run: Run, coefficients: Mapping[str, float]) -> None:
    layer = run.layers.combined
    plans = [(variant, direction, decide.combined_plan(run.vectors, layer, variant,
                                                       coefficients, sign))
             for variant in run.config.combined_variants
             for direction, sign in DIRECTIONS.items()]
    parts = run.parts(len(run.behaviours))
    run.execute([job for behaviour in run.behaviours for job in run.cell_jobs(
        behaviour, "test", [
            (CombinedKey(variant, direction, behaviour), plan,
             {"layer": layer, "variant": variant, "direction": int(DIRECTIONS[direction])})
            for variant, direction, plan in plans], parts)], "combined")


def score_simultaneous(run: Run, coefficients: Mapping[str, float]
                       ) -> dict[str, dict[str, Any]]:
    """Every scale on both splits; per behaviour, the positive scale chosen on the grid
    split by the grid's rule (its effect must move the behaviour up)."""
    plans = [(scale, simultaneous_plan(run, coefficients, scale))
             for scale in run.config.scales if scale != 0]

    def wanted(behaviour: str, split: str) -> list[tuple[CellKey, SteeringPlan,
                                                          dict[str, Any]]]:
        return [(SimultaneousKey(scale, behaviour, split), plan,
                 {"scale": scale, "direction": 1 if scale > 0 else -1})
                for scale, plan in plans]

    parts = run.parts(2 * len(run.behaviours))
    run.execute([job for behaviour in run.behaviours for split in ("grid", "test")
                 for job in run.cell_jobs(behaviour, split, wanted(behaviour, split), parts)],
                "simultaneous")
    chosen: dict[str, dict[str, Any]] = {}
    for behaviour in run.behaviours:
        found = [run.store.get(str(key)) for key, _, _ in wanted(behaviour, "grid")]
        chosen[behaviour] = decide.choose(found, 1, run.config.choose_metric, setting="scale")
    run.store.set_extra("simultaneous_choice", chosen)
    return chosen


def run(config: MultiBehaviourConfig, *, model: Any = None, progress: bool = True,
        overwrite: bool = False, executor: Executor | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment; returns its results (also in the results file).

    ``executor`` runs the units of scoring (:mod:`actsteer.executor`; None: in this
    process); each stage submits all its units at once and stores each unit's cells as it
    returns. The results are the same on any executor, and a run started on one can be
    finished on another.

    Finished cells in ``out_dir/multi_behaviour.jsonl`` are reused; a results file made
    with a different config or data raises
    :class:`actsteer.results.ResultConfigMismatchError` unless ``overwrite``, which starts
    the file afresh.
    """
    state = open_run(config, model, progress, overwrite, executor)
    try:
        return _steps(state)
    finally:
        state.store.close()


def _steps(state: Run) -> dict[str, Any]:
    config, timings, store = state.config, state.timings, state.store
    with timed(timings, "vectors"):
        extract_vectors(state)
    with timed(timings, "default"):
        defaults = score_defaults(state)
    with timed(timings, "grid"):
        chosen = grid_search(state, defaults)
    with timed(timings, "individual"):
        score_individual(state, chosen)
    picked = {b: decide.add_coefficient(b, chosen[b]["add"], config) for b in state.behaviours}
    coefficients = {b: value for b, (value, _) in picked.items()}
    store.set_extra("coefficients", coefficients)
    store.set_extra("coefficient_source", {b: why for b, (_, why) in picked.items()})
    with timed(timings, "combined"):
        score_combined(state, coefficients)
    with timed(timings, "simultaneous"):
        simultaneous_choice = score_simultaneous(state, coefficients)
    with timed(timings, "letter_free"):
        score_letter_free(state, chosen, coefficients, simultaneous_choice)
    with timed(timings, "steerability"):
        steerability = steerability_profile(state)
    with timed(timings, "alignment_tax"):
        alignment_tax(state, coefficients)
    for name, value in (("behaviours", state.behaviours), ("layers", state.layers.to_dict()),
                        ("timings", timings)):
        store.set_extra(name, value)
    logger.info("multi-behaviour done: %d item-forwards scored this run; timings %s",
                state.scored, timings)
    return {"config": config.to_dict(), "cells": dict(store.cells), "chosen": chosen,
            "coefficients": coefficients, "coefficient_source": store.extra[
                "coefficient_source"], "simultaneous_choice": simultaneous_choice,
            "steerability": steerability, "layers": state.layers.to_dict(),
            "timings": timings, "behaviours": state.behaviours, "path": str(store.path)}
