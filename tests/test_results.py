"""Results files: one writer at a time, resumable, damage and overwrite keep what they can."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from actsteer.results import (
    ResultConfigMismatchError,
    ResultsLockedError,
    ResultStore,
    read_results,
)

CONFIG = {"model": "tiny", "n": 3}


def _writer(path: str, start: int, count: int, ready, go) -> None:
    """A second process writing cells through its own store (or failing to open it)."""
    try:
        store = ResultStore(path, CONFIG)
    except ResultsLockedError as error:
        ready.put(f"locked: {error}")
        return
    ready.put("open")
    go.wait(30)
    for index in range(start, start + count):
        store.put(f"cell/{index}", {"value": index})
    store.close()


def test_second_writer_is_refused_and_nothing_is_lost(tmp_path) -> None:
    path = tmp_path / "r.json"
    context = multiprocessing.get_context("spawn")
    ready, go = context.Queue(), context.Event()
    first = context.Process(target=_writer, args=(str(path), 0, 20, ready, go))
    first.start()
    assert ready.get(timeout=60) == "open"
    # a second process and a second store in this process are both refused while it writes
    second = context.Process(target=_writer, args=(str(path), 100, 20, ready, go))
    second.start()
    message = ready.get(timeout=60)
    assert message.startswith("locked: ") and str(path) in message and "pid" in message
    with pytest.raises(ResultsLockedError, match="another output folder"):
        ResultStore(path, CONFIG)
    go.set()
    first.join(60)
    second.join(60)
    cells = json.loads(path.read_text())["cells"]
    assert sorted(cells) == sorted(f"cell/{i}" for i in range(20))
    # once the writer is done, the file opens again and resumes every cell
    with ResultStore(path, CONFIG) as store:
        assert len(store.cells) == 20


def test_lock_is_released_on_close_and_a_closed_store_refuses_writes(tmp_path) -> None:
    path = tmp_path / "r.json"
    store = ResultStore(path, CONFIG)
    store.put("a", 1)
    store.close()
    with pytest.raises(ResultsLockedError, match="closed"):
        store.put("b", 2)
    with ResultStore(path, CONFIG) as again:
        assert again.get("a") == 1


def test_other_config_refused_and_overwrite_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "r.json"
    with ResultStore(path, CONFIG) as store:
        store.put("a", 1)
    with pytest.raises(ResultConfigMismatchError, match=r"fields \['n'\].*--overwrite"):
        ResultStore(path, {**CONFIG, "n": 4})
    with ResultStore(path, {**CONFIG, "n": 4}, overwrite=True) as store:
        assert store.cells == {}
        store.put("b", 2)
    (kept,) = tmp_path.glob("r.json.replaced-*")
    assert json.loads(kept.read_text())["cells"] == {"a": 1}
    assert json.loads(path.read_text())["cells"] == {"b": 2}


def test_truncated_file_keeps_its_complete_cells(tmp_path) -> None:
    path = tmp_path / "r.json"
    with ResultStore(path, CONFIG) as store:
        for index in range(5):
            store.put(f"cell/{index}", {"value": index, "items": list(range(10))})
    text = path.read_text()
    cut = text.index('"cell/3"') + 20  # in the middle of the fourth cell
    path.write_text(text[:cut])
    with ResultStore(path, CONFIG) as store:
        assert sorted(store.cells) == ["cell/0", "cell/1", "cell/2"]
        assert store.get("cell/2") == {"value": 2, "items": list(range(10))}
    (damaged,) = tmp_path.glob("r.json.damaged-*")
    assert damaged.read_text() == text[:cut]


def test_damage_before_the_config_names_the_file_and_the_way_out(tmp_path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"config": {"model": "ti')
    with pytest.raises(ValueError, match=r"r\.json is damaged.*--overwrite"):
        ResultStore(path, CONFIG)
    with pytest.raises(ValueError, match=r"r\.json is not JSON"):
        read_results(path)


def test_results_are_written_with_the_umask_mode(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        with ResultStore(tmp_path / "r.json", CONFIG) as store:
            store.put("a", 1)
    finally:
        os.umask(umask)
    assert (Path(tmp_path / "r.json").stat().st_mode & 0o777) == 0o644
