"""Multi-behaviour steering (van der Weij, Poesio & Schoots 2024, sections 3-4): individual,
combined and simultaneous steering, with paired effects and the alignment tax.

Two kinds of run share this experiment: the paper's A/B behaviours (profiles ``standard``
and ``paper``; :mod:`~actsteer.paper.multi_behaviour.stages`) and, as the ``quick``
profile, behaviours the embedded model expresses in its own text
(:mod:`~actsteer.paper.multi_behaviour.expressed`), on which the paper's question has an
answer at this scale.

Example::

    from actsteer.paper import multi_behaviour as mb
    config = mb.profile("quick", out_dir="/tmp/mb")
    results = mb.run_any(config)
    print(mb.report_any(results))       # in a notebook: mb.report_tables(results), HTML tables
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actsteer.errors import InvalidValueError
from actsteer.paper.multi_behaviour.analysis import (
    diagnostics_vs_steerability,
    interference,
    steerability_rows,
)
from actsteer.paper.multi_behaviour.config import (
    COMBINED_VARIANTS,
    PAPER_LAYER,
    PAPER_SIMULTANEOUS_LAYERS,
    PROFILES,
    MultiBehaviourConfig,
    behaviour_key,
)
from actsteer.paper.multi_behaviour.config import profile as ab_profile
from actsteer.paper.multi_behaviour.report import load_results, summary_table
from actsteer.paper.multi_behaviour.stages import RESULTS_FILE, run
from actsteer.paper.protocol import Experiment
from actsteer.report_table import Lines, Report


def _expressed(results_or_config: Any) -> bool:
    from actsteer.paper.multi_behaviour.expressed.config import KIND, ExpressedConfig

    if isinstance(results_or_config, ExpressedConfig):
        return True
    return isinstance(results_or_config, Mapping) and results_or_config.get("kind") == KIND


def run_any(config: Any, **kwargs: Any) -> dict[str, Any]:
    """Run an A/B config (:class:`MultiBehaviourConfig`) or an expressed-behaviour config
    (:class:`~actsteer.paper.multi_behaviour.expressed.ExpressedConfig`)."""
    if _expressed(config):
        from actsteer.paper.multi_behaviour.expressed import run as run_expressed

        return run_expressed(config, **kwargs)
    return run(config, **kwargs)


def load_any(path: str | Path) -> dict[str, Any]:
    """A multi-behaviour results file of either kind, in the shape its ``run`` returns."""
    from actsteer.results import read_results

    found = read_results(path)
    if _expressed(found) or found.get("config", {}).get("kind") == "expressed":
        return read_results(path, needs=("kind", "behaviours", "layers"))
    return load_results(path)


def load_partial(path: str | Path) -> dict[str, Any]:
    """An unfinished multi-behaviour results file (either kind): its cells so far, with
    empty defaults for the extras a finished run writes, marked ``partial``."""
    from actsteer.results import read_results

    found = read_results(path)
    config = found["config"]
    if "behaviours" not in config:
        raise InvalidValueError(f"{path} is not a multi-behaviour results file (its config "
                                "has no behaviours); plot the file that run wrote")
    if config.get("kind") == "expressed":
        found.setdefault("kind", "expressed")
        found.setdefault("behaviours", list(config["behaviours"]))
        own = {b: entry["layer"] for b, entry in (found.get("own_layers") or {}).items()}
        found.setdefault("layers", {"own": own, "combined": config.get("combined_layer")})
    else:
        found.setdefault("behaviours", [behaviour_key(b) for b in config["behaviours"]])
        for name in ("chosen", "coefficients", "layers", "simultaneous_choice"):
            found.setdefault(name, {})
    found["partial"] = True
    return found


def report_any(results: Mapping[str, Any]) -> str:
    """The plain-text report of either kind of run."""
    if _expressed(results):
        from actsteer.paper.multi_behaviour.expressed import summary_table as expressed_table

        return expressed_table(results)
    return summary_table(results)


def report_tables(results: Mapping[str, Any]) -> Report:
    """The report of either kind of run as a value that prints as :func:`report_any` and
    renders as HTML tables in a notebook (:mod:`actsteer.report_table`; the A/B report,
    plain text, as it prints)."""
    if _expressed(results):
        from actsteer.paper.multi_behaviour.expressed.report import report_tables as tables

        return tables(results)
    return Report((Lines(tuple(summary_table(results).splitlines()), preformatted=True),))


def profile(name: str, **overrides: Any) -> Any:
    """A named profile: ``quick`` is the comparison on behaviours the embedded model
    expresses (:class:`~actsteer.paper.multi_behaviour.expressed.ExpressedConfig`);
    ``standard`` and ``paper`` run the paper's A/B behaviours
    (:func:`actsteer.paper.multi_behaviour.config.profile`)."""
    if name == "quick":
        from actsteer.paper.multi_behaviour.expressed import ExpressedConfig

        return ExpressedConfig().with_overrides(overrides)
    return ab_profile(name, **overrides)


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The experiment's HTML figures (see :mod:`actsteer.paper.multi_behaviour.figures`)."""
    if _expressed(results):
        from actsteer.paper.multi_behaviour.expressed.figures import write_figures as write_e

        return write_e(results, Path(out_dir))
    from actsteer.paper.multi_behaviour.figures import write_figures as write

    return write(results, Path(out_dir))


EXPERIMENT = Experiment(
    name="multi-behaviour", results_file=RESULTS_FILE, profile=profile,
    profiles=("quick", *PROFILES), run=run_any,
    load_results=load_any, summary_table=report_any, write_figures=write_figures,
    load_partial=load_partial)

__all__ = [
    "COMBINED_VARIANTS",
    "EXPERIMENT",
    "PAPER_LAYER",
    "PAPER_SIMULTANEOUS_LAYERS",
    "RESULTS_FILE",
    "MultiBehaviourConfig",
    "behaviour_key",
    "diagnostics_vs_steerability",
    "interference",
    "load_results",
    "profile",
    "report_any",
    "report_tables",
    "run",
    "run_any",
    "steerability_rows",
    "summary_table",
    "write_figures",
]
