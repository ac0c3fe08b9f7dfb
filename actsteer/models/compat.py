"""Keep TransformerBridge's KV cache working across transformers releases.

From transformers 5.24, a decoder layer hands its attention the KV cache as ``cache=``
(``past_key_values=`` is deprecated). TransformerBridge's attention components (TL 3.9 and
4.3) still read only ``past_key_values`` (or ``layer_past``), so under a newer transformers
they never write the cache: every cached decode step then attends to itself alone, and
greedy generation diverges from full recomputation from the second new token on, with no
error. :func:`pass_cache_to_attention` gives each attention component the cache under the
name it reads; where transformers already passes ``past_key_values`` it changes nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pass_cache_to_attention"]


def _cache_under_old_name(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
                          ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
        kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
    return args, kwargs


def pass_cache_to_attention(bridge: Any) -> int:
    """Register the cache-renaming pre-hook on every attention component of ``bridge``
    (once per module); returns how many components have it. These are PyTorch module
    hooks, not hook points: steering's hook accounting does not see them."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    count = 0
    for module in bridge.modules():
        if isinstance(module, AttentionBridge):
            hooks = module._forward_pre_hooks.values()
            if _cache_under_old_name not in hooks:
                module.register_forward_pre_hook(_cache_under_old_name, with_kwargs=True)
            count += 1
    return count
