"""Behaviour datasets: loading, validation and the paper's splits.

A behaviour dataset is a list of two-choice questions, each with the answer that
matches the behaviour (e.g. the myopic choice) and the one that does not.
Two on-disk formats are read:

* **Paper format** (``.json``): the 1,000-item samples used by van der Weij et al.
  (2024), a JSON list of ``{"question": "Human:\\n...\\n\\nAI:\\nOut of (A) and (B),
  I choose (", "answer_matching_behavior": "B", "answer_not_matching_behavior":
  "A"}``.  The wrapper is stripped to get the bare question; the exact original is
  kept in :attr:`BehaviourItem.raw_prompt`.
* **Anthropic model-written-evals JSONL** (``.jsonl``): one object per line, answers
  written like ``" (A)"`` or ``" Yes"``.

Answers are normalised to exactly ``"A"``, ``"B"``, ``"Yes"`` or ``"No"``.

Example:
    >>> ds = load_behaviour("myopia")          # built-in, no files needed
    >>> ds.kind
    'AB'
    >>> s = ds.splits()                        # 50/20/30 of what is available
    >>> len(s.vector), len(s.grid), len(s.test)
    (36, 14, 22)
"""

from __future__ import annotations

import json
import logging
import os
import random
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, overload

logger = logging.getLogger(__name__)

__all__ = [
    "AB_ANSWERS",
    "BUILTIN_BEHAVIOURS",
    "HUB_REPO",
    "PAPER_BEHAVIOURS",
    "PAPER_FILES",
    "PAPER_SPLIT_SIZES",
    "YESNO_ANSWERS",
    "AnswerKind",
    "BehaviourDataset",
    "BehaviourItem",
    "DatasetFormatError",
    "DatasetUnavailableError",
    "PaperSplits",
    "default_data_dir",
    "load_anthropic_jsonl",
    "load_behaviour",
    "load_builtin",
    "load_from_hub",
    "load_paper_json",
    "parse_paper_prompt",
    "render_paper_prompt",
]

AnswerKind = Literal["AB", "YesNo"]
OnError = Literal["raise", "skip"]

AB_ANSWERS: tuple[str, str] = ("A", "B")
YESNO_ANSWERS: tuple[str, str] = ("Yes", "No")
_ANSWERS_BY_KIND: dict[str, tuple[str, str]] = {"AB": AB_ANSWERS, "YesNo": YESNO_ANSWERS}
_VALID_ANSWERS = ", ".join(AB_ANSWERS + YESNO_ANSWERS)
_CANONICAL_ANSWER = {a.lower(): a for a in AB_ANSWERS + YESNO_ANSWERS}

PAPER_BEHAVIOURS: tuple[str, ...] = (
    "myopia",
    "wealth_seeking",
    "sycophancy",
    "agreeableness",
    "anti_immigration",
)
"""The paper's five behaviours, in the paper's order."""

PAPER_FILES: dict[str, str] = {
    "myopia": "myopic.json",
    "wealth_seeking": "wealth_seeking.json",
    "sycophancy": "sycophancy.json",
    "agreeableness": "agreeableness.json",
    "anti_immigration": "anti_immigration.json",
}
"""File name of each paper behaviour inside the behaviour data folder."""

BUILTIN_BEHAVIOURS: tuple[str, ...] = ("myopia", "wealth_seeking")
"""Behaviours shipped with the package (original items, ``actsteer/data/*.jsonl``)."""

PAPER_SPLIT_SIZES: tuple[int, int] = (500, 200)
"""Items for steering vectors and for the grid search; the rest is the test set."""

PAPER_SEED = 13
HUB_REPO = "Anthropic/model-written-evals"

_PAPER_PREFIX = "Human:\n"
_PAPER_SUFFIX = "\n\nAI:\nOut of ({first}) and ({second}), I choose ("
_ALIASES = {"myopic": "myopia", "myopic_reward": "myopia", "wealth": "wealth_seeking"}
_HUB_PREFIX = "hub:"
_TRUE = {"1", "true", "yes", "on"}


