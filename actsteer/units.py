"""Steering plans as units of work: partition the plans by the block each starts at, make
one unit per part, dispatch them on an executor, and scatter the results back to plan order.

Plans that start at one block share the unsteered prefix below it
(:func:`actsteer.sweep.sweep_logits`), so a unit holds a run of neighbouring start blocks
(:func:`actsteer.executor.partition`): one unit on the local executor, as many as the
executor has workers otherwise.

* :func:`plan_jobs` — the units of one task over some plans, each with what to do with its
  result (``record(rows, result)``, ``rows`` indexing the plans): for stages that submit
  the units of many behaviours at once and store each unit's cells as it returns;
* :func:`run_plans` — the units run, and one result in plan order (:func:`gather`).

Example::

    scores = run_plans(model, plans, "ab-scores", {"items": items}, executor=executor)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.executor import Executor, LocalExecutor, Unit, dispatch, partition, unit
from actsteer.plan import SteeringPlan
from actsteer.steering import check_plan
from actsteer.sweep import start_layer

__all__ = ["Job", "gather", "plan_jobs", "run_plans"]

Job = tuple[Unit, Callable[[Any], None]]
"""A unit and the callback that receives its result (in the driver)."""


def plan_jobs(model: Any, plans: Sequence[SteeringPlan], task: str,
              payload: Mapping[str, Any], record: Callable[[list[int], Any], None], *,
              parts: int = 1, key: str = "plans") -> list[Job]:
    """One job per part of ``plans`` split by start block into at most ``parts`` units:
    task ``task`` with ``payload`` plus ``"plans"`` (that part's plans); its result goes to
    ``record(rows, result)``, ``rows`` the indices of its plans in ``plans``.

    Every plan is checked against ``model`` first, so a bad one is refused before any
    worker starts. A unit's key is ``key``, or ``key/N`` when there are several; its
    progress description says how many plans it holds.
    """
    for plan in plans:
        check_plan(model, plan)
    groups = partition([start_layer(model, plan) for plan in plans], parts,
                       int(model.cfg.n_layers))
    jobs: list[Job] = []
    for number, rows in enumerate(groups):
        name = key if len(groups) == 1 else f"{key}/{number}"
        work = unit(task, {"desc": f"{name} ({len(rows)} plans)", **payload,
                           "plans": [plans[i] for i in rows]}, key=name)
        jobs.append((work, _recorder(record, rows)))
    return jobs


def _recorder(record: Callable[[list[int], Any], None], rows: list[int]
              ) -> Callable[[Any], None]:
    def put(result: Any) -> None:
        record(rows, result)
    return put


def run_plans(model: Any, plans: Sequence[SteeringPlan], task: str,
              payload: Mapping[str, Any], *, executor: Executor | None = None,
              key: str = "plans", progress: bool = False, desc: str = "units") -> Any:
    """Task ``task`` over ``plans`` on ``executor`` (None: here, one unit), its results
    scattered back to plan order (:func:`gather`): the same value as one call of the task
    with every plan."""
    if not plans:
        raise InvalidValueError(f"run_plans of {task!r} needs at least one plan")
    executor = executor if executor is not None else LocalExecutor(model)
    executor.bind(model)
    parts: list[tuple[list[int], Any]] = []
    jobs = plan_jobs(model, plans, task, payload, lambda rows, result: parts.append(
        (rows, result)), parts=executor.workers, key=key)
    dispatch(executor, jobs, progress=progress, desc=desc)
    return gather(parts)


def gather(parts: Sequence[tuple[Sequence[int], Any]]) -> Any:
    """Results of parts of the plans, ``(rows, result)``, as one result in plan order.

    A result is per plan along its first axis: a tensor (``[plan, ...]``), a list (one
    entry per plan), a mapping of such results, or a dataclass whose fields are all
    tensors ``[plan, ...]`` (e.g. :class:`~actsteer.evaluation.ABScores`).
    """
    if not parts:
        raise InvalidValueError("gather needs at least one part")
    order = [row for rows, _ in parts for row in rows]
    if sorted(order) != list(range(len(order))):
        raise InvalidValueError(f"parts must cover plans 0..{len(order) - 1} once each, "
                                f"got rows {sorted(order)}")
    inverse = torch.argsort(torch.as_tensor(order))
    return _gather([result for _, result in parts], inverse)


def _gather(results: list[Any], inverse: Tensor) -> Any:
    first = results[0]
    if isinstance(first, Tensor):
        return torch.cat(results)[inverse.to(first.device)]
    if isinstance(first, list):
        flat = [value for result in results for value in result]
        return [flat[int(i)] for i in inverse]
    if isinstance(first, Mapping):
        return {name: _gather([result[name] for result in results], inverse)
                for name in first}
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        fields = {f.name: [getattr(result, f.name) for result in results]
                  for f in dataclasses.fields(first)}
        loose = [name for name, values in fields.items() if not isinstance(values[0], Tensor)]
        if loose:
            raise InvalidTypeError(f"cannot gather {type(first).__name__} by plan: fields "
                                   f"{loose} are not [plan, ...] tensors")
        return dataclasses.replace(first, **{name: _gather(values, inverse)
                                             for name, values in fields.items()})
    raise InvalidTypeError(f"cannot gather a {type(first).__name__} by plan; a task run "
                           "over plans returns tensors, lists, mappings or dataclasses of "
                           "tensors, each [plan, ...]")
