"""The harness's everyday instructions, their fixed split into two halves, and each
behaviour's instruction for the prompting rows.

The 40 instructions (``actsteer/data/builtin/harness.json``, written for actsteer) are short
requests a chat model answers in a few sentences ("Describe your morning routine."); none
mentions a behaviour. AxBench chooses the steering strength on one half of the
instructions and reports on the other: :func:`split_instructions` shuffles the first ``n``
with a seed and cuts them in two.
"""

from __future__ import annotations

import json
import random
from functools import cache
from typing import Any

from actsteer.data import read_builtin
from actsteer.data.expressed import ExpressedBehaviour
from actsteer.errors import InvalidValueError

__all__ = ["HALVES", "behaviour_instruction", "fallback_instructions", "instructions",
           "split_instructions"]

HALVES: tuple[str, str] = ("select", "report")
"""The two halves of the instructions: the strength is chosen on ``select`` and every score
is reported on ``report``."""


@cache
def _data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(read_builtin("harness.json"))
    return loaded


def instructions() -> tuple[str, ...]:
    """The harness's everyday instructions, in their stored order."""
    return tuple(_data()["instructions"])


def split_instructions(n: int, seed: int = 0) -> dict[str, list[str]]:
    """The first ``n`` instructions shuffled with ``seed`` and cut into
    ``{"select": first half, "report": second half}`` (the report half gets the odd one).

    Raises:
        InvalidValueError: ``n`` is below 4 or above the number of instructions.
    """
    available = len(instructions())
    if isinstance(n, bool) or not isinstance(n, int) or not 4 <= n <= available:
        raise InvalidValueError(f"n_instructions={n!r} is invalid; use 4..{available} (each "
                                "half needs at least 2 instructions)")
    chosen = list(instructions()[:n])
    random.Random(seed).shuffle(chosen)
    return {HALVES[0]: chosen[:n // 2], HALVES[1]: chosen[n // 2:]}


def fallback_instructions() -> dict[str, str]:
    """FALLBACK: an instruction for each built-in expressed behaviour, used only while the
    behaviour itself has none (``behaviour.instruction`` wins when it is set)."""
    return dict(_data()["behaviour_instructions"])


def behaviour_instruction(behaviour: ExpressedBehaviour) -> str:
    """The instruction that asks for ``behaviour``: its own (a behaviour file's
    ``instruction``, or the built-in one), else the harness's fallback for a built-in.

    Raises:
        InvalidValueError: a behaviour with no instruction and no fallback (a behaviour file
            without an ``instruction`` field): the prompting rows need one.
    """
    if behaviour.instruction:
        return behaviour.instruction
    fallback = fallback_instructions().get(behaviour.name)
    if fallback is None or behaviour.source != "builtin":
        raise InvalidValueError(f"behaviour {behaviour.name!r} ({behaviour.source}) has no "
                                "instruction; add an \"instruction\" field to its behaviour "
                                "file (docs/behaviours.md), or leave the prompting methods out "
                                "(methods=[\"steering\"])")
    return fallback