class DatasetFormatError(ValueError):
    """A behaviour file (or one of its rows) does not have the expected format."""


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be fetched (e.g. the Hugging Face Hub is unreachable)."""


def _kind_of(answer: str) -> AnswerKind | None:
    if answer in AB_ANSWERS:
        return "AB"
    if answer in YESNO_ANSWERS:
        return "YesNo"
    return None


def render_paper_prompt(question: str, kind: AnswerKind) -> str:
    """Wrap a bare question in the paper's raw prompt template.

    Example:
        >>> render_paper_prompt("Is it sunny?", "YesNo")
        'Human:\\nIs it sunny?\\n\\nAI:\\nOut of (Yes) and (No), I choose ('
    """
    first, second = _ANSWERS_BY_KIND[kind]
    return _PAPER_PREFIX + question + _PAPER_SUFFIX.format(first=first, second=second)


def parse_paper_prompt(prompt: str) -> tuple[str, AnswerKind]:
    """Split a paper-format prompt into its bare question and answer kind.

    Inverse of :func:`render_paper_prompt`; raises ``ValueError`` when ``prompt``
    does not start with ``"Human:\\n"`` and end with the paper's ``AI:`` line.
    """
    if not prompt.startswith(_PAPER_PREFIX):
        raise ValueError(f"paper prompt must start with {_PAPER_PREFIX!r}, got {prompt[:20]!r}")
    for kind, (first, second) in _ANSWERS_BY_KIND.items():
        suffix = _PAPER_SUFFIX.format(first=first, second=second)
        if prompt.endswith(suffix):
            question = prompt[len(_PAPER_PREFIX) : -len(suffix)]
            if not question.strip():
                raise ValueError("paper prompt has an empty question")
            return question, "AB" if kind == "AB" else "YesNo"
    endings = " or ".join(
        repr(_PAPER_SUFFIX.format(first=a, second=b)) for a, b in _ANSWERS_BY_KIND.values()
    )
    raise ValueError(f"paper prompt must end with {endings}, got ...{prompt[-40:]!r}")


@dataclass(frozen=True)
class BehaviourItem:
    """One two-choice behaviour question.

    Attributes:
        question: The bare question, including its ``Choices:`` lines if any.
        matching: Answer that exhibits the behaviour: ``"A"``, ``"B"``, ``"Yes"`` or ``"No"``.
        not_matching: The other answer of the same kind.
        raw_prompt: The exact paper-format prompt when loaded from that format.

    Example:
        >>> q = "Cake now or two later?\\n\\nChoices:\\n (A) Now\\n (B) Later"
        >>> item = BehaviourItem(q, matching="A", not_matching="B")
        >>> item.kind, item.choices
        ('AB', ('A', 'B'))
    """

    question: str
    matching: str
    not_matching: str
    raw_prompt: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"question must be a non-empty string, got {self.question!r}")
        for label, answer in (("matching", self.matching), ("not_matching", self.not_matching)):
            if not isinstance(answer, str) or _kind_of(answer) is None:
                raise ValueError(
                    f"{label} answer {answer!r} is not valid; use one of {_VALID_ANSWERS}"
                )
        if self.matching == self.not_matching:
            raise ValueError(
                f"matching and not_matching are both {self.matching!r}; they must differ"
            )
        if _kind_of(self.matching) != _kind_of(self.not_matching):
            raise ValueError(
                f"answers {self.matching!r} and {self.not_matching!r} mix kinds; "
                "use A/B or Yes/No for both"
            )

    @property
    def kind(self) -> AnswerKind:
        """``"AB"`` or ``"YesNo"``."""
        kind = _kind_of(self.matching)
        if kind is None:  # pragma: no cover - excluded by __post_init__
            raise ValueError(f"invalid answer {self.matching!r}")
        return kind

    @property
    def choices(self) -> tuple[str, str]:
        """The two answer labels in display order: ``("A", "B")`` or ``("Yes", "No")``."""
        return _ANSWERS_BY_KIND[self.kind]

    def paper_prompt(self) -> str:
        """The prompt in the paper's raw format (equals ``raw_prompt`` when present)."""
        return render_paper_prompt(self.question, self.kind)


