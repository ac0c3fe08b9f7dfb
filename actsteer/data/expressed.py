"""Behaviours the model expresses in its own text, built in: contrast sets and word sets.

Each behaviour (sentiment, a topic, a language, the paper's myopia in plain words) has

* **completions** of the same everyday contexts, one showing the behaviour and one not
  (:meth:`ExpressedBehaviour.pairs`: contrastive pairs for extraction, read over the
  answer tokens with ``read="answer_mean"``), and
* a **word set** (:attr:`ExpressedBehaviour.words`): the behaviour's words against contrast
  words, measured after neutral sentence openings (:func:`neutral_prompts`, none of them
  used for extraction) by :func:`actsteer.likelihood.word_propensities`.

The sets were written for actsteer and are small enough to read in
``actsteer/data/builtin/expressed.json``.

Example::

    sentiment = load_expressed("sentiment")
    vector = caa_vector(model, sentiment.pairs(), read="answer_mean", dataset="sentiment")
    scores = word_propensities(model, neutral_prompts(), [sentiment.words], plans)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from actsteer.contrast import ContrastItem, ContrastivePair, WordSets
from actsteer.data import read_builtin
from actsteer.errors import InvalidValueError

__all__ = [
    "EXPRESSED_BEHAVIOURS",
    "ExpressedBehaviour",
    "contexts",
    "load_expressed",
    "neutral_prompts",
]


@cache
def _data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(read_builtin("expressed.json"))
    return loaded


EXPRESSED_BEHAVIOURS: tuple[str, ...] = tuple(_data()["behaviours"])
"""Names of the built-in expressed behaviours."""


@dataclass(frozen=True)
class ExpressedBehaviour:
    """One built-in expressed behaviour (see the module docstring)."""

    name: str
    description: str
    words: WordSets
    completions: tuple[tuple[str, str, str], ...]
    """``(context, behaviour completion, contrast completion)`` triples."""

    def pairs(self) -> list[ContrastivePair]:
        """Contrastive pairs for extraction (read them with ``read="answer_mean"``)."""
        return [ContrastivePair(context, good, bad) for context, good, bad in self.completions]

    def items(self) -> list[ContrastItem]:
        """The completions as likelihood items (one continuation per side)."""
        return [ContrastItem(context, (good,), (bad,))
                for context, good, bad in self.completions]

    def __len__(self) -> int:
        return len(self.completions)


def contexts() -> tuple[str, ...]:
    """The everyday contexts every behaviour's completions continue."""
    return tuple(_data()["contexts"])


def neutral_prompts() -> tuple[str, ...]:
    """Neutral sentence openings to measure word sets after (held out from extraction)."""
    return tuple(_data()["prompts"])


def load_expressed(name: str) -> ExpressedBehaviour:
    """The built-in expressed behaviour ``name`` (one of :data:`EXPRESSED_BEHAVIOURS`)."""
    data = _data()
    if name not in data["behaviours"]:
        raise InvalidValueError(f"no built-in expressed behaviour {name!r}; choose from "
                                f"{', '.join(EXPRESSED_BEHAVIOURS)}")
    entry = data["behaviours"][name]
    words = WordSets(name, tuple(entry["words"]["behaviour"]), tuple(entry["words"]["contrast"]))
    triples = tuple((context, c["behaviour"], c["contrast"])
                    for context, c in zip(data["contexts"], entry["completions"], strict=True))
    return ExpressedBehaviour(name, str(entry["description"]), words, triples)
