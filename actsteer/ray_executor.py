"""Units of work on Ray actors: one worker per GPU, or ``workers`` single-threaded CPU ones.

Imported only when asked for (the CLI's ``--executor ray``), so the base install does not
need Ray (``pip install "actsteer[ray]"``).

Each worker is an actor that loads the model once from a
:class:`~actsteer.executor.ModelSpec`, sets its CPU threads, and runs one unit at a time;
the driver hands the next unit to whichever worker is free, so uneven units balance
themselves. Faults:

* a worker process that dies mid-unit (killed, out of memory, a lost node) is restarted
  by Ray (``max_restarts``, which loads the model again) and its unit goes back to the
  front of the queue, for the next free worker; a unit that kills its worker more than
  ``max_retries`` times, or a pool with no worker left, ends the map with
  :class:`~actsteer.executor.ExecutorError`;
* an error raised by the task itself (a bad plan, a bug) is not retried: it is raised in
  the driver as the task raised it;
* a unit that runs longer than ``unit_timeout_s`` (a hung worker) ends the map with
  :class:`~actsteer.executor.ExecutorError` naming the unit; its worker is restarted, and
  every unit that finished before was already handed to the driver (its cells are saved);
* the driver itself dying loses only the units in flight: their cells are not in the
  results log, so the same command resumes there, on either executor.

Started here (``address`` None), Ray runs on this machine with ``num_cpus`` = workers ×
threads, a small object store and no dashboard, its logs kept out of the terminal;
``address="auto"`` joins the cluster this machine is part of (``ray start --head`` /
``ray start --address=...``).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import ray
import torch

from actsteer.errors import InvalidValueError
from actsteer.executor import (
    Executor,
    ExecutorError,
    ModelSpec,
    Unit,
    check_keys,
    fingerprint,
    run_unit,
    same_model,
)

__all__ = ["RayExecutor"]

logger = logging.getLogger(__name__)

RESTART_TIMEOUT_S = 600.0
"""How long the driver waits for a worker Ray is restarting (it loads the model again)."""

UNIT_TIMEOUT_S = 3600.0
"""Default limit on one unit's run time on a worker: far above a paper-profile unit on a
GPU (minutes), so only a hung worker reaches it."""

OBJECT_STORE_MB = 256
"""Object store of a Ray started here: units carry token ids and plans, not activations."""


class _Worker:
    """A Ray actor holding one model; runs units one at a time."""

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        os.environ["TQDM_DISABLE"] = "1"  # nobody sees a worker's progress bars
        torch.set_num_threads(threads)
        if spec.uses_gpu:  # Ray shows each worker its own GPU as cuda:0
            spec = replace(spec, device="cuda")
        self.model = spec.load()

    def fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.model)

    def pid(self) -> int:
        return os.getpid()

    def run(self, work: Unit) -> tuple[int, Any, list[tuple[type[Warning], str]]]:
        """The unit's result, with the warnings it raised: a worker's own warnings go to
        its log, where nobody reads them, so the driver re-emits them (:func:`_reemit`)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_unit(self.model, work)
        return os.getpid(), result, [(w.category, str(w.message)) for w in caught]


