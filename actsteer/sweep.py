"""Forward passes for sweeps: many plans over the same batch.

:func:`sweep_logits` is the single entry point experiments use to score a batch under
several steering plans; it returns logits at the chosen positions only. This module is
where speed work (prefix reuse, batching coefficients) lives, behind a stable signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import Batch
from actsteer.plan import SteeringPlan
from actsteer.steering import steer


def sweep_logits(
    model: Any,
    batch: Batch,
    plans: Sequence[SteeringPlan],
    *,
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "plan batch d_vocab"]:
    """Logits at ``positions`` (default: each row's last real token) under each plan."""
    rows = torch.arange(batch.tokens.shape[0], device=batch.tokens.device)
    where = batch.last if positions is None else positions
    out = []
    with torch.no_grad():
        for plan in plans:
            with steer(model, plan) as handle:
                handle.new_prompt(batch.starts)
                logits = model(batch.tokens, attention_mask=batch.attention_mask)
            out.append(logits[rows, where].float())
    return torch.stack(out)
