"""The executor seam without Ray: units, tasks, partitions, shards, the local executor,
score_items through units, and what the CLI says when Ray is asked for and missing."""

from __future__ import annotations

import sys

import pytest
import torch
from recording import Recording

from actsteer.evaluation import PreparedItems, score_items
from actsteer.executor import (
    Executor,
    ExecutorError,
    LocalExecutor,
    ModelSpec,
    Shard,
    dispatch,
    fingerprint,
    partition,
    run_unit,
    same_model,
    unit,
)
from actsteer.plan import empty_plan, single


def test_partition_keeps_each_start_block_whole_and_balances_blocks() -> None:
    starts = [6, 6, 10, 10, 15, 15, 18, 18, 30]
    assert partition(starts, 1, 30) == [list(range(9))]
    groups = partition(starts, 2, 30)
    assert sorted(i for g in groups for i in g) == list(range(9))
    for group in groups:  # a run of neighbouring start blocks, never one split in two
        layers = sorted({starts[i] for i in group})
        assert all(not {starts[i] for i in other} & set(layers)
                   for other in groups if other is not group)
    assert partition(starts, 4, 30) == [[0, 1], [2, 3], [4, 5], [6, 7, 8]]
    # more workers than start blocks: one block's plans are spread, each unit a prefix
    assert partition([11] * 4, 2, 30) == [[0, 1], [2, 3]]
    assert partition([3], 8, 30) == [[0]] and partition([], 2, 30) == []
    with pytest.raises(ValueError, match="parts must be >= 1"):
        partition(starts, 0, 30)


def test_shards_split_keys_stably_and_parse() -> None:
    keys = [f"sweep/general/L{layer}" for layer in range(40)]
    owners = [[k for k in keys if Shard(i, 3).owns(k)] for i in range(3)]
    assert sorted(k for part in owners for k in part) == sorted(keys)
    assert all(part for part in owners)
    assert Shard.parse("1/3") == Shard(1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)


def test_units_name_registered_tasks_and_run_anywhere(tiny_model) -> None:
    work = unit("echo", {"x": 1}, key="e")
    assert (work.task, work.module, work.key) == ("echo", "actsteer.executor", "e")
    assert run_unit(tiny_model, work) == {"x": 1}
    # each task is registered beside the computation it wraps; a worker imports that module
    import actsteer.likelihood  # noqa: F401  (registers its tasks)

    assert unit("ab-scores", {}).module == "actsteer.evaluation"
    assert unit("continuation-propensities", {}).module == "actsteer.likelihood"
    with pytest.raises(KeyError, match=r"no task 'nope'.*import the module"):
        unit("nope", {})


def test_local_executor_yields_every_unit_and_refuses_repeated_keys(tiny_model) -> None:
    executor = LocalExecutor(tiny_model)
    units = [unit("echo", {"i": i}, key=f"u{i}") for i in range(3)]
    assert [(u.key, r["i"]) for u, r in executor.map(units)] == [("u0", 0), ("u1", 1),
                                                                ("u2", 2)]
    with pytest.raises(ValueError, match="repeat"):
        list(executor.map([unit("echo", {}, key="a"), unit("echo", {}, key="a")]))
    with pytest.raises(ValueError, match="another model"):
        executor.bind(object())
    with pytest.raises(ValueError, match="no model"):
        list(LocalExecutor().map(units))
    seen: list[int] = []
    dispatch(executor, [(u, lambda r: seen.append(r["i"])) for u in units])
    assert seen == [0, 1, 2]


def test_score_items_through_units_equals_one_pass(tiny_model, vectors) -> None:
    vector, _ = vectors
    prompts = [[1, 5 + i, 9, 11 + i, 2] for i in range(6)]
    items = PreparedItems.from_ids(prompts, [5] * 6, [6] * 6)
    plans = [empty_plan(), *(single(vector, layer, m) for layer in (1, 2, 3)
                             for m in (-4.0, 4.0))]

    class Split(Recording):  # as many units as a pool of three workers gets
        workers = 3

    split = Split()
    whole = score_items(tiny_model, items, plans)
    parts = score_items(tiny_model, items, plans, executor=split)
    assert len(split.keys) == 3
    assert torch.equal(whole.klass, parts.klass)
    torch.testing.assert_close(parts.logit_diff, whole.logit_diff, atol=1e-5, rtol=0)


