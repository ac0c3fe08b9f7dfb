"""Next-token top-k accuracy of a (steered) model on documents.

Token ``t+1`` is predicted from the logits at position ``t``, so a document of ``n``
tokens contributes ``n - 1`` predictions; padding never counts. Results keep per-document
counts so that intervals can be bootstrapped over documents, token-weighted. Forward
passes go through :func:`actsteer.sweep.sweep_logits` (prefix reuse, optional cache).

Example::

    docs = Documents.build(model, sequences, batch_size=8)      # tokenised and padded once
    base, steered = accuracy_sweep(model, docs, [empty_plan(), single(v, 14, 2.0)])
    steered.estimate("top1")                                    # Estimate with a CI
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import Batch, PaddingSide, length_batches, pad
from actsteer.errors import InvalidValueError
from actsteer.executor import Executor, register_task
from actsteer.plan import SteeringPlan
from actsteer.progress import by_items
from actsteer.stats import Estimate, bootstrap
from actsteer.sweep import PrefixCache, sweep_logits
from actsteer.units import run_plans


@dataclass(frozen=True)
class DocumentAccuracy:
    """Per-document counts: correct top-1 and top-k predictions, predictions made, and
    (when measured) the summed negative log-likelihood of the true next tokens."""

    top1: Int[Tensor, " doc"]
    topk: Int[Tensor, " doc"]
    tokens: Int[Tensor, " doc"]
    k: int
    nll: Float[Tensor, " doc"] | None = None
    """Sum over the document's predictions of −log p(true next token), in nats."""

    @property
    def top1_rate(self) -> float:
        return float(self.top1.sum()) / max(1, int(self.tokens.sum()))

    def estimate(self, which: str = "top1", *, n_resamples: int = 1000,
                 seed: int = 0) -> Estimate:
        """Token-weighted accuracy with a bootstrap interval over documents."""
        if which not in ("top1", "topk"):
            raise InvalidValueError(f"which={which!r} is invalid; use 'top1' or 'topk'")
        counts = self.top1 if which == "top1" else self.topk
        rates = counts.double() / self.tokens.clamp_min(1).double()
        return bootstrap(rates, weights=self.tokens.double(), n_resamples=n_resamples,
                         seed=seed)

    def perplexity(self, *, n_resamples: int = 1000, seed: int = 0) -> Estimate:
        """exp(token-weighted mean negative log-likelihood), with the interval of that mean
        (bootstrap over documents) mapped through exp."""
        if self.nll is None:
            raise InvalidValueError("these counts carry no log-likelihoods; score them with "
                                    "accuracy_sweep, which records them")
        per_token = self.nll.double() / self.tokens.clamp_min(1).double()
        mean = bootstrap(per_token, weights=self.tokens.double(), n_resamples=n_resamples,
                         seed=seed)
        return Estimate(math.exp(mean.value), math.exp(mean.low), math.exp(mean.high), mean.n)


