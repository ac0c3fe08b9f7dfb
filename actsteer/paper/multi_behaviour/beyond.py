"""Measurements of the multi-behaviour run that the paper does not make.

* **letter-free** — the reported plans of each behaviour measured on the answer *texts* of
  its test items (no letters: log P(matching text) − log P(other text),
  :func:`actsteer.likelihood.continuation_propensities`), so an effect that only moves
  the letter tokens shows;
* **alignment tax** — next-token top-1 accuracy on text under the simultaneous plan at
  every scale (:func:`actsteer.accuracy.accuracy_sweep`).

Each cell is stored as its unit returns, with the identity of its plan, and reused while
that plan is unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from actsteer.accuracy import DocumentAccuracy
from actsteer.batching import encode_many
from actsteer.data.behaviours.texts import letter_free_items
from actsteer.errors import InvalidValueError
from actsteer.likelihood import Propensities
from actsteer.paper.multi_behaviour import choose as decide
from actsteer.paper.multi_behaviour.cells import Job, Run, fresh, simultaneous_plan
from actsteer.paper.multi_behaviour.keys import DIRECTIONS, LetterFreeKey, TaxKey
from actsteer.plan import SteeringPlan, empty_plan, single
from actsteer.units import plan_jobs

__all__ = ["alignment_tax", "plan_direction", "score_letter_free"]

logger = logging.getLogger(__name__)


def score_letter_free(run: Run, chosen: Mapping[str, Mapping[str, Any]],
                      coefficients: Mapping[str, float],
                      simultaneous_choice: Mapping[str, Mapping[str, Any]]) -> None:
    """The reported plans of each behaviour on the answer texts of its first
    ``letter_free_items`` test items (items without answer texts are skipped)."""
    config = run.config
    if config.letter_free_items == 0:
        return
    variant = decide.combined_variant(config.to_dict())
    layer = run.layers.combined
    jobs: list[Job] = []
    pending: list[tuple[str, dict[str, SteeringPlan], list[Any], int]] = []
    for behaviour in run.behaviours:
        test = run.splits[behaviour].test
        n = min(config.letter_free_items or len(test), len(test))
        plans: dict[str, SteeringPlan] = {"unsteered": empty_plan()}
        for direction, sign in DIRECTIONS.items():
            pick = chosen[behaviour][direction]
            if pick["steerable"]:
                plans[f"individual {direction}"] = single(run.vectors[behaviour], pick["layer"],
                                                          pick["multiplier"])
            plans[f"combined {variant} {direction}"] = decide.combined_plan(
                run.vectors, layer, variant, coefficients, sign)
        choice = simultaneous_choice.get(behaviour) or {}
        scale = float(choice["scale"]) if choice.get("steerable") else 1.0
        plans[f"simultaneous x{scale:+g}"] = simultaneous_plan(run, coefficients, scale)
        # a cell stored without its direction cannot be judged, so it is scored again
        stale = {name: plan for name, plan in plans.items()
                 if not fresh(run.store, LetterFreeKey(behaviour, name), plan)
                 or "direction" not in run.store.get(str(LetterFreeKey(behaviour, name)))}
        if not stale:
            continue
        items, skipped = letter_free_items(test[:n], config.prompt_format,  # type: ignore[arg-type]
                                           run.model.tokenizer)
        if not items:
            logger.warning("%s: no test item lists its answers as text; no letter-free "
                           "measurement", behaviour)
            continue
        pending.append((behaviour, stale, items, len(skipped)))
    parts = run.parts(len(pending))
    for behaviour, stale, items, dropped in pending:
        names = list(stale)

        def record(rows: list[int], scores: Propensities, behaviour: str = behaviour,
                   names: list[str] = names, stale: dict[str, SteeringPlan] = stale,
                   n: int = len(items), dropped: int = dropped) -> None:
            for index, row in enumerate(rows):
                plan = stale[names[row]]
                run.store.put(str(LetterFreeKey(behaviour, names[row])), {
                    "plan_id": plan.identity(), "plan": plan.describe(),
                    "summed": [round(float(x), 4) for x in scores.summed[index]],
                    "per_token": [round(float(x), 5) for x in scores.per_token[index]],
                    "n": n, "skipped": dropped,
                    "direction": plan_direction(plan, behaviour)})

        jobs += plan_jobs(run.model, [stale[k] for k in names], "continuation-propensities",
                          {"items": items, "batch_size": config.batch_size,
                           "progress": run.progress}, record, parts=parts,
                          key=f"letter-free/{behaviour}")
    run.execute(jobs, "letter-free")


def plan_direction(plan: SteeringPlan, behaviour: str) -> int | None:
    """The way ``plan`` steers ``behaviour``, read from its coefficients: +1 when every
    injection that steers it has a positive coefficient, -1 when every one is negative,
    ``None`` for the unsteered plan.

    The injections labelled ``behaviour`` steer it when there are any (a simultaneous plan
    labels each behaviour's own); otherwise every injection does (an individual or a
    combined plan, whose weights are the behaviours' positive add coefficients).

    Raises:
        InvalidValueError: the coefficients disagree in sign, so no one direction is meant.
    """
    own = [i for i in plan.injections if i.label == behaviour] or list(plan.injections)
    signs = {math.copysign(1, i.coefficient) for i in own if i.coefficient != 0}
    if not signs:
        return None
    if len(signs) > 1:
        raise InvalidValueError(
            f"{plan.describe()} steers {behaviour!r} with coefficients of both signs "
            f"{[i.coefficient for i in own]}; give its injections one sign (or label the "
            f"injection of {behaviour!r}'s own vector with its name)")
    return int(signs.pop())


def alignment_tax(run: Run, coefficients: Mapping[str, float]) -> None:
    texts = run.tax_texts
    if texts is None:  # tax_corpus="none"
        return
    config = run.config
    plans = {s: simultaneous_plan(run, coefficients, s) for s in (0.0, *config.scales)}
    pending = [s for s, plan in plans.items() if not fresh(run.store, TaxKey(s), plan)]
    if not pending:
        return
    sequences = [ids[: config.tax_max_tokens] for ids in encode_many(run.model, texts)]
    sequences = [s for s in sequences if len(s) >= 2]

    def record(rows: list[int], scored: list[DocumentAccuracy]) -> None:
        for row, accuracy in zip(rows, scored, strict=True):
            scale = pending[row]
            estimate = accuracy.estimate("top1", n_resamples=config.n_resamples)
            run.store.put(str(TaxKey(scale)), {
                "scale": scale, "top1": estimate.as_dict(),
                "tokens": int(accuracy.tokens.sum()), "documents": len(sequences),
                "plan": plans[scale].describe(), "plan_id": plans[scale].identity()})

    run.executor.bind(run.model)
    jobs = plan_jobs(run.model, [plans[s] for s in pending], "accuracy",
                     {"sequences": sequences, "batch_size": config.batch_size}, record,
                     parts=run.executor.workers, key="tax")
    run.execute(jobs, "alignment tax")
