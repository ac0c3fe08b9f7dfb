"""The paper's comparison on behaviours the model expresses, step by step.

1. **vectors** — per behaviour, a CAA vector read over the answer tokens of its contrastive
   completions (``read="answer_mean"``), every layer, with its extraction diagnostics;
2. **norms** — the median residual norm per layer over the perplexity text, the unit every
   strength is given in;
3. **layers** — each behaviour added alone at every candidate layer on the grid prompts;
   its own layer is where the paired effect on its own word-set propensity has the
   largest lower bound (distinct layers, so that simultaneous steering differs from one
   combined vector by its layers);
4. **test** — on the test prompts, every plan of
   :func:`~actsteer.paper.multi_behaviour.expressed.plans.comparison_plans` and the
   steerability ladder of each behaviour at its own layer, each scored on every
   behaviour's propensity (own effects and cross-talk from one forward pass);
5. **tax** — perplexity and next-token top-1 on text under the individual, combined and
   simultaneous plans;
6. **text** — greedy continuations of some test prompts scored by VADER (an established
   sentiment scorer with its own lexicon), when sentiment is one of the behaviours.

Every cell is stored as soon as it is scored with the identity of the plan that made it,
so an interrupted run resumes and a changed plan is scored again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from actsteer import accuracy, generation  # noqa: F401  (register the tasks run here)
from actsteer.batching import encode_many
from actsteer.data.expressed import ExpressedBehaviour, load_expressed, neutral_prompts
from actsteer.effects import paired_effect
from actsteer.executor import Executor, LocalExecutor, dispatch, unit
from actsteer.extraction import caa_vector
from actsteer.layer_choice import distinct_layers
from actsteer.likelihood import Propensities, counted_words
from actsteer.norms import ResidualNorms, residual_norms
from actsteer.paper.common import VectorCache, check_layers, digest, scale_layer, timed
from actsteer.paper.multi_behaviour.config import PAPER_LAYER
from actsteer.paper.multi_behaviour.expressed.config import (
    KIND,
    ExpressedConfig,
    default_candidate_layers,
)
from actsteer.paper.multi_behaviour.expressed.keys import GridKey, TaxKey, TestKey, TextKey
from actsteer.paper.multi_behaviour.expressed.plans import (
    UNSTEERED,
    comparison_plans,
    individual,
    steer_plan,
)
from actsteer.paper.multi_behaviour.stages import RESULTS_FILE
from actsteer.plan import SteeringPlan, empty_plan
from actsteer.results import ResultStore
from actsteer.units import plan_jobs
from actsteer.vector import SteeringVector

logger = logging.getLogger(__name__)

@dataclass
class ExpressedRun:
    """One run's state: config, model, results store, data and vectors."""

    config: ExpressedConfig
    model: Any
    store: ResultStore
    behaviours: dict[str, ExpressedBehaviour]
    prompts: dict[str, list[str]]
    tax_texts: list[str]
    progress: bool = True
    executor: Executor = field(default_factory=LocalExecutor)
    """Where units of scoring run (:mod:`actsteer.executor`)."""
    vectors: dict[str, SteeringVector] = field(default_factory=dict)
    norms: ResidualNorms | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def score(self, split: str, plans: Mapping[str, SteeringPlan], keys: Mapping[str, Any],
              stage: str) -> None:
        """Every behaviour's word-set propensity on ``split``'s prompts under each plan,
        stored per unit as units complete: cell ``keys[name]`` holds ``{behaviour: [value
        per prompt]}`` under ``"values"`` with the plan's identity.

        Plans that start at the same block are one unit (they share the unsteered prefix
        below it); neighbouring blocks are joined until there are as many units as the
        executor has workers (:func:`actsteer.units.plan_jobs`).
        """
        names = list(plans)
        if not names:
            return
        prompts = self.prompts[split]
        # which words of each set counted (one token after a space), for the cell
        counted = {name: counted_words(self.model, behaviour.words)
                   for name, behaviour in self.behaviours.items()}

        def record(rows: list[int], scored: Mapping[str, Propensities]) -> None:
            for index, row in enumerate(rows):
                plan = plans[names[row]]
                self.store.put(str(keys[names[row]]), {
                    "plan_id": plan.identity(), "plan": plan.describe(),
                    "values": {b: [round(float(x), 5) for x in scored[b].summed[index]]
                               for b in self.behaviours}, "words": counted})

        self.executor.bind(self.model)
        jobs = plan_jobs(self.model, [plans[name] for name in names], "word-propensities", {
            "prompts": prompts, "word_sets": [b.words for b in self.behaviours.values()],
            "batch_size": self.config.batch_size, "progress": self.progress}, record,
            parts=self.executor.workers, key=stage)
        dispatch(self.executor, jobs, progress=self.progress,
                 desc=f"{stage} ({len(names)} plans, {len(jobs)} units)")

    def stale(self, keys: Mapping[str, Any], plans: Mapping[str, SteeringPlan]
              ) -> dict[str, SteeringPlan]:
        """The plans whose cell is absent or was made by another plan."""
        out = {}
        for name, plan in plans.items():
            found = self.store.cells.get(str(keys[name]))
            if found is None or found.get("plan_id") != plan.identity():
                out[name] = plan
        return out


