"""Training objectives for one steering vector ``w`` added at one hook: BiPO and RePS.

Notation: a pair is a context ``x``, the behaviour's completion ``y_b`` and the contrast's
``y_c``; ``log p(y)`` is a completion's summed log-probability given ``x`` with the
intervention on, ``log p0(y)`` without it (read once: the model is frozen).

**BiPO** (Cao et al. 2024, arXiv 2406.00045): for a direction ``d`` in {+1, -1} drawn per
pair, steer ``h <- h + d a w`` and minimise ``-log sigmoid(d beta [(log p(y_b) - log
p0(y_b)) - (log p(y_c) - log p0(y_c))])``: adding ``w`` should favour the behaviour and
subtracting it the contrast, each measured against the unsteered model's own preference.

**RePS** (Wu et al. 2025, "Improved Representation Steering for Language Models", arXiv
2505.20809), with per-token log-likelihoods ``l(y) = log p(y) / |y|``:

* steer (``h <- h + a w``): ``D+ = s+ l(y_b) - l(y_c)``;
* null (``h <- h - (h.u) u``, ``u = w / |w|``): ``D- = s- l(y_c) - l(y_b)``;
* loss ``-log sigmoid(D+) - log sigmoid(D-)``, with ``s+ = max(log p0(y_c) - log p0(y_b),
  1)`` and ``s- = max(log p0(y_b) - log p0(y_c), 1)`` (no reference model in the margin).

``a`` is a steering factor (:attr:`actsteer.learned.LearnConfig.factors`). Gradients reach
``w`` through every term (RePS's null term through ``u``); the model's own weights are
never asked for a gradient (:func:`torch.autograd.grad` on ``w`` alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import encode, encode_continuations, pad
from actsteer.contrast import ContrastivePair
from actsteer.errors import InvalidValueError

__all__ = ["EncodedPair", "encode_pairs", "pair_losses", "reference_logprobs", "vector_hook"]


@dataclass(frozen=True)
class EncodedPair:
    """A pair as tokens: the context, and each completion as it continues the context."""

    prompt: tuple[int, ...]
    behaviour: tuple[int, ...]
    contrast: tuple[int, ...]


def encode_pairs(model: Any, pairs: Sequence[ContrastivePair]) -> list[EncodedPair]:
    """Tokens of each pair (completions tokenised as continuations, see
    :func:`actsteer.batching.encode_continuations`)."""
    answers = encode_continuations(model, [t for p in pairs for t in (p.positive, p.negative)])
    out = []
    for index, pair in enumerate(pairs):
        behaviour, contrast = answers[2 * index], answers[2 * index + 1]
        if not behaviour or not contrast:
            raise InvalidValueError(f"pair {index} ({pair.prompt!r}) has a completion with no "
                                    "tokens; give each side some text")
        out.append(EncodedPair(tuple(encode(model, pair.prompt)), tuple(behaviour),
                               tuple(contrast)))
    return out


def vector_hook(vector: Float[Tensor, " d_model"], factors: Float[Tensor, " batch"],
                nulled: Tensor, skip: int = 0) -> Any:
    """A hook adding ``factors[row] * vector`` to each row, or, where ``nulled[row]``,
    projecting ``vector``'s direction out of it, at every column from ``skip`` on (a new
    tensor; differentiable in ``vector``). Training uses ``skip=1``: the first token is an
    attention sink whose residual dwarfs the others' (norm 24,622 against about 250 at
    SmolLM2-135M's layer 20), so nulling a direction there would fill the gradient with
    that token's own geometry (AxBench likewise leaves BOS out)."""

    def hook(activation: Tensor, hook: Any) -> Tensor:
        w = vector.to(activation.dtype)
        steered = activation + factors.to(activation)[:, None, None] * w
        direction = w / w.norm()
        along = (activation * direction).sum(-1, keepdim=True)
        changed = torch.where(nulled.to(activation.device)[:, None, None],
                              activation - along * direction, steered)
        return torch.cat([activation[:, :skip], changed[:, skip:]], dim=1)

    return hook


