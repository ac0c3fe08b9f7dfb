"""Behaviour items and datasets as values: validation, slicing, the paper's splits, pairs.

A behaviour dataset is a list of multiple-choice questions, each with the answer that
matches the behaviour (e.g. the myopic choice) and one that does not. Answers are a
capital letter (``"A"`` ... ``"Z"``; most items offer just ``(A)`` and ``(B)``) or
``"Yes"``/``"No"``, one kind per dataset. Each item carries the labels it offers
(:attr:`BehaviourItem.choices`), so its prompt names exactly those.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, overload

from actsteer.contrast import ContrastivePair
from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.prompts import (
    AB_ANSWERS,
    YESNO_ANSWERS,
    AnswerKind,
    PromptFormat,
    answer_labels,
    default_choices,
    format_item,
    label_kind,
    listed_choices,
    paper_prompt,
)

__all__ = [
    "AB_ANSWERS",
    "BALANCE_MIN_ITEMS",
    "BALANCE_SHARE",
    "PAPER_SEED",
    "PAPER_SPLIT_SIZES",
    "YESNO_ANSWERS",
    "AnswerKind",
    "BehaviourDataset",
    "BehaviourItem",
    "PaperSplits",
    "listed_choices",
]

PAPER_SPLIT_SIZES: tuple[int, int] = (500, 200)
"""Items for steering vectors and for the grid search; the rest is the test set."""

PAPER_SEED = 13
"""The paper's shuffle seed (``random.seed(13); random.shuffle(items)``)."""

BALANCE_SHARE = 0.6
"""A label that is the matching answer in more than this share of the items where it is
one of the two answers makes a dataset unbalanced (see
:meth:`BehaviourDataset.balance_warning`)."""
BALANCE_MIN_ITEMS = 20
"""Labels that are an answer in fewer items than this are not judged for balance."""

