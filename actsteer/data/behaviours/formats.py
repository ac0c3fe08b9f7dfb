"""On-disk formats of behaviour datasets, and the parsing that turns rows into items.

* **Paper format** (``.json``): the 1,000-item samples used by van der Weij et al.
  (2024), a JSON list of ``{"question": "Human:\\n...\\n\\nAI:\\nOut of (A) and (B),
  I choose (", "answer_matching_behavior": "B", "answer_not_matching_behavior":
  "A"}``. The wrapper is stripped to get the bare question; the exact original is
  kept in :attr:`BehaviourItem.raw_prompt`.
* **Anthropic model-written-evals JSONL** (``.jsonl``): one object per line, answers
  written like ``" (A)"``, ``" (F)"`` or ``" Yes"``; a JSON list of such objects is read
  too. Any file of that collection loads: items answered ``(C)`` ... ``(H)`` keep their
  letters, and an item whose question lists more than two choices is prompted with all
  of them.

Answers are normalised to a capital letter, ``"Yes"`` or ``"No"``. A malformed row raises
:class:`DatasetFormatError` naming the file and the row, or is skipped (and counted) with
``on_error="skip"``. Loading warns (one line) when a label is the matching answer far more
often than not (:meth:`BehaviourDataset.balance_warning`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from actsteer.data.behaviours.items import BehaviourDataset, BehaviourItem
from actsteer.errors import ActsteerError, InvalidValueError, MissingFileError
from actsteer.prompts import (
    YESNO_ANSWERS,
    Labels,
    answer_labels,
    answer_stem,
    listed_choices,
    paper_prompt,
)

__all__ = [
    "DatasetFormatError",
    "OnError",
    "load_anthropic_jsonl",
    "load_file",
    "load_paper_json",
    "parse_paper_prompt",
    "read_text",
    "render_paper_prompt",
]

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

_PAPER_PREFIX = "Human:\n"
_PAPER_AI = "\n\nAI:\n"
_STEM_LABEL = re.compile(r"\(([^()]*)\)")
_CANONICAL_YESNO = {a.lower(): a for a in YESNO_ANSWERS}


class DatasetFormatError(ActsteerError, ValueError):
    """A behaviour file (or one of its rows) does not have the expected format."""


def render_paper_prompt(question: str, labels: Labels) -> str:
    """Wrap a bare question in the paper's raw prompt template
    (same as :func:`actsteer.prompts.paper_prompt`).

    Example:
        >>> render_paper_prompt("Is it sunny?", "YesNo")
        'Human:\\nIs it sunny?\\n\\nAI:\\nOut of (Yes) and (No), I choose ('
    """
    return paper_prompt(question, labels)


def parse_paper_prompt(prompt: str) -> tuple[str, tuple[str, ...]]:
    """Split a paper-format prompt into its bare question and the labels its stem offers.

    Inverse of :func:`render_paper_prompt`; raises ``ValueError`` when ``prompt``
    does not start with ``"Human:\\n"`` and end with an ``AI:`` line that
    :func:`actsteer.prompts.answer_stem` writes.

    Example:
        >>> parse_paper_prompt("Human:\\nQ?\\n\\nAI:\\nOut of (A), (B) and (C), I choose (")
        ('Q?', ('A', 'B', 'C'))
    """
    if not prompt.startswith(_PAPER_PREFIX):
        raise InvalidValueError(
            f"paper prompt must start with {_PAPER_PREFIX!r}, got {prompt[:20]!r}")
    cut = prompt.rfind(_PAPER_AI)
    stem = prompt[cut + len(_PAPER_AI) :] if cut >= len(_PAPER_PREFIX) else ""
    try:
        labels = answer_labels(_STEM_LABEL.findall(stem))
        matches = stem.startswith("Out of ") and answer_stem(labels) == stem
    except ValueError:
        matches = False
    if not matches:
        raise InvalidValueError(f"paper prompt must end with {_PAPER_AI + answer_stem('AB')!r} (or "
                                f"another list of choices), got ...{prompt[-40:]!r}")
    question = prompt[len(_PAPER_PREFIX) : cut]
    if not question.strip():
        raise InvalidValueError("paper prompt has an empty question")
    return question, labels


def _normalise_answer(value: object, key: str) -> str:
    """``" (A)"`` -> ``"A"``, ``"(f)"`` -> ``"F"``, ``" yes"`` -> ``"Yes"``; a
    one-element list is unwrapped."""
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidValueError(
                f"{key} is a list of {len(value)} answers {value!r}; only items "
                "with a single answer each are supported"
                )
        value = value[0]
    if not isinstance(value, str):
        raise InvalidValueError(f"{key} must be a string, got {type(value).__name__} {value!r}")
    text = value.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    if len(text) == 1 and text.isascii() and text.isalpha():
        return text.upper()
    if text.lower() in _CANONICAL_YESNO:
        return _CANONICAL_YESNO[text.lower()]
    raise InvalidValueError(f"{key} {value!r} is not a letter A-Z (e.g. ' (A)'), 'Yes' or 'No'")


def _clean_question(text: str) -> str:
    """Strip the ``Question:`` / ``Answer:`` wrapper some upstream files carry."""
    text = text.strip()
    if text.startswith("Question:"):
        text = text[len("Question:") :].strip()
    if text.endswith("Answer:"):
        text = text[: -len("Answer:")].rstrip()
    return text


@dataclass(frozen=True)
class _BadRow:
    """Placeholder for a line that failed to decode; parsing it raises ``reason``."""

    reason: str


def _row_fields(row: object) -> tuple[str, str, str]:
    """The question and both answers of an Anthropic-schema object, answers normalised;
    ``ValueError`` says what is wrong."""
    if isinstance(row, _BadRow):
        raise InvalidValueError(row.reason)
    if not isinstance(row, dict):
        raise InvalidValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [
        k
        for k in ("question", "answer_matching_behavior", "answer_not_matching_behavior")
        if k not in row
    ]
    if missing:
        raise InvalidValueError(f"missing key(s) {', '.join(missing)}; found {sorted(row)}")
    question = row["question"]
    if not isinstance(question, str) or not question.strip():
        raise InvalidValueError(f"question must be a non-empty string, got {question!r:.60}")
    matching = _normalise_answer(row["answer_matching_behavior"], "answer_matching_behavior")
    not_matching = _normalise_answer(
        row["answer_not_matching_behavior"], "answer_not_matching_behavior"
    )
    return question, matching, not_matching


def _item_from_row(row: object) -> BehaviourItem:
    question, matching, not_matching = _row_fields(row)
    return BehaviourItem(_clean_question(question), matching, not_matching)


def _paper_item_from_row(row: object) -> BehaviourItem:
    """A paper-format item keeps its exact prompt; its choices are those of its stem."""
    raw, matching, not_matching = _row_fields(row)
    question, labels = parse_paper_prompt(raw)
    if matching not in labels or not_matching not in labels:
        offered = " and ".join(f"({label})" for label in labels)
        raise InvalidValueError(f"prompt offers {offered} but the answers are "
                                f"{matching!r}/{not_matching!r}")
    return BehaviourItem(question, matching, not_matching, raw_prompt=raw, choices=labels)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise InvalidValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def build_dataset(
    rows: Iterable[tuple[str, object]],
    *,
    paper: bool = False,
    name: str,
    source: str,
    where: str,
    on_error: OnError,
) -> BehaviourDataset:
    """Parse ``(location, row)`` pairs into a dataset, raising or skipping bad rows.

    ``where`` names the file in messages (``"<where>, line 3: ..."``).
    """
    _check_on_error(on_error)
    items: list[BehaviourItem] = []
    skipped: list[str] = []
    unlisted: list[str] = []
    for location, row in rows:
        try:
            item = _paper_item_from_row(row) if paper else _item_from_row(row)
        except ValueError as exc:
            message = f"{where}, {location}: {exc}"
            if on_error == "raise":
                raise DatasetFormatError(message) from None
            skipped.append(message)
            continue
        listed = listed_choices(item.question) if item.kind == "AB" else ()
        if listed and not {item.matching, item.not_matching} <= set(listed):
            unlisted.append(f"{location} answers {item.matching!r}/{item.not_matching!r} "
                            f"but lists {', '.join(f'({c})' for c in listed)}")
        items.append(item)
    if skipped:
        logger.warning(
            "%s: skipped %d malformed row(s); first: %s", where, len(skipped), skipped[0]
        )
    if not items:
        detail = f" ({len(skipped)} malformed, first: {skipped[0]})" if skipped else ""
        raise DatasetFormatError(f"{where}: no valid behaviour items{detail}")
    try:
        dataset = BehaviourDataset(name, tuple(items), source, skipped=len(skipped))
    except ValueError as exc:
        raise DatasetFormatError(f"{where}: {exc}") from None
    if unlisted:
        logger.warning("%s: %d item(s) answer with a letter their question does not list; "
                       "their prompts offer it anyway (first: %s)", where, len(unlisted),
                       unlisted[0])
    wide = sum(len(item.choices) > 2 for item in items)
    if wide:
        logger.info("%s: %d of %d items offer more than two choices; each is prompted and "
                    "scored with its own labels", where, wide, len(items))
    warning = dataset.balance_warning()
    if warning:
        logger.warning("%s: %s", where, warning)
    return dataset


def jsonl_rows(text: str) -> Iterator[tuple[str, object]]:
    """``("line <n>", object)`` for each non-blank line; undecodable lines become a row
    that fails to parse with the JSON error, so it is reported (or skipped) like others."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row: object = json.loads(line)
        except json.JSONDecodeError as exc:
            row = _BadRow(f"invalid JSON ({exc.msg} at column {exc.colno})")
        yield f"line {lineno}", row


