"""Likelihood propensities: how much more likely a (steered) model makes a behaviour's text
than its contrast's, with no answer letter in between.

A/B scoring reads one answer letter, and on a small model the letter can move while the
behaviour does not. Pres et al. 2024 ("Towards Reliable Evaluation of Behavior Steering
Interventions in LLMs", arXiv 2410.17245) ask evaluations to account for the model's
likelihoods of matching and non-matching completions. Two measurements do that here, both
one value per item and plan, so paired effects (:func:`actsteer.effects.plan_effects`) and
per-item steerability (:func:`actsteer.steerability.propensity_slopes`) work on them as on
the letter metrics:

* **continuations** — an item is a prompt with continuations that show the behaviour and
  continuations that do not (:class:`ContrastItem`). Its propensity is
  ``log sum_b P(b | prompt) - log sum_c P(c | prompt)`` over whole continuations
  (``summed``, in nats). ``per_token`` aggregates differently: the *mean* over each
  side's continuations of their mean log-probability per token, behaviour side minus
  contrast side. It does not favour the shorter text, and it keeps every item on one
  per-token scale, whereas ``summed`` grows with the answers' length (an item with long
  answers weighs more in a mean over items).
* **word sets** — after a prompt, the next-token probability mass on the behaviour's words
  against the mass on the contrast's words: ``log sum_{w in B} p(w) - log sum_{w in C}
  p(w)`` (:class:`WordSets`; a word counts as the single token ``" word"``). Several
  word sets are read from the same forward pass, so one sweep measures every behaviour
  and the cross-talk between them.

Example::

    items = [ContrastItem("I tried the new cafe.", (" It was lovely.",), (" It was awful.",))]
    scores = continuation_propensities(model, items, [empty_plan(), plan])
    effect = plan_effects(scores.summed)[1]          # Δ nats [CI] against unsteered
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import Batch, encode, encode_continuations, length_batches, pad
from actsteer.contrast import ContrastItem, WordSets
from actsteer.errors import InvalidValueError
from actsteer.executor import Executor, register_task, scoring_options
from actsteer.plan import SteeringPlan
from actsteer.progress import by_items
from actsteer.sweep import sweep_logits
from actsteer.units import run_plans

__all__ = [
    "ContrastItem",
    "Propensities",
    "WordSets",
    "continuation_propensities",
    "counted_words",
    "word_ids",
    "word_propensities",
]

@dataclass(frozen=True, eq=False)
class Propensities:
    """Propensities of ``item`` under each ``plan`` (tensors ``[plan, item]``, nats)."""

    summed: Float[Tensor, "plan item"]
    """log P(behaviour set) − log P(contrast set): logsumexp over each side's whole
    continuations (or its word probabilities)."""
    per_token: Float[Tensor, "plan item"]
    """Mean over the behaviour continuations of their mean per-token log-probability,
    minus the same over the contrast continuations: a mean of means, not a logsumexp, so
    not ``summed`` divided by a length. For word sets (one token each, one mass per side)
    it is a copy of ``summed``."""

    def __post_init__(self) -> None:
        if self.summed.shape != self.per_token.shape or self.summed.dim() != 2:
            raise InvalidValueError(f"Propensities need two [plan, item] tensors of one "
                                    f"shape, got {tuple(self.summed.shape)} and "
                                    f"{tuple(self.per_token.shape)}")

    @property
    def n_items(self) -> int:
        return int(self.summed.shape[1])

    def select(self, plans: Sequence[int]) -> Propensities:
        """Only the rows of ``plans`` (e.g. one multiplier ladder for slopes)."""
        rows = torch.as_tensor(list(plans), dtype=torch.long)
        return Propensities(self.summed[rows], self.per_token[rows])


def _single_tokens(model: Any, words: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """The words that are one token after a space, with that token, and the others."""
    counted: dict[str, int] = {}
    dropped: list[str] = []
    for word, tokens in zip(words, encode_continuations(model, [" " + w.strip() for w in words]),
                            strict=True):
        if len(tokens) == 1:
            counted[word] = int(tokens[0])
        else:
            dropped.append(word)
    return counted, dropped


def word_ids(model: Any, words: Sequence[str]) -> list[int]:
    """Token id of each word as it follows a space (``" word"`` inside a text, see
    :func:`~actsteer.batching.encode_continuations`), for words that are one token there;
    other words are dropped with one warning naming them (a :class:`UserWarning`, which
    a Ray worker hands back to the driver; :func:`counted_words` says which counted)."""
    counted, dropped = _single_tokens(model, words)
    if dropped:
        warnings.warn(f"words that are not one token after a space are not counted: "
                      f"{', '.join(dropped)}", stacklevel=2)
    if not counted:
        raise InvalidValueError(f"none of the words {list(words)} is a single token after a "
                                "space for this tokenizer; choose shorter, common words")
    return sorted(set(counted.values()))


def counted_words(model: Any, words: WordSets) -> dict[str, list[str]]:
    """The words of each side of ``words`` that :func:`word_propensities` counts on this
    model's tokenizer (one token after a space), for a results cell to record."""
    return {side: list(_single_tokens(model, getattr(words, side))[0])
            for side in ("behaviour", "contrast")}


