"""Bake a steering plan into the model's weights: steered inference with no hooks.

An all-positions addition ``h <- h + c * v`` at a block's residual stream is exactly an
extra bias on the linear layer that writes that stream (the special case of "Model
Surgery", arXiv 2407.08770, with a constant addition). Per injection at layer ``L``:

* ``resid_post(L)`` and ``mlp_out(L)``: the MLP output bias of block ``L``
  (HookedTransformer ``blocks[L].mlp.b_out``; Hugging Face ``mlp.down_proj.bias``);
* ``attn_out(L)`` and ``resid_mid(L)``: the attention output bias of block ``L``
  (``blocks[L].attn.b_O``; ``self_attn.o_proj.bias``): both add to the residual stream
  right after attention (on TransformerBridge, hook steering adds ``resid_mid`` at
  ``attn_out`` for the same reason, see :func:`actsteer.steering.injection_hook`);
* ``resid_pre(L)``, ``L >= 1``: the same as ``resid_post(L - 1)``.

Refused, with the reason: position-limited plans (a bias reaches every position),
``resid_pre`` at layer 0 (no block writes before it), and ``resid_mid`` where a norm
follows attention (there hook steering refuses it as well).

Projections (:mod:`actsteer.operators`) bake into the weights that write the stream:
removing ``d`` from ``attn_out(L)``/``mlp_out(L)`` is orthogonalising that block's output
matrix and bias against ``d`` (``W <- W - (W d) d^T``), and from ``resid_pre(0)``
orthogonalising the embedding (Arditi et al. 2024's weight-space ablation); what the
operator adds afterwards goes into the bias (or every embedding row). A projection of the
accumulated stream (``resid_pre`` after block 0, ``resid_mid``, ``resid_post``) is no
weight edit and is refused. Where the embedding is tied to the unembedding, the copy is
untied first, so the unembedding stays as it was.

Example::

    baked = bake(model, actsteer.single(vector, layer=15, coefficient=4.0))
    logits = baked(tokens)                    # == actsteer.run(model, tokens, plan)
    save_baked_hf(plan, "smollm2-steered")    # an ordinary transformers folder
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from actsteer.atomic import atomic_dir
from actsteer.errors import InvalidValueError
from actsteer.models.info import backend_of
from actsteer.models.source import source_folder
from actsteer.plan import SteeringPlan
from actsteer.steering import check_plan, steer
from actsteer.vector import VectorMismatchError
from actsteer.writers import (  # BakeError and Part are this module's public names too
    BakeError,
    Part,
    check_bakeable,
    orthogonalise,
    projections,
    where,
    writers_bridge,
    writers_hf,
    writers_hooked,
)

PLAN_FILE = "steering_plan.json"
"""Name of the plan that :func:`save_baked_hf` writes into the folder (with its vectors
in ``steering_plan.safetensors``)."""


def bias_edits(plan: SteeringPlan, n_layers: int) -> dict[tuple[int, Part], Tensor]:
    """What to add to which block output bias so that the model computes ``plan``.

    Returns ``{(layer, "attn" | "mlp"): delta}``, the deltas of injections that land on
    the same bias summed in plan order (``(0, "embed")``: added to every embedding row,
    after a projection at ``resid_pre`` of block 0). Raises :class:`BakeError` naming the first
    injection that cannot be baked.
    """
    edits: dict[tuple[int, Part], Tensor] = {}
    projections(plan, n_layers)  # refuses a projection that is no weight edit
    for injection in plan.injections:
        check_bakeable(injection, n_layers)
        delta = injection.delta.detach()
        if injection.removed is not None and not bool(delta.any()):
            continue  # a pure ablation: the orthogonalised weights carry all of it
        key: tuple[int, Part] = (
            (0, "embed") if injection.removed is not None and injection.site == "resid_pre"
            else _target(injection.site, injection.layer, where(injection)))
        edits[key] = edits[key] + delta.to(edits[key]) if key in edits else delta.clone()
    return edits


def _target(site: str, layer: int, where: str) -> tuple[int, Part]:
    if site in ("resid_post", "mlp_out"):
        return layer, "mlp"
    if site in ("attn_out", "resid_mid"):
        return layer, "attn"
    if site == "resid_pre":
        if layer == 0:
            raise BakeError(f"{where}: nothing writes the residual stream before block 0, so "
                            "there is no bias to carry it; use resid_pre at a layer >= 1 or "
                            "steer with hooks")
        return layer - 1, "mlp"
    raise BakeError(f"{where}: site {site!r} cannot be baked")


def bake(model: Any, plan: SteeringPlan, *, verify: bool = True) -> Any:
    """A NEW model whose biases carry ``plan``: ``bake(model, plan)(tokens)`` equals
    ``actsteer.run(model, tokens, plan)`` without hooks, and costs no extra compute.

    The input model is not changed (the result is a deep copy, so it takes as much memory
    again). Works on HookedTransformer (``b_O``/``b_out``) and on TransformerBridge (the
    wrapped Hugging Face ``o_proj``/``down_proj``, given a bias where they have none).

    Args:
        model: a model from :func:`actsteer.load_model` (either backend).
        plan: an all-positions plan (see :func:`bias_edits` for what can be baked).
        verify: compare the baked model with hook steering on a few tokens and raise
            :class:`BakeError` if they differ (guards against a TransformerLens version
            that computes a layer without the bias edited here).

    Example:
        >>> steered = bake(model, actsteer.single(vector, 15, 4.0))
        >>> steered.generate("Tell me about money", max_new_tokens=20)
    """
    check_plan(model, plan)  # also refuses resid_mid where a norm follows attention
    bridge = backend_of(model) == "bridge"
    edits = bias_edits(plan, int(model.cfg.n_layers))
    removals = projections(plan, int(model.cfg.n_layers))
    baked = copy.deepcopy(model)
    with torch.no_grad():
        for (layer, part), direction in removals.items():
            for writer in (writers_bridge if bridge else writers_hooked)(baked, layer, part):
                orthogonalise(writer, direction)
        for (layer, part), delta in edits.items():
            (_edit_bridge if bridge else _edit_hooked)(baked, layer, part, delta)
    if verify and (edits or removals):
        _verify(model, baked, plan)
    return baked


def _edit_hooked(model: Any, layer: int, part: Part, delta: Tensor) -> None:
    if part == "embed":
        model.embed.W_E.add_(delta.to(model.embed.W_E))
        return
    module = model.blocks[layer].attn if part == "attn" else model.blocks[layer].mlp
    name = "b_O" if part == "attn" else "b_out"
    bias = getattr(module, name, None)
    if not isinstance(bias, torch.nn.Parameter):
        raise BakeError(f"blocks.{layer}.{'attn' if part == 'attn' else 'mlp'} has no {name} "
                        f"to carry the vector ({type(module).__name__}); steer with hooks")
    bias.add_(delta.to(bias))


def _edit_bridge(model: Any, layer: int, part: Part, delta: Tensor) -> None:
    if part == "embed":
        weight = writers_bridge(model, 0, "embed")[0][0]
        weight.add_(delta.to(weight))
        return
    block = model.blocks[layer]
    owner = block.attn if part == "attn" else block.mlp
    wrapper = getattr(owner, "o" if part == "attn" else "out", None)
    linear = getattr(wrapper, "original_component", None)
    if not isinstance(linear, torch.nn.Linear):
        raise BakeError(f"blocks.{layer}: cannot find the Hugging Face output projection of "
                        f"{type(owner).__name__}; steer with hooks")
    _add_bias(linear, delta)
    # With processed weights (fold_ln), TransformerLens 3.9's gated MLP bridge computes the
    # down projection itself from its own copies and never calls down_proj; 4.x writes the
    # processed weights into down_proj and reads them from there (no copy to edit).
    if part == "mlp" and getattr(owner, "_use_processed_weights", False) \
            and hasattr(owner, "_processed_W_out"):
        old = getattr(owner, "_processed_b_out", None)
        weight = owner._processed_W_out
        base = old if old is not None else torch.zeros(weight.shape[0], dtype=weight.dtype,
                                                       device=weight.device)
        owner._processed_b_out = base + delta.to(base)


def _add_bias(linear: torch.nn.Linear, delta: Tensor | None = None) -> None:
    """Give ``linear`` a bias (zero if it had none) plus ``delta``, out of place."""
    weight = linear.weight
    old = linear.bias if linear.bias is not None else torch.zeros(
        weight.shape[0], dtype=weight.dtype, device=weight.device)
    new = old.detach() + (delta.to(old) if delta is not None else 0)
    linear.bias = torch.nn.Parameter(new, requires_grad=weight.requires_grad)


def _verify(model: Any, baked: Any, plan: SteeringPlan) -> None:
    """Raise if ``baked`` is not ``model`` under hook steering, on eight tokens.

    The tolerance is rounding (100 ulps of the logit scale in the model's dtype) or 5% of
    the steering effect, whichever is larger: an edit the forward pass ignores (or applies
    twice) misses by about the whole effect.
    """
    d_vocab = int(model.cfg.d_vocab)
    tokens = (torch.arange(1, 9) * 997 % d_vocab)[None].to(model.cfg.device or "cpu")
    with torch.no_grad():
        plain = model(tokens)
        with steer(model, plan) as handle:
            handle.new_prompt()
            expected = model(tokens)
        got = baked(tokens)
    scale = float(expected.abs().max())
    effect = float((expected - plain).abs().max())
    error = float((expected - got).abs().max())
    allowed = max(0.05 * effect, 100 * torch.finfo(expected.dtype).eps * scale)
    if not error <= allowed:
        raise BakeError(
            f"the baked model differs from hook steering by {error:.3g} (steering moves the "
            f"logits by {effect:.3g}): this TransformerLens version computes a steered layer "
            "without the bias bake edits; steer with hooks instead")


# -- Hugging Face folders ---------------------------------------------------------------

def save_baked_hf(
    plan: SteeringPlan,
    folder: str | os.PathLike[str],
    *,
    source: Any = None,
) -> Path:
    """Write the source model with ``plan`` baked in as a Hugging Face folder (additions in
    biases, projections in orthogonalised weights, a tied embedding untied).

    ``AutoModelForCausalLM.from_pretrained(folder)`` in plain ``transformers`` then gives
    the steered logits, with no actsteer at run time. The weights come from the source's
    own Hugging Face folder (not converted back from TransformerLens): for RMSNorm models
    TransformerLens's weight processing leaves the residual stream unchanged, so a vector
    from the processed model applies as it is. The config gets ``attention_bias`` and
    ``mlp_bias`` (Llama's switches for biases on q/k/v/o and gate/up/down); all biases
    but the baked ``o_proj``/``down_proj`` ones are zero. The plan is saved beside the
    weights as ``steering_plan.json`` (+ ``.safetensors``).

    Args:
        plan: an all-positions plan (see :func:`bias_edits`; ``resid_mid`` means the
            residual stream after attention, as on HookedTransformer).
        folder: a new folder (refused if it exists and is not empty).
        source: the embedded model's name (default), a local Hugging Face folder of a
            Llama-family model, or a model from :func:`actsteer.load_model` built from one.

    Example:
        >>> save_baked_hf(actsteer.single(vector, 15, 4.0), "smollm2-myopic")
        >>> AutoModelForCausalLM.from_pretrained("smollm2-myopic")
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    origin = source_folder(source)
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not empty; choose a new folder")
    hf_model = AutoModelForCausalLM.from_pretrained(origin, dtype="auto")
    config = hf_model.config
    if not (hasattr(config, "attention_bias") and hasattr(config, "mlp_bias")):
        raise BakeError(f"{origin} is a {config.model_type!r} model whose config has no "
                        "attention_bias/mlp_bias switches; save_baked_hf supports the Llama "
                        "family (bake() works in memory on any model with output biases)")
    width, n_layers = int(config.hidden_size), int(config.num_hidden_layers)
    for injection in plan.injections:
        if injection.vector.shape[0] != width:
            raise VectorMismatchError(
                f"{injection.label or 'vector'} has d_model {injection.vector.shape[0]} but "
                f"{origin} has {width}; extract the vector from this model")
        if not bool(torch.isfinite(injection.delta).all()):
            raise InvalidValueError(
                f"{injection.label or 'vector'} at {injection.hook} is not finite")
    edits = bias_edits(plan, n_layers)
    with torch.no_grad():
        for (layer_index, part), direction in projections(plan, n_layers).items():
            for writer in writers_hf(hf_model, layer_index, part):
                orthogonalise(writer, direction)
        if (embedded := edits.pop((0, "embed"), None)) is not None:
            weight = writers_hf(hf_model, 0, "embed")[0][0]
            weight.add_(embedded.to(weight))
        for layer_index, layer in enumerate(hf_model.model.layers if edits else ()):
            for tag, linear in _output_and_input_linears(layer):
                _add_bias(linear, edits.get((layer_index, tag)) if tag is not None else None)
    if edits:  # biases only where something is added (an ablation needs none)
        config.attention_bias = True
        config.mlp_bias = True
    tokenizer = AutoTokenizer.from_pretrained(origin)
    with atomic_dir(target) as scratch:
        hf_model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        plan.save(scratch / PLAN_FILE)
    return target


def _output_and_input_linears(layer: Any) -> Iterator[tuple[Part | None, torch.nn.Linear]]:
    """Every projection whose bias the Llama switches turn on; the output projections
    tagged with the part they write for."""
    attention, mlp = layer.self_attn, layer.mlp
    for name in ("q_proj", "k_proj", "v_proj"):
        yield None, getattr(attention, name)
    yield "attn", attention.o_proj
    yield None, mlp.gate_proj
    yield None, mlp.up_proj
    yield "mlp", mlp.down_proj
