"""Forward passes for sweeps: many plans over the same batch.

:func:`sweep_logits` is the single entry point experiments use to score a batch under
several steering plans; it returns logits at the chosen positions only. This module is
where speed work lives, behind a stable signature:

* **Prefix reuse.** Activations below a plan's lowest steered layer do not depend on the
  plan. Plans are grouped by that layer (``n_layers`` for a plan with no injections);
  the residual stream is computed once per batch and advanced, unsteered, from one
  group's layer to the next, and each plan runs only the blocks from its own layer on.
  A sweep of 8 multipliers at layer 15 of 30 therefore costs 15 + 8 x 15 blocks instead
  of 8 x 30, and the unsteered baseline costs no blocks at all beyond the shared prefix.
* **Last-position unembedding.** The final norm and the unembedding (about a fifth of
  a small model's compute: ``d_vocab`` is large) run only on the rows' read positions.
* **Bounded memory.** Only one ``[batch, pos, d_model]`` residual stream is held besides
  the running forward, plus the ``[plan, batch, d_vocab]`` result (or whatever the
  optional ``reduce`` keeps per plan). Peak memory does not grow with the number of plans
  beyond that result. The prefix path never holds full-sequence logits; the full-forward
  path (the bridge, or ``reuse_prefix=False``) holds one plan's at a time.

Backends: prefix reuse needs ``start_at_layer``, which ``HookedTransformer`` supports and
``TransformerBridge`` (TransformerLens 3.9) does not: it hands the layer loop to Hugging
Face and raises ``NotImplementedError``. On the bridge (and any other model without it)
every plan therefore runs one full steered forward; results are the same, only slower.

Plan batching (several plans' deltas on stacked copies of one batch) was measured on a
2-core CPU and did not help: the forward cost grows linearly with rows there, so it is
not implemented (see ``benchmarks/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import Batch
from actsteer.plan import SteeringPlan
from actsteer.steering import check_plan, run, steer

Reducer = Callable[[Float[Tensor, "batch d_vocab"]], Tensor]
"""Maps one plan's ``[batch, d_vocab]`` float32 logits to what the sweep keeps (e.g. the
two answer tokens' logits), so that a large sweep need not hold full-vocabulary rows."""


def supports_prefix_reuse(model: Any) -> bool:
    """True when ``model`` can resume a forward pass mid-model (``HookedTransformer``)."""
    try:
        from transformer_lens import HookedTransformer
    except ImportError:  # pragma: no cover - TransformerLens 4.x without HookedTransformer
        return False
    return isinstance(model, HookedTransformer)


def start_layer(model: Any, plan: SteeringPlan) -> int:
    """The first block whose computation ``plan`` changes (``n_layers`` if none).

    Every site of block ``L`` (``resid_pre`` included) fires inside block ``L``, so a
    forward resumed at ``L`` sees all of the plan's injections.
    """
    layers = [injection.layer for injection in plan.injections]  # checked by check_plan
    return min(layers) if layers else int(model.cfg.n_layers)


def sweep_logits(
    model: Any,
    batch: Batch,
    plans: Sequence[SteeringPlan],
    *,
    positions: Int[Tensor, " batch"] | None = None,
    reuse_prefix: bool = True,
    reduce: Reducer | None = None,
) -> Float[Tensor, "plan batch d_vocab"]:
    """Logits at ``positions`` (default: each row's last real token) under each plan.

    Args:
        model: a ``HookedTransformer`` or ``TransformerBridge``.
        batch: padded tokens with their attention mask (either padding side).
        plans: steering plans, each applied alone (an empty plan is the unsteered model).
        positions: column to read in each row (default ``batch.last``).
        reuse_prefix: share the unsteered prefix between plans (``HookedTransformer``
            only; ignored elsewhere). ``False`` runs one full forward per plan.
        reduce: applied to each plan's ``[batch, d_vocab]`` float32 logits; its results
            are stacked instead of the logits (default: keep the logits).

    Returns:
        ``[plan, batch, d_vocab]`` float32 logits in the order of ``plans`` (or the
        stacked results of ``reduce``).
    """
    if not plans:
        raise ValueError("sweep_logits needs at least one plan")
    for plan in plans:  # fail before any forward pass, not half-way through a sweep
        check_plan(model, plan)
    rows = torch.arange(batch.tokens.shape[0], device=batch.tokens.device)
    where = (batch.last if positions is None else positions).to(batch.tokens.device)
    keep: Reducer = reduce if reduce is not None else (lambda logits: logits)
    with torch.no_grad():
        if reuse_prefix and supports_prefix_reuse(model):
            out = _prefix_sweep(model, batch, plans, rows, where, keep)
        else:
            out = _full_sweep(model, batch, plans, rows, where, keep)
    return torch.stack(out)


def _full_sweep(model: Any, batch: Batch, plans: Sequence[SteeringPlan], rows: Tensor,
                where: Tensor, keep: Reducer) -> list[Tensor]:
    """One full steered forward per plan (the reference path, and the bridge's)."""
    out = []
    for plan in plans:
        logits = run(model, batch, plan)
        out.append(keep(logits[rows.to(logits.device), where.to(logits.device)].float()))
        del logits  # free [batch, pos, d_vocab] before the next plan's forward
    return out


def _prefix_sweep(model: Any, batch: Batch, plans: Sequence[SteeringPlan], rows: Tensor,
                  where: Tensor, keep: Reducer) -> list[Tensor]:
    """Plans grouped by start layer; one shared residual stream advanced group by group."""
    n_layers = int(model.cfg.n_layers)
    mask = batch.attention_mask
    starts = [start_layer(model, plan) for plan in plans]
    out: list[Tensor] = [torch.empty(0)] * len(plans)  # every slot is filled below
    resid: Tensor | None = None
    at = 0
    for layer in sorted(set(starts)):
        # Advance the unsteered stream to this group's layer; only one copy is held.
        if resid is None:
            resid = model(batch.tokens, attention_mask=mask, stop_at_layer=layer)
        else:  # layers are sorted and distinct, so layer > at
            resid = model(resid, start_at_layer=at, stop_at_layer=layer, tokens=batch.tokens,
                          attention_mask=mask)
        at = layer
        for index, plan in enumerate(plans):
            if starts[index] != layer:
                continue
            if layer < n_layers:
                with steer(model, plan) as handle:
                    # The first steering hook now fires in block `layer`; it still sees the
                    # whole prompt, so the PositionTracker counts positions as in a full pass.
                    handle.new_prompt(batch.starts)
                    final = model(resid, start_at_layer=layer, stop_at_layer=n_layers,
                                  tokens=batch.tokens, attention_mask=mask)
            else:
                final = resid
            out[index] = keep(_unembed_rows(model, final, rows, where))
            del final  # hold one suffix stream at a time
    return out


def _unembed_rows(model: Any, resid: Float[Tensor, "batch pos d_model"], rows: Tensor,
                  where: Tensor) -> Float[Tensor, "batch d_vocab"]:
    """Final norm, unembedding and soft cap of only the read positions.

    Norms act per position (LayerNorm/RMSNorm, folded or not), so normalising the selected
    rows alone equals normalising the whole sequence and selecting afterwards.
    """
    picked = resid[rows.to(resid.device), where.to(resid.device)][:, None]  # [batch, 1, d]
    if model.cfg.normalization_type is not None:
        picked = model.ln_final(picked)
    logits = model.unembed(picked)[:, 0]
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0)
    if cap is not None and cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits.float()