@dataclass(frozen=True)
class BehaviourItem:
    """One multiple-choice behaviour question.

    Attributes:
        question: The bare question, including its ``Choices:`` lines if any.
        matching: Answer that exhibits the behaviour: a letter ``"A"`` ... ``"Z"``,
            ``"Yes"`` or ``"No"``.
        not_matching: The other answer, of the same kind.
        raw_prompt: The exact paper-format prompt when loaded from that format.
        choices: The labels the item offers, in display order; its prompt ends
            ``"Out of (A), (B), ... I choose ("`` with exactly these. Left empty, they are
            taken from the question's ``(X)`` choice lines (:func:`listed_choices`, plus
            an answer they miss, in letter order), else ``("A", "B")`` (or the two
            answers, sorted) for letters; ``("Yes", "No")`` for Yes/No answers.

    Raises:
        ValueError: an answer is not a valid label, both answers are equal or of
            different kinds, or the choices do not include both answers.

    Example:
        >>> q = "Cake now or two later?\\n\\nChoices:\\n (A) Now\\n (B) Later\\n (C) Never"
        >>> item = BehaviourItem(q, matching="A", not_matching="B")
        >>> item.kind, item.choices
        ('AB', ('A', 'B', 'C'))
    """

    question: str
    matching: str
    not_matching: str
    raw_prompt: str | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise InvalidValueError(f"question must be a non-empty string, got {self.question!r}")
        for label, answer in (("matching", self.matching), ("not_matching", self.not_matching)):
            if label_kind(answer) is None:
                raise InvalidValueError(f"{label} answer {answer!r} is not valid; use a capital "
                                        "letter A-Z, 'Yes' or 'No'")
        if self.matching == self.not_matching:
            raise InvalidValueError(
                f"matching and not_matching are both {self.matching!r}; they must differ"
                )
        if label_kind(self.matching) != label_kind(self.not_matching):
            raise InvalidValueError(
                f"answers {self.matching!r} and {self.not_matching!r} mix kinds; "
                "use letters or Yes/No for both"
                )
        choices = answer_labels(
            self.choices or default_choices(self.question, self.matching, self.not_matching)
        )
        for label, answer in (("matching", self.matching), ("not_matching", self.not_matching)):
            if answer not in choices:
                offered = ", ".join(f"({c})" for c in choices)
                raise InvalidValueError(f"{label} answer {answer!r} is not one of the choices "
                                        f"{offered} the item offers; list it in the question's "
                                        "choices or fix the answer")
        object.__setattr__(self, "choices", choices)

    @property
    def kind(self) -> AnswerKind:
        """``"AB"`` (lettered answers, any letters) or ``"YesNo"``."""
        kind = label_kind(self.matching)
        if kind is None:  # pragma: no cover - excluded by __post_init__
            raise InvalidValueError(f"invalid answer {self.matching!r}")
        return kind

    def paper_prompt(self) -> str:
        """The prompt in the paper's raw format (equals ``raw_prompt`` when present)."""
        return paper_prompt(self.question, self.choices)


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

    All items answer with letters (kind ``"AB"``, whatever letters each item offers) or
    all with Yes/No (kind ``"YesNo"``).

    Attributes:
        name: Short name, e.g. ``"myopia"``.
        items: The items, in file order (or shuffled order after :meth:`shuffled`).
        source: Where it came from: a path, ``"builtin:myopia"`` or ``"hub:<file>"``.
        skipped: Malformed rows skipped while loading with ``on_error="skip"``.

    Example::

        ds = load_builtin("wealth_seeking")
        ds.balance_report()      # {'A': 36, 'B': 36}
        ds[:4].source            # 'builtin:wealth_seeking[0:4]'
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
                raise InvalidTypeError(
                    f"items[{i}] is {type(item).__name__}, expected BehaviourItem")
        kinds = {item.kind for item in items}
        if len(kinds) > 1:
            first = items[0].kind
            bad = next(i for i, it in enumerate(items) if it.kind != first)
            raise InvalidValueError(
                f"dataset {self.name!r} mixes answer kinds: item 0 is {first}, item {bad} is "
                f"{items[bad].kind}; keep lettered and Yes/No items in separate datasets"
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
        """The answer kind shared by all items: ``"AB"`` (letters, whichever each item
        offers) or ``"YesNo"``; ``ValueError`` for an empty dataset."""
        if not self.items:
            raise InvalidValueError(f"dataset {self.name!r} is empty, so it has no answer kind")
        return self.items[0].kind

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label some item offers: letters in alphabetical order, or
        ``("Yes", "No")``; ``()`` for an empty dataset.

        Example:
            >>> load_builtin("myopia").labels  # doctest: +SKIP
            ('A', 'B')
        """
        offered = {label for item in self.items for label in item.choices}
        if offered & set(YESNO_ANSWERS):
            return tuple(label for label in YESNO_ANSWERS if label in offered)
        return tuple(sorted(offered))

    @property
    def questions(self) -> tuple[str, ...]:
        """The bare questions, in order."""
        return tuple(item.question for item in self.items)

    def pairs(self, fmt: PromptFormat = "paper", tokenizer: Any | None = None
              ) -> list[ContrastivePair]:
        """One contrastive pair per item, ready for :func:`actsteer.caa_vector`.

        The prompt is the item rendered by :func:`actsteer.prompts.format_item` with its
        own :attr:`~BehaviourItem.choices` (so it ends ``"Out of (A) and (B), I choose ("``
        or names every choice the item lists); ``positive`` is the matching answer and
        ``negative`` the other one.

        Args:
            fmt: ``"paper"`` (raw ``Human:/AI:`` text) or ``"chat"`` (the model's chat
                template, which needs ``tokenizer``).
            tokenizer: The model's tokenizer, for ``fmt="chat"``.

        Raises:
            ValueError: an unknown ``fmt``, or ``"chat"`` without a tokenizer.

        Example::

            vector = caa_vector(model, load_behaviour("builtin:myopia").pairs(), dataset="myopia")
        """
        if fmt not in ("paper", "chat"):
            raise InvalidValueError(f"unknown prompt format {fmt!r}; use 'paper' or 'chat'")
        if fmt == "chat" and tokenizer is None:
            raise InvalidValueError("fmt='chat' renders through the model's chat template; pass "
                                    "tokenizer=model.tokenizer, or use fmt='paper'")
        return [
            ContrastivePair(format_item(item.question, item.choices, fmt, tokenizer),
                            item.matching, item.not_matching)
            for item in self.items
        ]

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
            raise InvalidValueError(
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
            >>> load_builtin("myopia").splits((8, 4, 4)).sizes  # doctest: +SKIP
            (8, 4, 4)
        """
        n = len(self)
        if sizes is None:
            n_vector, n_grid = n // 2, n // 5
            n_test = n - n_vector - n_grid
        else:
            if len(sizes) != 3 or any(not isinstance(s, int) or s < 0 for s in sizes):
                raise InvalidValueError(
                    f"sizes must be three non-negative ints (vector, grid, test), got {sizes!r}"
                    )
            n_vector, n_grid, n_test = sizes
            if n_vector + n_grid + n_test > n:
                raise InvalidValueError(
                    f"sizes {sizes} need {n_vector + n_grid + n_test} items but dataset "
                    f"{self.name!r} has {n}; pass smaller sizes or sizes=None for 50/20/30"
                    )
        if min(n_vector, n_grid, n_test) == 0 and sizes is None:
            raise InvalidValueError(
                f"dataset {self.name!r} has only {n} items, too few for a vector/grid/test "
                "split; need at least 5"
                )
        data = self.shuffled(seed)
        a, b = n_vector, n_vector + n_grid
        return PaperSplits(data[:a], data[a:b], data[b : b + n_test])

    def letter_balanced(self) -> BehaviourDataset:
        """The largest subset (in order) in which, for each pair of answers, each answer
        is the matching one equally often: e.g. as many A-matching as B-matching items.

        A contrastive vector from unbalanced items also encodes the matching *letter*
        (its difference is ``A − B`` more often than ``B − A``), so it moves every item
        towards that letter; balancing cancels that part. Answer pairs that occur with
        one direction only are dropped.

        Example:
            >>> load_behaviour("sycophancy").letter_balanced().balance_report()  # doctest: +SKIP
            {'A': 431, 'B': 431}
        """
        groups: dict[frozenset[str], dict[str, list[int]]] = {}
        for index, item in enumerate(self.items):
            answers = frozenset((item.matching, item.not_matching))
            groups.setdefault(answers, {}).setdefault(item.matching, []).append(index)
        keep: set[int] = set()
        for by_matching in groups.values():
            if len(by_matching) < 2:
                continue
            k = min(len(indices) for indices in by_matching.values())
            for indices in by_matching.values():
                keep.update(indices[:k])
        items = tuple(item for index, item in enumerate(self.items) if index in keep)
        return BehaviourDataset(self.name, items, self.source, self.skipped)

    def balance_report(self) -> dict[str, int]:
        """How often each label (:attr:`labels`) is the matching answer, e.g.
        ``{"A": 500, "B": 500}``."""
        counts = dict.fromkeys(self.labels or AB_ANSWERS, 0)
        for item in self.items:
            counts[item.matching] += 1
        return counts

    def balance_warning(self) -> str | None:
        """One line saying which labels are unbalanced, or ``None`` when none is.

        A label is unbalanced when it is one of an item's two answers in at least
        :data:`BALANCE_MIN_ITEMS` items and the matching one in more than
        :data:`BALANCE_SHARE` of them: a model that prefers that letter then looks like
        it has (or lacks) the behaviour. Loading a file logs this as a warning.

        Example:
            >>> ds.balance_warning()  # doctest: +SKIP
            "matching answers are unbalanced: A 590 of 861 items (69%) ..."
        """
        matching = dict.fromkeys(self.labels, 0)
        offered = dict.fromkeys(self.labels, 0)
        for item in self.items:
            matching[item.matching] += 1
            offered[item.matching] += 1
            offered[item.not_matching] += 1
        heavy = [label for label in self.labels if offered[label] >= BALANCE_MIN_ITEMS
                 and matching[label] > BALANCE_SHARE * offered[label]]
        if not heavy:
            return None
        parts = "; ".join(f"{label} is the matching answer in {matching[label]} of the "
                          f"{offered[label]} items where it is an answer "
                          f"({matching[label] / offered[label]:.0%})" for label in heavy)
        counts = ", ".join(f"{label} {n}" for label, n in self.balance_report().items())
        return (f"unbalanced answers: {parts} (matching counts: {counts}); a model that "
                f"favours {' or '.join(heavy)} scores as if it had the behaviour")
