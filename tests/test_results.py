"""Results logs: one appended line per cell, resumable after a kill, one writer at a time,
damage and config changes refused without touching the file, shards merged."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.results import (
    FORMAT,
    ResultConfigMismatchError,
    ResultConflictError,
    ResultsLockedError,
    ResultStore,
    merge_results,
    read_results,
)

CONFIG = {"model": "tiny", "n": 3}


def _cell(index: int) -> dict:
    """A cell shaped like a multi-behaviour one; every cell serialises to the same length."""
    return {"p_matching": 0.5, "index": f"{index:06d}", "items": [0.25 * (i % 4) for i in
                                                                   range(60)]}


def _fill(path: Path, count: int, config: dict = CONFIG) -> None:
    with ResultStore(path, config) as store:
        for index in range(count):
            store.put(f"cell/{index:06d}", _cell(index))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _files(folder: Path) -> dict[str, bytes]:
    """The folder's contents, bar the lock files."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if ".lock" not in p.name}


# -- the log --------------------------------------------------------------------------


def test_each_cell_appends_one_line_and_never_rewrites_earlier_bytes(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultStore(path, CONFIG)
    header = path.read_bytes()
    assert json.loads(header) == {"format": FORMAT, "config": CONFIG}
    inode = path.stat().st_ino
    before, growth = header, []
    for index in range(60):
        store.put(f"cell/{index:06d}", _cell(index))
        after = path.read_bytes()
        assert after.startswith(before)  # nothing already written changed
        growth.append(len(after) - len(before))
        assert after.count(b"\n") == index + 2  # the header and one line per cell
        before = after
    store.close()
    # bytes per put do not grow with the number of cells already there
    assert len(set(growth)) == 1 and growth[0] == len(_lines(path)[1])
    assert path.stat().st_ino == inode  # appended in place, never replaced by a rewrite
    assert json.loads(_lines(path)[5]) == {"cell": "cell/000004", "value": _cell(4)}
    assert all(b" " not in line for line in _lines(path))  # compact, one object per line


def test_later_lines_replace_earlier_ones_and_extras_are_lines(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    with ResultStore(path, CONFIG) as store:
        store.put("a", {"plan_id": "old"})
        store.set_extra("chosen", {"layer": 1})
        store.put("a", {"plan_id": "new", "x": float("inf")})  # re-scored: appended again
        store.set_extra("chosen", {"layer": 2})
    assert len(_lines(path)) == 5
    assert json.loads(_lines(path)[3]) == {"cell": "a", "value": {"plan_id": "new", "x": "inf"}}
    saved = read_results(path, needs=("chosen",))
    assert saved["cells"] == {"a": {"plan_id": "new", "x": "inf"}}
    assert saved["chosen"] == {"layer": 2} and saved["config"] == CONFIG
    with ResultStore(path, CONFIG) as again:
        assert again.cells == saved["cells"] and again.extra == {"chosen": {"layer": 2}}


def test_names_must_be_strings(tmp_path) -> None:
    with ResultStore(tmp_path / "r.jsonl", CONFIG) as store, \
            pytest.raises(InvalidTypeError, match="must be a string"):
        store.put(3, 1)  # type: ignore[arg-type]
    assert len(_lines(tmp_path / "r.jsonl")) == 1


def test_a_failed_write_leaves_no_partial_line(tmp_path, monkeypatch) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultStore(path, CONFIG)
    store.put("a", 1)
    intact = path.read_bytes()

    def failing_sync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_sync)
    with pytest.raises(OSError, match="No space"):
        store.put("b", 2)
    monkeypatch.undo()
    assert path.read_bytes() == intact and not store.has("b")
    store.put("c", 3)
    store.close()
    assert read_results(path)["cells"] == {"a": 1, "c": 3}


@pytest.mark.parametrize("tail", [
    b'{"cell":"cell/000005","value":{"p_mat',  # cut in the middle
    b'{"cell":"cell/000005","value":5}',  # whole object, but the newline never made it
    b'\x00\x00\x00\x00\n',  # zeros a crashed file system left behind
])
def test_torn_last_line_is_dropped_with_one_warning_and_cut_on_resume(tmp_path, caplog,
                                                                      tail) -> None:
    path = tmp_path / "r.jsonl"
    _fill(path, 5)
    whole = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(tail)
    with caplog.at_level(logging.WARNING, logger="actsteer.results"):
        saved = read_results(path)
    assert sorted(saved["cells"]) == [f"cell/{i:06d}" for i in range(5)]
    assert saved["cells"]["cell/000004"] == _cell(4)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "kept 5 cells" in warning.getMessage()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="actsteer.results"):
        with ResultStore(path, CONFIG) as store:
            assert len(store.cells) == 5
            assert path.read_bytes() == whole  # the broken tail is cut before appending
            store.put("cell/000005", _cell(5))
        assert len(caplog.records) == 1
        caplog.clear()
        again = read_results(path)
    assert again["cells"]["cell/000005"] == _cell(5) and len(again["cells"]) == 6
    assert caplog.records == []  # the log is whole again
    assert path.read_bytes().startswith(whole) and path.read_bytes().endswith(b"}\n")


