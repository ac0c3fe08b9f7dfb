"""Sentence openings that already carry a behaviour (``builtin/laden_prompts.json``).

The neutral openings of :func:`actsteer.data.expressed.neutral_prompts` measure how far a
plan pushes a behaviour; *laden* openings, whose text already shows it (a clearly happy
scene for sentiment), measure whether removing the behaviour's direction takes it away
again (directional ablation, :func:`actsteer.projection.project`). Like the neutral ones
they end where the next word can be read by the behaviour's word set, and none repeats an
extraction context or completion.

Example::

    laden = laden_prompts("sentiment")          # 24 openings with a clearly positive tone
    scores = word_propensities(model, laden, [load_expressed("sentiment").words], plans)
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from actsteer.data import read_builtin
from actsteer.errors import InvalidValueError

__all__ = ["LADEN_BEHAVIOURS", "laden_prompts"]


@cache
def _data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(read_builtin("laden_prompts.json"))
    return loaded


LADEN_BEHAVIOURS: tuple[str, ...] = tuple(_data()["prompts"])
"""The built-in behaviours that have laden openings."""


def laden_prompts(behaviour: str) -> tuple[str, ...]:
    """The built-in openings that already show ``behaviour`` (one of
    :data:`LADEN_BEHAVIOURS`)."""
    if behaviour not in LADEN_BEHAVIOURS:
        raise InvalidValueError(f"no laden openings for {behaviour!r}; built-in ones exist "
                                f"for {', '.join(LADEN_BEHAVIOURS)}")
    return tuple(_data()["prompts"][behaviour])
