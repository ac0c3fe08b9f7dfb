"""Independent units of scoring work, handed to an executor: in this process or on Ray.

A sweep is planned on the driver as **units**: plain data that names a registered
**task** (a pure function ``task(model, payload) -> result``) and carries its payload
(token ids, answer ids, :class:`~actsteer.plan.SteeringPlan` values, whose vectors travel
as tensors, never a model). Units that share a behaviour, a split and a steered layer
are one unit, so the unsteered prefix below the layer is computed once for all of them
(:func:`actsteer.sweep.sweep_logits`). An **executor** runs units and yields
``(unit, result)`` as each completes, in any order; the driver stays the only writer of
its results and records each unit's cells as it returns:

* :class:`LocalExecutor` — in this process, on the driver's model, one unit after
  another (the default everywhere);
* :class:`actsteer.ray_executor.RayExecutor` — on Ray actors that each load the model
  once from a :class:`ModelSpec` (one per GPU, or ``workers`` on CPUs); a worker killed
  mid-unit has its unit run again elsewhere. The CLI chooses it (``--executor ray``).

This module is a seam: it knows no implementation and no task. Each task is registered
(:func:`register_task`) in the module of the computation it wraps, and a unit records that
module, so that a worker imports it on first use.

Example::

    from actsteer.executor import LocalExecutor, unit
    with LocalExecutor(model) as executor:
        units = [unit("ab-scores", {"items": items, "plans": plans}, key="L14")]
        for done, scores in executor.map(units):
            print(done.key, scores.p_matching.mean())
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from actsteer.errors import ActsteerError, InvalidValueError, MissingKeyError

__all__ = [
    "Executor",
    "ExecutorError",
    "LocalExecutor",
    "ModelSpec",
    "Shard",
    "Task",
    "Unit",
    "check_keys",
    "dispatch",
    "fingerprint",
    "partition",
    "register_task",
    "run_unit",
    "scoring_options",
    "unit",
]

Task = Callable[[Any, Mapping[str, Any]], Any]
"""``task(model, payload) -> result``: pure, so that any worker can run it (again)."""


class ExecutorError(ActsteerError, RuntimeError):
    """Units could not be run: a unit failed on every retry, or no worker is left."""


# -- model specs ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads its own copy of the model (arguments of
    :func:`actsteer.load_model`); a value, so that it can travel to other machines.

    ``device`` ``"cuda"`` or ``"cuda:N"`` means each worker's own GPU: a Ray worker
    uses the one GPU Ray gives it.
    """

    name: str
    backend: str | None = None
    """``"hooked"``, ``"bridge"``, or None for the installed TransformerLens line's default;
    stored resolved, so that every worker loads what the driver meant."""
    dtype: str = "float32"
    device: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidValueError(f"ModelSpec needs a model name or folder, got {self.name!r}")
        from actsteer.models.info import resolve_backend  # the package imports torch

        object.__setattr__(self, "backend", resolve_backend(self.backend))

    @property
    def uses_gpu(self) -> bool:
        return self.device is not None and self.device.startswith("cuda")

    def load(self) -> Any:
        """The model, loaded with :func:`actsteer.load_model`."""
        from actsteer.models import load_model

        return load_model(self.name, backend=self.backend,  # type: ignore[arg-type]
                          device=self.device, dtype=self.dtype)


def fingerprint(model: Any) -> dict[str, Any]:
    """Shape, dtype and a digest of every weight of ``model``: a worker that loaded another
    model than the driver's, or the same one while the driver's was edited in place
    (surgery), is caught before its results are mixed in.

    The digest is SHA-256 over each parameter's name, shape, dtype and bytes (copied to the
    CPU one parameter at a time), so it changes with any weight. Cost, measured on this
    project's 2-core CPU machines: 1.3 s per GB for SHA-256 alone, 1.9 s per GB for the
    embedded model's 0.65 GB of float32 weights under load, so ~20-30 s for a 7B model in
    fp16 (13.5 GB; plus the copy off a GPU), once per bind on the driver and per worker.
    """
    import torch

    digest = hashlib.sha256()
    dtype = None
    for name, param in model.named_parameters():
        weights = param.detach()
        dtype = dtype or str(weights.dtype)
        digest.update(f"{name} {tuple(weights.shape)} {weights.dtype};".encode())
        data = weights.to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(data.numpy()))
    cfg = model.cfg
    return {"n_layers": int(cfg.n_layers), "d_model": int(cfg.d_model),
            "d_vocab": int(cfg.d_vocab), "dtype": dtype, "weights": digest.hexdigest()}