def test_a_damaged_middle_line_is_an_error_naming_the_line(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    _fill(path, 5)
    lines = _lines(path)
    lines[3] = lines[3][:20] + b"\n"  # the third cell, with the lines after it intact
    path.write_bytes(b"".join(lines))
    damaged = _files(tmp_path)
    with pytest.raises(InvalidValueError, match=r"r\.jsonl: line 4 is damaged"):
        read_results(path)
    with pytest.raises(InvalidValueError, match=r"line 4 is damaged.*--overwrite"):
        ResultStore(path, CONFIG)
    assert _files(tmp_path) == damaged
    lines[3] = b'{"cell": "x", "value": 1, "more": 2}\n'  # JSON, but not a record
    path.write_bytes(b"".join(lines))
    with pytest.raises(InvalidValueError, match="line 4"):
        read_results(path)


def test_other_config_is_refused_before_anything_on_disk_changes(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    _fill(path, 3)
    with path.open("ab") as handle:
        handle.write(b'{"cell":"cut')  # a torn tail is not cut for a refused config either
    before = _files(tmp_path)
    with pytest.raises(ResultConfigMismatchError, match=r"r\.jsonl.*fields \['n'\].*--overwrite"):
        ResultStore(path, {**CONFIG, "n": 4})
    assert _files(tmp_path) == before  # same names, same bytes: nothing renamed or written
    with pytest.raises(ResultConfigMismatchError):
        ResultStore(path, {"model": "tiny"})  # a field dropped is a change too


def test_overwrite_sets_the_old_file_aside_and_starts_afresh(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    with ResultStore(path, CONFIG) as store:
        store.put("a", 1)
    with ResultStore(path, {**CONFIG, "n": 4}, overwrite=True) as store:
        assert store.cells == {}
        store.put("b", 2)
    with ResultStore(path, {**CONFIG, "n": 4}, overwrite=True):
        pass  # twice within a second: the first copy set aside is kept too
    kept = sorted(tmp_path.glob("r.jsonl.replaced-*"))
    assert len(kept) == 2
    assert [read_results(p)["cells"] for p in kept] == [{"a": 1}, {"b": 2}]
    assert read_results(path)["cells"] == {}


def test_unreadable_files_name_the_file_and_the_way_out(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"config": {"model": "ti')
    with pytest.raises(InvalidValueError, match=r"r\.jsonl is not JSON.*--overwrite"):
        ResultStore(path, CONFIG)
    with pytest.raises(InvalidValueError, match=r"r\.jsonl is not JSON"):
        read_results(path)
    path.write_text('{"scores": [1, 2]}')
    with pytest.raises(InvalidValueError, match="not an actsteer results file"):
        read_results(path)
    path.write_text('{"format": "actsteer-results/9", "config": {}}\n')
    with pytest.raises(InvalidValueError, match="actsteer-results/9"):
        read_results(path)
    with pytest.raises(FileNotFoundError, match="no results file"):
        read_results(tmp_path / "none.jsonl")
    path.write_text(json.dumps({"format": FORMAT, "config": {}}) + "\n")
    with pytest.raises(InvalidValueError, match=r"unfinished run \(no chosen\)"):
        read_results(path, needs=("chosen",))


@pytest.mark.parametrize("indent", [None, 1])
def test_whole_file_json_results_are_read_and_resumed_as_a_log(tmp_path, indent) -> None:
    path = tmp_path / "multi_behaviour.json"
    path.write_text(json.dumps({"config": CONFIG, "cells": {"a": {"x": 1}},
                                "extra": {"chosen": [1]}}, indent=indent))
    assert read_results(path, needs=("chosen",)) == {
        "chosen": [1], "config": CONFIG, "cells": {"a": {"x": 1}}, "path": str(path)}
    with pytest.raises(ResultConfigMismatchError):
        ResultStore(path, {**CONFIG, "n": 4})
    with ResultStore(path, CONFIG) as store:
        assert store.cells == {"a": {"x": 1}} and store.extra == {"chosen": [1]}
        store.put("b", 2)
    assert json.loads(_lines(path)[0]) == {"format": FORMAT, "config": CONFIG}
    assert read_results(path)["cells"] == {"a": {"x": 1}, "b": 2}


def test_a_log_without_a_final_newline_resumes_on_a_line_of_its_own(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"format": FORMAT, "config": CONFIG}))  # written by hand
    with ResultStore(path, CONFIG) as store:
        store.put("a", 1)
    assert read_results(path)["cells"] == {"a": 1} and len(_lines(path)) == 2


def test_results_are_written_with_the_umask_mode(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        with ResultStore(tmp_path / "r.jsonl", CONFIG) as store:
            store.put("a", 1)
    finally:
        os.umask(umask)
    assert (Path(tmp_path / "r.jsonl").stat().st_mode & 0o777) == 0o644


# -- shards ---------------------------------------------------------------------------


def test_shards_of_one_config_merge_into_their_union(tmp_path) -> None:
    first, second = tmp_path / "0" / "r.jsonl", tmp_path / "1" / "r.jsonl"
    with ResultStore(first, CONFIG) as store:
        store.put("baseline", {"acc": 0.5})  # both shards scored it: equal values are fine
        store.put("cell/0", 0)
        store.put("cell/1", {"stale": True})
        store.put("cell/1", 1)  # only the replayed value counts
        store.set_extra("layers", [1, 2])
    with ResultStore(second, CONFIG) as store:
        store.put("baseline", {"acc": 0.5})
        store.put("cell/2", 2)
        store.set_extra("layers", [1, 2])
    with second.open("ab") as handle:
        handle.write(b'{"cell":"cell/3","val')  # a shard killed mid-write merges too
    out = merge_results([first, second], tmp_path / "all" / "r.jsonl")
    merged = read_results(out, needs=("layers",))
    assert merged["cells"] == {"baseline": {"acc": 0.5}, "cell/0": 0, "cell/1": 1, "cell/2": 2}
    assert merged["config"] == CONFIG and merged["layers"] == [1, 2]
    assert len(_lines(out)) == 1 + 4 + 1  # a compact log: one line per name
    assert not list(out.parent.glob(".r.jsonl-*"))  # no scratch file left behind
    # merging into one of the shards is allowed; into some other existing file is not
    merge_results([first, second], first)
    assert read_results(first)["cells"] == merged["cells"]
    with pytest.raises(InvalidValueError, match="not among the files"):
        merge_results([second], out)


def test_shards_whose_vectors_differ_in_rounding_merge_at_the_stated_tolerance(tmp_path):
    """Shards that extracted their own vectors on other hardware store norms and cells that
    differ in float rounding: one measurement, merged (the first file's value kept)."""
    from actsteer.results.merge import MERGE_REL_TOL

    first, second = tmp_path / "0" / "r.jsonl", tmp_path / "1" / "r.jsonl"
    norm = 16.452079772949219
    for path, scale, cell in ((first, 1.0, "cell/0"), (second, 1 + 3e-7, "cell/1")):
        with ResultStore(path, CONFIG) as store:
            store.put("baseline", {"acc": 0.5 * scale, "n": 1000, "text": "same"})
            store.put(cell, 1)
            store.set_extra("vector_norms", {"general": {"1": norm * scale, "2": 0.0}})
    out = merge_results([first, second], tmp_path / "all.jsonl")
    merged = read_results(out, needs=("vector_norms",))
    assert merged["vector_norms"] == {"general": {"1": norm, "2": 0.0}}
    assert merged["cells"]["baseline"]["acc"] == 0.5 and set(merged["cells"]) == {
        "baseline", "cell/0", "cell/1"}
    with ResultStore(second, CONFIG) as store:  # beyond the tolerance: not one measurement
        store.set_extra("vector_norms", {"general": {"1": norm * (1 + 3 * MERGE_REL_TOL),
                                                     "2": 0.0}})
    with pytest.raises(ResultConflictError, match=r"extra 'vector_norms'.*relative 0\.001"):
        merge_results([first, second], tmp_path / "all2.jsonl")
    with ResultStore(second, CONFIG) as store:  # a count or a string must match exactly
        store.set_extra("vector_norms", {"general": {"1": norm, "2": 0.0}})
        store.put("baseline", {"acc": 0.5, "n": 1001, "text": "same"})
    with pytest.raises(ResultConflictError, match="cell 'baseline'"):
        merge_results([first, second], tmp_path / "all3.jsonl")


def test_merge_refuses_a_conflicting_cell_or_extra_and_other_configs(tmp_path) -> None:
    first, second, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    with ResultStore(first, CONFIG) as store:
        store.put("cell/7", {"acc": 0.5})
        store.set_extra("timing", 1.0)
    with ResultStore(second, CONFIG) as store:
        store.put("cell/7", {"acc": 0.25})
    with pytest.raises(ResultConflictError, match=r"cell 'cell/7'.*a\.jsonl.*b\.jsonl"):
        merge_results([first, second], out)
    with ResultStore(second, CONFIG) as store:
        store.put("cell/7", {"acc": 0.5})
        store.set_extra("timing", 2.0)
    with pytest.raises(ResultConflictError, match="extra 'timing'"):
        merge_results([first, second], out)
    other = tmp_path / "c.jsonl"
    _fill(other, 1, {**CONFIG, "model": "big"})
    with pytest.raises(ResultConfigMismatchError, match=r"c\.jsonl and .*a\.jsonl.*\['model'\]"):
        merge_results([first, other], out)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="no results file"):
        merge_results([first, tmp_path / "none.jsonl"], out)


# -- one writer; a killed writer ------------------------------------------------------


def _writer(path: str, start: int, count: int, ready, go) -> None:
    """A second process writing cells through its own store (or failing to open it)."""
    try:
        store = ResultStore(path, CONFIG)
    except ResultsLockedError as error:
        ready.put(f"locked: {error}")
        return
    ready.put("open")
    go.wait(60)
    for index in range(start, start + count):
        store.put(f"cell/{index}", {"value": index})
    store.close()


def test_second_writer_is_refused_naming_the_holder_and_nothing_is_lost(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    context = multiprocessing.get_context("spawn")
    ready, go = context.Queue(), context.Event()
    first = context.Process(target=_writer, args=(str(path), 0, 20, ready, go))
    first.start()
    assert ready.get(timeout=120) == "open"
    # a second process and a second store in this process are both refused while it writes
    second = context.Process(target=_writer, args=(str(path), 100, 20, ready, go))
    second.start()
    message = ready.get(timeout=120)
    assert message.startswith("locked: ") and str(path) in message
    assert f"pid {first.pid} " in message
    with pytest.raises(ResultsLockedError, match=rf"pid {first.pid} .*another output folder"):
        ResultStore(path, CONFIG)
    go.set()
    first.join(60)
    second.join(60)
    assert sorted(read_results(path)["cells"]) == sorted(f"cell/{i}" for i in range(20))
    # once the writer is done, the file opens again and resumes every cell
    with ResultStore(path, CONFIG) as store:
        assert len(store.cells) == 20


def test_lock_is_released_on_close_and_a_closed_store_refuses_writes(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultStore(path, CONFIG)
    with pytest.raises(ResultsLockedError, match=f"pid {os.getpid()} "):
        ResultStore(path, CONFIG)
    store.put("a", 1)
    store.close()
    for write in (lambda: store.put("b", 2), lambda: store.set_extra("b", 2), store.flush):
        with pytest.raises(ResultsLockedError, match="closed"):
            write()
    with ResultStore(path, CONFIG) as again:
        assert again.get("a") == 1
    with pytest.raises(ResultConfigMismatchError):
        ResultStore(path, {})
    with ResultStore(path, CONFIG):  # a refused open released the lock too
        pass


def _endless_writer(path: str) -> None:
    with ResultStore(path, CONFIG) as store:
        index = 0
        while True:
            store.put(f"cell/{index:06d}", _cell(index))
            index += 1
            time.sleep(0.002)


def test_a_killed_writer_keeps_every_complete_cell_and_resumes(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    child = multiprocessing.get_context("spawn").Process(target=_endless_writer,
                                                        args=(str(path),))
    child.start()
    deadline = time.monotonic() + 120
    while (not path.exists() or path.read_bytes().count(b"\n") < 40) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    complete = path.read_bytes().count(b"\n") - 1
    assert complete >= 39
    with ResultStore(path, CONFIG) as store:  # the dead writer's lock is gone with it
        assert sorted(store.cells) == [f"cell/{i:06d}" for i in range(complete)]
        assert store.get(f"cell/{complete - 1:06d}") == _cell(complete - 1)
        store.put("after", 1)
    assert len(read_results(path)["cells"]) == complete + 1
