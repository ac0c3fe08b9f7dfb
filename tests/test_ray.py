"""Sweeps on Ray: the same cells as a local run, a worker killed mid-unit, a driver killed
mid-run and resumed on the other executor.

The run is the ``quick`` multi-behaviour profile (the expressed behaviours on the embedded
SmolLM2) shrunk to a few prompts, candidate layers and plans; each run extracts its own
vectors (in its own folder), nothing is copied from the local run. Every test shares one local
Ray (2 CPUs) and one pool of two workers, started once for this module. Values compared
at 2e-5 (float32 rounding of 5-7 nat sums) are what the units returned (unrounded, per
plan); the stored cells hold them rounded to 5 decimals and are compared at that rounding.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from actsteer.executor import Executor, LocalExecutor, ModelSpec, Unit
from actsteer.models import EMBEDDED_MODEL
from actsteer.paper import multi_behaviour as mb
from actsteer.paper.multi_behaviour.expressed import ExpressedConfig
from actsteer.results import read_results

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'actsteer[ray]')")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"n_grid": 4, "n_test": 6, "candidate_layers": [6, 15],
         "steerability_fractions": [-0.1, 0.0, 0.1], "combined_recipes": ["sum", "mean"],
         "generate_prompts": 2, "generate_tokens": 3, "tax_corpus": "builtin",
         "tax_documents": 2, "tax_max_tokens": 24, "n_resamples": 50}
"""``--set``-style overrides of the quick profile: a run takes seconds, not minutes."""


def quick(out: Path) -> ExpressedConfig:
    config = mb.profile("quick", out_dir=str(out), **QUICK)
    assert isinstance(config, ExpressedConfig)
    return config


class Recording(Executor):
    """Passes units to ``inner`` and keeps what each returned, per stage and plan."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.kind = inner, inner.kind
        self.units: list[str] = []
        self.values: dict[tuple[str, str], Any] = {}

    @property
    def workers(self) -> int:
        return self.inner.workers

    def bind(self, model: Any) -> None:
        self.inner.bind(model)

    def map(self, units: Any) -> Iterator[tuple[Unit, Any]]:
        for work, result in self.inner.map(units):
            self.units.append(work.key)
            self.values.update(per_plan(work, result))
            yield work, result


def per_plan(work: Unit, result: Any) -> dict[tuple[str, str], Any]:
    stage = work.key.split("/")[0]
    if work.task == "generate":
        return {(stage, work.payload["plan"].identity()): result}
    plans = work.payload["plans"]
    if work.task == "accuracy":
        return {(stage, p.identity()): r.nll for p, r in zip(plans, result, strict=True)}
    return {(stage, p.identity()): torch.stack([result[name].summed[row]
                                                for name in sorted(result)])
            for row, p in enumerate(plans)}


