"""Apply a :class:`~actsteer.plan.SteeringPlan` to a model, and only while you ask.

Example::

    plan = actsteer.single(vector, layer=15, coefficient=4.0)
    with actsteer.steer(model, plan):
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
    texts = actsteer.generate(model, ["Tell me about money", "Hi"], plan, max_new_tokens=30)

Hooks go through TransformerLens's own ``model.hooks(...)`` context, which registers inside
``try`` and removes exactly what it added in ``finally``; the one extra hook, a forward
pre-hook on the model that reads each call's attention mask and KV cache, is removed in the
same way. Leaving the block (normally or by an exception, even one raised half-way through
registration) leaves the model as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from actsteer.batching import Batch, PaddingSide, encode, pad
from actsteer.errors import InvalidValueError
from actsteer.plan import Injection, Positions, SteeringPlan
from actsteer.sites import HookSiteError, check_layers, hook_name
from actsteer.vector import VectorMismatchError

HookFn = Callable[..., Tensor]


@dataclass(frozen=True)
class ForwardCall:
    """What the steering context reads from one call of the model, before it runs.

    ``cached`` is the number of columns already in the KV cache (0 for a pass that starts
    from scratch); ``attention_mask`` covers the cached columns and the new ones when the
    call makes that knowable; ``tokens`` are the new columns' token ids when given.
    """

    cached: int = 0
    attention_mask: Int[Tensor, "batch all_pos"] | None = None
    tokens: Int[Tensor, "batch pos"] | None = None


def _first_real(mask: Tensor) -> Tensor:
    """Column of each row's first attended token (argmax returns the first maximum)."""
    return mask.ne(0).to(torch.int8).argmax(dim=1)


class PositionTracker:
    """Where the current forward pass sits in the sequence, for position-limited steering.

    Every call of the model inside :func:`steer` is classified before it runs, from its
    keyword arguments:

    * a call with a non-empty KV cache (``past_kv_cache`` on HookedTransformer,
      ``past_key_values`` on TransformerBridge) continues the current prompt at column
      ``cached``;
    * a call without one whose ``tokens`` extend the previous call's tokens (uncached
      generation re-running the sequence) continues it from column 0;
    * any other call is a **new prompt**: its columns are the prompt, and each row's first
      real token is read from its ``attention_mask`` (column 0 without a mask). A call
      resumed with ``start_at_layer`` is read the same way from ``tokens=`` and
      ``attention_mask=``.

    Calls that bypass ``model.__call__`` (TransformerLens's own ``HookedTransformer.generate``
    calls ``forward`` directly) are not seen; for those the first pass is the prompt, a
    one-column pass is a KV-cached decode step and a longer pass re-runs the sequence, so
    call :meth:`new_prompt` before each unrelated generation in one ``steer`` block.
    :meth:`new_prompt` also forces the next call to be a new prompt, with given row starts.
    """

    def __init__(self) -> None:
        self.prompt_len: int | None = None
        self.offset = 0
        self.seen = 0
        self.row_starts: Tensor | None = None
        self._forced = False
        self._pending: ForwardCall | None = None
        self._tokens: Tensor | None = None

    def new_prompt(self, row_starts: Int[Tensor, " batch"] | None = None) -> None:
        """Make the next pass a new prompt whose rows start at ``row_starts`` (default:
        read from that pass's attention mask, else column 0)."""
        self.prompt_len = None
        self.offset = 0
        self.seen = 0
        self.row_starts = row_starts
        self._forced = True
        self._tokens = None

    def observe(self, call: ForwardCall) -> None:
        """Called by the model's forward pre-hook; consumed by the next :meth:`advance`."""
        self._pending = call

    def advance(self, seq_len: int) -> None:
        """Called once per forward pass, by the earliest steering hook."""
        call, self._pending = self._pending, None
        forced, self._forced = self._forced, False
        if call is None:
            self._advance_by_length(seq_len)
            return
        total = call.cached + seq_len
        mask = call.attention_mask
        if mask is not None and mask.shape[-1] != total:
            mask = None
        if call.cached > 0:
            self.offset, self.seen = call.cached, total
            if self.prompt_len is None:
                self.prompt_len = call.cached
            if self.row_starts is None and mask is not None:
                self.row_starts = _first_real(mask)
            return
        if not forced and self._continues(call.tokens, seq_len):
            self.offset, self.seen, self._tokens = 0, seq_len, call.tokens
            return
        if not (forced and self.row_starts is not None):
            self.row_starts = _first_real(mask) if mask is not None else None
        self.prompt_len, self.offset, self.seen = seq_len, 0, seq_len
        self._tokens = call.tokens

    def _continues(self, tokens: Tensor | None, seq_len: int) -> bool:
        previous = self._tokens
        if previous is None or tokens is None or self.prompt_len is None:
            return False
        width = previous.shape[-1]
        return (tokens.shape[0] == previous.shape[0] and seq_len > width
                and torch.equal(tokens[:, :width].to(previous.device), previous))

    def _advance_by_length(self, seq_len: int) -> None:
        if self.prompt_len is None:
            self.prompt_len, self.offset, self.seen = seq_len, 0, seq_len
        elif seq_len == 1:  # KV-cached decode step
            self.offset, self.seen = self.seen, self.seen + 1
        else:  # uncached generation re-runs the full sequence
            self.offset, self.seen = 0, seq_len

    def mask(self, positions: Positions, batch: int, seq_len: int,
             device: torch.device) -> Tensor:
        """Boolean ``[batch or 1, seq_len, 1]``: True where the vector is added."""
        columns = self.offset + torch.arange(seq_len, device=device)
        prompt_len = self.prompt_len if self.prompt_len is not None else seq_len
        if positions.mode == "prompt":
            chosen = (columns < prompt_len)[None, :]
        elif positions.mode == "generated":
            chosen = (columns >= prompt_len)[None, :]
        else:  # "from": index counted from each row's first real token
            starts = (self.row_starts.to(device) if self.row_starts is not None
                      and len(self.row_starts) == batch else torch.zeros(1, device=device,
                                                                         dtype=torch.long))
            chosen = (columns[None, :] - starts[:, None]) >= positions.start
        return chosen[..., None]