def same_model(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> bool:
    """Whether two :func:`fingerprint` values describe one model: equal shapes, dtype and
    weights, byte for byte."""
    return dict(ours) == dict(theirs)


# -- tasks and units --------------------------------------------------------------------


_TASKS: dict[str, tuple[str, Task]] = {}


def register_task(name: str) -> Callable[[Task], Task]:
    """Register a function as the task called ``name`` (the module that defines it is
    recorded, so that a worker imports it on first use). Register a task in the module
    of the computation it wraps.

    Example::

        @register_task("word-propensities")
        def _word_task(model, payload):
            return word_propensities(model, payload["prompts"], ...)
    """

    def register(function: Task) -> Task:
        known = _TASKS.get(name)
        if known is not None and known[0] != function.__module__:
            raise InvalidValueError(f"task {name!r} is already registered by {known[0]}")
        _TASKS[name] = (function.__module__, function)
        return function

    return register


def _task(name: str, module: str) -> Task:
    if name not in _TASKS:
        importlib.import_module(module)  # registers its tasks
    if name not in _TASKS:
        raise MissingKeyError(f"no task {name!r} in {module}; registered: {sorted(_TASKS)}")
    return _TASKS[name][1]


@dataclass(frozen=True, eq=False)
class Unit:
    """One unit of work: the task's name, the module that registers it, and its payload.

    Compared by identity: an executor yields back the very unit it was given.
    """

    task: str
    module: str
    payload: Mapping[str, Any] = field(repr=False)
    key: str = ""
    """Names the unit in progress, logs and :class:`Shard` (unique within one map)."""


def unit(name: str, payload: Mapping[str, Any], *, key: str = "") -> Unit:
    """A :class:`Unit` of the registered task ``name`` (registered when the module that
    defines it was imported)."""
    if name not in _TASKS:
        raise MissingKeyError(f"no task {name!r}; registered: {sorted(_TASKS)}; import the "
                              "module that registers it with register_task first")
    return Unit(name, _TASKS[name][0], payload, key or name)


def run_unit(model: Any, work: Unit) -> Any:
    """Run one unit on ``model`` (what every worker does)."""
    return _task(work.task, work.module)(model, work.payload)


def scoring_options(payload: Mapping[str, Any], desc: str) -> dict[str, Any]:
    """The keyword options a scoring task passes through from its payload (batch size,
    progress bar and its description)."""
    return {"batch_size": payload.get("batch_size", 16),
            "progress": payload.get("progress", False), "desc": payload.get("desc", desc)}


@register_task("echo")
def echo(model: Any, payload: Mapping[str, Any]) -> Any:
    """Returns its payload: measures an executor's overhead per unit. With ``sleep_s`` in
    the payload it first sleeps that long (a unit that hangs, for timeouts)."""
    del model
    if payload.get("sleep_s"):
        import time

        time.sleep(float(payload["sleep_s"]))
    return payload


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` of a sweep's independent units, chosen by a stable
    hash of each unit's key, so that runs on several machines split the work without
    talking to each other (merge their logs with :func:`actsteer.results.merge_results`).
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count >= 1
                and isinstance(self.index, int) and 0 <= self.index < self.count):
            raise InvalidValueError(f"shard {self.index} of {self.count} is invalid; use "
                                    "0 <= index < count")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"0/2"`` → ``Shard(0, 2)``."""
        index, sep, count = text.partition("/")
        try:
            if not sep:
                raise ValueError(text)
            return cls(int(index), int(count))
        except ValueError:
            raise InvalidValueError(f"shard {text!r} is not INDEX/COUNT, e.g. 0/2") from None

    def owns(self, key: str) -> bool:
        digest = hashlib.sha1(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


def partition(starts: Sequence[int], parts: int, n_layers: int) -> list[list[int]]:
    """Plans (by index) grouped into at most ``parts`` units by the block each starts
    at (``starts``, :func:`actsteer.sweep.start_layer`).

    A unit holds a run of neighbouring start blocks, so the unsteered stream is advanced
    once through them; the runs are chosen to balance the blocks each unit computes (its
    deepest start block for the shared stream, plus ``n_layers - start`` per plan). A
    start block's plans stay in one unit, unless there are more parts than start blocks:
    then its plans are spread over several units, each computing the prefix again, so
    that every worker has work. One part gives one unit, as one call of
    :func:`actsteer.sweep.sweep_logits` with every plan.

    Example:
        >>> partition([14, 14, 20, 30], 2, 30)     # two ladders and the unsteered plan
        [[0, 1], [2, 3]]
        >>> partition([11, 11, 11, 11], 2, 30)     # one start block, two workers
        [[0, 1], [2, 3]]
    """
    if parts < 1:
        raise InvalidValueError(f"parts must be >= 1, got {parts}")
    if not starts:
        return []
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    layers = sorted(set(starts))
    if parts <= len(layers):  # atoms: every plan of one start block
        atoms = [[i for i in order if starts[i] == layer] for layer in layers]
    else:  # atoms: single plans
        atoms = [[i] for i in order]
    parts = min(parts, len(atoms))

    def cost(first: int, end: int) -> int:  # atoms[first:end] in one unit
        chosen = [i for atom in atoms[first:end] for i in atom]
        return max(starts[i] for i in chosen) + sum(n_layers - starts[i] for i in chosen)

    # best[k][j]: the smallest largest unit cost splitting atoms[:j] into k units
    inf = float("inf")
    best = [[inf] * (len(atoms) + 1) for _ in range(parts + 1)]
    cut = [[0] * (len(atoms) + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for end in range(k, len(atoms) + 1):
            for first in range(k - 1, end):
                value = max(best[k - 1][first], cost(first, end))
                if value < best[k][end]:
                    best[k][end], cut[k][end] = value, first
    bounds, end = [], len(atoms)
    for k in range(parts, 0, -1):
        bounds.append((cut[k][end], end))
        end = cut[k][end]
    return [sorted(i for atom in atoms[first:end] for i in atom)
            for first, end in reversed(bounds)]


# -- executors --------------------------------------------------------------------------


class Executor:
    """Runs units and yields ``(unit, result)`` as each completes (any order).

    Bind the driver's model first (:meth:`bind`): a local executor runs on it, a remote
    one checks that its workers loaded the same model. Use as a context manager, or call
    :meth:`close`, to stop workers.
    """

    kind: str = ""

    @property
    def workers(self) -> int:
        """How many units run at once (to size units: at least this many)."""
        return 1

    def bind(self, model: Any) -> None:
        raise NotImplementedError

    def map(self, units: Sequence[Unit]) -> Iterator[tuple[Unit, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers this executor started (nothing to do for a local one)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class LocalExecutor(Executor):
    """Units run in this process on the driver's model, in the order given."""

    kind = "local"

    def __init__(self, model: Any = None) -> None:
        self.model = model

    def bind(self, model: Any) -> None:
        if self.model is not None and self.model is not model:
            raise InvalidValueError("this LocalExecutor runs on another model than the one "
                                    "given; make one LocalExecutor per model")
        self.model = model

    def map(self, units: Sequence[Unit]) -> Iterator[tuple[Unit, Any]]:
        if self.model is None:
            raise InvalidValueError("LocalExecutor has no model: pass one, or bind(model)")
        check_keys(units)
        for work in units:
            yield work, run_unit(self.model, work)


def check_keys(units: Sequence[Unit]) -> None:
    """Refuse units whose keys repeat within one map (results are stored by key)."""
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise InvalidValueError(f"unit keys repeat within one map: {repeated[:5]}")


def dispatch(executor: Executor, jobs: Sequence[tuple[Unit, Callable[[Any], None]]], *,
             progress: bool = False, desc: str = "units") -> None:
    """Run every job's unit on ``executor`` at once and call the job's callback with its
    result as it returns (in the driver, one at a time: callbacks write results)."""
    if not jobs:
        return
    from tqdm import tqdm

    done = {id(work): callback for work, callback in jobs}
    with tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False,
              unit="unit") as bar:
        for work, result in executor.map([work for work, _ in jobs]):
            done.pop(id(work))(result)
            bar.update()
    if done:  # pragma: no cover - an executor that drops units is a bug
        raise ExecutorError(f"{len(done)} units never returned")
