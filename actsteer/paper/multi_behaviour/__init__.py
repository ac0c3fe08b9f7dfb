"""Multi-behaviour steering (van der Weij, Poesio & Schoots 2024, sections 3-4): individual,
combined and simultaneous steering of A/B behaviours, and the alignment tax.

Example::

    from actsteer.paper import multi_behaviour as mb
    config = mb.profile("quick", out_dir="/tmp/mb")
    results = mb.run(config)
    print(mb.summary_table(results))
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    profile,
)
from actsteer.paper.multi_behaviour.report import load_results, summary_table
from actsteer.paper.multi_behaviour.stages import RESULTS_FILE, run
from actsteer.paper.protocol import Experiment


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The experiment's HTML figures (see :mod:`actsteer.paper.multi_behaviour.figures`)."""
    from actsteer.paper.multi_behaviour.figures import write_figures as write

    return write(results, Path(out_dir))


EXPERIMENT = Experiment(
    name="multi-behaviour", results_file=RESULTS_FILE, profile=profile,
    profiles=tuple(PROFILES), run=run, load_results=load_results,
    summary_table=summary_table, write_figures=write_figures)

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
    "run",
    "steerability_rows",
    "summary_table",
    "write_figures",
]