def assert_same_cells(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Equal keys, plans and texts; numbers equal within float32 rounding and the stored one."""
    assert ours.keys() == theirs.keys()

    def close(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for k in a:
                close(a[k], b[k], f"{where}/{k}")
        elif isinstance(a, list):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                close(x, y, f"{where}[{i}]")
        elif isinstance(a, float) and isinstance(b, float):
            # float32 rounding (see test_ray_run_equals_local), plus one unit of the last
            # decimal where the cell stores fewer decimals (document NLLs: 4), since a
            # difference of 6e-5 can cross a rounding boundary
            stored = 1e-4 if round(a, 4) == a and round(b, 4) == b else 0.0
            assert abs(a - b) <= 2e-5 + 2e-6 * abs(a) + stored, f"{where}: {a} != {b}"
        else:
            assert a == b, where

    for key in ours:
        close(ours[key], theirs[key], key)


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, object_store_memory=128 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_session: None) -> Iterator[Any]:
    from actsteer.ray_executor import RayExecutor

    executor = RayExecutor(ModelSpec(EMBEDDED_MODEL, device="cpu"), workers=2)
    try:
        yield executor
    finally:
        executor.close()
    assert ray.is_initialized()  # joined the module's Ray: closing it leaves Ray running


@pytest.fixture(scope="module")
def local_run(smol: Any, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[ExpressedConfig, dict[str, Any], Recording]:
    config = quick(tmp_path_factory.mktemp("local"))
    recording = Recording(LocalExecutor())
    results = mb.run_any(config, model=smol, progress=False, executor=recording)
    return config, results, recording


def _fresh(out: Path) -> ExpressedConfig:
    """The same config in ``out``, which starts empty: the run extracts its own vectors,
    as a run on another machine does, rather than reusing the local run's files."""
    assert not out.joinpath("vectors").exists()
    return quick(out)


def test_ray_run_equals_local(local_run, pool, smol, tmp_path) -> None:
    _, results, local = local_run
    recording = Recording(pool)
    again = mb.run_any(_fresh(tmp_path), model=smol, progress=False,
                       executor=recording)
    assert len(recording.units) > len(local.units)  # two workers got work in each stage
    assert recording.values.keys() == local.values.keys()
    for where, value in local.values.items():
        if isinstance(value, list):  # generated texts
            assert recording.values[where] == value, where
        else:
            # Workers batch other groups of plans than one local unit, so float32 sums differ
            # in their last bits: by <= 8e-6 on propensities of 5-7 nats, and relatively by
            # < 1e-6 on a document's summed NLL of ~100 nats (measured 5.8e-7 on the fluency
            # cells, whose documents follow the chat scaffold).
            torch.testing.assert_close(recording.values[where].double(), value.double(),
                                       atol=2e-5, rtol=2e-6,
                                       msg=lambda text, at=where: f"{at}: {text}")
    assert_same_cells(again["cells"], results["cells"])
    assert mb.report_any(again).splitlines()[-5:] == mb.report_any(results).splitlines()[-5:]


class KillOnce(Recording):
    """SIGKILLs one busy worker's process as soon as a unit returns while another runs."""

    killed: int | None = None

    def map(self, units: Any) -> Iterator[tuple[Unit, Any]]:
        for pair in super().map(units):
            busy = self.inner.busy_pids()  # type: ignore[attr-defined]
            if self.killed is None and busy:
                self.killed = busy[0]
                os.kill(self.killed, signal.SIGKILL)
            yield pair


def test_a_worker_killed_mid_unit_loses_nothing(local_run, pool, smol, tmp_path) -> None:
    _, results, _ = local_run
    before = pool.reruns
    killer = KillOnce(pool)
    again = mb.run_any(_fresh(tmp_path), model=smol, progress=False,
                       executor=killer)
    assert killer.killed is not None and pool.reruns > before
    assert killer.killed not in pool.busy_pids()
    assert_same_cells(again["cells"], results["cells"])


def _cells_in(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [json.loads(line)["cell"] for line in path.read_text().splitlines()[1:]
            if line.startswith('{"cell"')]


def test_a_killed_driver_resumes_on_the_other_executor(local_run, pool, smol,
                                                       tmp_path) -> None:
    _, results, _ = local_run
    resumed_config = _fresh(tmp_path)
    log = tmp_path / mb.RESULTS_FILE
    script = ("import json, sys\n"
              "from actsteer.paper import multi_behaviour as mb\n"
              "config = mb.profile('quick', out_dir=sys.argv[1], **json.loads(sys.argv[2]))\n"
              "mb.run_any(config, progress=False)\n")
    driver = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), json.dumps(QUICK)],
                              cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not _cells_in(log) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    done = _cells_in(log)
    assert done, "the driver wrote no cell before it was killed"
    assert driver.returncode == -signal.SIGKILL
    before = read_results(log)["cells"]
    recording = Recording(pool)  # a local run, finished on Ray
    again = mb.run_any(resumed_config, model=smol, progress=False, executor=recording)
    stage = {"expressed-layers": "layers", "expressed-test": "test", "expressed-tax": "tax",
             "expressed-text": "text"}
    logged = {(stage[key.split("/")[0]], cell["plan_id"]) for key, cell in before.items()}
    assert recording.values and not logged & recording.values.keys()  # none scored again
    assert_same_cells(again["cells"], results["cells"])


def test_a_ray_run_interrupted_is_finished_locally(local_run, pool, smol, tmp_path) -> None:
    _, results, _ = local_run

    class Interrupted(Recording):
        def map(self, units: Any) -> Iterator[tuple[Unit, Any]]:
            for pair in super().map(units):
                yield pair
                if pair[0].key.startswith("test/"):
                    raise KeyboardInterrupt("the driver stopped")

    ours = _fresh(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        mb.run_any(ours, model=smol, progress=False, executor=Interrupted(pool))
    stored = read_results(tmp_path / mb.RESULTS_FILE)["cells"]
    assert any(k.startswith("expressed-test/") for k in stored)
    local = Recording(LocalExecutor())
    again = mb.run_any(ours, model=smol, progress=False, executor=local)
    assert not any(k.startswith("layers/") for k in local.units)  # the grid was done
    assert_same_cells(again["cells"], results["cells"])


def test_a_hung_unit_times_out_naming_it_and_keeps_what_finished(pool) -> None:
    from actsteer.executor import ExecutorError, unit

    units = [unit("echo", {"n": 0}, key="fast/0"), unit("echo", {"sleep_s": 120}, key="hung"),
             unit("echo", {"n": 1}, key="fast/1"), unit("echo", {"n": 2}, key="fast/2")]
    got = []
    limit, pool.unit_timeout_s = pool.unit_timeout_s, 5.0
    try:
        with pytest.raises(ExecutorError, match=r"unit hung ran longer than "
                                                r"unit_timeout_s=5 s on Ray worker \d"):
            for work, result in pool.map(units):
                got.append((work.key, result))
    finally:
        pool.unit_timeout_s = limit
    assert sorted(got, key=str) == [("fast/0", {"n": 0}), ("fast/1", {"n": 1}),
                                    ("fast/2", {"n": 2})]  # all that finished came back
    # the hung worker was restarted: the pool runs units again
    again = [work.key for work, _ in pool.map([unit("echo", {}, key=f"after/{i}")
                                               for i in range(3)])]
    assert sorted(again) == ["after/0", "after/1", "after/2"]
    with pytest.raises(ValueError, match=r"unit_timeout_s must be .* got 0"):
        type(pool)(pool.spec, unit_timeout_s=0)
