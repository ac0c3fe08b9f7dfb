"""Next-token top-k accuracy of a (steered) model on documents.

Token ``t+1`` is predicted from the logits at position ``t``, so a document of ``n``
tokens contributes ``n - 1`` predictions; padding never counts. Results keep per-document
counts so that intervals can be bootstrapped over documents, token-weighted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from actsteer.batching import Batch, PaddingSide, length_batches, pad
from actsteer.plan import SteeringPlan
from actsteer.stats import Estimate, bootstrap
from actsteer.steering import steer


@dataclass(frozen=True)
class DocumentAccuracy:
    """Per-document counts: correct top-1 and top-k predictions, and predictions made."""

    top1: Int[Tensor, " doc"]
    topk: Int[Tensor, " doc"]
    tokens: Int[Tensor, " doc"]
    k: int

    @property
    def top1_rate(self) -> float:
        return float(self.top1.sum()) / max(1, int(self.tokens.sum()))

    @property
    def topk_rate(self) -> float:
        return float(self.topk.sum()) / max(1, int(self.tokens.sum()))

    def estimate(self, which: str = "top1", *, n_resamples: int = 1000,
                 seed: int = 0) -> Estimate:
        """Token-weighted accuracy with a bootstrap interval over documents."""
        counts = self.top1 if which == "top1" else self.topk
        rates = counts.double() / self.tokens.clamp_min(1).double()
        return bootstrap(rates, weights=self.tokens.double(), n_resamples=n_resamples,
                         seed=seed)


def next_token_accuracy(
    model: Any,
    sequences: Sequence[Sequence[int]],
    plan: SteeringPlan | None = None,
    *,
    k: int = 10,
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
    progress: bool = False,
) -> DocumentAccuracy:
    """Top-1 and top-``k`` next-token accuracy of ``model`` under ``plan`` per document."""
    short = [(i, len(seq)) for i, seq in enumerate(sequences) if len(seq) < 2]
    if short:
        index, length = short[0]
        raise ValueError(f"document {index} has {length} token(s) ({len(short)} such "
                         "documents); each needs at least 2 to score a prediction: drop them "
                         "or keep longer ones")
    n = len(sequences)
    top1 = torch.zeros(n, dtype=torch.long)
    topk = torch.zeros(n, dtype=torch.long)
    counts = torch.tensor([len(s) - 1 for s in sequences], dtype=torch.long)
    groups = list(length_batches([len(s) for s in sequences], batch_size))
    for group in tqdm(groups, desc="next-token accuracy", disable=not progress, leave=False):
        batch = pad(model, [sequences[i] for i in group], padding_side=padding_side)
        with torch.no_grad(), steer(model, plan or SteeringPlan()) as handle:
            handle.new_prompt(batch.starts)
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
        rows = torch.as_tensor(group)
        top1[rows], topk[rows] = count_hits(logits, batch, k)
    return DocumentAccuracy(top1, topk, counts, k)


def count_hits(logits: Float[Tensor, "batch pos d_vocab"], batch: Batch, k: int
               ) -> tuple[Int[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Per row of ``batch``: next tokens predicted at top-1 and within the top ``k``.

    Position ``t`` predicts token ``t + 1``; a prediction counts only where both positions
    are real tokens (padding on either side never scores). Counts are on the CPU."""
    targets = batch.tokens[:, 1:]
    valid = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).bool()
    best = logits[:, :-1].topk(k, dim=-1).indices
    hit_k = (best == targets[..., None]).any(-1) & valid
    hit_1 = (best[..., 0] == targets) & valid
    return hit_1.sum(-1).cpu(), hit_k.sum(-1).cpu()
