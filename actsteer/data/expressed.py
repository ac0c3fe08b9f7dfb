"""Behaviours the model expresses in its own text: contrast sets and word sets, built in or
read from a behaviour file.

Each behaviour (sentiment, a topic, a language, the paper's myopia and wealth-seeking in
plain words, or one of your own) has

* **completions** of everyday contexts, one showing the behaviour and one not
  (:meth:`ExpressedBehaviour.pairs`: contrastive pairs for extraction, read over the
  answer tokens with ``read="answer_mean"``), and
* a **word set** (:attr:`ExpressedBehaviour.words`): the behaviour's words against contrast
  words, measured after neutral sentence openings (:attr:`ExpressedBehaviour.prompts`, none
  of them used for extraction) by :func:`actsteer.likelihood.word_propensities`, and
* an **instruction** asking for it (:attr:`ExpressedBehaviour.instruction`), the prompting
  baseline steering is compared with (every built-in behaviour has one, written without
  its own measured words so that prompting cannot win by copying them).

The built-in sets were written for actsteer (``actsteer/data/builtin/expressed.json``); a
behaviour file (one JSON object, ``docs/behaviours.md``) adds your own.

Example::

    sentiment = load_expressed("sentiment")          # or load_expressed("my_behaviour.json")
    vector = caa_vector(model, sentiment.pairs(), read="answer_mean", dataset="sentiment")
    scores = word_propensities(model, sentiment.prompts, [sentiment.words], plans)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from actsteer.contrast import ContrastItem, ContrastivePair, WordSets
from actsteer.data import read_builtin
from actsteer.errors import InvalidValueError, MissingFileError

__all__ = [
    "EXPRESSED_BEHAVIOURS",
    "FILE_FIELDS",
    "ExpressedBehaviour",
    "contexts",
    "is_behaviour_file",
    "load_expressed",
    "neutral_prompts",
]

FILE_FIELDS: tuple[str, ...] = ("name", "description", "completions", "words", "instruction")
"""The fields of a behaviour file (``docs/behaviours.md``); ``description`` and
``instruction`` are optional."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_FORMAT_DOC = "docs/behaviours.md"


@cache
def _data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(read_builtin("expressed.json"))
    return loaded


EXPRESSED_BEHAVIOURS: tuple[str, ...] = tuple(_data()["behaviours"])
"""Names of the built-in expressed behaviours."""


@dataclass(frozen=True)
class ExpressedBehaviour:
    """One expressed behaviour, built in or from a behaviour file (module docstring)."""

    name: str
    description: str
    words: WordSets
    completions: tuple[tuple[str, str, str], ...]
    """``(context, behaviour completion, contrast completion)`` triples."""
    instruction: str | None = None
    """A short request for the behaviour (e.g. ``"Write in a cheerful, positive tone."``),
    given in the chat template's user turn for the prompting rows of the expressed
    comparison (:mod:`actsteer.paper.multi_behaviour.expressed.prompting`); None: that
    behaviour gets no prompting rows, and the report says so."""
    source: str = "builtin"
    """``"builtin"`` or the behaviour file it was read from."""

    def pairs(self) -> list[ContrastivePair]:
        """Contrastive pairs for extraction (read them with ``read="answer_mean"``)."""
        return [ContrastivePair(context, good, bad) for context, good, bad in self.completions]

    def items(self) -> list[ContrastItem]:
        """The completions as likelihood items (one continuation per side)."""
        return [ContrastItem(context, (good,), (bad,))
                for context, good, bad in self.completions]

    @property
    def prompts(self) -> tuple[str, ...]:
        """The neutral sentence openings its words are measured after (shared by every
        behaviour; no behaviour's completions use them)."""
        return neutral_prompts()

    def __len__(self) -> int:
        return len(self.completions)


def contexts() -> tuple[str, ...]:
    """The everyday contexts every built-in behaviour's completions continue."""
    return tuple(_data()["contexts"])


def neutral_prompts() -> tuple[str, ...]:
    """Neutral sentence openings to measure word sets after (held out from extraction)."""
    return tuple(_data()["prompts"])


def _is_path(spec: str | Path) -> bool:
    return isinstance(spec, Path) or str(spec).endswith(".json") or Path(str(spec)).is_file()


def is_behaviour_file(spec: str | Path) -> bool:
    """Whether ``spec`` is an existing ``.json`` file holding one JSON object (a behaviour
    file, not the paper's list of A/B items)."""
    path = Path(spec)
    if path.suffix != ".json" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        return handle.read(4096).lstrip().startswith("{")


