"""Behaviour scoring: which answer a (steered) model picks, and how sure it is.

The paper scores a behaviour item by one greedy token, argmax over the whole vocabulary,
after a prompt ending ``"... I choose ("``. The token is *matching* (shows the behaviour),
*non-matching*, or *faulty* (anything else, including a choice that is neither answer).
Because argmax hides small shifts, each item also gets P(matching | one of the two
answers) and the logit difference between them. Each item is scored with its own labels
(``A``/``B``, ``C``/``F``, ``Yes``/``No``...).

Example::

    prepared = prepare_items(model, dataset, "paper")          # per-item stems and ids
    scores = score_items(model, prepared, [empty_plan(), plan])
    scores.summary(1)["matching_rate"]                        # {"value": ..., "low": ...}
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm

from actsteer.batching import encode, encode_many, length_batches, pad
from actsteer.errors import ActsteerError, InvalidTypeError, InvalidValueError
from actsteer.executor import register_task, scoring_options
from actsteer.plan import SteeringPlan
from actsteer.prompts import Labels, PromptFormat, answer_labels, format_item
from actsteer.stats import bootstrap
from actsteer.sweep import sweep_logits
from actsteer.units import run_plans

if TYPE_CHECKING:
    from actsteer.data.behaviours import BehaviourItem
    from actsteer.executor import Executor

logger = logging.getLogger(__name__)

MATCHING, NON_MATCHING, FAULTY = 0, 1, 2
CLASS_NAMES: tuple[str, str, str] = ("matching", "non_matching", "faulty")


class AnswerTokenError(ActsteerError, ValueError):
    """An answer label is not exactly one token after ``"("`` for this tokenizer."""


def answer_token_ids(model: Any, labels: Labels) -> dict[str, int]:
    """Id of each answer label as the single token that follows ``"("`` (and ``" ("``).

    Args:
        model: A model with a ``tokenizer``.
        labels: Any letters ``"A"`` ... ``"Z"`` or ``"Yes"``/``"No"`` (e.g. a dataset's
            :attr:`~actsteer.data.behaviours.BehaviourDataset.labels`), or a kind:
            ``"AB"`` for ``("A", "B")``, ``"YesNo"`` for ``("Yes", "No")``.

    Raises:
        ValueError: an unknown kind or label (see :func:`actsteer.prompts.answer_labels`).
        AnswerTokenError: (a ``ValueError``) ``"(" + label`` is not ``"("`` followed by
            exactly one token, or two labels share a token; it names the tokenizer, the
            label and the tokens.

    Example:
        >>> answer_token_ids(model, ("A", "B", "C"))  # doctest: +SKIP
        {'A': 49, 'B': 50, 'C': 51}
    """
    wanted = answer_labels(labels)
    tokenizer = model.tokenizer
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    ids: dict[str, int] = {}
    for label in wanted:
        # the stem ends "I choose (", which some tokenizers split as " (": check both
        for paren in ("(", " ("):
            opener = encode(model, paren, bos=False)
            tokens = encode(model, paren + label, bos=False)
            if len(tokens) != len(opener) + 1 or tokens[: len(opener)] != opener:
                pieces = [tokenizer.decode([t]) for t in tokens]
                raise AnswerTokenError(
                    f"tokenizer {name!r}: answer {label!r} after {paren!r} is not one token; "
                    f"{paren!r} is {opener} and {paren + label!r} is {tokens} ({pieces}). "
                    "Scoring needs a tokenizer that splits '(' from the answer label")
            if label in ids and ids[label] != tokens[-1]:
                raise AnswerTokenError(
                    f"tokenizer {name!r}: answer {label!r} is token {ids[label]} after '(' "
                    f"but {tokens[-1]} after ' ('")
            ids[label] = int(tokens[-1])
    if len(set(ids.values())) != len(ids):
        raise AnswerTokenError(f"tokenizer {name!r}: answers {list(ids)} share a token {ids}")
    return ids


def encode_items(model: Any, questions: Sequence[str], labels: Labels,
                 fmt: PromptFormat = "paper") -> list[list[int]]:
    """Token ids of each question rendered in ``fmt`` with one set of ``labels`` (a kind
    or a tuple) for all. Items that offer different choices: use :func:`prepare_items`."""
    return encode_many(model, [format_item(q, labels, fmt, model.tokenizer) for q in questions])


@dataclass(frozen=True)
class PreparedItems:
    """Items tokenised once for :func:`score_items`: prompts and per-item answer ids.

    All lists are in item order and of equal length.
    """

    prompts: list[list[int]]
    """Token ids of each item's prompt (ending with its own answer stem)."""
    matching_ids: list[int]
    """Token id of each item's matching answer."""
    not_matching_ids: list[int]
    """Token id of each item's non-matching answer."""
    matching_labels: list[str]
    """Each item's matching label (``"A"``, ``"C"``, ``"Yes"``...), e.g. to split results
    by answer letter."""
    not_matching_labels: list[str]
    """Each item's non-matching label."""
    label_ids: dict[str, int]
    """Token id of every label some item offers."""

    def __post_init__(self) -> None:
        sizes = {len(self.prompts), len(self.matching_ids), len(self.not_matching_ids),
                 len(self.matching_labels), len(self.not_matching_labels)}
        if len(sizes) != 1:
            raise InvalidValueError(f"PreparedItems lists differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: slice) -> PreparedItems:
        """The items of ``index`` (a slice), e.g. ``prepared[:60]``."""
        if not isinstance(index, slice):
            raise InvalidValueError(f"index PreparedItems with a slice (prepared[:n]), got "
                                    f"{index!r}")
        return PreparedItems(self.prompts[index], self.matching_ids[index],
                             self.not_matching_ids[index], self.matching_labels[index],
                             self.not_matching_labels[index], dict(self.label_ids))

    @classmethod
    def from_ids(cls, prompts: Sequence[Sequence[int]], matching_ids: Sequence[int],
                 not_matching_ids: Sequence[int], *,
                 matching_labels: Sequence[str] | None = None,
                 not_matching_labels: Sequence[str] | None = None) -> PreparedItems:
        """Items from token ids you made yourself (labels default to the answer ids as
        text). Most callers use :func:`prepare_items` instead."""
        n = len(prompts)
        if len(matching_ids) != n or len(not_matching_ids) != n:
            raise InvalidValueError(f"{n} prompts but {len(matching_ids)} matching and "
                                    f"{len(not_matching_ids)} non-matching answer ids; give one "
                                    "of each per prompt")
        good = list(matching_labels) if matching_labels is not None else [
            str(i) for i in matching_ids]
        bad = list(not_matching_labels) if not_matching_labels is not None else [
            str(i) for i in not_matching_ids]
        ids = {**dict(zip(good, map(int, matching_ids), strict=True)),
               **dict(zip(bad, map(int, not_matching_ids), strict=True))}
        return cls([list(p) for p in prompts], [int(i) for i in matching_ids],
                   [int(i) for i in not_matching_ids], good, bad, ids)


def prepare_items(model: Any, items: Iterable[BehaviourItem],
                  fmt: PromptFormat = "paper") -> PreparedItems:
    """Render, tokenise and look up the answers of behaviour items, each with its own
    choices, ready for :func:`score_items`.

    Each prompt is :func:`~actsteer.prompts.format_item` with the item's ``choices`` (so a
    four-choice item ends ``"Out of (A), (B), (C) and (D), I choose ("``), tokenised with
    :func:`~actsteer.batching.encode_many`; answer ids come from :func:`answer_token_ids`
    over every label offered.

    Args:
        model: The model whose tokenizer (and chat template for ``"chat"``) is used.
        items: Behaviour items, e.g. a :class:`~actsteer.data.behaviours.BehaviourDataset`
            or one of its splits.
        fmt: ``"paper"`` (raw Human/AI) or ``"chat"`` (the model's chat template).

    Raises:
        ValueError: no items, an unknown ``fmt``, or labels the tokenizer cannot score.

    Example::

        prepared = prepare_items(model, splits.test, "paper")
        scores = score_items(model, prepared, [empty_plan()])
    """
    items = list(items)
    if not items:
        raise InvalidValueError("prepare_items needs at least one item")
    offered = dict.fromkeys(label for item in items for label in item.choices)
    ids = answer_token_ids(model, tuple(offered))
    texts = [format_item(item.question, item.choices, fmt, model.tokenizer) for item in items]
    return PreparedItems(
        prompts=encode_many(model, texts),
        matching_ids=[ids[item.matching] for item in items],
        not_matching_ids=[ids[item.not_matching] for item in items],
        matching_labels=[item.matching for item in items],
        not_matching_labels=[item.not_matching for item in items],
        label_ids=ids,
    )


def classify(logits: Float[Tensor, "*batch d_vocab"], matching: Int[Tensor, " *batch"],
             not_matching: Int[Tensor, " *batch"]
             ) -> tuple[Int[Tensor, " *batch"], Int[Tensor, " *batch"],
                        Float[Tensor, " *batch"], Float[Tensor, " *batch"]]:
    """Per item: argmax token, class (0 matching, 1 non-matching, 2 faulty),
    P(matching | the two answers) and logit(matching) − logit(non-matching)."""
    logits = logits.float()
    predicted = logits.argmax(-1)
    klass = torch.full_like(predicted, FAULTY)
    klass[predicted == not_matching] = NON_MATCHING
    klass[predicted == matching] = MATCHING
    match_logit = logits.gather(-1, matching[..., None]).squeeze(-1)
    other_logit = logits.gather(-1, not_matching[..., None]).squeeze(-1)
    diff = match_logit - other_logit
    return predicted, klass, torch.sigmoid(diff), diff


@dataclass(frozen=True, eq=False)
class ABScores:
    """Scores of ``n`` items under each of ``p`` plans (all tensors ``[plan, item]``)."""

    predicted: Int[Tensor, "plan item"]
    """Argmax token id over the whole vocabulary."""
    klass: Int[Tensor, "plan item"]
    """0 matching, 1 non-matching, 2 faulty."""
    p_matching: Float[Tensor, "plan item"]
    """Softmax over the two answer logits: P(matching | one of the two answers)."""
    logit_diff: Float[Tensor, "plan item"]
    """logit(matching) − logit(non-matching)."""

    def __post_init__(self) -> None:
        shapes = {tuple(t.shape) for t in (self.predicted, self.klass, self.p_matching,
                                           self.logit_diff)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise InvalidValueError(
                f"ABScores tensors must share one [plan, item] shape, got {shapes}")

    @property
    def n_items(self) -> int:
        return int(self.klass.shape[1])

    def counts(self, plan_index: int) -> dict[str, int]:
        """Items per class under plan ``plan_index``."""
        row = self.klass[plan_index]
        return {name: int((row == i).sum()) for i, name in enumerate(CLASS_NAMES)}

    def top_answer_share(self, plan_index: int) -> float:
        """Share of items whose argmax is the single most common token (mode collapse)."""
        row = self.predicted[plan_index]
        return float(torch.unique(row, return_counts=True)[1].max()) / max(1, row.numel())

    def summary(self, plan_index: int, *, n_resamples: int = 1000,
                seed: int = 0) -> dict[str, Any]:
        """Counts, matching rate (share of *all* items, as the paper), faulty share, mean
        P(matching) and mean logit difference, each rate/mean with a bootstrap 95% interval."""
        row = self.klass[plan_index]
        kwargs: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed}
        return {
            "n": self.n_items,
            "counts": self.counts(plan_index),
            "matching_rate": bootstrap((row == MATCHING).double(), **kwargs).as_dict(),
            "faulty_rate": bootstrap((row == FAULTY).double(), **kwargs).as_dict(),
            "p_matching": bootstrap(self.p_matching[plan_index], **kwargs).as_dict(),
            "logit_diff": bootstrap(self.logit_diff[plan_index], **kwargs).as_dict(),
            "top_answer_share": self.top_answer_share(plan_index),
        }

    def items(self, plan_index: int) -> dict[str, list[Any]]:
        """Per-item class, P(matching) and logit difference (rounded) for storage."""
        return {
            "class": [int(c) for c in self.klass[plan_index]],
            "predicted": [int(t) for t in self.predicted[plan_index]],
            "p_matching": [round(float(p), 5) for p in self.p_matching[plan_index]],
            "logit_diff": [round(float(d), 4) for d in self.logit_diff[plan_index]],
        }


def score_items(
    model: Any,
    items: PreparedItems,
    plans: Sequence[SteeringPlan],
    *,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
    executor: Executor | None = None,
) -> ABScores:
    """Score every item under every plan: one forward per question per plan.

    Args:
        items: from :func:`prepare_items` (or :meth:`PreparedItems.from_ids`).
        plans: steering plans; :func:`actsteer.plan.empty_plan` is the unsteered model.
        executor: where the work runs (:mod:`actsteer.executor`; None: here, in one
            pass). The plans are split by the block they start at into as many units as
            the executor has workers (:func:`actsteer.units.run_plans`), so each unit
            still shares the unsteered prefix among its plans.

    Prompts are left-padded in length-bucketed batches of ``batch_size`` and run through
    :func:`actsteer.sweep.sweep_logits` (all plans of a batch share the unsteered prefix);
    results come back in item order, ``[plan, item]``.
    """
    if not isinstance(items, PreparedItems):
        raise InvalidTypeError(f"score_items takes PreparedItems (from prepare_items), got "
                               f"{type(items).__name__}; for raw token ids use "
                               "PreparedItems.from_ids(prompts, matching_ids, not_matching_ids)")
    prompts_token_ids, matching_ids = items.prompts, items.matching_ids
    not_matching_ids = items.not_matching_ids
    n = len(prompts_token_ids)
    if n == 0:
        raise InvalidValueError("score_items needs at least one prompt")
    if not plans:
        raise InvalidValueError("score_items needs at least one plan (use empty_plan() to score "
                                "the unsteered model)")
    if executor is not None:
        scores: ABScores = run_plans(model, plans, "ab-scores",
                                     {"items": items, "batch_size": batch_size}, key=desc,
                                     executor=executor, progress=progress, desc=desc)
        return scores
    shape = (len(plans), n)
    predicted = torch.zeros(shape, dtype=torch.long)
    klass = torch.zeros(shape, dtype=torch.long)
    p_matching = torch.zeros(shape, dtype=torch.float32)
    logit_diff = torch.zeros(shape, dtype=torch.float32)
    match_all = torch.as_tensor(list(matching_ids), dtype=torch.long)
    other_all = torch.as_tensor(list(not_matching_ids), dtype=torch.long)
    groups = list(length_batches([len(p) for p in prompts_token_ids], batch_size))
    for group in tqdm(groups, desc=desc, disable=not progress, leave=False):
        batch = pad(model, [prompts_token_ids[i] for i in group], padding_side="left")
        logits = sweep_logits(model, batch, plans)  # [plan, batch, vocab], on the model
        rows = torch.as_tensor(group)
        expand = (len(plans), len(group))
        # classify where the logits are; only the four [plan, batch] results move to CPU
        pred, cls, prob, diff = classify(logits, match_all[rows].to(logits.device).expand(expand),
                                         other_all[rows].to(logits.device).expand(expand))
        predicted[:, rows], klass[:, rows] = pred.cpu(), cls.cpu()
        p_matching[:, rows], logit_diff[:, rows] = prob.cpu(), diff.cpu()
    return ABScores(predicted, klass, p_matching, logit_diff)


@register_task("ab-scores")
def _ab_scores_task(model: Any, payload: Mapping[str, Any]) -> ABScores:
    """:func:`score_items` of ``items`` under ``plans``."""
    return score_items(model, payload["items"], payload["plans"],
                       **scoring_options(payload, "scoring"))