def split_prompts(config: ExpressedConfig) -> dict[str, list[str]]:
    """The neutral prompts shuffled with ``config.seed`` and cut into grid and test."""
    prompts = list(neutral_prompts())
    random.Random(config.seed).shuffle(prompts)
    return {"grid": prompts[:config.n_grid],
            "test": prompts[config.n_grid:config.n_grid + config.n_test]}


def tax_texts(config: ExpressedConfig) -> list[str]:
    from actsteer.data.corpora import builtin_text_corpus, text_corpus, wikitext_corpus

    if config.tax_corpus == "builtin":
        corpus = builtin_text_corpus()
    elif config.tax_corpus == "wikitext":
        try:
            corpus = wikitext_corpus(max_documents=config.tax_documents)
        except FileNotFoundError:
            logger.info("WikiText-2 not found; the perplexity text is the built-in corpus")
            corpus = builtin_text_corpus()
    else:
        corpus = text_corpus(config.tax_corpus, max_documents=config.tax_documents)
    return corpus.texts()[:config.tax_documents]


def open_run(config: ExpressedConfig, model: Any, progress: bool,
             overwrite: bool = False, executor: Executor | None = None) -> ExpressedRun:
    """Load and check everything, then open the results store; the executor's workers
    start loading the model while the driver extracts vectors."""
    behaviours = {name: load_expressed(name) for name in config.behaviours}
    prompts = split_prompts(config)
    texts = tax_texts(config)
    if model is None:
        model = config.model.load()
    identity = {"behaviours": {name: digest([c for t in b.completions for c in t]
                                            + list(b.words.behaviour) + list(b.words.contrast))
                               for name, b in behaviours.items()},
                "prompts": digest(prompts["grid"] + ["|"] + prompts["test"]),
                "tax_texts": digest(texts)}
    store = ResultStore(Path(config.out_dir) / RESULTS_FILE,
                        {**config.results_config(), "data": identity}, overwrite=overwrite,
                        runtime=config.model.runtime())
    executor = executor if executor is not None else LocalExecutor()
    executor.bind(model)
    return ExpressedRun(config, model, store, behaviours, prompts, texts, progress, executor)


def extract_vectors(run: ExpressedRun, layers: list[int]) -> None:
    """Each behaviour's vector at ``layers`` (the forward stops after the deepest)."""
    cache = VectorCache(Path(run.config.out_dir) / "vectors")
    for name, behaviour in run.behaviours.items():
        stamp = (f"{run.config.model.name} expressed answer_mean layers {layers} "
                 f"{run.store.config['data']['behaviours'][name]}")
        vector = cache.get(name, stamp, run.model)
        if vector is None:
            vector = cache.put(name, caa_vector(run.model, behaviour.pairs(), read="answer_mean",
                                                layers=layers, dataset=name,
                                                progress=run.progress), stamp)
        run.vectors[name] = vector


