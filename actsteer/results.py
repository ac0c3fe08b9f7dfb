"""Results files: written atomically, resumable cell by cell, config recorded inside.

Example::

    store = ResultStore(out_dir / "multi_behaviour.json", config=asdict(cfg))
    if not store.has("grid/myopia/L12/x2"):
        store.put("grid/myopia/L12/x2", {"matching": 31, ...})   # file rewritten atomically
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actsteer.atomic import jsonable, write_json_atomic


class ResultConfigMismatchError(ValueError):
    """An existing results file was made with a different config."""


class ResultStore:
    """A JSON file of named cells plus the config that produced them.

    Re-opening the file with the same config keeps the finished cells, so an interrupted
    sweep resumes where it stopped; a different config raises unless ``overwrite=True``.
    """

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any],
                 *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.config = jsonable(dict(config))
        self.cells: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        if self.path.exists() and not overwrite:
            saved = json.loads(self.path.read_text())
            if saved.get("config") != self.config:
                changed = sorted(k for k in set(self.config) | set(saved.get("config", {}))
                                 if self.config.get(k) != saved.get("config", {}).get(k))
                raise ResultConfigMismatchError(
                    f"{self.path} was made with a different config (fields {changed}); "
                    "use another output folder (--out), or delete this file (or pass "
                    "overwrite=True) to start again")
            self.cells = dict(saved.get("cells", {}))
            self.extra = dict(saved.get("extra", {}))

    def has(self, key: str) -> bool:
        return key in self.cells

    def get(self, key: str) -> Any:
        return self.cells[key]

    def put(self, key: str, value: Any) -> None:
        """Record one finished cell and rewrite the file atomically."""
        self.cells[key] = jsonable(value)
        self.flush()

    def set_extra(self, key: str, value: Any) -> None:
        """Record derived, non-cell data (summaries, timings) and rewrite the file."""
        self.extra[key] = jsonable(value)
        self.flush()

    def flush(self) -> None:
        # Cells and extras were made JSON-ready when stored; a sweep rewrites this file
        # after every cell, so skip re-conversion and indentation (C encoder).
        write_json_atomic(self.path, {"config": self.config, "cells": self.cells,
                                      "extra": self.extra}, indent=None, convert=False)


def read_results(path: str | os.PathLike[str], *, needs: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
    """A finished results file as one flat dict: ``config``, ``cells``, each extra, ``path``.

    Raises :class:`FileNotFoundError` / :class:`ValueError` naming the file when it is
    missing, not JSON, not a results file, or lacks one of the extras in ``needs`` (the run
    stopped before writing them: re-run the same command to finish it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON ({error})") from None
    if not isinstance(saved, dict) or not {"config", "cells"} <= saved.keys():
        raise ValueError(f"{path} is not an actsteer results file (no 'config'/'cells')")
    extra = dict(saved.get("extra", {}))
    missing = [key for key in needs if key not in extra]
    if missing:
        raise ValueError(f"{path} is an unfinished run (no {', '.join(missing)}); re-run "
                         "the command that made it to finish, then plot again")
    return {**extra, "config": saved["config"], "cells": saved["cells"], "path": str(path)}
