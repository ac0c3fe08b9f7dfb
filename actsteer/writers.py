"""The weights that write the residual stream, and projections baked into them.

Every write to the residual stream comes from the embedding (block 0's input) or a block's
attention or MLP output projection. Removing a unit direction ``d`` from one of those
writes for every input is orthogonalising the writer against ``d``:
``W <- W - (W d) d^T`` for its weight and ``b <- b - (b.d) d`` for its bias (Arditi et
al. 2024's weight-space twin of directional ablation, arXiv 2406.11717). A projection of
the accumulated stream (``resid_pre`` after block 0, ``resid_mid``, ``resid_post``) is no
weight edit. :func:`actsteer.bake` and :func:`actsteer.save_baked_hf` use this module.

A tied input/output embedding shares one tensor: orthogonalising the embedding would
orthogonalise the unembedding too, which hook ablation does not do; :func:`untie` gives
the output side its own copy first.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from actsteer.errors import ActsteerError
from actsteer.plan import Injection, SteeringPlan

__all__ = ["BakeError", "Part", "check_bakeable", "orthogonalise", "projections", "untie",
           "writers_bridge", "writers_hf", "writers_hooked"]

Part = Literal["attn", "mlp", "embed"]
"""Which writer of the residual stream: a block's attention output (``o_proj``/``b_O``),
its MLP output (``down_proj``/``b_out``), or the embedding (block 0's input)."""

Writer = tuple[Tensor, int]
"""A tensor to orthogonalise and the axis of it that lives in the residual stream."""

_PART_OF_SITE: dict[str, Part] = {"attn_out": "attn", "mlp_out": "mlp", "resid_pre": "embed"}


class BakeError(ActsteerError, ValueError):
    """A plan that cannot be baked exactly into weights, or a model bake cannot edit."""


def where(injection: Injection) -> str:
    return f"{injection.label or 'vector'} at {injection.hook}"


def check_bakeable(injection: Injection, n_layers: int) -> None:
    """Raise :class:`BakeError` for an injection no weight edit can carry anywhere."""
    if injection.positions.mode != "all":
        raise BakeError(
            f"{where(injection)} is limited to positions {injection.positions}: a bias reaches "
            "every position; bake only all-position plans (positions=ALL), or steer with hooks")
    if not 0 <= injection.layer < n_layers:
        raise BakeError(f"{where(injection)}: layer {injection.layer} is out of range for a "
                        f"{n_layers}-layer model")


def projections(plan: SteeringPlan, n_layers: int) -> dict[tuple[int, Part], Tensor]:
    """The unit direction each writer is orthogonalised against so that the weights compute
    the projections of ``plan``: ``{(layer, "attn" | "mlp" | "embed"): d}``.

    Raises :class:`BakeError` for a projection no single writer carries, and for another
    injection on a projected hook point (its order against the projection would matter).
    """
    out: dict[tuple[int, Part], Tensor] = {}
    for injection in plan.injections:
        direction = injection.removed
        if direction is None:
            continue
        check_bakeable(injection, n_layers)
        part = _PART_OF_SITE.get(injection.site)
        if part is None or (part == "embed" and injection.layer != 0):
            raise BakeError(
                f"{where(injection)}: a projection of the accumulated residual stream is no "
                "weight edit; bake projections at attn_out, mlp_out or resid_pre of block 0 "
                "(project(..., every_site=True) uses exactly those), or steer with hooks")
        # On TransformerBridge resid_mid is added at attn_out (steering.injection_hook).
        shared = {injection.site} | ({"resid_mid"} if part == "attn" else set())
        if any(other is not injection and other.layer == injection.layer
               and other.site in shared for other in plan.injections):
            raise BakeError(f"{where(injection)}: another injection acts on the same hook "
                            "point; its order against the projection cannot live in weights")
        out[(injection.layer, part)] = direction.detach()
    return out


def orthogonalise(writer: Writer, direction: Tensor) -> None:
    """In place (in float64, stored back in the tensor's dtype): remove the component
    along the unit ``direction`` from the writer's residual-stream axis."""
    tensor, axis = writer
    d = direction.to(device=tensor.device, dtype=torch.float64)
    value = tensor.detach().double().movedim(axis, -1)
    value = value - (value @ d)[..., None] * d
    with torch.no_grad():
        tensor.copy_(value.movedim(-1, axis))


def writers_hooked(model: Any, layer: int, part: Part) -> list[Writer]:
    """A HookedTransformer's writer tensors (``W_E``/``W_pos``, ``W_O``/``b_O``,
    ``W_out``/``b_out``)."""
    if part == "embed":
        found = [model.embed.W_E]
        if model.cfg.positional_embedding_type == "standard":
            found.append(model.pos_embed.W_pos)
        return [(tensor, -1) for tensor in found]
    module = model.blocks[layer].attn if part == "attn" else model.blocks[layer].mlp
    names = ("W_O", "b_O") if part == "attn" else ("W_out", "b_out")
    tensors = [getattr(module, name, None) for name in names]
    if not isinstance(tensors[0], torch.nn.Parameter):
        raise BakeError(f"blocks.{layer}.{part} has no {names[0]} to orthogonalise "
                        f"({type(module).__name__}); steer with hooks")
    return [(tensor, -1) for tensor in tensors if isinstance(tensor, Tensor)]


def _linear(linear: Any, name: str) -> list[Writer]:
    if not isinstance(linear, torch.nn.Linear):
        raise BakeError(f"cannot find the Hugging Face {name} to orthogonalise; steer with "
                        "hooks")
    return [(linear.weight, 0)] + ([(linear.bias, 0)] if linear.bias is not None else [])


def writers_bridge(model: Any, layer: int, part: Part) -> list[Writer]:
    """A TransformerBridge's writers: the wrapped Hugging Face modules (the embedding
    untied from the unembedding first), and TransformerLens 3.9's processed copy of the
    gated MLP's output weights where the bridge computes from it."""
    if part == "embed":
        embedding = getattr(model.embed, "original_component", None)
        if not isinstance(embedding, torch.nn.Embedding):
            raise BakeError("cannot find the bridge's Hugging Face input embedding; steer "
                            "with hooks")
        untie(model.original_model, embedding)
        return [(embedding.weight, -1)]
    owner = model.blocks[layer].attn if part == "attn" else model.blocks[layer].mlp
    wrapper = getattr(owner, "o" if part == "attn" else "out", None)
    out = _linear(getattr(wrapper, "original_component", None), f"output of blocks.{layer}")
    if part == "mlp" and getattr(owner, "_use_processed_weights", False):
        for name in ("_processed_W_out", "_processed_b_out"):
            if isinstance(getattr(owner, name, None), Tensor):
                out.append((getattr(owner, name), 0))
    return out


def writers_hf(hf_model: Any, layer: int, part: Part) -> list[Writer]:
    """A Llama-family ``transformers`` model's writers (the embedding untied first)."""
    if part == "embed":
        embedding = hf_model.get_input_embeddings()
        untie(hf_model, embedding)
        return [(embedding.weight, -1)]
    block = hf_model.model.layers[layer]
    linear = block.self_attn.o_proj if part == "attn" else block.mlp.down_proj
    return _linear(linear, f"{'o_proj' if part == 'attn' else 'down_proj'} of layer {layer}")


def untie(hf_model: Any, embedding: torch.nn.Embedding) -> None:
    """Give every module of ``hf_model`` whose weight IS ``embedding.weight`` (a tied
    output embedding) a copy of its own, and record ``tie_word_embeddings=False`` in the
    config, so that saving and loading keep the two apart."""
    for module in hf_model.modules():
        if module is not embedding and getattr(module, "weight", None) is embedding.weight:
            module.weight = torch.nn.Parameter(embedding.weight.detach().clone(),
                                               requires_grad=embedding.weight.requires_grad)
    configs = [hf_model.config]
    if hasattr(hf_model.config, "get_text_config"):
        configs.append(hf_model.config.get_text_config())
    for config in configs:
        if getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False