def measure_norms(run: ExpressedRun, layers: list[int]) -> ResidualNorms:
    stored = run.store.extra.get("norms")
    if stored is not None:
        run.norms = ResidualNorms.from_dict(stored)
        run.norms.check_fits(run.model)
        return run.norms
    sequences = [ids[:run.config.tax_max_tokens] for ids in encode_many(run.model, run.tax_texts)]
    run.norms = residual_norms(run.model, sequences, layers=layers,
                               batch_size=run.config.batch_size, source="perplexity text")
    run.store.set_extra("norms", run.norms.to_dict())
    return run.norms


def choose_layers(run: ExpressedRun, candidates: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Score each behaviour alone at each candidate layer on the grid prompts; choose each
    behaviour's own layer (:func:`actsteer.layer_choice.distinct_layers`: largest lower
    bound of its own paired effect; distinct)."""
    assert run.norms is not None
    config = run.config
    plans = {UNSTEERED: empty_plan()}
    keys: dict[str, Any] = {UNSTEERED: GridKey(UNSTEERED, -1)}
    for name, vector in run.vectors.items():
        for layer in candidates:
            label = f"{name}@{layer}"
            plans[label] = individual(name, vector, layer, config.fraction, run.norms)
            keys[label] = GridKey(name, layer)
    run.score("grid", run.stale(keys, plans), keys, "layers")
    base = run.store.get(str(keys[UNSTEERED]))["values"]
    effects = {name: {layer: paired_effect(
        run.store.get(str(keys[f"{name}@{layer}"]))["values"][name], base[name], metric=name,
        n_resamples=config.n_resamples) for layer in candidates} for name in run.vectors}
    chosen: dict[str, dict[str, Any]] = {}
    for name, layer in distinct_layers(effects).items():
        effect = effects[name][layer]
        chosen[name] = {"layer": layer, "effect": effect.to_dict(),
                        "moves": effect.verdict == "moves",
                        "by_layer": {str(k): v.to_dict() for k, v in effects[name].items()}}
    run.store.set_extra("own_layers", chosen)
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
    names = list(pending)

    def record(rows: list[int], scored: list[Any]) -> None:  # DocumentAccuracy with nll
        for row, counts in zip(rows, scored, strict=True):
            run.store.put(str(keys[names[row]]), {
                "plan_id": pending[names[row]].identity(),
                "plan": pending[names[row]].describe(),
                "nll": [round(float(x), 4) for x in counts.nll],
                "top1": [int(x) for x in counts.top1],
                "tokens": [int(x) for x in counts.tokens]})

    run.executor.bind(run.model)
    jobs = plan_jobs(run.model, [pending[name] for name in names], "accuracy", {
        "sequences": [s for s in sequences if len(s) >= 2],
        "batch_size": min(8, run.config.batch_size), "progress": run.progress}, record,
        parts=run.executor.workers, key="tax")
    dispatch(run.executor, jobs, progress=run.progress, desc=f"tax ({len(names)} plans)")


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
    combined_layer = (config.combined_layer if config.combined_layer is not None
                      else scale_layer(PAPER_LAYER, n_layers))
    check_layers(n_layers, [*(("candidate layer", x) for x in candidates),
                            ("combined_layer", combined_layer)])
    needed = sorted({*candidates, combined_layer})
    with timed(timings, "vectors"):
        extract_vectors(state, needed)
    with timed(timings, "norms"):
        norms = measure_norms(state, needed)
    with timed(timings, "layers"):
        chosen = choose_layers(state, tuple(candidates))
    own = {name: int(entry["layer"]) for name, entry in chosen.items()}
    plans = comparison_plans(state.vectors, own, combined_layer, config.fraction, norms,
                             config.combined_recipes)
    with timed(timings, "test"):
        score_test(state, {**plans, **steerability_plans(state, own)})
    with timed(timings, "tax"):
        score_tax(state, plans)
    with timed(timings, "text"):
        score_text(state, plans)
    store.set_extra("plans", {name: plan.describe() for name, plan in plans.items()})
    store.set_extra("cosines", vector_cosines(state, _cosine_layers(own, combined_layer)))
    for name, value in (("kind", KIND), ("behaviours", list(state.behaviours)),
                        ("layers", {"own": own, "combined": combined_layer,
                                    "candidates": list(candidates), "n_layers": n_layers}),
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
