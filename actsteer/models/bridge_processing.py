"""TransformerLens's default weight processing for a TransformerBridge, in place.

``TransformerBridge.enable_compatibility_mode()`` processes the weights on whole state dicts:
every tensor upcast to float32 (2x a bf16 checkpoint), then a float32 clone of the whole
dict for folding, another for centring the unembedding, another for folding value biases,
beside the Hugging Face model itself: ~7.5x the weights' bytes at the peak. For a Llama
(RMSNorm, no biases) that processing is three edits of the HF model's own weights, made
here one matrix at a time in float32 and written back in the model's dtype:

* fold each RMSNorm's scale into the matrices that read it (q/k/v after
  ``input_layernorm``, up/gate after ``post_attention_layernorm``, ``lm_head`` after the
  final norm) and set the scale to 1;
* centre ``lm_head`` over the vocabulary (a tied ``lm_head`` is untied first, as the
  bridge does, so the embedding is left as it is);
* nothing else: an RMSNorm model has no writing weights to centre and no value biases.

The bridge then runs its own forward on these weights, exactly as after its own processing
(``enable_compatibility_mode(no_processing=True)`` installs the same hooks).
Architectures other than :data:`LEAN_BRIDGE_ARCHITECTURES` keep the bridge's processing.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LEAN_BRIDGE_ARCHITECTURES", "fold_llama_in_place", "lean_bridge_supported"]

LEAN_BRIDGE_ARCHITECTURES: tuple[str, ...] = ("LlamaForCausalLM",)
"""HF architectures whose bridge processing :func:`fold_llama_in_place` does."""

_COLUMNS = 512  # lm_head columns per block: its centring is per column


def lean_bridge_supported(hf_model: Any) -> bool:
    """Whether :func:`fold_llama_in_place` is all of the bridge's processing for this model:
    a Llama whose config has no attention or MLP biases (the bridge's own zero ``lm_head``
    bias is centred like TransformerLens's b_U)."""
    config = getattr(hf_model, "config", None)
    return (
        type(hf_model).__name__ in LEAN_BRIDGE_ARCHITECTURES
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
    )


def _scale_columns(weight: torch.Tensor, scale: torch.Tensor) -> None:
    """``weight[:, j] *= scale[j]`` computed in float32, stored in the weight's dtype."""
    weight.copy_(weight.float().mul_(scale[None, :]))


def fold_llama_in_place(hf_model: Any) -> None:
    """Fold the norms of a Llama ``hf_model`` and centre its ``lm_head`` (see module doc)."""
    with torch.no_grad():
        for layer in hf_model.model.layers:
            scale = layer.input_layernorm.weight.float()
            attention = layer.self_attn
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
                _scale_columns(proj.weight, scale)
            layer.input_layernorm.weight.fill_(1.0)
            scale = layer.post_attention_layernorm.weight.float()
            for proj in (layer.mlp.up_proj, layer.mlp.gate_proj):
                _scale_columns(proj.weight, scale)
            layer.post_attention_layernorm.weight.fill_(1.0)
        head = hf_model.lm_head
        if head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr():
            head.weight = torch.nn.Parameter(head.weight.detach().clone())
        scale = hf_model.model.norm.weight.float()
        weight = head.weight
        for start in range(0, weight.shape[1], _COLUMNS):
            block = weight[:, start : start + _COLUMNS]
            folded = block.float().mul_(scale[None, start : start + _COLUMNS])
            block.copy_(folded.sub_(folded.mean(0, keepdim=True)))
        hf_model.model.norm.weight.fill_(1.0)
        bias = getattr(head, "bias", None)
        if bias is not None:
            bias.copy_(bias.float().sub_(bias.float().mean()))
