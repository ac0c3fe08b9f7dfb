"""Broad skills (van der Weij, Poesio & Schoots 2024, section 2): steer a whole skill away
(general coding versus Python) and measure what text accuracy is left.

Example::

    from actsteer.paper import broad_skills as bs
    results = bs.run(bs.profile("quick", out_dir="/tmp/bs"))
    print(bs.summary_table(results))
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actsteer.paper.broad_skills.config import (
    EVAL_SETS,
    VECTOR_NAMES,
    BroadSkillsConfig,
    profile,
)
from actsteer.paper.broad_skills.report import load_partial, load_results, summary_table
from actsteer.paper.broad_skills.stages import RESULTS_FILE, run
from actsteer.paper.protocol import Experiment


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The experiment's HTML figures (see :mod:`actsteer.paper.broad_skills.figures`)."""
    from actsteer.paper.broad_skills.figures import write_figures as write

    return write(results, Path(out_dir))


EXPERIMENT = Experiment(
    name="broad-skills", results_file=RESULTS_FILE, profile=profile,
    profiles=("quick", "paper"), run=run, load_results=load_results,
    summary_table=summary_table, write_figures=write_figures, load_partial=load_partial)

__all__ = [
    "EVAL_SETS",
    "EXPERIMENT",
    "RESULTS_FILE",
    "VECTOR_NAMES",
    "BroadSkillsConfig",
    "load_results",
    "profile",
    "run",
    "summary_table",
    "write_figures",
]