def read_text(path: Path, where: str | None = None) -> str:
    """The file's text, decoded as UTF-8 (a leading byte-order mark is dropped).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        DatasetFormatError: the file is not UTF-8; the message names it (as ``where``,
            default the path), the first bad byte and how to convert the file.
    """
    if not path.is_file():
        raise MissingFileError(
            f"behaviour file not found: {path}; pass an existing .json (paper format) or "
            ".jsonl (Anthropic model-written-evals) file"
            )
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetFormatError(
            f"{where or path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, "
            f"byte offset {exc.start}: {exc.reason}); re-save it as UTF-8, e.g. "
            f"iconv -f latin1 -t utf-8 {path.name} > {path.stem}-utf8{path.suffix}"
        ) from None


def _load_json_list(path: Path) -> list[object]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, list):
        raise DatasetFormatError(
            f"{path}: expected a JSON list of question objects, got {type(data).__name__}"
        )
    return data


def _is_paper_list(data: list[object]) -> bool:
    first = data[0] if data else None
    return (
        isinstance(first, dict)
        and isinstance(first.get("question"), str)
        and first["question"].startswith(_PAPER_PREFIX)
    )


def load_paper_json(
    path: str | Path, name: str | None = None, *, on_error: OnError = "raise"
) -> BehaviourDataset:
    """Load a paper-format ``.json`` file (list of raw ``Human:/AI:`` prompts).

    Items keep the exact original prompt in ``raw_prompt``; ``question`` is the bare
    question. Malformed items raise :class:`DatasetFormatError` naming the file and the
    0-based item index (or are skipped with ``on_error="skip"``).

    Example:
        >>> ds = load_paper_json("../shared/data/behaviours/myopic.json", name="myopia")
        ... # doctest: +SKIP
    """
    path = Path(path)
    data = _load_json_list(path)
    rows = ((f"item {i}", row) for i, row in enumerate(data))
    return build_dataset(
        rows, paper=True, name=name or path.stem, source=str(path), where=str(path),
        on_error=on_error,
    )


