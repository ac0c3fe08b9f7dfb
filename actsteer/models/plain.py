"""A plain Hugging Face view of a TransformerBridge's model, for fast decoding.

TransformerBridge puts its own components in place of the Hugging Face model's modules.
Each wraps the module it replaces and adds hook points, and the attention components do
their own step-by-step arithmetic (a float32 softmax, key/value heads repeated by copy).
Per decode step of the embedded 135M model that Python and arithmetic cost about a quarter
of the time that ``transformers``' own ``generate`` needs.

:func:`plain_view` rebuilds the module tree with every bridge component replaced by the
module it wraps. The view is made of shallow copies that share every parameter and buffer
with the bridge (no weight is copied; an edit of the bridge's weights is an edit of the
view's), carry none of the bridge's hooks, and read a private copy of the config that
selects PyTorch's fused attention (``sdpa``), as ``transformers`` does by default (except for
models that soft-cap attention logits, which fused attention cannot).

The view computes the bridge's function only where the bridge runs on the Hugging Face
model's own weights: loaded without weight processing, or with actsteer's in-place
processing (:mod:`actsteer.models.bridge_processing`). :func:`mark_plain_exact` records
those loads; for any other bridge :func:`plain_view` returns None.
"""

from __future__ import annotations

import copy
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

__all__ = ["PlainView", "mark_plain_exact", "plain_view"]

_EXACT: weakref.WeakSet[Any] = weakref.WeakSet()

_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks")


def mark_plain_exact(bridge: Any) -> None:
    """Record that ``bridge`` runs on its Hugging Face model's own weights (see module doc)."""
    _EXACT.add(bridge)


def _bridge_component_type() -> type:
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    return GeneralizedComponent


@dataclass(frozen=True)
class PlainView:
    """A bridge's Hugging Face model without the bridge: ``module`` (call it as the Hugging
    Face model), and for each of the bridge's components the module of the view that does
    its work (:meth:`counterpart`)."""

    module: nn.Module
    clones: dict[int, nn.Module]

    def counterpart(self, component: nn.Module) -> nn.Module | None:
        """The module of the view that ``component`` (of the bridge) wraps, or None."""
        return self.clones.get(id(component))

    def hook_target(self, bridge: Any, name: str
                    ) -> tuple[nn.Module, Literal["input", "output"]] | None:
        """Where the bridge's hook point ``name`` sits in the view: the module whose first
        input (``hook_in``) or output (``hook_out``) it sees, or None for a hook point
        inside a component's own arithmetic."""
        point = bridge.hook_dict.get(name)
        for component in bridge.modules():
            for side, attribute in (("input", "hook_in"), ("output", "hook_out")):
                if component._modules.get(attribute) is point and point is not None:
                    target = self.counterpart(component)
                    return None if target is None else (target, side)  # type: ignore[return-value]
        return None


def _unwrap(module: nn.Module, component: type, config: Any, private: Any,
            clones: dict[int, nn.Module]) -> nn.Module:
    wrappers = []
    while isinstance(module, component):
        wrappers.append(module)
        module = module.original_component  # type: ignore[assignment]
    clone = module.__new__(type(module))
    clone.__dict__ = dict(module.__dict__)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    for name in _HOOK_DICTS:
        if name in module.__dict__:
            setattr(clone, name, OrderedDict(getattr(module, name)))
    clone._modules = {
        name: None if child is None else _unwrap(child, component, config, private, clones)
        for name, child in module._modules.items()}
    if clone.__dict__.get("config") is config:
        clone.__dict__["config"] = private
    for wrapper in wrappers:
        clones[id(wrapper)] = clone
    return clone


def plain_view(bridge: Any) -> PlainView | None:
    """The bridge's Hugging Face model without the bridge (see module doc), or None where
    that would not compute the bridge's function. Cheap: one shallow copy per module
    (about 8 ms for the embedded model's 30 layers)."""
    if bridge not in _EXACT:
        return None
    original = bridge.original_model
    config = original.config
    private = copy.copy(config)
    # Fused attention has no logit soft-capping (Gemma 2): keep the bridge's choice there.
    if getattr(config, "attn_logit_softcapping", None) is None:
        private._attn_implementation = "sdpa"
    clones: dict[int, nn.Module] = {}
    module = _unwrap(original, _bridge_component_type(), config, private, clones)
    return PlainView(module.eval(), clones)