@dataclass(frozen=True, eq=False)
class Documents:
    """Documents tokenised once and padded into length-bucketed batches.

    Reuse one value for every plan scored on the same documents: a :class:`PrefixCache`
    recognises its batches, so the unsteered prefix is computed once per batch.
    """

    sequences: tuple[tuple[int, ...], ...]
    groups: tuple[tuple[int, ...], ...]
    """Document indices of each batch (results are scattered back by them)."""
    batches: tuple[Batch, ...]
    context: tuple[int, ...] = ()
    """Leading tokens of each document that are context (e.g. an instruction scaffold put
    before the text), read but never scored: only tokens after them are predictions.
    Empty: no context, every token after the first is scored."""

    @classmethod
    def build(cls, model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int = 8,
              padding_side: PaddingSide = "right",
              context: Sequence[int] | None = None) -> Documents:
        """Pad ``sequences`` (each at least 2 tokens) into batches of ``batch_size``;
        ``context``: per document, how many leading tokens are context, not scored (each
        document keeps at least one scored token after them)."""
        short = [(i, len(seq)) for i, seq in enumerate(sequences) if len(seq) < 2]
        if short:
            index, length = short[0]
            raise InvalidValueError(f"document {index} has {length} token(s) ({len(short)} such "
                                    "documents); each needs at least 2 to score a prediction: drop "
                                    "them or keep longer ones")
        if not sequences:
            raise InvalidValueError("no documents to score; give at least one of 2+ tokens")
        docs = tuple(tuple(int(t) for t in seq) for seq in sequences)
        leading = tuple(int(c) for c in context) if context is not None else ()
        if leading and len(leading) != len(docs):
            raise InvalidValueError(f"context gives {len(leading)} lengths for {len(docs)} "
                                    "documents; give one per document")
        bad = [(i, c) for i, c in enumerate(leading) if not 0 <= c < len(docs[i])]
        if bad:
            index, length = bad[0]
            raise InvalidValueError(f"document {index}: context={length} leaves no token to "
                                    f"score in its {len(docs[index])} tokens; use 0 to "
                                    f"{len(docs[index]) - 1}")
        groups = tuple(tuple(g) for g in length_batches([len(s) for s in docs], batch_size))
        batches = tuple(pad(model, [docs[i] for i in g], padding_side=padding_side)
                        for g in groups)
        return cls(docs, groups, batches, leading)

    @property
    def tokens(self) -> Int[Tensor, " doc"]:
        """Predictions per document: its tokens after the first and after its context."""
        return torch.tensor([len(s) - max(1, c) for s, c in zip(
            self.sequences, self.context or [0] * len(self), strict=True)], dtype=torch.long)

    def scored_from(self, group: Sequence[int]) -> Int[Tensor, " batch"] | None:
        """Per document of ``group``: the index of its first scored token (None: no
        context anywhere, every token after the first)."""
        if not any(self.context):
            return None
        return torch.tensor([self.context[i] for i in group], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.sequences)


def accuracy_sweep(
    model: Any,
    documents: Documents,
    plans: Sequence[SteeringPlan],
    *,
    k: int = 10,
    cache: PrefixCache | None = None,
    progress: bool = False,
    executor: Executor | None = None,
) -> list[DocumentAccuracy]:
    """Top-1 and top-``k`` next-token accuracy per document under each plan.

    Plans of one batch run in one :func:`sweep_logits` call (sharing the unsteered
    prefix); only per-row hit counts are kept, never a plan's full logits. ``executor``:
    where the work runs (None: here, in one pass), as units of plans that start at
    neighbouring blocks (:func:`actsteer.units.run_plans`), each padding the documents
    into batches as ``documents`` does.
    """
    if k < 1:
        raise InvalidValueError(f"k must be >= 1, got {k}")
    if executor is not None:
        if cache is not None:
            raise InvalidValueError("a PrefixCache lives in this process; pass cache=None "
                                    "with an executor (each unit shares its own prefix)")
        scattered: list[DocumentAccuracy] = run_plans(
            model, plans, "accuracy", {
                "sequences": documents.sequences, "k": k,
                "batch_size": max(len(group) for group in documents.groups),
                "padding_side": documents.batches[0].padding_side,
                "context": documents.context or None},
            executor=executor, key="next-token accuracy", progress=progress,
            desc="next-token accuracy")
        return scattered
    n = len(documents)
    top1 = torch.zeros(len(plans), n, dtype=torch.long)
    topk = torch.zeros(len(plans), n, dtype=torch.long)
    nll = torch.zeros(len(plans), n, dtype=torch.float64)
    batches = dict(zip(documents.groups, documents.batches, strict=True))
    for group in by_items(list(documents.groups), desc="next-token accuracy",
                          progress=progress, unit="document"):
        batch = batches[group]
        scored_from = documents.scored_from(group)

        def hits_of(logits: Tensor, batch: Batch = batch,
                    scored_from: Tensor | None = scored_from) -> Tensor:
            hit_1, hit_k = count_hits(logits, batch, k, scored_from)
            return torch.stack([hit_1.double(), hit_k.double(),
                                count_nll(logits, batch, scored_from)])

        hits = sweep_logits(model, batch, plans, positions="all", cache=cache, reduce=hits_of)
        rows = torch.as_tensor(group)
        top1[:, rows], topk[:, rows] = hits[:, 0].long().cpu(), hits[:, 1].long().cpu()
        nll[:, rows] = hits[:, 2].cpu()
    return [DocumentAccuracy(top1[i], topk[i], documents.tokens, k, nll[i])
            for i in range(len(plans))]


