"""KV-cached steered decoding on a TransformerBridge at the speed of ``transformers``.

:func:`actsteer.generate` on a bridge runs here when it can (:func:`plain_decoder`): the
forward passes go to the bridge's plain Hugging Face view
(:func:`actsteer.models.plain.plain_view`: the same weights, none of the bridge's
per-component Python), and each injection of the plan is added where the bridge's hook
point would add it. A hook point named ``hook_in`` of a bridge component sees that
component's first input, and ``hook_out`` its output; so ``blocks.L.hook_resid_pre`` is the
input of decoder layer ``L``, ``hook_resid_post`` its output, ``hook_attn_out`` and
``hook_mlp_out`` the outputs of its attention and MLP. The additions are the hook
functions :func:`actsteer.steer` installs, with the same position tracking, so
``prompt``/``generated``/``from`` plans behave the same.

The bridge's own loop (:class:`actsteer.generation` ``_BridgeDecoder``) is used instead
when the view would not compute the bridge's function (weights processed by TransformerLens
rather than in place), when any hook point of the bridge has a hook of the user's (it
would not fire here), when an injection sits inside a component's arithmetic, and for
``use_cache=False``, the reference the cached loop is checked against. The two agree to
float rounding (PyTorch's fused attention here, the bridge's float32 softmax there).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from actsteer.models.plain import PlainView, plain_view
from actsteer.plan import SteeringPlan
from actsteer.positions import ForwardCall
from actsteer.steering import (
    HookFn,
    SteeringHandle,
    check_plan,
    injection_hook,
    new_tracker,
    planned_hooks,
)

__all__ = ["PlainDecoder", "plain_decoder"]


def _user_hooks(model: Any) -> bool:
    return any(point._forward_hooks or point._forward_pre_hooks
               for point in model.hook_dict.values())


def _input_adder(fn: HookFn) -> Any:
    def add(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (fn(args[0], None), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"], None)}

    return add


def _output_adder(fn: HookFn) -> Any:
    def add(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0], None), *output[1:])
        return fn(output, None)

    return add


class PlainDecoder:
    """Prompt pass and decode steps on a bridge's plain view (see module doc)."""

    def __init__(self, model: Any, view: PlainView,
                 targets: Mapping[str, tuple[nn.Module, str]] | None = None) -> None:
        self.model, self.view = model, view
        self.targets = dict(targets or {})
        """Hook point name -> where it sits in the view (found once by :func:`plain_decoder`)."""
        self.cache: Any = None
        self.handle: SteeringHandle | None = None
        self.mask = torch.empty(0)
        # transformers 5.24 renamed the KV cache argument (and output) to ``cache``.
        forward = inspect.signature(type(view.module).forward).parameters
        self.cache_name = "cache" if "cache" in forward else "past_key_values"

    @contextlib.contextmanager
    def steering(self, plan: SteeringPlan) -> Iterator[SteeringHandle]:
        """Add ``plan`` to the view's passes inside the block (hooks removed on exit)."""
        check_plan(self.model, plan)
        tracker = new_tracker(self.model)
        handles = []
        try:
            for name, fn in planned_hooks(self.model, plan, tracker):
                target = self.targets.get(name) or self.view.hook_target(self.model, name)
                if target is None:  # plain_decoder checked every injection
                    raise AssertionError(f"{name} has no place in the plain view")
                module, side = target
                handles.append(
                    module.register_forward_pre_hook(_input_adder(fn), with_kwargs=True)
                    if side == "input" else module.register_forward_hook(_output_adder(fn)))
            self.handle = SteeringHandle(self.model, plan, tracker)
            yield self.handle
        finally:
            self.handle = None
            for handle in handles:
                handle.remove()

    def _forward(self, tokens: Tensor) -> Tensor:
        cached = 0 if self.cache is None else int(self.cache.get_seq_length())
        if self.handle is not None:
            self.handle.tracker.observe(ForwardCall(cached, self.mask, tokens))
        # Positions count from each row's first real token (left padding), as the bridge does.
        positions = (self.mask.long().cumsum(-1) - 1).clamp(min=0)[:, -tokens.shape[1]:]
        out = self.view.module(input_ids=tokens, attention_mask=self.mask,
                               position_ids=positions, use_cache=True, logits_to_keep=1,
                               **{self.cache_name: self.cache})
        self.cache = out[self.cache_name]
        return out.logits[:, -1]  # type: ignore[no-any-return]

    def start(self, tokens: Tensor, mask: Tensor) -> Tensor:
        self.mask, self.cache = mask, None
        return self._forward(tokens)

    def step(self, tokens: Tensor) -> Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)], dim=1)
        return self._forward(tokens)


def plain_decoder(model: Any, plan: SteeringPlan | None) -> PlainDecoder | None:
    """A :class:`PlainDecoder` for ``model`` (a bridge) under ``plan``, or None where the
    bridge's own loop must run (see module doc)."""
    view = plain_view(model)
    if view is None or _user_hooks(model):
        return None
    targets = {}
    for injection in plan.injections if plan is not None else ():
        name = injection_hook(model, injection)  # refuses a hook the model does not have
        target = view.hook_target(model, name)
        if target is None:
            return None
        targets[name] = target
    return PlainDecoder(model, view, targets)
