"""The steered-forward engine: one batch, many plans, logits at read positions or everywhere.

:func:`sweep_logits` is the one place where actsteer runs steered forward passes for
scoring: A/B scoring, next-token accuracy, steerability profiles and both experiments go
through it. Speed work lives here, behind a stable signature:

* **Prefix reuse.** Activations below a plan's lowest steered block do not depend on the
  plan. The start block is derived from the plan itself (:func:`start_layer`; callers
  cannot pass one, so a wrong hint cannot silently return unsteered results). Plans are
  grouped by start block; the unsteered residual stream is computed once per batch and
  advanced from one group's block to the next, and each plan runs only the blocks from
  its own on. A sweep of 8 multipliers at block 15 of 30 costs 15 + 8 x 15 blocks
  instead of 8 x 30; the unsteered plan costs nothing beyond the shared prefix.
* **Prefix cache across calls.** A :class:`PrefixCache` keeps those unsteered streams
  (within a memory budget), so a sweep that asks for one plan at a time (e.g. an adaptive
  coefficient schedule) still computes each batch's prefix once.
* **Read-position unembedding.** With ``positions`` a column per row (default: each
  row's last real token), the final norm and the unembedding (a fifth of a small model's
  compute: ``d_vocab`` is large) run only on those rows.
* **Bounded memory.** Besides the running forward, one ``[batch, pos, d_model]`` stream
  is held (plus what the cache keeps), and per plan only the result (or what ``reduce``
  keeps of it). Full-sequence logits exist for one plan at a time.

Backends: prefix reuse needs ``start_at_layer``, which ``HookedTransformer`` supports and
``TransformerBridge`` (TransformerLens 3.9) does not; there every plan runs one full
steered forward. Results are the same, only slower.

Plan batching (several plans' deltas on stacked copies of one batch) was measured on a
2-core CPU and did not help: the forward cost grows linearly with rows there, so it is
not implemented (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import Batch
from actsteer.errors import InvalidTypeError, InvalidValueError
from actsteer.models.info import backend_of
from actsteer.plan import SteeringPlan
from actsteer.steering import check_plan, steer

Reducer = Callable[[Tensor], Tensor]
"""Maps one plan's float32 logits (``[batch, d_vocab]`` at read positions, or
``[batch, pos, d_vocab]`` with ``positions="all"``) to what the sweep keeps, e.g. the two
answer tokens' logits or per-row hit counts, so a large sweep need not hold vocab rows."""

ReadAt = Literal["last", "all"] | Int[Tensor, " batch"] | None


def supports_prefix_reuse(model: Any) -> bool:
    """True when ``model`` can resume a forward pass mid-model (``HookedTransformer``); a
    model of neither backend (a stand-in with ``cfg`` and ``hooks``) runs full forwards."""
    try:
        return backend_of(model) == "hooked"
    except InvalidTypeError:
        return False


def start_layer(model: Any, plan: SteeringPlan) -> int:
    """The first block whose computation ``plan`` changes (``n_layers`` if none).

    Every site of block ``L`` (``resid_pre`` included) fires inside block ``L``, so a
    forward resumed at ``L`` sees all of the plan's injections.
    """
    layers = [injection.layer for injection in plan.injections]
    return min(layers) if layers else int(model.cfg.n_layers)