def _check_plans(plans: Sequence[SteeringPlan]) -> None:
    if not plans:
        raise InvalidValueError("give at least one plan (empty_plan() is the unsteered model)")


def word_propensities(
    model: Any,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    word_sets: Sequence[WordSets],
    plans: Sequence[SteeringPlan],
    *,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "word propensities",
    executor: Executor | None = None,
) -> dict[str, Propensities]:
    """For each word set: ``[plan, prompt]`` propensities after each prompt's last token.

    Prompts are text (encoded with :func:`actsteer.batching.encode`) or token ids; every
    plan is scored on every prompt in one :func:`~actsteer.sweep.sweep_logits` call per
    batch (prefix shared), and all word sets are read from the same logits. ``executor``:
    where the work runs (None: here, in one pass), as units of plans that start at
    neighbouring blocks (:func:`actsteer.units.run_plans`).
    """
    _check_plans(plans)
    if not prompts:
        raise InvalidValueError("word_propensities needs at least one prompt")
    if not word_sets:
        raise InvalidValueError("give at least one WordSets")
    names = [w.name for w in word_sets]
    if len(set(names)) != len(names):
        raise InvalidValueError(f"word set names {names} repeat; name each set once")
    if executor is not None:
        scattered: dict[str, Propensities] = run_plans(
            model, plans, "word-propensities",
            {"prompts": [encode(model, p) if isinstance(p, str) else list(p) for p in prompts],
             "word_sets": list(word_sets), "batch_size": batch_size},
            executor=executor, key=desc, progress=progress, desc=desc)
        return scattered
    sequences = [encode(model, p) if isinstance(p, str) else list(p) for p in prompts]
    sides = [(torch.tensor(word_ids(model, w.behaviour)), torch.tensor(word_ids(model, w.contrast)))
             for w in word_sets]
    out = torch.zeros(len(word_sets), len(plans), len(sequences), dtype=torch.float64)

    def reduce(logits: Tensor) -> Tensor:  # [batch, vocab] -> [set, batch]
        logp = torch.log_softmax(logits.float(), dim=-1)
        return torch.stack([logp[:, b.to(logp.device)].logsumexp(-1)
                            - logp[:, c.to(logp.device)].logsumexp(-1) for b, c in sides])

    groups = list(length_batches([len(s) for s in sequences], batch_size))
    for group in by_items(groups, desc=desc, progress=progress, unit="prompt"):
        batch = pad(model, [sequences[i] for i in group], padding_side="left")
        values = sweep_logits(model, batch, plans, reduce=reduce)  # [plan, set, batch]
        out[:, :, torch.as_tensor(group)] = values.permute(1, 0, 2).double().cpu()
    return {name: Propensities(out[j], out[j].clone()) for j, name in enumerate(names)}


@dataclass(frozen=True)
class _Row:
    item: int
    behaviour: bool
    prompt_len: int
    length: int


