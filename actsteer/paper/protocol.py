"""The one small protocol every reproduction implements, so the CLI (and a notebook) can
drive any of them the same way: pick a profile, override fields, run, report, plot."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class ExperimentConfig(Protocol):
    """What a reproduction's config offers (see :class:`actsteer.paper.common.ConfigMixin`)."""

    out_dir: str

    def to_dict(self) -> dict[str, Any]: ...

    def with_overrides(self, overrides: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Experiment:
    """A reproduction as a value: its name, profiles and the four things one does with it.

    Example::

        from actsteer.paper import get_experiment
        experiment = get_experiment("multi-behaviour")
        config = experiment.profile("quick", out_dir="/tmp/mb", n_test=40)
        results = experiment.run(config)
        print(experiment.summary_table(results))
        experiment.write_figures(results, Path("/tmp/mb/figures"))
    """

    name: str
    """Command name, e.g. ``"multi-behaviour"``."""
    results_file: str
    """File name of the results inside ``out_dir``."""
    profile: Callable[..., Any]
    """``profile(name, **overrides) -> config``; overrides may use ``"model.dtype"`` keys."""
    profiles: tuple[str, ...]
    """Names ``profile`` accepts."""
    run: Callable[..., dict[str, Any]]
    """``run(config, *, model=None, progress=True, overwrite=False) -> results``."""
    load_results: Callable[[str | Path], dict[str, Any]]
    """Read a finished results file back into the shape ``run`` returns."""
    summary_table: Callable[[Mapping[str, Any]], str]
    """The plain-text report printed after a run."""
    write_figures: Callable[[Mapping[str, Any], str | Path], list[Path]]
    """Write the HTML figures into a folder; returns their paths."""
    load_partial: Callable[[str | Path], dict[str, Any]]
    """Read an unfinished results file: what it holds so far, with ``partial: True`` and
    empty defaults for what the run had not written yet."""