def load_expressed(name: str | Path) -> ExpressedBehaviour:
    """A built-in expressed behaviour (one of :data:`EXPRESSED_BEHAVIOURS`) or the one in
    a behaviour file (a ``.json`` path, format in ``docs/behaviours.md``).

    Raises:
        InvalidValueError: an unknown name, or a file with a missing or bad field (the
            message names the file and the field).
        MissingFileError: the file does not exist.
    """
    if _is_path(name):
        return _from_file(Path(name))
    data = _data()
    name = str(name)
    if name not in data["behaviours"]:
        raise InvalidValueError(f"no built-in expressed behaviour {name!r}; choose from "
                                f"{', '.join(EXPRESSED_BEHAVIOURS)}, or give a behaviour file "
                                f"(.json, {_FORMAT_DOC})")
    entry = data["behaviours"][name]
    words = WordSets(name, tuple(entry["words"]["behaviour"]), tuple(entry["words"]["contrast"]))
    triples = tuple((context, c["behaviour"], c["contrast"])
                    for context, c in zip(data["contexts"], entry["completions"], strict=True))
    return ExpressedBehaviour(name, str(entry["description"]), words, triples,
                              entry.get("instruction"))


class _FileError(InvalidValueError):
    """A behaviour file with a missing or bad field (one line naming the file and field)."""


def _from_file(path: Path) -> ExpressedBehaviour:
    def bad(field: str, problem: str) -> _FileError:
        return _FileError(f"behaviour file {path}: {field} {problem} (format: {_FORMAT_DOC})")

    if not path.is_file():
        raise MissingFileError(f"behaviour file {path} does not exist; give the path of a "
                               f".json behaviour file ({_FORMAT_DOC})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _FileError(f"behaviour file {path} is not JSON ({str(error).splitlines()[0]}); "
                         f"write one JSON object ({_FORMAT_DOC})") from None
    if not isinstance(data, dict):
        raise _FileError(f"behaviour file {path} holds a JSON {type(data).__name__}, not an "
                         f"object with {', '.join(FILE_FIELDS)} (A/B item lists go to "
                         f"load_behaviour; format: {_FORMAT_DOC})")
    unknown = sorted(set(data) - set(FILE_FIELDS))
    if unknown:
        raise bad(f"field(s) {unknown}", f"are not behaviour-file fields; use "
                                         f"{', '.join(FILE_FIELDS)}")
    for field in ("name", "completions", "words"):
        if field not in data:
            raise bad(f"field {field!r}", "is missing")
    name = data["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise bad("'name'", f"is {name!r}; use letters, digits and _, starting with a letter")
    for field in ("description", "instruction"):
        if field in data and not isinstance(data[field], str):
            raise bad(f"{field!r}", f"is {data[field]!r}; give a string")
    completions = data["completions"]
    if not isinstance(completions, list) or len(completions) < 2:
        raise bad("'completions'", "must be a list of at least 2 objects with context, "
                                   "behaviour and contrast")
    held_out = set(neutral_prompts())
    triples = []
    for index, entry in enumerate(completions):
        where = f"completions[{index}]"
        if not isinstance(entry, dict):
            raise bad(where, "is not an object with context, behaviour and contrast")
        for key in ("context", "behaviour", "contrast"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise bad(f"{where}.{key}", "is missing or empty; give a non-empty string")
        extra = sorted(set(entry) - {"context", "behaviour", "contrast"})
        if extra:
            raise bad(f"{where}", f"has unknown keys {extra}; use context, behaviour, contrast")
        if entry["context"] in held_out:
            raise bad(f"{where}.context", "is one of the neutral prompts behaviours are "
                                          "measured after; use another context")
        triples.append((entry["context"], entry["behaviour"], entry["contrast"]))
    words = data["words"]
    if not isinstance(words, dict):
        raise bad("'words'", "must be an object with behaviour and contrast lists")
    sides: dict[str, tuple[str, ...]] = {}
    for side in ("behaviour", "contrast"):
        found = words.get(side)
        if (not isinstance(found, list) or not found
                or not all(isinstance(w, str) and w.strip() for w in found)):
            raise bad(f"words.{side}", "must be a non-empty list of words (strings)")
        sides[side] = tuple(found)
    shared = sorted(set(sides["behaviour"]) & set(sides["contrast"]))
    if shared:
        raise bad("words", f"lists {shared} on both sides; a word counts for one side only")
    return ExpressedBehaviour(name, str(data.get("description", "")),
                              WordSets(name, sides["behaviour"], sides["contrast"]),
                              tuple(triples), data.get("instruction"), str(path))