def _cache_length(cache: Any) -> int:
    """Columns held by a TransformerLens or Hugging Face KV cache (0 if none or unknown)."""
    if cache is None:
        return 0
    entries = getattr(cache, "entries", None)
    if entries:  # TransformerLensKeyValueCache
        return int(entries[0].past_keys.shape[1])
    length = getattr(cache, "get_seq_length", None)
    return int(length()) if callable(length) else 0


def read_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ForwardCall:
    """A :class:`ForwardCall` from the arguments of ``model(...)`` on either backend."""
    first = args[0] if args else kwargs.get("input")
    tokens = kwargs.get("tokens")
    if isinstance(first, Tensor) and not first.is_floating_point():
        tokens = first if first.dim() == 2 else first[None]
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        tokens = None
    cache = kwargs.get("past_kv_cache", kwargs.get("past_key_values"))
    cached = _cache_length(cache)
    mask = kwargs.get("attention_mask")
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        mask = None
    previous = getattr(cache, "previous_attention_mask", None)
    # HookedTransformer takes the new columns' mask and appends it to the cache's.
    if (mask is not None and cached and isinstance(previous, Tensor)
            and previous.shape[-1] == cached and previous.shape[0] == mask.shape[0]):
        mask = torch.cat([previous.to(mask.device), mask], dim=-1)
    return ForwardCall(cached, mask, tokens)


def _make_hook(delta: Tensor, positions: Positions, tracker: PositionTracker,
               leads: bool) -> HookFn:
    """A hook adding ``delta`` at ``positions``. Returns a new tensor (no in-place edits)."""

    def hook(activation: Tensor, hook: Any) -> Tensor:
        if leads:
            tracker.advance(activation.shape[1])
        if positions.mode == "all":
            return activation + delta
        where = tracker.mask(positions, activation.shape[0], activation.shape[1],
                             activation.device)
        return torch.where(where, activation + delta, activation)

    return hook


_SITE_ORDER = {"resid_pre": 0, "attn_out": 1, "resid_mid": 2, "mlp_out": 3, "resid_post": 4}


def injection_hook(model: Any, injection: Injection) -> str:
    """The hook point where ``injection`` is added on ``model``: its own hook, except that
    ``resid_mid`` goes to ``attn_out`` where ``hook_resid_mid`` only feeds the MLP.

    On TransformerBridge (TL 3.9) ``blocks.L.hook_resid_mid`` *is* ``blocks.L.ln2.hook_in``:
    a vector added there reaches the MLP's norm but not the residual stream. Since
    ``resid_mid(L) = resid_pre(L) + attn_out(L)`` and nothing else reads ``attn_out(L)``,
    adding to ``attn_out(L)`` is exactly adding to ``resid_mid(L)``. Reading at
    ``resid_mid`` is unaffected. A block with a norm after attention (``ln1_post``) breaks
    that identity, so there the plan is refused.
    """
    name = injection.hook
    if injection.site != "resid_mid":
        return name
    hooks = model.hook_dict
    mlp_input = hooks.get(f"blocks.{injection.layer}.ln2.hook_in")
    if mlp_input is None or hooks.get(name) is not mlp_input:
        return name
    target = hook_name(injection.layer, "attn_out")
    post_norm = f"blocks.{injection.layer}.ln1_post."
    if target not in hooks or any(key.startswith(post_norm) for key in hooks):
        raise HookSiteError(
            f"{name} on this model is the MLP norm's input, so adding there would miss the "
            f"residual stream, and {target} is not equivalent here; add at resid_pre of "
            f"layer {injection.layer + 1} or resid_post of layer {injection.layer} instead")
    return target


