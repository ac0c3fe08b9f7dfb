"""The state of one multi-behaviour run and its cells: resolved layers, loaded data,
scoring as units of :func:`actsteer.evaluation.score_items` work on the run's executor,
and each cell stored with its plan's identity and its paired effects against the
unsteered model on the same items."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from actsteer.data.behaviours import PaperSplits
from actsteer.effects import AB_METRICS, paired_effect
from actsteer.errors import InvalidValueError
from actsteer.evaluation import MATCHING, ABScores, PreparedItems
from actsteer.executor import Executor, LocalExecutor, dispatch
from actsteer.paper.common import check_layers, scale_layer
from actsteer.paper.keys import CellKey
from actsteer.paper.multi_behaviour.config import (
    PAPER_LAYER,
    PAPER_SIMULTANEOUS_LAYERS,
    MultiBehaviourConfig,
)
from actsteer.paper.multi_behaviour.keys import DefaultKey
from actsteer.plan import SteeringPlan, empty_plan, simultaneous
from actsteer.results import ResultStore
from actsteer.units import Job, plan_jobs
from actsteer.vector import SteeringVector

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Layers:
    """The layers each step steers at, resolved for the loaded model."""

    grid: tuple[int, ...]
    combined: int
    simultaneous: Mapping[str, int]
    steerability: tuple[int, ...]
    n_layers: int

    @classmethod
    def resolve(cls, config: MultiBehaviourConfig, behaviours: Sequence[str],
                n_layers: int) -> Layers:
        """The config's layers, or the paper's (of 32) scaled to ``n_layers``; checked."""
        grid = tuple(config.grid_layers or (scale_layer(PAPER_LAYER, n_layers),))
        stride = config.steerability_stride
        profiled = config.steerability_layers or sorted(
            {*range(stride // 2, n_layers, stride), *(x for x in grid if x < n_layers)})
        layers = cls(
            grid=grid,
            combined=(config.combined_layer if config.combined_layer is not None
                      else scale_layer(PAPER_LAYER, n_layers)),
            simultaneous=dict(config.simultaneous_layers or {
                b: scale_layer(PAPER_SIMULTANEOUS_LAYERS.get(b, PAPER_LAYER), n_layers)
                for b in behaviours}),
            steerability=tuple(profiled),
            n_layers=n_layers)
        check_layers(n_layers, [*(("grid layer", x) for x in layers.grid),
                                ("combined_layer", layers.combined),
                                *((f"simultaneous layer of {b}", x)
                                  for b, x in layers.simultaneous.items()),
                                *(("steerability layer", x) for x in layers.steerability)])
        return layers

    def to_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "combined": self.combined,
                "simultaneous": dict(self.simultaneous),
                "steerability": list(self.steerability), "n_layers": self.n_layers}


@dataclass
class Run:
    """One run's state: the loaded data and model, the results store, the vectors."""

    config: MultiBehaviourConfig
    model: Any
    store: ResultStore
    splits: dict[str, PaperSplits]
    layers: Layers
    tax_texts: list[str] | None = None
    progress: bool = True
    executor: Executor = field(default_factory=LocalExecutor)
    """Where units of scoring run (:mod:`actsteer.executor`)."""
    data: dict[str, dict[str, PreparedItems]] = field(default_factory=dict)
    vectors: dict[str, SteeringVector] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    scored: int = 0

    @property
    def behaviours(self) -> list[str]:
        return list(self.splits)

    def score_jobs(self, behaviour: str, split: str, plans: Sequence[SteeringPlan], key: str,
                   record: Callable[[list[int], ABScores], None], *, parts: int = 1,
                   items: PreparedItems | None = None) -> list[Job]:
        """Units scoring ``plans`` on ``behaviour``'s ``split`` (or ``items`` of it), split
        by start block into up to ``parts`` units (:func:`actsteer.units.plan_jobs`; plans
        at one block share the prefix below it); each unit's scores go to
        ``record(rows, scores)``, ``rows`` indexing ``plans``."""
        prepared = items if items is not None else self.data[behaviour][split]

        def counted(rows: list[int], scores: ABScores) -> None:
            self.scored += len(rows) * len(prepared)
            record(rows, scores)

        return plan_jobs(self.model, plans, "ab-scores", {
            "items": prepared, "batch_size": self.config.batch_size,
            "progress": self.progress}, counted, parts=parts, key=key)

    def execute(self, jobs: Sequence[Job], desc: str) -> None:
        """Run every job's unit on the executor at once; each unit's cells are stored as
        it returns (this process is the only writer of the results)."""
        self.executor.bind(self.model)
        dispatch(self.executor, jobs, progress=self.progress, desc=desc)

    def parts(self, jobs: int) -> int:
        """Units to split each of a stage's ``jobs`` into so every worker has work (1 on
        the local executor: one pass per job)."""
        return max(1, -(-self.executor.workers // max(1, jobs)))

    def cell_jobs(self, behaviour: str, split: str,
                  wanted: Sequence[tuple[CellKey, SteeringPlan, Mapping[str, Any]]],
                  parts: int = 1) -> list[Job]:
        """Cells of one behaviour and split: the stale ones (absent, or made by another
        plan) as one unit, so they share the unsteered prefix (or as up to ``parts``
        units of neighbouring start blocks, :meth:`score_jobs`); each
        stored when its unit returns, with its paired effects against the unsteered cell
        of the same split (``extra["direction"]`` is the sign the plan intends). Nothing
        when all are fresh."""
        stale = [(key, plan, extra) for key, plan, extra in wanted
                 if not fresh(self.store, key, plan)]
        if not stale:
            return []
        base_key = str(DefaultKey(behaviour, split))

        def record(rows: list[int], scores: ABScores) -> None:
            for index, row in enumerate(rows):
                key, plan, extra = stale[row]
                cell = cell_of(scores, index, self.config, plan, **extra)
                if str(key) != base_key:
                    cell["effects"] = cell_effects(cell, self.store.get(base_key),
                                                   int(extra.get("direction", 1)),
                                                   self.config.n_resamples)
                self.store.put(str(key), cell)

        name = str(stale[0][0]) if len(stale) == 1 else (
            f"{stale[0][0].STEP}/{behaviour}/{split}")
        return self.score_jobs(behaviour, split, [plan for _, plan, _ in stale], name, record,
                               parts=parts)

    def cells(self, behaviour: str, split: str,
              wanted: Sequence[tuple[CellKey, SteeringPlan, Mapping[str, Any]]]
              ) -> dict[CellKey, dict[str, Any]]:
        """:meth:`cell_jobs` of one behaviour and split, run; returns every wanted cell."""
        self.execute(self.cell_jobs(behaviour, split, wanted), f"{behaviour}/{split}")
        return {key: self.store.get(str(key)) for key, _, _ in wanted}

    def cell(self, key: CellKey, behaviour: str, split: str, plan: SteeringPlan,
             **extra: Any) -> dict[str, Any]:
        return self.cells(behaviour, split, [(key, plan, extra)])[key]


def cell_of(scores: ABScores, index: int, config: MultiBehaviourConfig, plan: SteeringPlan,
            **extra: Any) -> dict[str, Any]:
    """One stored cell: the summary with intervals, per-item scores, and the plan."""
    summary = scores.summary(index, n_resamples=config.n_resamples)
    summary["items"] = scores.items(index)
    summary.update(extra, plan=plan.describe(), plan_id=plan.identity())
    return summary


def fresh(store: ResultStore, key: CellKey, plan: SteeringPlan) -> bool:
    """Whether ``key`` is stored and was made by exactly ``plan`` (its identity)."""
    if not store.has(str(key)):
        return False
    stored = store.get(str(key)).get("plan_id")
    if stored != plan.identity():
        logger.warning("%s was scored under another plan; scoring it again", key)
        return False
    return True


def item_values(cell: Mapping[str, Any], metric: str) -> torch.Tensor:
    """One value per item of a stored cell: 1/0 matching (``matching_rate``),
    P(matching) or the logit difference."""
    items = cell["items"]
    if metric == "matching_rate":
        return (torch.tensor(items["class"]) == MATCHING).double()
    if metric not in AB_METRICS:
        raise InvalidValueError(f"unknown metric {metric!r}; use one of {', '.join(AB_METRICS)}")
    return torch.tensor(items[metric], dtype=torch.float64)


def cell_effects(cell: Mapping[str, Any], base: Mapping[str, Any], direction: int,
                 n_resamples: int) -> dict[str, dict[str, Any]]:
    """Paired effects (cell − unsteered, per item, same items) of every A/B metric, with
    the verdict read against ``direction``."""
    return {metric: paired_effect(item_values(cell, metric), item_values(base, metric),
                                  metric=metric, direction=direction,
                                  n_resamples=n_resamples).to_dict()
            for metric in AB_METRICS}


def simultaneous_plan(run: Run, coefficients: Mapping[str, float],
                      scale: float) -> SteeringPlan:
    """Every behaviour's vector at its own simultaneous layer with its coefficient, all
    times ``scale`` (0: the unsteered model)."""
    if scale == 0:
        return empty_plan()
    spec = {b: (run.vectors[b], run.layers.simultaneous[b], coefficients[b])
            for b in run.behaviours}
    return simultaneous(spec, scale=scale)