class RayExecutor(Executor):
    """Runs units on Ray actors, each with its own copy of the model.

    Args:
        spec: what each worker loads (its device: ``"cuda"`` gives every worker one GPU).
        workers: actors to start (None: one per GPU of the cluster for a CUDA spec, else
            the cluster's CPUs divided by ``threads``).
        threads: ``torch.set_num_threads`` in each worker (and its Ray CPU share).
        address: None starts Ray on this machine (stopped again by :meth:`close`);
            ``"auto"`` or ``"host:port"`` joins a running cluster.
        max_retries: how often a unit may be run again after its worker died, and how
            often Ray restarts a worker.
        unit_timeout_s: the longest one unit may run on a worker before the map stops
            with an error naming it (None: no limit).

    Example::

        with RayExecutor(ModelSpec("smollm2-135m-instruct"), workers=2) as executor:
            executor.bind(model)            # the driver's model: workers must match it
            for unit, result in executor.map(units):
                ...
    """

    kind = "ray"

    def __init__(self, spec: ModelSpec, *, workers: int | None = None, threads: int = 1,
                 address: str | None = None, max_retries: int = 3,
                 unit_timeout_s: float | None = UNIT_TIMEOUT_S) -> None:
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InvalidValueError(f"workers must be a whole number >= 1, got {workers!r}")
        if not isinstance(threads, int) or threads < 1:
            raise InvalidValueError(f"threads must be a whole number >= 1, got {threads!r}")
        if max_retries < 0:
            raise InvalidValueError(f"max_retries must be >= 0, got {max_retries}")
        if unit_timeout_s is not None and not (isinstance(unit_timeout_s, (int, float))
                                               and unit_timeout_s > 0):
            raise InvalidValueError(f"unit_timeout_s must be a number of seconds > 0 or None "
                                    f"(no limit), got {unit_timeout_s!r}")
        self.unit_timeout_s = unit_timeout_s
        self.spec, self.threads, self.address = spec, threads, address
        self.max_retries = max_retries
        self._wanted = workers
        self._started_ray = False
        self._actors: list[Any] = []
        self._pids: list[int | None] = []
        self._busy: dict[int, Unit] = {}
        self._expected: dict[str, Any] | None = None
        self._checked = False
        self.reruns = 0
        """Units run again because their worker died."""
        self.completed = 0

    # -- the cluster ----------------------------------------------------------------
    def _connect(self) -> None:
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.ERROR}
        if self.address is None:
            cpus = (self._wanted or os.cpu_count() or 1) * self.threads
            if self.spec.uses_gpu:
                cpus = max(cpus, os.cpu_count() or 1)
            options.update(num_cpus=cpus, object_store_memory=OBJECT_STORE_MB * 2**20)
        else:
            options["address"] = self.address
        ray.init(**options)
        self._started_ray = self.address is None

    @property
    def workers(self) -> int:
        if self._actors:
            return len(self._actors)
        if self._wanted is not None:
            return self._wanted
        self._connect()
        resources = ray.cluster_resources()
        if self.spec.uses_gpu:
            gpus = int(resources.get("GPU", 0))
            if gpus < 1:
                raise ExecutorError(f"the model runs on {self.spec.device}, and the Ray "
                                    "cluster has no GPU; start workers on GPU machines or "
                                    "use --device cpu")
            return gpus
        return max(1, int(resources.get("CPU", 1)) // self.threads)

    def _start(self) -> None:
        if self._actors:
            return
        count = self.workers
        self._connect()
        actor = ray.remote(_Worker).options(  # type: ignore[attr-defined]
            num_cpus=self.threads, num_gpus=1 if self.spec.uses_gpu else 0,
            max_restarts=self.max_retries, max_task_retries=0)
        self._actors = [actor.remote(self.spec, self.threads) for _ in range(count)]
        self._pids = [None] * count
        logger.info("started %d Ray workers loading %s", count, self.spec.name)

    def bind(self, model: Any) -> None:
        """Start the workers (they load the model while the driver goes on) and remember
        the driver's model, which every worker's must match."""
        self._expected = fingerprint(model)
        self._start()

    def _check(self) -> None:
        if self._checked:
            return
        try:
            found = ray.get([a.fingerprint.remote() for a in self._actors])
            self._pids = ray.get([a.pid.remote() for a in self._actors])
        except ray.exceptions.RayActorError as error:
            raise ExecutorError(f"a Ray worker could not load {self.spec.name}: "
                                f"{_first_line(error)}") from None
        if self._expected is not None:
            for index, theirs in enumerate(found):
                if not same_model(self._expected, theirs):
                    raise ExecutorError(
                        f"Ray worker {index} loaded another model than the driver's "
                        f"({theirs} against {self._expected}); give the executor the spec "
                        "of the model the run uses")
        self._checked = True

    def _wait_for(self, index: int) -> int | None:
        """Block until worker ``index`` answers again after a death (Ray restarting it) and
        return its new pid; ``None`` if it is gone for good or not back in time."""
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                return int(ray.get(self._actors[index].pid.remote(), timeout=left))
            except ray.exceptions.ActorUnavailableError:
                time.sleep(min(1.0, max(0.0, left)))  # still restarting
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                return None
        return None

    def busy_pids(self) -> list[int]:
        """Process ids of the workers running a unit now (e.g. to test faults)."""
        return [pid for index in self._busy if (pid := self._pids[index]) is not None]

    # -- running units --------------------------------------------------------------
    def map(self, units: Sequence[Unit]) -> Iterator[tuple[Unit, Any]]:
        check_keys(units)
        if not units:
            return
        self._start()
        self._check()
        queue: deque[Unit] = deque(units)
        deaths: dict[int, int] = {}
        failures: dict[int, int] = dict.fromkeys(range(len(self._actors)), 0)
        alive = set(range(len(self._actors)))
        idle = sorted(alive)
        running: dict[Any, int] = {}
        started: dict[Any, float] = {}

        def fill() -> None:
            while queue and idle:
                index = idle.pop(0)
                work = queue.popleft()
                self._busy[index] = work
                ref = self._actors[index].run.remote(work)
                running[ref], started[ref] = index, time.monotonic()

        fill()
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1,
                                    timeout=self._wait_s(started.values()))
                if not ready:  # nothing finished: every result so far was yielded
                    self._stop_overdue(running, started)
                    continue
                (ref,) = ready
                started.pop(ref)
                index = running.pop(ref)
                work = self._busy.pop(index)
                try:
                    pid, result, caught = ray.get(ref)
                except ray.exceptions.RayActorError as error:
                    # Dead, or unavailable mid-unit (the unit may not have finished): run it
                    # again, and give this worker work only once Ray has restarted it (it
                    # loads the model again), so a restart is never counted as more deaths.
                    deaths[id(work)] = deaths.get(id(work), 0) + 1
                    failures[index] += 1
                    if deaths[id(work)] > self.max_retries:
                        raise ExecutorError(
                            f"unit {work.key} lost its worker {deaths[id(work)]} times; "
                            f"giving up ({_first_line(error)})") from None
                    logger.warning("Ray worker %d died running %s; running it again",
                                   index, work.key)
                    self.reruns += 1
                    queue.appendleft(work)
                    self._pids[index] = None
                    if failures[index] <= self.max_retries:
                        self._pids[index] = self._wait_for(index)
                    if self._pids[index] is None:  # Ray will not restart it
                        alive.discard(index)
                    else:
                        idle.append(index)
                    if not alive:
                        raise ExecutorError("every Ray worker died; see the Ray logs "
                                            "(/tmp/ray/session_latest/logs)") from None
                    fill()
                    continue
                except ray.exceptions.RayTaskError as error:
                    cause = getattr(error, "cause", None)
                    logger.debug("unit %s failed on Ray: %s", work.key, error)
                    if isinstance(cause, BaseException):
                        raise cause from None
                    raise
                _reemit(caught, work.key)
                self._pids[index] = pid
                idle.append(index)
                fill()  # keep the workers busy while the driver records this result
                self.completed += 1
                yield work, result
        finally:
            self._busy.clear()

    def _wait_s(self, started: Iterable[float]) -> float | None:
        """How long to wait for a result before the oldest running unit is overdue."""
        if self.unit_timeout_s is None:
            return None
        return max(0.0, min(started) + self.unit_timeout_s - time.monotonic())

    def _stop_overdue(self, running: Mapping[Any, int], started: Mapping[Any, float]) -> None:
        """Raise for the first unit past ``unit_timeout_s``, restarting its worker (a hung
        one would block every later map); return if none is overdue yet."""
        if self.unit_timeout_s is None:  # ray.wait had no timeout: a unit finished
            return
        now = time.monotonic()
        for ref, index in running.items():
            if now - started[ref] < self.unit_timeout_s:
                continue
            work = self._busy[index]
            try:
                ray.kill(self._actors[index], no_restart=False)
            except (ray.exceptions.RayError, ValueError):  # already gone: as wanted
                logger.debug("Ray worker %d already gone at its timeout", index)
            self._pids[index] = None
            raise ExecutorError(
                f"unit {work.key} ran longer than unit_timeout_s={self.unit_timeout_s:g} s "
                f"on Ray worker {index}; that worker was restarted and the units that "
                "finished before were returned (their results are kept). Find what hangs, "
                "or allow longer units: RayExecutor(unit_timeout_s=...)")

    def close(self) -> None:
        for actor in self._actors:
            try:
                ray.kill(actor)
            except (ray.exceptions.RayError, ValueError):  # already gone: as wanted
                logger.debug("Ray worker already gone at close")
        self._actors, self._pids, self._checked = [], [], False
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False


def _reemit(caught: Sequence[tuple[type[Warning], str]], key: str) -> None:
    """Warn on the driver with each warning a worker caught running unit ``key``."""
    for category, message in caught:
        warnings.warn(f"{message} (Ray worker, unit {key})", category, stacklevel=3)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