def _completion_logprobs(model: Any, sequences: list[list[int]], starts: list[int],
                         hook: tuple[str, Any] | None
                         ) -> tuple[Float[Tensor, " row"], Int[Tensor, " row"]]:
    """Summed log-probability of each sequence's tokens from ``starts[row]`` on, and their
    count, with ``hook`` applied (right padding: a row's real tokens never see padding)."""
    batch = pad(model, sequences, padding_side="right")
    hooks = [] if hook is None else [hook]
    with model.hooks(fwd_hooks=hooks):
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
    # Only the positions that predict a completion token go through the softmax.
    rows = torch.tensor([r for r, (seq, start) in enumerate(zip(sequences, starts, strict=True))
                         for _ in range(start - 1, len(seq) - 1)], device=logits.device)
    cols = torch.tensor([c for seq, start in zip(sequences, starts, strict=True)
                         for c in range(start - 1, len(seq) - 1)], device=logits.device)
    picked = logits[rows, cols].float()
    targets = batch.tokens.to(logits.device)[rows, cols + 1]
    logp = picked.gather(-1, targets[:, None]).squeeze(-1) - picked.logsumexp(-1)
    summed = torch.zeros(len(sequences), device=logp.device, dtype=logp.dtype)
    counts = torch.tensor([len(s) - start for s, start in zip(sequences, starts, strict=True)])
    return summed.index_add(0, rows, logp), counts.to(logp.device)


def reference_logprobs(model: Any, pairs: Sequence[EncodedPair]
                       ) -> tuple[Float[Tensor, " pair"], Float[Tensor, " pair"]]:
    """Summed log-probabilities ``(log p0(y_b|x), log p0(y_c|x))`` per pair under the
    unsteered model (read once: the model is frozen)."""
    sequences, starts = _rows(pairs, copies=1)
    with torch.no_grad():
        summed, _ = _completion_logprobs(model, sequences, starts, None)
    return summed[0::2].cpu(), summed[1::2].cpu()


def _rows(pairs: Sequence[EncodedPair], copies: int) -> tuple[list[list[int]], list[int]]:
    """Rows ``[pair0 behaviour, pair0 contrast, pair1 behaviour, ...]`` repeated ``copies``
    times, with the column where each completion starts."""
    sequences, starts = [], []
    for _ in range(copies):
        for pair in pairs:
            for answer in (pair.behaviour, pair.contrast):
                sequences.append([*pair.prompt, *answer])
                starts.append(len(pair.prompt))
    return sequences, starts


def pair_losses(model: Any, hook_point: str, vector: Tensor, pairs: Sequence[EncodedPair],
                factors: Float[Tensor, "group pair"], reference: tuple[Tensor, Tensor], *,
                objective: str = "bipo", beta: float = 0.1) -> Float[Tensor, " pair"]:
    """Each pair's loss under ``objective`` (module docstring), averaged over groups, all
    rows in one forward pass with ``vector`` at ``hook_point``.

    ``factors`` has one row per steered copy of the pairs: the multiplier of ``vector``
    for each pair (training: one row of draws; held-out: one row per value). For BiPO its
    sign is the direction ``d``; for RePS it must be positive, and one more copy of the
    pairs runs with the direction nulled. ``reference`` is :func:`reference_logprobs`.
    """
    groups, n = int(factors.shape[0]), len(pairs)
    if factors.shape[1] != n:
        raise InvalidValueError(f"{factors.shape[1]} factors per group for {n} pairs")
    nulls = 1 if objective == "reps" else 0
    sequences, starts = _rows(pairs, copies=groups + nulls)
    row_factors = torch.cat([factors.repeat_interleave(2, dim=1).reshape(-1),
                             torch.zeros(2 * n * nulls)])
    nulled = torch.cat([torch.zeros(2 * n * groups, dtype=torch.bool),
                        torch.ones(2 * n * nulls, dtype=torch.bool)])
    summed, counts = _completion_logprobs(
        model, sequences, starts, (hook_point, vector_hook(vector, row_factors, nulled, 1)))
    summed = summed.reshape(groups + nulls, n, 2)
    ref_b, ref_c = (r.to(summed.device) for r in reference)
    if objective == "bipo":
        sign = torch.sign(factors).to(summed.device)
        margin = (summed[..., 0] - ref_b) - (summed[..., 1] - ref_c)
        return -F.logsigmoid(beta * sign * margin).mean(0)
    if objective != "reps":
        raise InvalidValueError(f"unknown objective {objective!r}; use bipo or reps")
    per_token = summed / counts.reshape(groups + nulls, n, 2)
    one = torch.ones_like(ref_b)
    up, down = torch.maximum(ref_c - ref_b, one), torch.maximum(ref_b - ref_c, one)
    steer = per_token[:groups]
    d_plus = up * steer[..., 0] - steer[..., 1]
    d_minus = down * per_token[groups, :, 1] - per_token[groups, :, 0]
    return -F.logsigmoid(d_plus).mean(0) - F.logsigmoid(d_minus)
