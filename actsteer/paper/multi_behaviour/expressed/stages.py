"""The paper's comparison on behaviours the model expresses, step by step.

1. **vectors** — per behaviour, a CAA vector read over the answer tokens of its contrastive
   completions (``read="answer_mean"``), every layer, with its extraction diagnostics;
2. **norms** — the median residual norm per layer over the text of ``tax_corpus`` (the
   built-in English documents unless asked otherwise), the unit every strength is given in;
3. **layers** — each behaviour added alone, and the combined vector, at every candidate
   layer on the grid prompts; each own layer is where the paired effect on the behaviour's
   own word-set propensity has the largest lower bound, chosen independently; the combined
   vector's layer by the same rule on the sum of the propensities; when own layers
   coincide, the paper's design (distinct layers) is scored as a labelled variant;
4. **test** — on the test prompts, every plan of
   :func:`~actsteer.paper.multi_behaviour.expressed.plans.comparison_plans` and the
   steerability ladder of each behaviour at its own layer, each scored on every
   behaviour's propensity (own effects and cross-talk from one forward pass);
5. **tax** — perplexity and next-token top-1 on text under the individual, combined and
   simultaneous plans;
6. **text** — greedy continuations of some test prompts scored by VADER (an established
   sentiment scorer with its own lexicon), when sentiment is one of the behaviours;
7. **prompting** — the test prompts in a chat scaffold, with and without each behaviour's
   instruction, unsteered and under its individual plan, and the perplexity of the text in
   the same scaffolds (:mod:`~actsteer.paper.multi_behaviour.expressed.prompting`).

Every cell is stored as soon as it is scored with the identity of the plan that made it,
so an interrupted run resumes and a changed plan is scored again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from actsteer.batching import encode_many
from actsteer.effects import Effect, paired_effect
from actsteer.executor import Executor, dispatch, unit
from actsteer.layer_choice import distinct_layers, strongest_layer
from actsteer.paper.common import check_layers, scale_layer, timed
from actsteer.paper.multi_behaviour.config import PAPER_LAYER
from actsteer.paper.multi_behaviour.expressed.config import (
    KIND,
    ExpressedConfig,
    default_candidate_layers,
)
from actsteer.paper.multi_behaviour.expressed.keys import GridKey, TaxKey, TestKey, TextKey
from actsteer.paper.multi_behaviour.expressed.plans import (
    UNSTEERED,
    combined_plan,
    comparison_plans,
    individual,
    steer_plan,
)
from actsteer.paper.multi_behaviour.expressed.prompting import (
    REQUEST,
    score_fluency,
    score_prompting,
)
from actsteer.paper.multi_behaviour.expressed.state import (
    ExpressedRun,
    extract_vectors,
    measure_norms,
    open_run,
)
from actsteer.paper.multi_behaviour.stages import RESULTS_FILE
from actsteer.plan import SteeringPlan, empty_plan

__all__ = ["RESULTS_FILE", "choose_layers", "comparison_plans", "extract_vectors",
           "measure_norms", "open_run", "run", "score_tax", "score_test", "score_text",
           "steerability_plans"]

logger = logging.getLogger(__name__)

COMBINED = "combined-sum"
"""The grid's name for the combined vector (every behaviour at one layer, each at its own
strength) when its layer is chosen."""


def choose_layers(run: ExpressedRun, candidates: tuple[int, ...]) -> dict[str, Any]:
    """Score each behaviour alone, and the combined vector (every behaviour, each at its
    own strength), at each candidate layer on the grid prompts, and choose by one rule
    (:func:`actsteer.layer_choice.strongest_layer`: the largest lower bound of the paired
    effect): each behaviour's own layer on its own propensity, independently; the combined
    vector's layer on the sum of every behaviour's propensity. Also the paper's design,
    distinct layers (:func:`actsteer.layer_choice.distinct_layers`), for when own layers
    coincide."""
    assert run.norms is not None
    config, norms = run.config, run.norms
    plans = {UNSTEERED: empty_plan()}
    keys: dict[str, Any] = {UNSTEERED: GridKey(UNSTEERED, -1)}
    for layer in candidates:
        for name, vector in run.vectors.items():
            plans[f"{name}@{layer}"] = individual(name, vector, layer, config.fraction, norms)
            keys[f"{name}@{layer}"] = GridKey(name, layer)
        if len(run.vectors) > 1:
            plans[f"{COMBINED}@{layer}"] = combined_plan(run.vectors, {}, layer,
                                                          config.fraction, norms, "sum")
            keys[f"{COMBINED}@{layer}"] = GridKey(COMBINED, layer)
    run.score("grid", run.stale(keys, plans), keys, "layers")
    base = run.store.get(str(keys[UNSTEERED]))["values"]

    def grid_effect(label: str, values: Callable[[Mapping[str, Any]], Any]) -> Effect:
        return paired_effect(values(run.store.get(str(keys[label]))["values"]), values(base),
                             metric=label, n_resamples=config.n_resamples)

    def own(name: str) -> Callable[[Mapping[str, Any]], Any]:
        return lambda values: values[name]

    effects = {name: {layer: grid_effect(f"{name}@{layer}", own(name)) for layer in candidates}
               for name in run.vectors}
    chosen: dict[str, Any] = {"own": {}, "distinct": distinct_layers(effects),
                              "candidates": list(candidates)}
    for name, by_layer in effects.items():
        layer = strongest_layer(by_layer)
        chosen["own"][name] = {"layer": layer, "effect": by_layer[layer].to_dict(),
                               "moves": by_layer[layer].verdict == "moves",
                               "by_layer": {str(k): v.to_dict() for k, v in by_layer.items()}}
    if len(run.vectors) > 1:
        total = {layer: grid_effect(f"{COMBINED}@{layer}", lambda v: torch.tensor(
            [v[n] for n in run.vectors], dtype=torch.float64).sum(0)) for layer in candidates}
        best = strongest_layer(total)
        chosen["combined"] = {"layer": best, "effect": total[best].to_dict(),
                              "by_layer": {str(k): v.to_dict() for k, v in total.items()}}
    run.store.set_extra("own_layers", chosen["own"])
    run.store.set_extra("layer_choice", {k: v for k, v in chosen.items() if k != "own"})
    return chosen


def steerability_plans(run: ExpressedRun, own: Mapping[str, int]) -> dict[str, SteeringPlan]:
    """The steerability ladder's plans that the comparison does not already score (the
    individual plans are its ``±fraction`` rungs)."""
    assert run.norms is not None
    config = run.config
    return {steer_plan(name, fraction, config.fraction): individual(
                name, vector, own[name], fraction, run.norms)
            for name, vector in run.vectors.items() for fraction in config.ladder()
            if fraction not in (0.0, config.fraction, -config.fraction)}


def score_test(run: ExpressedRun, plans: Mapping[str, SteeringPlan]) -> None:
    keys = {name: TestKey(name) for name in plans}
    run.score("test", run.stale(keys, plans), keys, "test")


TAX_PREFIXES = ("individual:", "combined-", "simultaneous")
"""Plans whose perplexity cost is measured (besides the unsteered model)."""


def score_tax(run: ExpressedRun, plans: Mapping[str, SteeringPlan]) -> None:
    wanted = {name: plan for name, plan in plans.items()
              if name == UNSTEERED or name.startswith(TAX_PREFIXES)}
    keys = {name: TaxKey(name) for name in wanted}
    pending = run.stale(keys, wanted)
    if not pending:
        return
    sequences = [ids[:run.config.tax_max_tokens] for ids in encode_many(run.model, run.tax_texts)]
    jobs = run.tax_jobs([s for s in sequences if len(s) >= 2], pending, keys, "tax")
    dispatch(run.executor, jobs, progress=run.progress, desc=f"tax ({len(pending)} plans)")


TEXT_PLANS = ("unsteered", "individual:sentiment", "-individual:sentiment", "simultaneous")
"""Plans whose greedy continuations are scored by VADER (generation is the slowest step)."""


def score_text(run: ExpressedRun, plans: Mapping[str, SteeringPlan]) -> None:
    """Greedy continuations of the first test prompts, scored by VADER's compound score."""
    config = run.config
    if config.generate_prompts == 0 or "sentiment" not in run.behaviours:
        return
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        logger.warning("vaderSentiment is not installed (pip install vaderSentiment); "
                       "generated text is not scored")
        return
    wanted = {name: plans[name] for name in TEXT_PLANS if name in plans}
    keys = {name: TextKey(name) for name in wanted}
    pending = run.stale(keys, wanted)
    analyzer = SentimentIntensityAnalyzer()
    prompts = run.prompts["test"][:config.generate_prompts]

    def record(name: str) -> Callable[[list[str]], None]:
        def put(texts: list[str]) -> None:
            scores = [analyzer.polarity_scores(text)["compound"] for text in texts]
            run.store.put(str(keys[name]), {"plan_id": pending[name].identity(),
                                            "plan": pending[name].describe(),
                                            "prompts": prompts, "texts": texts,
                                            "compound": scores})
        return put

    run.executor.bind(run.model)
    dispatch(run.executor, [
        (unit("generate", {"prompts": prompts, "plan": plan, "stop_at_eos": False,
                           "max_new_tokens": config.generate_tokens}, key=f"text/{name}"),
         record(name)) for name, plan in pending.items()],
        progress=run.progress, desc="text")