def weights_version(model: Any) -> str:
    """A digest of every parameter's and buffer's version counter and storage: it changes
    when a tensor of ``model`` is edited in place (``add_``, ``copy_``, ``load_state_dict``)
    or replaced (``.to()``, a new ``Parameter``). Edits through ``tensor.data`` bypass the
    version counter, as they bypass autograd; after those, ``PrefixCache.clear()``."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        digest.update(f"{tensor._version},{tensor.data_ptr()};".encode())
    return digest.hexdigest()


def _content(tensor: Tensor) -> str:
    """A digest of a tensor's dtype, shape and values."""
    data = tensor.detach().contiguous().cpu()
    digest = hashlib.blake2b(f"{data.dtype}{tuple(data.shape)}".encode(), digest_size=16)
    digest.update(data.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class PrefixCache:
    """Unsteered residual streams entering a block, kept across :func:`sweep_logits` calls.

    Keyed by what determines a stream: the model (the object itself, and
    :func:`weights_version`, so an in-place edit of a weight misses), the content of the
    batch's token ids and attention mask (a new :class:`Batch` with the same tensors
    hits), and the block index. Holds at most ``max_bytes``, dropping the oldest streams
    first to make room (a stream larger than the budget is not kept).

    Example::

        cache = PrefixCache(max_bytes=512 * 2**20)
        for coefficient in schedule:                    # one plan per call
            sweep_logits(model, batch, [single(v, 14, coefficient)], cache=cache)
    """

    def __init__(self, max_bytes: int = 2**30) -> None:
        if max_bytes < 0:
            raise InvalidValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        # (model id, weights version, tokens, mask), layer -> (the model, weakly; stream)
        self._streams: dict[tuple[tuple[int, str, str, str], int],
                            tuple[weakref.ref[Any], Tensor]] = {}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, t in self._streams.values())

    @staticmethod
    def _key(model: Any, batch: Batch) -> tuple[int, str, str, str]:
        return (id(model), weights_version(model), _content(batch.tokens),
                _content(batch.attention_mask))

    def _kept(self, model: Any, batch: Batch) -> dict[int, Tensor]:
        """This model's streams of this batch's content, by layer (an entry whose model
        has gone, and whose id another object took, is not this model's)."""
        key = self._key(model, batch)
        return {layer: stream for (owner, layer), (ref, stream) in self._streams.items()
                if owner == key and ref() is model}

    def get(self, model: Any, batch: Batch, layer: int) -> Tensor | None:
        """The kept stream of ``batch`` through ``model`` entering block ``layer``."""
        return self._kept(model, batch).get(layer)

    def nearest(self, model: Any, batch: Batch, layer: int) -> tuple[int, Tensor] | None:
        """The deepest kept stream of ``batch`` entering a block at or below ``layer``."""
        kept = [(at, stream) for at, stream in self._kept(model, batch).items() if at <= layer]
        return max(kept, key=lambda pair: pair[0]) if kept else None

    def put(self, model: Any, batch: Batch, layer: int, stream: Tensor) -> None:
        size = stream.numel() * stream.element_size()
        if size > self.max_bytes:
            return
        while self._streams and self.nbytes + size > self.max_bytes:
            del self._streams[next(iter(self._streams))]  # oldest first
        self._streams[(self._key(model, batch), layer)] = (weakref.ref(model), stream)

    def clear(self) -> None:
        self._streams.clear()


def sweep_logits(
    model: Any,
    batch: Batch,
    plans: Sequence[SteeringPlan],
    *,
    positions: ReadAt = None,
    reuse_prefix: bool = True,
    reduce: Reducer | None = None,
    cache: PrefixCache | None = None,
) -> Tensor:
    """Logits of ``batch`` under each plan (each applied alone), stacked over plans.

    Args:
        model: a ``HookedTransformer`` or ``TransformerBridge``.
        batch: padded tokens with their attention mask (either padding side).
        plans: steering plans; an empty plan is the unsteered model.
        positions: ``None``/``"last"`` (each row's last real token), a ``[batch]`` tensor
            of columns to read, or ``"all"`` (every position: ``[batch, pos, d_vocab]``
            per plan, e.g. for next-token accuracy).
        reuse_prefix: share the unsteered prefix between plans (``HookedTransformer``
            only; elsewhere ignored). ``False`` runs one full forward per plan.
        reduce: applied to each plan's float32 logits; its results are stacked instead.
        cache: keep unsteered prefixes across calls (see :class:`PrefixCache`).

    Returns:
        ``[plan, batch, d_vocab]`` (read positions) or ``[plan, batch, pos, d_vocab]``
        (``"all"``) float32 logits in the order of ``plans``, or the stacked results of
        ``reduce``.

    Example:
        >>> plans = [empty_plan(), single(vector, 14, 4.0), single(vector, 14, -4.0)]
        >>> sweep_logits(model, pad(model, prompts), plans).shape   # [3, batch, d_vocab]
    """
    if not plans:
        raise InvalidValueError("sweep_logits needs at least one plan (empty_plan() is unsteered)")
    for plan in plans:  # fail before any forward pass, not half-way through a sweep
        check_plan(model, plan)
    if isinstance(positions, str) and positions not in ("last", "all"):
        raise InvalidValueError(f"positions={positions!r} is invalid; use 'last', 'all' or a "
                                "[batch] tensor of columns")
    pick = _reader(batch, positions)
    keep: Reducer = reduce if reduce is not None else (lambda logits: logits)
    with torch.no_grad():
        if reuse_prefix and supports_prefix_reuse(model):
            out = _prefix_sweep(model, batch, plans, pick, keep, cache)
        else:
            out = [keep(pick.logits(_full_forward(model, batch, plan))) for plan in plans]
    return torch.stack(out)


