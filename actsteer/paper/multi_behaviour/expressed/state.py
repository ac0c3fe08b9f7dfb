"""The state of one expressed-behaviour run and its first steps: the behaviours and prompts,
the text for norms and perplexity, the results store, the vectors and the norms."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actsteer import accuracy, generation  # noqa: F401  (register the tasks run here)
from actsteer.batching import encode_many
from actsteer.data.expressed import ExpressedBehaviour, load_expressed, neutral_prompts
from actsteer.executor import Executor, LocalExecutor, dispatch
from actsteer.extraction import caa_vector
from actsteer.likelihood import Propensities, counted_words
from actsteer.norms import ResidualNorms, residual_norms
from actsteer.paper.common import VectorCache, digest
from actsteer.paper.multi_behaviour.expressed.config import ExpressedConfig
from actsteer.paper.multi_behaviour.stages import RESULTS_FILE
from actsteer.plan import SteeringPlan
from actsteer.results import ResultStore
from actsteer.units import Job, plan_jobs
from actsteer.vector import SteeringVector

__all__ = ["ExpressedRun", "corpus_texts", "extract_vectors", "measure_norms", "open_run",
           "split_prompts"]


@dataclass
class ExpressedRun:
    """One run's state: config, model, results store, data and vectors."""

    config: ExpressedConfig
    model: Any
    store: ResultStore
    behaviours: dict[str, ExpressedBehaviour]
    prompts: dict[str, list[str]]
    tax_texts: list[str]
    corpus: str = ""
    """Which text the norms and perplexity were measured on (:func:`corpus_texts`)."""
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
        jobs = self.score_jobs(self.prompts[split], plans, keys, stage)
        dispatch(self.executor, jobs, progress=self.progress,
                 desc=f"{stage} ({len(plans)} plans, {len(jobs)} units)")

    def score_jobs(self, prompts: Sequence[str], plans: Mapping[str, SteeringPlan],
                   keys: Mapping[str, Any], stage: str,
                   tag: Mapping[str, Any] | None = None) -> list[Job]:
        """The units of :meth:`score` on any ``prompts``, each storing its cells when it
        returns (``tag``: more fields for every cell, e.g. what the prompts were made
        of, which :meth:`stale` checks)."""
        names = list(plans)
        if not names:
            return []
        # which words of each set counted (one token after a space), for the cell
        counted = {name: counted_words(self.model, behaviour.words)
                   for name, behaviour in self.behaviours.items()}

        def record(rows: list[int], scored: Mapping[str, Propensities]) -> None:
            for index, row in enumerate(rows):
                plan = plans[names[row]]
                self.store.put(str(keys[names[row]]), {
                    "plan_id": plan.identity(), "plan": plan.describe(), **(tag or {}),
                    "values": {b: [round(float(x), 5) for x in scored[b].summed[index]]
                               for b in self.behaviours}, "words": counted})

        self.executor.bind(self.model)
        return plan_jobs(self.model, [plans[name] for name in names], "word-propensities", {
            "prompts": list(prompts), "word_sets": [b.words for b in self.behaviours.values()],
            "batch_size": self.config.batch_size, "progress": self.progress}, record,
            parts=self.executor.workers, key=stage)

    def tax_jobs(self, sequences: Sequence[Sequence[int]], plans: Mapping[str, SteeringPlan],
                 keys: Mapping[str, Any], key: str, *, context: Sequence[int] | None = None,
                 tag: Mapping[str, Any] | None = None) -> list[Job]:
        """The units scoring perplexity and top-1 of ``sequences`` under each plan, each
        storing per-document counts in cell ``keys[name]`` when it returns (``context``:
        leading tokens per sequence that are read but not scored,
        :attr:`actsteer.accuracy.Documents.context`; ``tag`` as in :meth:`score_jobs`)."""
        names = list(plans)
        if not names:
            return []

        def record(rows: list[int], scored: list[Any]) -> None:  # DocumentAccuracy with nll
            for row, counts in zip(rows, scored, strict=True):
                plan = plans[names[row]]
                self.store.put(str(keys[names[row]]), {
                    "plan_id": plan.identity(), "plan": plan.describe(), **(tag or {}),
                    "nll": [round(float(x), 4) for x in counts.nll],
                    "top1": [int(x) for x in counts.top1],
                    "tokens": [int(x) for x in counts.tokens]})

        self.executor.bind(self.model)
        payload: dict[str, Any] = {"sequences": [list(s) for s in sequences],
                                   "batch_size": min(8, self.config.batch_size),
                                   "progress": self.progress}
        if context is not None:
            payload["context"] = list(context)
        return plan_jobs(self.model, [plans[name] for name in names], "accuracy", payload,
                         record, parts=self.executor.workers, key=key)

    def stale(self, keys: Mapping[str, Any], plans: Mapping[str, SteeringPlan],
              tag: Mapping[str, Any] | None = None) -> dict[str, SteeringPlan]:
        """The plans whose cell is absent, was made by another plan, or holds another
        value of a field of ``tag``."""
        out = {}
        for name, plan in plans.items():
            found = self.store.cells.get(str(keys[name]))
            if (found is None or found.get("plan_id") != plan.identity()
                    or any(found.get(k) != v for k, v in (tag or {}).items())):
                out[name] = plan
        return out


def split_prompts(config: ExpressedConfig) -> dict[str, list[str]]:
    """The neutral prompts shuffled with ``config.seed`` and cut into grid and test."""
    prompts = list(neutral_prompts())
    random.Random(config.seed).shuffle(prompts)
    return {"grid": prompts[:config.n_grid],
            "test": prompts[config.n_grid:config.n_grid + config.n_test]}


def corpus_texts(config: ExpressedConfig) -> tuple[str, list[str]]:
    """The name and documents of the text that the norms and the perplexity cost are
    measured on (``config.tax_corpus``; the built-in documents unless asked otherwise, so
    every machine measures the same numbers)."""
    from actsteer.data.corpora import builtin_text_corpus, text_corpus, wikitext_corpus

    if config.tax_corpus == "builtin":
        corpus = builtin_text_corpus()
    elif config.tax_corpus == "wikitext":
        corpus = wikitext_corpus(max_documents=config.tax_documents)
    else:
        corpus = text_corpus(config.tax_corpus, max_documents=config.tax_documents)
    texts = corpus.texts()[:config.tax_documents]
    return f"{corpus.name} ({len(texts)} documents, up to {config.tax_max_tokens} tokens)", texts


def open_run(config: ExpressedConfig, model: Any, progress: bool,
             overwrite: bool = False, executor: Executor | None = None) -> ExpressedRun:
    """Load and check everything, then open the results store; the executor's workers
    start loading the model while the driver extracts vectors."""
    loaded = [load_expressed(spec) for spec in config.behaviours]
    behaviours = {behaviour.name: behaviour for behaviour in loaded}
    prompts = split_prompts(config)
    corpus, texts = corpus_texts(config)
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
    return ExpressedRun(config, model, store, behaviours, prompts, texts, corpus, progress,
                        executor)


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
                               batch_size=run.config.batch_size, source=run.corpus)
    run.store.set_extra("norms", run.norms.to_dict())
    return run.norms
