"""Atomic writes leave process state alone and give files the mode a plain open gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from actsteer.atomic import atomic_write, write_json_atomic


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_atomic_writes_never_touch_the_umask_and_get_the_plain_open_mode(tmp_path, umask,
                                                                        monkeypatch):
    previous = os.umask(umask)  # a non-default umask, set (and restored) by the test itself
    try:
        real_umask, calls = os.umask, []

        def recording_umask(mask: int) -> int:
            calls.append(mask)
            return real_umask(mask)

        monkeypatch.setattr(os, "umask", recording_umask)
        json_file = write_json_atomic(tmp_path / "r.json", {"a": 1})
        other = atomic_write(tmp_path / "b.bin", lambda scratch: scratch.write_bytes(b"x"))
        monkeypatch.undo()
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(previous)
    assert calls == []  # the process umask was never set, not even for a moment
    plain = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert plain == 0o666 & ~umask
    for path in (json_file, other):
        assert stat.S_IMODE(Path(path).stat().st_mode) == plain, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "plain", "r.json"]


def test_jsonable_turns_numpy_and_torch_arrays_of_any_shape_into_nested_lists():
    import numpy as np
    import torch

    from actsteer.atomic import jsonable

    payload = {"np": np.array([[1.5, np.nan], [np.inf, 2.0]]), "t": torch.tensor([1, 2, 3]),
               "scalar": np.float32(0.25), "t0": torch.tensor(-np.inf),
               "half": torch.tensor([0.5, 1.0], dtype=torch.bfloat16)}
    assert jsonable(payload) == {"np": [[1.5, None], ["inf", 2.0]], "t": [1, 2, 3],
                                 "scalar": 0.25, "t0": "-inf", "half": [0.5, 1.0]}