class _Reader:
    """Which positions a sweep unembeds: every position, or one column per row."""

    def __init__(self, rows: Tensor | None, columns: Tensor | None) -> None:
        self.rows, self.columns = rows, columns

    def logits(self, logits: Tensor) -> Tensor:
        """Select from full ``[batch, pos, d_vocab]`` logits (the full-forward path)."""
        if self.rows is None or self.columns is None:
            return logits.float()
        return logits[self.rows.to(logits.device), self.columns.to(logits.device)].float()

    def unembed(self, model: Any, resid: Float[Tensor, "batch pos d_model"]) -> Tensor:
        """Final norm, unembedding and soft cap of only the read positions.

        Norms act per position (LayerNorm/RMSNorm, folded or not), so normalising the
        selected rows alone equals normalising the whole sequence and selecting after.
        """
        if self.rows is None or self.columns is None:
            picked = resid
        else:
            picked = resid[self.rows.to(resid.device), self.columns.to(resid.device)][:, None]
        if model.cfg.normalization_type is not None:
            picked = model.ln_final(picked)
        logits = model.unembed(picked)
        cap = getattr(model.cfg, "output_logits_soft_cap", -1.0)
        if cap is not None and cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return (logits if self.rows is None else logits[:, 0]).float()


def _reader(batch: Batch, positions: ReadAt) -> _Reader:
    if isinstance(positions, str) and positions == "all":
        return _Reader(None, None)
    rows = torch.arange(batch.tokens.shape[0], device=batch.tokens.device)
    if positions is None or isinstance(positions, str):
        return _Reader(rows, batch.last)
    if positions.shape != rows.shape:
        raise InvalidValueError(
            f"positions has shape {tuple(positions.shape)}; give one column per "
            f"row of the batch ({rows.numel()})")
    return _Reader(rows, positions.to(batch.tokens.device))


def _full_forward(model: Any, batch: Batch, plan: SteeringPlan) -> Tensor:
    """One full steered forward (the reference path, and the bridge's)."""
    with contextlib.ExitStack() as stack:
        if plan.injections:
            stack.enter_context(steer(model, plan)).new_prompt(batch.starts)
        return model(batch.tokens, attention_mask=batch.attention_mask)  # type: ignore[no-any-return]


def _prefix_sweep(model: Any, batch: Batch, plans: Sequence[SteeringPlan], pick: _Reader,
                  keep: Reducer, cache: PrefixCache | None) -> list[Tensor]:
    """Plans grouped by start block; one shared residual stream advanced group by group."""
    n_layers = int(model.cfg.n_layers)
    mask = batch.attention_mask
    starts = [start_layer(model, plan) for plan in plans]
    out: list[Tensor] = [torch.empty(0)] * len(plans)  # every slot is filled below
    resid: Tensor | None = None
    at = 0
    for layer in sorted(set(starts)):
        resid, at = _stream_at(model, batch, resid, at, layer, cache)
        for index, plan in enumerate(plans):
            if starts[index] != layer:
                continue
            if layer < n_layers:
                with steer(model, plan) as handle:
                    # The first steering hook fires in block `layer`; it still sees the
                    # whole prompt, so positions are counted as in a full pass.
                    handle.new_prompt(batch.starts)
                    final = model(resid, start_at_layer=layer, stop_at_layer=n_layers,
                                  tokens=batch.tokens, attention_mask=mask)
            else:
                final = resid
            out[index] = keep(pick.unembed(model, final))
            del final  # hold one suffix stream at a time
    return out


def _stream_at(model: Any, batch: Batch, resid: Tensor | None, at: int, layer: int,
               cache: PrefixCache | None) -> tuple[Tensor, int]:
    """The unsteered stream entering block ``layer``: from the cache, else advanced from
    ``resid`` (entering block ``at``) or from the deepest cached stream, else from the
    tokens; kept in the cache when there is one."""
    if cache is not None:
        exact = cache.get(model, batch, layer)
        if exact is not None:
            return exact, layer
        if resid is None and (found := cache.nearest(model, batch, layer)) is not None:
            at, resid = found
    mask = batch.attention_mask
    if resid is None:
        resid = model(batch.tokens, attention_mask=mask, stop_at_layer=layer)
    elif at < layer:
        resid = model(resid, start_at_layer=at, stop_at_layer=layer, tokens=batch.tokens,
                      attention_mask=mask)
    if cache is not None:
        cache.put(model, batch, layer, resid)
    return resid, layer