def next_token_accuracy(
    model: Any,
    sequences: Sequence[Sequence[int]] | Documents,
    plan: SteeringPlan | None = None,
    *,
    k: int = 10,
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
    progress: bool = False,
    executor: Executor | None = None,
) -> DocumentAccuracy:
    """Top-1 and top-``k`` next-token accuracy of ``model`` under ``plan`` per document
    (``executor``: where it runs, see :func:`accuracy_sweep`)."""
    documents = sequences if isinstance(sequences, Documents) else Documents.build(
        model, sequences, batch_size=batch_size, padding_side=padding_side)
    return accuracy_sweep(model, documents, [plan or SteeringPlan()], k=k,
                          progress=progress, executor=executor)[0]


def _scored(batch: Batch, scored_from: Tensor | None, device: Any) -> Tensor:
    """``[batch, pos - 1]``: whether the prediction of token ``t + 1`` counts: both
    positions are real tokens and, with ``scored_from``, token ``t + 1`` is at or after
    the row's first scored token (its index in the row's own sequence)."""
    mask = batch.attention_mask.to(device)
    valid = (mask[:, 1:] * mask[:, :-1]).bool()
    if scored_from is not None:
        target = torch.arange(1, mask.shape[1], device=device)[None, :]
        own_index = target - batch.starts.to(device)[:, None]
        valid &= own_index >= scored_from.to(device)[:, None]
    return valid


def count_hits(logits: Float[Tensor, "batch pos d_vocab"], batch: Batch, k: int,
               scored_from: Int[Tensor, " batch"] | None = None,
               ) -> tuple[Int[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Per row of ``batch``: next tokens predicted at top-1 and within the top ``k``.

    Position ``t`` predicts token ``t + 1``; a prediction counts only where both positions
    are real tokens (padding on either side never scores) and, with ``scored_from``, the
    predicted token is not the row's context (:attr:`Documents.context`)."""
    targets = batch.tokens[:, 1:].to(logits.device)
    valid = _scored(batch, scored_from, logits.device)
    best = logits[:, :-1].topk(k, dim=-1).indices
    hit_k = (best == targets[..., None]).any(-1) & valid
    hit_1 = (best[..., 0] == targets) & valid
    return hit_1.sum(-1), hit_k.sum(-1)


def count_nll(logits: Float[Tensor, "batch pos d_vocab"], batch: Batch,
              scored_from: Int[Tensor, " batch"] | None = None) -> Float[Tensor, " batch"]:
    """Per row of ``batch``: summed −log p(true next token) over the positions
    :func:`count_hits` scores (float64, nats)."""
    targets = batch.tokens[:, 1:].to(logits.device)
    valid = _scored(batch, scored_from, logits.device)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets[..., None]).squeeze(-1).double()
    return -(picked * valid).sum(-1)


@register_task("accuracy")
def _accuracy_task(model: Any, payload: Mapping[str, Any]) -> list[DocumentAccuracy]:
    """:func:`accuracy_sweep` of token-id ``sequences`` (padded into batches of
    ``batch_size`` on the worker) under ``plans``."""
    documents = Documents.build(model, payload["sequences"],
                                batch_size=payload.get("batch_size", 8),
                                padding_side=payload.get("padding_side", "right"),
                                context=payload.get("context"))
    return accuracy_sweep(model, documents, payload["plans"], k=payload.get("k", 10),
                          progress=payload.get("progress", False))