def test_fingerprints_tell_models_apart(tiny_model) -> None:
    ours = fingerprint(tiny_model)
    assert same_model(ours, fingerprint(tiny_model))
    assert not same_model(ours, {**ours, "weights": "0" * 64})
    assert not same_model(ours, {**ours, "n_layers": ours["n_layers"] + 1})


@pytest.mark.parametrize("where", [0, 0.5, -1], ids=["first", "middle", "last"])
def test_one_weight_edited_in_place_changes_the_fingerprint(tiny_model, where) -> None:
    """Surgery edits the driver's model in place: workers that loaded the file must not
    pass as the same model, whichever parameter holds the edit."""
    before = fingerprint(tiny_model)
    params = [p for _, p in tiny_model.named_parameters()]
    param = params[int(where * len(params))] if isinstance(where, float) else params[where]
    index = (0,) * param.dim()
    kept = param.detach()[index].clone()
    try:
        with torch.no_grad():
            param[index] += 1e-3
        assert not same_model(before, fingerprint(tiny_model))
        with torch.no_grad():
            param[index] = -param[index]  # a sign flip leaves a sum of magnitudes alone
        assert not same_model(before, fingerprint(tiny_model))
    finally:
        with torch.no_grad():
            param[index] = kept
    assert same_model(before, fingerprint(tiny_model))


def test_model_config_gives_the_spec_its_workers_load() -> None:
    from actsteer.paper.common import ModelConfig

    spec = ModelConfig(name="x", backend="bridge", device="cuda:1", dtype="bf16").spec()
    assert spec == ModelSpec("x", "bridge", "bf16", "cuda:1") and spec.uses_gpu
    with pytest.raises(ValueError, match="backend"):
        ModelSpec("x", backend="nope")


def test_ray_missing_ends_with_the_extra_to_install(monkeypatch, capsys, tmp_path) -> None:
    from actsteer.cli import RayUnavailableError, main, ray_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    monkeypatch.delitem(sys.modules, "actsteer.ray_executor", raising=False)
    with pytest.raises(RayUnavailableError, match=r'pip install "actsteer\[ray\]"'):
        ray_executor(ModelSpec("x"))
    code = main(["multi-behaviour", "--executor", "ray", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert 'pip install "actsteer[ray]"' in err[0] and "--executor ray" in err[0]
    assert not (tmp_path / "o").exists()  # refused before any work
    assert main(["broad-skills", "--workers", "2", "--out", str(tmp_path / "o")]) == 2
    assert "--executor ray only" in capsys.readouterr().err


def test_the_base_executor_is_an_interface() -> None:
    with pytest.raises(NotImplementedError):
        Executor().bind(None)
    assert isinstance(ExecutorError("x"), RuntimeError)


def test_a_ray_worker_returns_its_warnings_and_the_driver_warns_with_them(tiny_model) -> None:
    """A word dropped on a worker is named on the driver: the worker's warnings come back
    with the unit's result and are warned again there."""
    import warnings

    pytest.importorskip("ray", reason="Ray is not installed")
    import actsteer.likelihood  # noqa: F401  (registers the word-propensities task)
    from actsteer.batching import encode
    from actsteer.contrast import WordSets
    from actsteer.executor import unit
    from actsteer.ray_executor import _reemit, _Worker

    worker = object.__new__(_Worker)  # the actor's class, without Ray or a model load
    worker.model = tiny_model
    words = WordSets("mood", ("good", "antidisestablishmentarianism"), ("bad",))
    work = unit("word-propensities", {"prompts": [encode(tiny_model, "The day was")],
                                      "word_sets": [words], "plans": [empty_plan()]},
                key="words/L0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes on the worker's side
        _, result, caught = worker.run(work)
    assert result["mood"].summed.shape == (1, 1)
    assert [(category, "antidisestablishmentarianism" in message)
            for category, message in caught] == [(UserWarning, True)]
    with pytest.warns(UserWarning, match=r"not counted: antidisestablishmentarianism "
                                         r"\(Ray worker, unit words/L0\)"):
        _reemit(caught, work.key)