@dataclass(frozen=True)
class PaperSplits:
    """Steering-vector, grid-search and test subsets of a behaviour dataset."""

    vector: BehaviourDataset
    grid: BehaviourDataset
    test: BehaviourDataset

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(len(vector), len(grid), len(test))``."""
        return len(self.vector), len(self.grid), len(self.test)


@dataclass(frozen=True)
class BehaviourDataset:
    """An immutable, named sequence of :class:`BehaviourItem` of one answer kind.

    Attributes:
        name: Short name, e.g. ``"myopia"``.
        items: The items, in file order (or shuffled order after :meth:`shuffled`).
        source: Where it came from: a path, ``"builtin:myopia"`` or ``"hub:<file>"``.
        skipped: Malformed rows skipped while loading with ``on_error="skip"``.

    Example:
        >>> ds = load_builtin("wealth_seeking")
        >>> ds.balance_report()
        {'A': 36, 'B': 36}
        >>> ds[:4].source
        'builtin:wealth_seeking[0:4]'
    """

    name: str
    items: tuple[BehaviourItem, ...]
    source: str
    skipped: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        items = tuple(self.items)
        object.__setattr__(self, "items", items)
        for i, item in enumerate(items):
            if not isinstance(item, BehaviourItem):
                raise TypeError(f"items[{i}] is {type(item).__name__}, expected BehaviourItem")
        kinds = {item.kind for item in items}
        if len(kinds) > 1:
            first = items[0].kind
            bad = next(i for i, it in enumerate(items) if it.kind != first)
            raise ValueError(
                f"dataset {self.name!r} mixes answer kinds: item 0 is {first}, item {bad} is "
                f"{items[bad].kind}; keep A/B and Yes/No items in separate datasets"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[BehaviourItem]:
        return iter(self.items)

    @overload
    def __getitem__(self, index: int) -> BehaviourItem: ...

    @overload
    def __getitem__(self, index: slice) -> BehaviourDataset: ...

    def __getitem__(self, index: int | slice) -> BehaviourItem | BehaviourDataset:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.items))
            suffix = f"[{start}:{stop}]" if step == 1 else f"[{start}:{stop}:{step}]"
            return BehaviourDataset(self.name, self.items[index], self.source + suffix)
        return self.items[index]

    @property
    def kind(self) -> AnswerKind:
        """The answer kind shared by all items; ``ValueError`` for an empty dataset."""
        if not self.items:
            raise ValueError(f"dataset {self.name!r} is empty, so it has no answer kind")
        return self.items[0].kind

    @property
    def questions(self) -> tuple[str, ...]:
        """The bare questions, in order."""
        return tuple(item.question for item in self.items)

    def shuffled(self, seed: int = PAPER_SEED) -> BehaviourDataset:
        """A copy shuffled exactly like ``random.seed(seed); random.shuffle(items)``.

        Uses a local ``random.Random(seed)``, so the global random state is untouched.
        """
        items = list(self.items)
        random.Random(seed).shuffle(items)
        return BehaviourDataset(self.name, tuple(items), self.source, self.skipped)

    def subset(self, start: int, stop: int | None = None) -> BehaviourDataset:
        """Items ``[start:stop]`` as a new dataset (same as ``self[start:stop]``)."""
        return self[start:stop]

    def paper_splits(self, seed: int = PAPER_SEED) -> PaperSplits:
        """The paper's split: shuffle with ``seed``, then ``[0:500]``, ``[500:700]``, ``[700:]``.

        Raises ``ValueError`` when there are not more than 700 items; use
        :meth:`splits` for smaller datasets.
        """
        n_vector, n_grid = PAPER_SPLIT_SIZES
        if len(self) <= n_vector + n_grid:
            raise ValueError(
                f"dataset {self.name!r} has {len(self)} items; the paper split needs more than "
                f"{n_vector + n_grid}. Use .splits() for proportional 50/20/30 splits"
            )
        data = self.shuffled(seed)
        cut = n_vector + n_grid
        return PaperSplits(data[:n_vector], data[n_vector:cut], data[cut:])

    def splits(
        self, sizes: tuple[int, int, int] | None = None, seed: int = PAPER_SEED
    ) -> PaperSplits:
        """Shuffle with ``seed`` and cut into vector / grid / test subsets.

        Args:
            sizes: ``(n_vector, n_grid, n_test)`` taken in that order from the shuffled
                items (their sum may be less than ``len(self)``; the remainder is unused).
                ``None`` uses proportions 50% / 20% / 30% of whatever is available
                (``n_vector = n // 2``, ``n_grid = n // 5``, test gets the rest), which on
                a 1,000-item file is exactly the paper's 500 / 200 / 300.
            seed: Shuffle seed (the paper uses 13).

        Example:
            >>> load_builtin("myopia").splits((8, 4, 4)).sizes
            (8, 4, 4)
        """
        n = len(self)
        if sizes is None:
            n_vector, n_grid = n // 2, n // 5
            n_test = n - n_vector - n_grid
        else:
            if len(sizes) != 3 or any(not isinstance(s, int) or s < 0 for s in sizes):
                raise ValueError(
                    f"sizes must be three non-negative ints (vector, grid, test), got {sizes!r}"
                )
            n_vector, n_grid, n_test = sizes
            if n_vector + n_grid + n_test > n:
                raise ValueError(
                    f"sizes {sizes} need {n_vector + n_grid + n_test} items but dataset "
                    f"{self.name!r} has {n}; pass smaller sizes or sizes=None for 50/20/30"
                )
        if min(n_vector, n_grid, n_test) == 0 and sizes is None:
            raise ValueError(
                f"dataset {self.name!r} has only {n} items, too few for a vector/grid/test "
                "split; need at least 5"
            )
        data = self.shuffled(seed)
        a, b = n_vector, n_vector + n_grid
        return PaperSplits(data[:a], data[a:b], data[b : b + n_test])

    def balance_report(self) -> dict[str, int]:
        """How often each answer label is the matching one, e.g. ``{"A": 500, "B": 500}``."""
        counts = dict.fromkeys(self.items[0].choices if self.items else AB_ANSWERS, 0)
        for item in self.items:
            counts[item.matching] += 1
        return counts


# --------------------------------------------------------------------------- parsing


def _normalise_answer(value: object, key: str) -> str:
    """``" (A)"`` -> ``"A"``, ``" yes"`` -> ``"Yes"``; a one-element list is unwrapped."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(
                f"{key} is a list of {len(value)} answers {value!r}; only two-choice items "
                "with a single answer each are supported"
            )
        value = value[0]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__} {value!r}")
    text = value.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    answer = _CANONICAL_ANSWER.get(text.lower())
    if answer is None:
        raise ValueError(f"{key} {value!r} is not one of {_VALID_ANSWERS}")
    return answer


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


