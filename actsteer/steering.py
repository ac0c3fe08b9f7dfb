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

from actsteer.batching import Batch, PaddingSide, encode, pad, pad_id
from actsteer.errors import InvalidValueError
from actsteer.operators import remove_and_add
from actsteer.plan import Injection, Positions, SteeringPlan
from actsteer.positions import PositionTracker, read_call
from actsteer.sites import HookSiteError, check_layers, hook_name
from actsteer.vector import VectorMismatchError

HookFn = Callable[..., Tensor]


def _make_hook(delta: Tensor, positions: Positions, tracker: PositionTracker,
               leads: bool, label: str = "vector", removed: Tensor | None = None) -> HookFn:
    """A hook adding ``delta`` at ``positions``, after taking out the component along the
    unit vector ``removed`` when given (:mod:`actsteer.operators`). Returns a new tensor
    (no in-place edits)."""

    def hook(activation: Tensor, hook: Any) -> Tensor:
        if leads:
            tracker.advance(activation.shape[0], activation.shape[1])
        steered = (activation + delta if removed is None
                   else remove_and_add(activation, removed, delta))
        if positions.mode == "all":
            return steered
        where = tracker.mask(positions, activation.shape[0], activation.shape[1],
                             activation.device, label)
        return torch.where(where, steered, activation)

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
        widths = {int(t.shape[0]) for t in (injection.vector, injection.removed)
                  if t is not None}
        if widths != {d_model}:
            raise VectorMismatchError(
                f"{name} has d_model {max(widths - {d_model})} but the "
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


def new_tracker(model: Any) -> PositionTracker:
    """A :class:`PositionTracker` for one steering context on ``model``."""
    return PositionTracker(pad_id(model) if getattr(model, "tokenizer", None) else None)


def planned_hooks(model: Any, plan: SteeringPlan, tracker: PositionTracker
                  ) -> list[tuple[str, HookFn]]:
    """``(hook point, hook function)`` for each injection of a checked ``plan``, in the
    order they fire in a forward pass; the first one advances ``tracker``."""
    ordered = sorted(plan.injections, key=lambda injection: _firing_order(model, injection))
    hooks = []
    for index, injection in enumerate(ordered):
        where = {"device": _hook_device(model, injection.layer), "dtype": model.cfg.dtype}
        removed = injection.removed
        name = injection_hook(model, injection)
        hooks.append((name, _make_hook(
            injection.delta.to(**where), injection.positions, tracker, leads=index == 0,
            label=f"{injection.label or 'vector'} at {name}",
            removed=None if removed is None else removed.to(**where))))
    return hooks


@dataclass
class SteeringHandle:
    """What :func:`steer` yields: the model, the plan, and the position tracker."""

    model: Any
    plan: SteeringPlan
    tracker: PositionTracker

    def new_prompt(self, row_starts: Int[Tensor, " batch"] | None = None) -> None:
        """Force the next pass to be a new prompt, optionally with each row's first real
        column, and the passes that continue it its generation (see
        :class:`PositionTracker`). Needed before a call that extends the previous call's
        tokens, and before each generation by TransformerLens's own ``generate``."""
        self.tracker.new_prompt(row_starts)


@contextlib.contextmanager
def steer(model: Any, plan: SteeringPlan) -> Iterator[SteeringHandle]:
    """Apply ``plan`` to ``model`` inside the ``with`` block; restore it on exit.

    Checks every hook name, width and value first, so a plan that does not fit raises
    before the model is touched. Nests with other hooks and with ``run_with_cache``.
    Position-limited injections (:class:`~actsteer.plan.Positions`) need each row's first
    real token and the prompt's columns: pass ``attention_mask=`` with left-padded
    batches, and call ``handle.new_prompt()`` where a call's tokens extend the previous
    call's; where they cannot be known, the pass raises
    :class:`~actsteer.positions.PositionsUnknownError` (see
    :class:`~actsteer.positions.PositionTracker` for how calls are told apart).

    Example::

        with steer(model, single(vector, 12, 4.0, positions=Positions("from", 3))):
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
    """
    check_plan(model, plan)
    tracker = new_tracker(model)
    hooks = planned_hooks(model, plan, tracker)

    def observe(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tracker.observe(read_call(args, kwargs, module))

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

