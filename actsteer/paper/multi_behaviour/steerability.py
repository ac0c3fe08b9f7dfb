"""Per-item steerability of each behaviour's own vector at every profiled layer.

For each layer, the vector is added with each of ``steerability_multipliers`` (0 is the
unsteered test cell) and each item's propensity, logit(matching) − logit(non-matching),
is regressed on the multiplier (Tan et al. 2024). All layers of a behaviour are scored in
one call, so plans at deeper layers reuse the unsteered prefix of the shallower ones.
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

from actsteer.evaluation import score_items
from actsteer.paper.common import digest
from actsteer.paper.multi_behaviour.cells import Run
from actsteer.paper.multi_behaviour.keys import DefaultKey, SteerabilityKey
from actsteer.plan import single
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


def steerability_profile(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    """Score (or resume) every behaviour × profiled layer; returns behaviour → layer (as a
    string) → ``{"summary", "diagnostics", "verdict"}`` and records it in the results."""
    config = run.config
    layers = list(run.layers.steerability)
    multipliers = list(config.steerability_multipliers)
    steps = [m for m in multipliers if m != 0]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for behaviour in run.behaviours:
        test = run.data[behaviour]["test"]
        n = min(config.steerability_items or len(test.prompts), len(test.prompts))
        vector = run.vectors[behaviour]
        plans = {layer: [single(vector, layer, m) for m in steps] for layer in layers}
        ids = {layer: digest([*(p.identity() for p in plans[layer]), str(n)])
               for layer in layers}
        pending = [layer for layer in layers
                   if run.store.cells.get(str(SteerabilityKey(behaviour, layer)), {}).get(
                       "plan_id") != ids[layer]]
        if pending:
            scores = score_items(run.model, test[:n],
                                 [p for layer in pending for p in plans[layer]],
                                 batch_size=config.batch_size, progress=run.progress,
                                 desc=f"steerability/{behaviour} ({len(pending)} layers)")
            run.scored += len(pending) * len(steps) * n
            base = run.store.get(str(DefaultKey(behaviour, "test")))["items"]["logit_diff"]
            unsteered = torch.tensor(base[:n], dtype=torch.float64)
            for index, layer in enumerate(pending):
                rows = scores.logit_diff[index * len(steps):(index + 1) * len(steps)].double()
                by_multiplier = {0.0: unsteered, **dict(zip(steps, rows, strict=True))}
                propensity = torch.stack([by_multiplier[m] for m in multipliers])
                slopes = propensity_slopes(propensity, multipliers)
                summary = summarize_steerability(slopes, test.matching_labels[:n],
                                                 n_resamples=config.n_resamples)
                run.store.put(str(SteerabilityKey(behaviour, layer)), {
                    "layer": layer, "multipliers": multipliers, "n": n,
                    "slopes": [round(float(x), 5) for x in slopes],
                    "summary": summary.to_dict(), "plan_id": ids[layer]})
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