def _firing_order(model: Any, injection: Injection) -> tuple[int, int]:
    site = injection_hook(model, injection).rsplit("hook_", 1)[1]
    return injection.layer, _SITE_ORDER[site]


def check_plan(model: Any, plan: SteeringPlan) -> None:
    """Raise before any forward pass if ``plan`` cannot be applied to ``model``: a missing
    hook, a vector of the wrong width, or a value that is not finite, or would not be once
    multiplied by its coefficient and cast to the model's dtype."""
    d_model = int(model.cfg.d_model)
    dtype = model.cfg.dtype
    for injection in plan.injections:
        check_layers(model, [injection.layer], injection.site)
        injection_hook(model, injection)
        name = injection.label or "vector"
        if injection.vector.shape[0] != d_model:
            raise VectorMismatchError(
                f"{name} has d_model {injection.vector.shape[0]} but the "
                f"model has {d_model}; extract the vector from this model")
        if not torch.isfinite(injection.vector).all() or not torch.isfinite(
                torch.tensor(injection.coefficient)):
            raise InvalidValueError(f"{name} at {injection.hook} is not finite")
        delta = injection.delta
        if not (torch.isfinite(delta).all() and torch.isfinite(delta.to(dtype)).all()):
            largest = float(injection.vector.abs().max())
            limit = torch.finfo(dtype).max if dtype.is_floating_point else float("inf")
            raise InvalidValueError(
                f"{name} at {injection.hook}: coefficient {injection.coefficient:g} x vector "
                f"(largest |value| {largest:.3g}) overflows {str(delta.dtype).split('.')[1]}"
                f"/{str(dtype).split('.')[1]} (largest finite {limit:.3g}); use a smaller "
                "coefficient, a normalized vector (vector.normalized()), or a float32 model")


def _hook_device(model: Any, layer: int) -> torch.device:
    """The device of block ``layer`` (layers may be split over GPUs with n_devices > 1)."""
    block = model.blocks[layer]
    try:
        return next(block.parameters()).device
    except StopIteration:
        return torch.device(model.cfg.device or "cpu")


@dataclass
class SteeringHandle:
    """What :func:`steer` yields: the model, the plan, and the position tracker."""

    model: Any
    plan: SteeringPlan
    tracker: PositionTracker

    def new_prompt(self, row_starts: Int[Tensor, " batch"] | None = None) -> None:
        """Force the next pass to be a new prompt (see :class:`PositionTracker`). Calls
        through ``model(...)`` are classified without it; it is needed only around
        TransformerLens's own ``HookedTransformer.generate``."""
        self.tracker.new_prompt(row_starts)


@contextlib.contextmanager
def steer(model: Any, plan: SteeringPlan) -> Iterator[SteeringHandle]:
    """Apply ``plan`` to ``model`` inside the ``with`` block; restore it on exit.

    Checks every hook name, width and value first, so a plan that does not fit raises
    before the model is touched. Nests with other hooks and with ``run_with_cache``.
    Position-limited injections (:class:`~actsteer.plan.Positions`) need each row's first
    real token: pass ``attention_mask=`` with left-padded batches (see
    :class:`PositionTracker` for how calls are told apart).

    Example::

        with steer(model, single(vector, 12, 4.0, positions=Positions("from", 3))):
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
    """
    check_plan(model, plan)
    tracker = PositionTracker()
    dtype = model.cfg.dtype
    ordered = sorted(plan.injections, key=lambda injection: _firing_order(model, injection))
    hooks = [
        (injection_hook(model, injection),
         _make_hook(injection.delta.to(device=_hook_device(model, injection.layer), dtype=dtype),
                    injection.positions, tracker, leads=index == 0))
        for index, injection in enumerate(ordered)
    ]

    def observe(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tracker.observe(read_call(args, kwargs))

    observer = None
    try:
        if hooks:
            observer = model.register_forward_pre_hook(observe, with_kwargs=True)
        with model.hooks(fwd_hooks=hooks):
            yield SteeringHandle(model, plan, tracker)
    finally:
        if observer is not None:
            observer.remove()


def run(
    model: Any,
    batch: Batch | Sequence[str] | str,
    plan: SteeringPlan | None = None,
    *,
    padding_side: PaddingSide = "left",
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of a (steered) forward pass with an explicit attention mask."""
    if not isinstance(batch, Batch):
        texts = [batch] if isinstance(batch, str) else list(batch)
        batch = pad(model, [encode(model, t) for t in texts], padding_side=padding_side)
    with torch.no_grad(), contextlib.ExitStack() as stack:
        if plan is not None and plan.injections:
            handle = stack.enter_context(steer(model, plan))
            handle.new_prompt(batch.starts)
        return model(batch.tokens, attention_mask=batch.attention_mask)