def continuation_propensities(
    model: Any,
    items: Sequence[ContrastItem],
    plans: Sequence[SteeringPlan],
    *,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "continuation propensities",
    executor: Executor | None = None,
) -> Propensities:
    """``[plan, item]`` propensities of each item's behaviour continuations against its
    contrast continuations (see the module docstring), every plan applied to the whole
    sequence (prompt and continuation), as steering acts during generation.
    ``executor``: where the work runs (None: here, in one pass), as units of plans that
    start at neighbouring blocks (:func:`actsteer.units.run_plans`)."""
    _check_plans(plans)
    if not items:
        raise InvalidValueError("continuation_propensities needs at least one item")
    if executor is not None:
        scattered: Propensities = run_plans(
            model, plans, "continuation-propensities",
            {"items": list(items), "batch_size": batch_size}, executor=executor, key=desc,
            progress=progress, desc=desc)
        return scattered
    prompts = [encode(model, item.prompt) for item in items]
    texts = [t for item in items for t in (*item.behaviour, *item.contrast)]
    answers = iter(encode_continuations(model, texts))
    sequences: list[list[int]] = []
    rows: list[_Row] = []
    for index, (item, prompt) in enumerate(zip(items, prompts, strict=True)):
        for is_behaviour, side in ((True, item.behaviour), (False, item.contrast)):
            for text in side:
                answer = next(answers)
                if not answer:
                    raise InvalidValueError(f"item {index}: continuation {text!r} has no "
                                            "tokens")
                sequences.append(prompt + answer)
                rows.append(_Row(index, is_behaviour, len(prompt), len(prompt) + len(answer)))
    total = torch.zeros(len(plans), len(sequences), dtype=torch.float64)
    groups = list(length_batches([len(s) for s in sequences], batch_size))
    for group in by_items(groups, desc=desc, progress=progress, unit="text"):
        batch = pad(model, [sequences[i] for i in group], padding_side="right")
        scored = _scored_mask(batch, [rows[i] for i in group])

        def reduce(logits: Tensor, batch: Batch = batch, scored: Tensor = scored) -> Tensor:
            return _continuation_logprob(logits, batch.tokens, scored)

        values = sweep_logits(model, batch, plans, positions="all", reduce=reduce)
        total[:, torch.as_tensor(group)] = values.double().cpu()
    lengths = torch.tensor([r.length - r.prompt_len for r in rows], dtype=torch.float64)
    owner = torch.tensor([r.item for r in rows])
    behaviour_rows = torch.tensor([r.behaviour for r in rows])
    return Propensities(_set_difference(total, owner, behaviour_rows, len(items)),
                        _set_difference(total / lengths, owner, behaviour_rows, len(items),
                                        mean=True))


def _scored_mask(batch: Batch, rows: Sequence[_Row]) -> Int[Tensor, "batch pos"]:
    """1 at each position whose *next* token is a continuation token (right padding)."""
    mask = torch.zeros(batch.tokens.shape, dtype=torch.bool)
    for r, row in enumerate(rows):
        mask[r, row.prompt_len - 1: row.length - 1] = True
    return mask


def _continuation_logprob(logits: Float[Tensor, "batch pos vocab"],
                          tokens: Int[Tensor, "batch pos"],
                          scored: Tensor) -> Float[Tensor, " batch"]:
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = tokens[:, 1:].to(logp.device)
    picked = logp.gather(-1, targets[..., None]).squeeze(-1)
    return (picked * scored[:, :-1].to(picked.device)).sum(-1)


def _set_difference(values: Tensor, owner: Tensor, is_behaviour: Tensor, n_items: int, *,
                    mean: bool = False) -> Tensor:
    """Per item: logsumexp (or, with ``mean``, the mean) of its behaviour rows minus that
    of its contrast rows; ``values`` is ``[plan, row]``."""
    out = torch.zeros(values.shape[0], n_items, dtype=torch.float64)
    for item in range(n_items):
        mine = owner == item
        sides = [values[:, mine & is_behaviour], values[:, mine & ~is_behaviour]]
        if mean:
            out[:, item] = sides[0].mean(-1) - sides[1].mean(-1)
        else:
            out[:, item] = sides[0].logsumexp(-1) - sides[1].logsumexp(-1)
    return out


@register_task("word-propensities")
def _word_task(model: Any, payload: Mapping[str, Any]) -> dict[str, Propensities]:
    """:func:`word_propensities` of token-id ``prompts`` under ``plans`` for ``word_sets``."""
    return word_propensities(model, payload["prompts"], payload["word_sets"], payload["plans"],
                             **scoring_options(payload, "word propensities"))


@register_task("continuation-propensities")
def _continuation_task(model: Any, payload: Mapping[str, Any]) -> Propensities:
    """:func:`continuation_propensities` of ``items`` under ``plans``."""
    return continuation_propensities(model, payload["items"], payload["plans"],
                                     **scoring_options(payload, "continuation propensities"))
