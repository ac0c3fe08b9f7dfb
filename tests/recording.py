"""A local executor for tests that records what it is asked to run and can stop like a
killed run (shared by the tests of every resumable results log)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from actsteer.executor import LocalExecutor, Unit


class Recording(LocalExecutor):
    """Runs units in this process, recording each unit's key in ``keys``; with
    ``stop_after``, raises ``KeyboardInterrupt`` once that many units have returned."""

    def __init__(self, model: Any = None, stop_after: int | None = None) -> None:
        super().__init__(model)
        self.keys: list[str] = []
        self.stop_after = stop_after

    @property
    def asked(self) -> int:
        """How many units it was asked to run."""
        return len(self.keys)

    def map(self, units: Sequence[Unit]) -> Iterator[tuple[Unit, Any]]:
        self.keys += [u.key for u in units]
        for done, pair in enumerate(super().map(units)):
            if self.stop_after is not None and done == self.stop_after:
                raise KeyboardInterrupt("simulated interruption")
            yield pair