def vector_cosines(run: ExpressedRun, layers: Mapping[str, int]) -> dict[str, float]:
    """Cosine between every two behaviours' vectors at each layer of ``layers``."""
    out: dict[str, float] = {}
    names = list(run.vectors)
    for where, layer in layers.items():
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                cos = torch.nn.functional.cosine_similarity(
                    run.vectors[x].at(layer).double(), run.vectors[y].at(layer).double(), dim=0)
                out[f"{x}/{y}@{where}"] = round(float(cos), 4)
    return out


def run(config: ExpressedConfig, *, model: Any = None, progress: bool = True,
        overwrite: bool = False, executor: Executor | None = None) -> dict[str, Any]:
    """Run (or resume) the comparison; returns its results (also in the results file).

    ``executor`` runs the units of scoring (:mod:`actsteer.executor`; None: in this
    process); the results are the same on any executor, and a run started on one can be
    finished on another.
    """
    state = open_run(config, model, progress, overwrite, executor)
    try:
        return _steps(state)
    finally:
        state.store.close()


def _steps(state: ExpressedRun) -> dict[str, Any]:
    config, timings, store = state.config, state.timings, state.store
    n_layers = int(state.model.cfg.n_layers)
    candidates = config.candidate_layers or default_candidate_layers(n_layers)
    paper_layer = scale_layer(PAPER_LAYER, n_layers)
    check_layers(n_layers, [*(("candidate layer", x) for x in candidates),
                            ("combined_layer", config.combined_layer or 0)])
    needed = sorted({*candidates, paper_layer, *([config.combined_layer]
                                                 if config.combined_layer is not None else [])})
    with timed(timings, "vectors"):
        extract_vectors(state, needed)
    with timed(timings, "norms"):
        norms = measure_norms(state, needed)
    with timed(timings, "layers"):
        chosen = choose_layers(state, tuple(candidates))
    own = {name: int(entry["layer"]) for name, entry in chosen["own"].items()}
    combined_layer = (config.combined_layer if config.combined_layer is not None
                      else int(chosen.get("combined", {}).get("layer", paper_layer)))
    coincide = len(set(own.values())) < len(own)
    plans = comparison_plans(state.vectors, own, combined_layer, config.fraction, norms,
                             config.combined_recipes, paper_layer=paper_layer,
                             distinct=chosen["distinct"] if coincide else None)
    with timed(timings, "test"):
        score_test(state, {**plans, **steerability_plans(state, own)})
    with timed(timings, "tax"):
        score_tax(state, plans)
    with timed(timings, "text"):
        score_text(state, plans)
    with timed(timings, "prompting"):
        score_prompting(state, plans)
        score_fluency(state, plans)
    store.set_extra("plans", {name: plan.describe() for name, plan in plans.items()})
    store.set_extra("cosines", vector_cosines(state, _cosine_layers(own, combined_layer)))
    layers = {"own": own, "combined": combined_layer, "paper": paper_layer,
              "combined_chosen": config.combined_layer is None,
              "distinct": chosen["distinct"] if coincide else None,
              "candidates": list(candidates), "n_layers": n_layers}
    for name, value in (("kind", KIND), ("behaviours", list(state.behaviours)),
                        ("layers", layers), ("corpus", state.corpus),
                        ("prompting", {"request": REQUEST, "instructions": {
                            name: b.instruction for name, b in state.behaviours.items()}}),
                        ("diagnostics", {name: v.meta.diagnostics for name, v
                                         in state.vectors.items()}),
                        ("timings", timings)):
        store.set_extra(name, value)
    return {**dict(store.extra), "config": config.to_dict(), "cells": dict(store.cells),
            "path": str(store.path)}


def _cosine_layers(own: Mapping[str, int], combined_layer: int) -> dict[str, int]:
    layers = {f"L{layer}": layer for layer in sorted(set(own.values()))}
    layers[f"L{combined_layer}"] = combined_layer
    return layers