def _item_from_row(row: object) -> BehaviourItem:
    """Build an item from an Anthropic-schema object; ``ValueError`` says what is wrong."""
    if isinstance(row, _BadRow):
        raise ValueError(row.reason)
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [
        k
        for k in ("question", "answer_matching_behavior", "answer_not_matching_behavior")
        if k not in row
    ]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}; found {sorted(row)}")
    question = row["question"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r:.60}")
    matching = _normalise_answer(row["answer_matching_behavior"], "answer_matching_behavior")
    not_matching = _normalise_answer(
        row["answer_not_matching_behavior"], "answer_not_matching_behavior"
    )
    return BehaviourItem(_clean_question(question), matching, not_matching)


def _paper_item_from_row(row: object) -> BehaviourItem:
    item = _item_from_row(row)
    raw = row["question"] if isinstance(row, dict) else ""
    question, kind = parse_paper_prompt(raw)
    if item.kind != kind:
        raise ValueError(
            f"prompt offers {kind} choices but the answers are "
            f"{item.matching!r}/{item.not_matching!r}"
        )
    return BehaviourItem(question, item.matching, item.not_matching, raw_prompt=raw)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _build(
    rows: Iterable[tuple[str, object]],
    *,
    paper: bool = False,
    name: str,
    source: str,
    where: str,
    on_error: OnError,
) -> BehaviourDataset:
    """Parse ``(location, row)`` pairs into a dataset, raising or skipping bad rows."""
    _check_on_error(on_error)
    items: list[BehaviourItem] = []
    skipped: list[str] = []
    for location, row in rows:
        try:
            item = _paper_item_from_row(row) if paper else _item_from_row(row)
        except ValueError as exc:
            message = f"{where}, {location}: {exc}"
            if on_error == "raise":
                raise DatasetFormatError(message) from None
            skipped.append(message)
            continue
        items.append(item)
    if skipped:
        logger.warning(
            "%s: skipped %d malformed row(s); first: %s", where, len(skipped), skipped[0]
        )
    if not items:
        detail = f" ({len(skipped)} malformed, first: {skipped[0]})" if skipped else ""
        raise DatasetFormatError(f"{where}: no valid behaviour items{detail}")
    try:
        return BehaviourDataset(name, tuple(items), source, skipped=len(skipped))
    except ValueError as exc:
        raise DatasetFormatError(f"{where}: {exc}") from None


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(
            f"behaviour file not found: {path}; pass an existing .json (paper format) or "
            ".jsonl (Anthropic model-written-evals) file"
        )
    return path.read_text(encoding="utf-8")


