"""Per-item steerability of each behaviour's own vector at every profiled layer.

For each layer, the vector is added with each of ``steerability_multipliers`` (0 is the
unsteered test cell) and each item's propensity, logit(matching) − logit(non-matching),
is regressed on the multiplier (Tan et al. 2024). All layers of a behaviour are one unit
of work, so plans at deeper layers reuse the unsteered prefix of the shallower ones; with
more workers than behaviours, each behaviour's layers are split into runs of neighbouring
layers, one unit each.
Each layer's cell holds the per-item slopes, their summary (mean slope and anti-steerable
share with intervals, split by the matching answer's label) and the vector's extraction
diagnostics at that layer, and a verdict that says whether a reversal belongs to the
model or to the data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from actsteer.evaluation import ABScores
from actsteer.paper.common import digest
from actsteer.paper.multi_behaviour.cells import Job, Run
from actsteer.paper.multi_behaviour.keys import DefaultKey, SteerabilityKey
from actsteer.plan import SteeringPlan, single
from actsteer.steerability import propensity_slopes, summarize_steerability

logger = logging.getLogger(__name__)

SEPARATES = 0.6
"""Held-out separation (share of pairs whose matching side projects higher on the vector)
from which the labels count as a consistent direction in the model's activations."""


def steerability_verdict(summary: Mapping[str, Any],
                         diagnostics: Mapping[str, Any] | None) -> str:
    """``steers`` / ``no effect`` from the mean slope's interval, and for a reversal whose
    it is: ``anti-steerable (model)`` when the vector separates the labelled sides on
    held-out pairs but steering moves the other way, ``reversed (data)`` when the labels do
    not define a consistent direction in the activations (or nothing was measured)."""
    slope = summary["mean_slope"]
    if slope["low"] > 0:
        return "steers"
    if slope["high"] >= 0:
        return "no effect"
    separation = None if diagnostics is None else diagnostics.get("separation")
    if separation is not None and separation >= SEPARATES:
        return "anti-steerable (model)"
    return "reversed (data)"


def _items(run: Run, behaviour: str) -> int:
    """Test items the profile uses."""
    test = run.data[behaviour]["test"]
    return min(run.config.steerability_items or len(test), len(test))


def steerability_profile(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    """Score (or resume) every behaviour × profiled layer; returns behaviour → layer (as a
    string) → ``{"summary", "diagnostics", "verdict"}`` and records it in the results."""
    config = run.config
    layers = list(run.layers.steerability)
    multipliers = list(config.steerability_multipliers)
    steps = [m for m in multipliers if m != 0]
    pending: dict[str, list[int]] = {}
    plans: dict[str, dict[int, list[SteeringPlan]]] = {}
    ids: dict[str, dict[int, str]] = {}
    for behaviour in run.behaviours:
        n = _items(run, behaviour)
        vector = run.vectors[behaviour]
        plans[behaviour] = {layer: [single(vector, layer, m) for m in steps] for layer in layers}
        ids[behaviour] = {layer: digest([*(p.identity() for p in plans[behaviour][layer]),
                                         str(n)]) for layer in layers}
        pending[behaviour] = [
            layer for layer in layers
            if run.store.cells.get(str(SteerabilityKey(behaviour, layer)), {}).get(
                "plan_id") != ids[behaviour][layer]]
    busy = [b for b in run.behaviours if pending[b]]
    # enough units for every worker: a behaviour's layers are split into runs of
    # neighbouring layers when there are more workers than behaviours
    parts = max(1, -(-run.executor.workers // max(1, len(busy))))
    jobs: list[Job] = []
    for behaviour in busy:
        n = _items(run, behaviour)
        test = run.data[behaviour]["test"]
        layer_of = [layer for layer in pending[behaviour] for _ in steps]  # per plan

        def record(rows: list[int], scores: ABScores, behaviour: str = behaviour,
                   layer_of: list[int] = layer_of, n: int = n) -> None:
            base = run.store.get(str(DefaultKey(behaviour, "test")))["items"]["logit_diff"]
            unsteered = torch.tensor(base[:n], dtype=torch.float64)
            labels = run.data[behaviour]["test"].matching_labels[:n]
            ladders: dict[int, list[torch.Tensor]] = {}
            for index, row in enumerate(rows):  # rows ascend: each layer's steps in order
                ladders.setdefault(layer_of[row], []).append(scores.logit_diff[index].double())
            for layer, ladder in ladders.items():
                by_multiplier = {0.0: unsteered, **dict(zip(steps, ladder, strict=True))}
                propensity = torch.stack([by_multiplier[m] for m in multipliers])
                slopes = propensity_slopes(propensity, multipliers)
                summary = summarize_steerability(slopes, labels, n_resamples=config.n_resamples)
                run.store.put(str(SteerabilityKey(behaviour, layer)), {
                    "layer": layer, "multipliers": multipliers, "n": n,
                    "slopes": [round(float(x), 5) for x in slopes],
                    "summary": summary.to_dict(), "plan_id": ids[behaviour][layer]})

        # at most one unit per layer, so that every unit holds whole ladders
        jobs += run.score_jobs(behaviour, "test", [p for layer in pending[behaviour]
                                                   for p in plans[behaviour][layer]],
                               f"steerability/{behaviour}", record,
                               parts=min(parts, len(pending[behaviour])), items=test[:n])
    run.execute(jobs, "steerability")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for behaviour in run.behaviours:
        vector = run.vectors[behaviour]
        diagnostics = vector.meta.diagnostics or {}
        out[behaviour] = {}
        for layer in layers:
            cell = run.store.get(str(SteerabilityKey(behaviour, layer)))
            found = diagnostics.get(str(layer))
            out[behaviour][str(layer)] = {
                "summary": cell["summary"], "diagnostics": found,
                "verdict": steerability_verdict(cell["summary"], found)}
    run.store.set_extra("steerability", out)
    return out
