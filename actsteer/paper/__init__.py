"""The paper's reproductions, as clients of the actsteer library.

van der Weij, Poesio & Schoots (2024), *Extending Activation Steering to Broad Skills
and Multiple Behaviours*: :mod:`actsteer.paper.multi_behaviour` (sections 3-4) and
:mod:`actsteer.paper.broad_skills` (section 2). Each package exposes an
:class:`~actsteer.paper.protocol.Experiment`; :func:`get_experiment` imports one by name
(lazily: the CLI's ``--help`` does not load torch models).
"""

from __future__ import annotations

import importlib

from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.paper.protocol import Experiment

EXPERIMENTS: dict[str, str] = {
    "multi-behaviour": "actsteer.paper.multi_behaviour",
    "broad-skills": "actsteer.paper.broad_skills",
}
"""Command name → package that defines ``EXPERIMENT``."""


def get_experiment(name: str) -> Experiment:
    """The reproduction called ``name`` (``"multi-behaviour"`` or ``"broad-skills"``)."""
    if name not in EXPERIMENTS:
        raise InvalidValueError(f"unknown experiment {name!r}; use one of {', '.join(EXPERIMENTS)}")
    experiment = importlib.import_module(EXPERIMENTS[name]).EXPERIMENT
    if not isinstance(experiment, Experiment):  # pragma: no cover - a wiring bug
        raise InvalidTypeError(f"{EXPERIMENTS[name]}.EXPERIMENT is not an Experiment")
    return experiment


def experiment_for(results_file: str) -> Experiment:
    """The reproduction that writes a results file of this name (for ``actsteer plot``):
    its ``.jsonl`` log, a whole-file ``.json`` one, or a name that starts like them (a
    copy set aside, a shard)."""
    for name in EXPERIMENTS:
        experiment = get_experiment(name)
        stem = experiment.results_file.removesuffix(".jsonl").removesuffix(".json")
        if results_file.startswith(stem):
            return experiment
    files = [get_experiment(n).results_file for n in EXPERIMENTS]
    raise InvalidValueError(f"cannot tell which experiment made {results_file}; expected one of "
                            f"{', '.join(files)}")


__all__ = ["EXPERIMENTS", "Experiment", "experiment_for", "get_experiment"]