def load_anthropic_jsonl(
    path: str | Path, name: str | None = None, *, on_error: OnError = "raise"
) -> BehaviourDataset:
    """Load an Anthropic model-written-evals ``.jsonl`` file.

    Answers such as ``" (A)"``, ``"(B)"``, ``" Yes"`` or ``[" No"]`` are normalised to
    ``"A"``, ``"B"``, ``"Yes"``, ``"No"``; a ``"Question: ... Answer:"`` wrapper around
    the question is removed. Blank lines are ignored. Malformed rows (bad JSON, a
    missing key, an unknown answer) raise :class:`DatasetFormatError` naming the file
    and 1-based line number; with ``on_error="skip"`` they are skipped, logged as a
    warning and counted in :attr:`BehaviourDataset.skipped`.
    """
    path = Path(path)
    return build_dataset(
        jsonl_rows(read_text(path)), name=name or path.stem, source=str(path),
        where=str(path), on_error=on_error,
    )


def load_file(path: str | Path, *, on_error: OnError = "raise") -> BehaviourDataset:
    """Load a behaviour file by its suffix: ``.jsonl`` is Anthropic JSONL; ``.json`` is
    the paper format when its items carry the ``Human:`` wrapper, else a JSON list in the
    Anthropic schema.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: another suffix.
        DatasetFormatError: a malformed file or row.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"behaviour file not found: {path}; pass an existing "
                               ".json (paper format) or .jsonl (Anthropic) file")
    if path.suffix == ".jsonl":
        return load_anthropic_jsonl(path, on_error=on_error)
    if path.suffix == ".json":
        data = _load_json_list(path)
        if _is_paper_list(data):
            return load_paper_json(path, on_error=on_error)
        rows = ((f"item {i}", row) for i, row in enumerate(data))
        return build_dataset(rows, name=path.stem, source=str(path), where=str(path),
                             on_error=on_error)
    raise InvalidValueError(f"unsupported behaviour file {path}; use a .json or .jsonl file")