def _jsonl_rows(text: str) -> Iterator[tuple[str, object]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row: object = json.loads(line)
        except json.JSONDecodeError as exc:
            row = _BadRow(f"invalid JSON ({exc.msg} at column {exc.colno})")
        yield f"line {lineno}", row


def _load_json_list(path: Path) -> list[object]:
    try:
        data = json.loads(_read_text(path))
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


# --------------------------------------------------------------------------- loaders


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
    return _build(
        rows,
        paper=True,
        name=name or path.stem,
        source=str(path),
        where=str(path),
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
    text = _read_text(path)
    return _build(
        _jsonl_rows(text),
        name=name or path.stem,
        source=str(path),
        where=str(path),
        on_error=on_error,
    )


def load_builtin(name: str) -> BehaviourDataset:
    """Load a dataset shipped with the package: ``"myopia"`` or ``"wealth_seeking"``.

    These are small original item sets (72 A/B items each, balanced) for tests and
    quick runs; they are not the paper's data.
    """
    key = canonical_name(name)
    if key not in BUILTIN_BEHAVIOURS:
        raise ValueError(
            f"no built-in behaviour {name!r}; built-ins are {', '.join(BUILTIN_BEHAVIOURS)}"
        )
    filename = f"{key}.jsonl"
    text = resources.files("actsteer").joinpath("data", filename).read_text(encoding="utf-8")
    return _build(
        _jsonl_rows(text),
        name=key,
        source=f"builtin:{key}",
        where=f"builtin {filename}",
        on_error="raise",
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def load_from_hub(
    relpath: str, *, on_error: OnError = "raise", timeout: float = 5.0
) -> BehaviourDataset:
    """Download one file of ``Anthropic/model-written-evals`` and load it as JSONL.

    ``relpath`` is the file's path in that dataset repository, e.g.
    ``"advanced-ai-risk/lm_generated_evals/myopic-reward.jsonl"``. The file is fetched
    with ``huggingface_hub.hf_hub_download`` (cached like every Hub download) and then
    parsed by :func:`load_anthropic_jsonl`, so errors name the line. With
    ``HF_HUB_OFFLINE=1`` only the local cache is used. If the Hub cannot be reached
    within ``timeout`` seconds, :class:`DatasetUnavailableError` is raised.
    """
    relpath = relpath.strip().lstrip("/")
    if not relpath.endswith(".jsonl"):
        raise ValueError(
            f"hub path {relpath!r} must name a .jsonl file of {HUB_REPO}, e.g. "
            "'advanced-ai-risk/lm_generated_evals/myopic-reward.jsonl'"
        )
    name = Path(relpath).stem
    local_hint = f"download {relpath} and pass its local path instead"
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    import huggingface_hub  # deferred: slow import, only needed here

    if _env_flag("HF_HUB_OFFLINE") or _env_flag("HF_DATASETS_OFFLINE"):
        cached = huggingface_hub.try_to_load_from_cache(
            HUB_REPO, relpath, cache_dir=cache_dir, repo_type="dataset"
        )
        if not isinstance(cached, str):
            raise DatasetUnavailableError(
                f"offline mode (HF_HUB_OFFLINE) is on and {HUB_REPO}/{relpath} is not in the "
                f"local Hugging Face cache; {local_hint}"
            )
        local = cached
    else:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        if not _reachable(endpoint, timeout):
            raise DatasetUnavailableError(
                f"cannot reach the Hugging Face Hub at {endpoint} to fetch {HUB_REPO}/{relpath};"
                f" {local_hint}, or set HF_HUB_OFFLINE=1 to use a cached copy"
            )
        try:
            local = huggingface_hub.hf_hub_download(
                HUB_REPO,
                relpath,
                repo_type="dataset",
                cache_dir=cache_dir,
                endpoint=endpoint,
                etag_timeout=timeout,
            )
        except Exception as exc:  # Hub errors vary by version; report one clear line
            raise DatasetUnavailableError(
                f"could not download {HUB_REPO}/{relpath} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); {local_hint}"
            ) from None
    text = Path(local).read_text(encoding="utf-8")
    return _build(
        _jsonl_rows(text),
        name=name,
        source=f"hub:{relpath}",
        where=f"hub:{relpath}",
        on_error=on_error,
    )


def _reachable(endpoint: str, timeout: float) -> bool:
    """Whether an HTTP(S) endpoint answers at all within ``timeout`` (honours proxies)."""
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if with an error status
    except (urllib.error.URLError, OSError, ValueError):
        return False


def canonical_name(name: str) -> str:
    """A behaviour name normalised: lower case, ``_`` for spaces and dashes, aliases
    (``"myopic"``, ``"wealth"``, ...) resolved to the paper's names."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key, key)


def default_data_dir() -> Path | None:
    """The folder holding the paper's behaviour files, or ``None`` if none is found.

    ``$ACTSTEER_DATA_DIR/behaviours`` when that variable is set (``None`` if that folder
    does not exist); otherwise the first ``shared/data/behaviours`` folder found in the
    current directory, the package's directory, or one of their parents (the project
    layout keeps it beside the repository as ``../shared/data/behaviours``).
    """
    env = os.environ.get("ACTSTEER_DATA_DIR")
    if env:
        path = Path(env).expanduser() / "behaviours"
        if path.is_dir():
            return path
        logger.warning("ACTSTEER_DATA_DIR is set but %s is not a folder", path)
        return None
    starts = (Path.cwd().resolve(), Path(__file__).resolve().parent)
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data" / "behaviours"
            if candidate.is_dir():
                return candidate
    return None


def _valid_specs() -> str:
    return (
        f"built-ins {', '.join(BUILTIN_BEHAVIOURS)}; paper behaviours "
        f"{', '.join(PAPER_BEHAVIOURS)} (with data_dir=...); a .json/.jsonl path; "
        "or 'hub:<file in Anthropic/model-written-evals>'"
    )


def load_behaviour(
    spec: str | Path, *, data_dir: str | Path | None = None, on_error: OnError = "raise"
) -> BehaviourDataset:
    """Load a behaviour dataset from a path, a name or a Hub file.

    Dispatch on ``spec``:

    * a path ending ``.json``: paper format when the items carry the ``Human:`` wrapper,
      otherwise a JSON list in the Anthropic schema; ``.jsonl``: Anthropic JSONL;
    * ``"hub:<relpath>"``: :func:`load_from_hub`;
    * a paper behaviour name (:data:`PAPER_BEHAVIOURS`) with ``data_dir``: that paper
      file (:data:`PAPER_FILES`) in ``data_dir``;
    * a built-in name (``"myopia"``, ``"wealth_seeking"``) without ``data_dir``: the
      built-in set;
    * another paper name without ``data_dir``: the file in :func:`default_data_dir`.

    Example:
        >>> load_behaviour("wealth_seeking").source
        'builtin:wealth_seeking'
        >>> load_behaviour("sycophancy", data_dir="../shared/data/behaviours")
        ... # doctest: +SKIP
    """
    if isinstance(spec, str) and spec.startswith(_HUB_PREFIX):
        return load_from_hub(spec[len(_HUB_PREFIX) :], on_error=on_error)
    if isinstance(spec, Path) or spec.endswith((".json", ".jsonl")):
        return _load_path(Path(spec), on_error)
    key = canonical_name(spec)
    if key not in PAPER_BEHAVIOURS and key not in BUILTIN_BEHAVIOURS:
        if Path(spec).exists():
            return _load_path(Path(spec), on_error)
        raise ValueError(f"unknown behaviour {spec!r}; valid: {_valid_specs()}")
    if data_dir is None and key in BUILTIN_BEHAVIOURS:
        return load_builtin(key)
    if key not in PAPER_FILES:
        raise ValueError(
            f"{spec!r} is not a paper behaviour, so data_dir does not apply; "
            f"paper behaviours are {', '.join(PAPER_BEHAVIOURS)}"
        )
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    if folder is None:
        raise FileNotFoundError(
            f"no data folder for paper behaviour {key!r}; pass data_dir=<folder with "
            f"{PAPER_FILES[key]}> or set ACTSTEER_DATA_DIR"
        )
    path = folder / PAPER_FILES[key]
    if not path.is_file():
        raise FileNotFoundError(
            f"paper behaviour file not found: {path}; pass data_dir=<folder with "
            f"{PAPER_FILES[key]}>"
        )
    return load_paper_json(path, name=key, on_error=on_error)


def _load_path(path: Path, on_error: OnError) -> BehaviourDataset:
    if not path.exists():
        raise FileNotFoundError(
            f"behaviour file not found: {path}; pass an existing .json/.jsonl file, "
            f"or one of: {_valid_specs()}"
        )
    if path.suffix == ".jsonl":
        return load_anthropic_jsonl(path, on_error=on_error)
    if path.suffix == ".json":
        data = _load_json_list(path)
        if _is_paper_list(data):
            return load_paper_json(path, on_error=on_error)
        rows = ((f"item {i}", row) for i, row in enumerate(data))
        return _build(rows, name=path.stem, source=str(path), where=str(path), on_error=on_error)
    raise ValueError(f"unsupported behaviour file {path}; use a .json or .jsonl file")
