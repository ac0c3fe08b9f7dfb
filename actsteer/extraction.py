"""Build steering vectors from activations: contrastive pairs (CAA, or any aggregator in
:mod:`actsteer.aggregators`: PCA, probes, your own) and corpus means.

Every extractor reads all requested layers in one forward pass per batch, stops the
forward at the deepest layer it needs, and keeps only the read positions (never a full
activation cache). :func:`caa_vector` also records per-layer diagnostics of the pairs
(:mod:`actsteer.diagnostics`) in the vector's metadata.

Example::

    pairs = [ContrastivePair(prompt, " A", " B"), ...]     # matching, non-matching
    vector = caa_vector(model, pairs, dataset="myopia")   # [n_layers, d_model]
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.aggregators import Aggregator, Method, resolve_aggregator
from actsteer.batching import (
    PaddingSide,
    encode,
    encode_continuations,
    encode_many,
    length_batches,
    pad,
)
from actsteer.contrast import ContrastivePair
from actsteer.diagnostics import diagnostics_to_meta, vector_diagnostics
from actsteer.errors import InvalidValueError
from actsteer.models import model_info
from actsteer.progress import by_items
from actsteer.sites import check_layers
from actsteer.vector import SteeringVector, VectorMeta

logger = logging.getLogger(__name__)

ReadPosition = Literal["last", "answer", "answer_mean", "mean"]
"""``last``: the final token; ``answer``: the first token of the appended answer;
``answer_mean``: mean over the answer's tokens; ``mean``: mean over all real tokens."""

Span = tuple[int, int]


def read_activations(
    model: Any,
    sequences: Sequence[Sequence[int]],
    *,
    layers: Sequence[int] | None = None,
    site: str = "resid_post",
    spans: Sequence[Span] | None = None,
    batch_size: int = 16,
    padding_side: PaddingSide = "left",
    progress: bool = False,
    desc: str = "reading activations",
) -> Float[Tensor, "n layer d_model"]:
    """Mean activation over ``spans[i]`` (token indices ``[start, end)`` of sequence ``i``,
    default: its last token) at ``layers`` (default: all), in float32 on the CPU."""
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    names = check_layers(model, layers, site)
    if spans is None:
        spans = [(len(seq) - 1, len(seq)) for seq in sequences]
    if len(spans) != len(sequences):
        raise InvalidValueError(f"{len(spans)} spans for {len(sequences)} sequences")
    for i, ((start, end), seq) in enumerate(zip(spans, sequences, strict=True)):
        if not 0 <= start < end <= len(seq):
            raise InvalidValueError(f"span {(start, end)} of sequence {i} is outside its "
                                    f"{len(seq)} tokens")
    out = torch.zeros(len(sequences), len(layers), int(model.cfg.d_model))
    stop_at = max(layers) + 1
    groups = list(length_batches([len(s) for s in sequences], batch_size))
    for group in by_items(groups, desc=desc, progress=progress, unit="sequence"):
        batch = pad(model, [sequences[i] for i in group], padding_side=padding_side)
        weights = torch.zeros(batch.tokens.shape, dtype=torch.float32)
        for row, index in enumerate(group):
            start, end = spans[index]
            offset = int(batch.starts[row])
            weights[row, offset + start : offset + end] = 1.0 / (end - start)
        captured: dict[str, Tensor] = {}
        grabs = [(name, _capture(name, weights, captured)) for name in names]
        with torch.no_grad(), model.hooks(fwd_hooks=grabs):
            model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=stop_at)
        rows = torch.as_tensor(group)
        for column, name in enumerate(names):
            if name not in captured:  # hook point under an alias on the bridge
                raise RuntimeError(f"hook {name} did not fire; is the model compatible?")
            out[rows, column] = captured[name]
    return out


def _capture(name: str, weights: Tensor, store: dict[str, Tensor]) -> Any:
    """Hook storing the span-weighted mean under the name it was registered with (the
    bridge reports canonical names such as ``hook_out`` for ``hook_resid_post``)."""

    def grab(activation: Tensor, hook: Any) -> None:
        store[name] = torch.einsum(
            "bp,bpd->bd", weights.to(activation.device), activation.float()).cpu()

    return grab


def _pair_spans(prompt_len: int, total: int, read: ReadPosition) -> Span:
    if read == "last":
        return total - 1, total
    if read == "answer":
        return prompt_len, prompt_len + 1
    if read == "answer_mean":
        return prompt_len, total
    if read == "mean":
        return 0, total
    raise InvalidValueError(
        f"unknown read position {read!r}; use last, answer, answer_mean or mean")


def contrastive_activations(
    model: Any,
    pairs: Sequence[ContrastivePair],
    *,
    layers: Sequence[int] | None = None,
    site: str = "resid_post",
    read: ReadPosition = "last",
    batch_size: int = 16,
    padding_side: PaddingSide = "left",
    progress: bool = False,
) -> tuple[Float[Tensor, "n layer d_model"], Float[Tensor, "n layer d_model"]]:
    """Activations of ``prompt + positive`` and ``prompt + negative`` for each pair.

    The answer is tokenised on its own as a continuation
    (:func:`~actsteer.batching.encode_continuations`) and appended, so its tokens are
    exactly the ones an evaluator scores (no merges across the prompt/answer boundary,
    no SentencePiece dummy prefix: after ``"("`` the answer ``"A"`` is the bare ``A``).
    """
    if not pairs:
        raise InvalidValueError("need at least one contrastive pair")
    prompts = [encode(model, p.prompt) for p in pairs]
    answers = encode_continuations(model, [a for p in pairs for a in (p.positive, p.negative)])
    sequences, spans = [], []
    for i, prompt in enumerate(prompts):
        for answer in answers[2 * i : 2 * i + 2]:
            if not answer:
                raise InvalidValueError(f"pair {i} has an empty answer; answers need a token")
            sequences.append(prompt + answer)
            spans.append(_pair_spans(len(prompt), len(prompt) + len(answer), read))
    acts = read_activations(model, sequences, layers=layers, site=site, spans=spans,
                            batch_size=batch_size, padding_side=padding_side,
                            progress=progress, desc="contrastive pairs")
    return acts[0::2], acts[1::2]


def directions_from_pairs(positive: Float[Tensor, "n layer d"],
                          negative: Float[Tensor, "n layer d"],
                          method: Method | str | Aggregator = "mean_diff"
                          ) -> Float[Tensor, "layer d"]:
    """Per-layer directions from paired activations by ``method``: a built-in name
    (:data:`actsteer.aggregators.AGGREGATORS`) or any aggregator callable."""
    _, aggregate = resolve_aggregator(method)
    return _aggregate(aggregate, positive, negative)


def _aggregate(aggregate: Aggregator, positive: Tensor, negative: Tensor) -> Tensor:
    if positive.shape != negative.shape or positive.dim() != 3:
        raise InvalidValueError(f"positive and negative must share a [pair, layer, d_model] shape, "
                                f"got {tuple(positive.shape)} and {tuple(negative.shape)}")
    directions = aggregate(positive, negative)
    if not isinstance(directions, Tensor) or directions.shape != positive.shape[1:]:
        shape = tuple(directions.shape) if isinstance(directions, Tensor) else type(directions)
        raise InvalidValueError(f"the aggregator returned {shape}; it must return directions "
                                f"[layer, d_model] = {tuple(positive.shape[1:])}")
    return directions


def _meta(model: Any, **fields: Any) -> VectorMeta:
    info = model_info(model)
    return VectorMeta(model=info.name, backend=info.backend,
                      weight_processing=info.weight_processing,
                      model_n_layers=info.n_layers, **fields)


def caa_vector(
    model: Any,
    pairs: Sequence[ContrastivePair],
    *,
    layers: Sequence[int] | None = None,
    site: str = "resid_post",
    read: ReadPosition = "last",
    method: Method | str | Aggregator = "mean_diff",
    dataset: str = "",
    diagnostics: bool = True,
    folds: int = 5,
    strata: Sequence[Hashable] | Literal["answer"] | None = "answer",
    batch_size: int = 16,
    padding_side: PaddingSide = "left",
    progress: bool = False,
) -> SteeringVector:
    """Contrastive activation addition: mean over pairs of (positive − negative)
    activations at ``read``, for every layer (or another aggregator, see ``method``).

    One batched forward per group of pairs reads every layer at once and stops after the
    deepest layer needed; only the read positions are kept (never a full cache).

    Args:
        pairs: ``ContrastivePair(prompt, positive, negative)``; each side is run as
            ``prompt + answer``.
        layers: layers to read (default all); the vector still has one row per layer.
        site: hook site read (and later written): ``resid_post`` (the paper),
            ``resid_pre``, ``resid_mid``, ``attn_out`` or ``mlp_out``.
        read: ``"last"`` token (the paper), ``"answer"`` (the answer's first token),
            ``"answer_mean"`` (mean over the answer's tokens) or ``"mean"`` (all tokens).
        method: ``"mean_diff"`` (CAA), ``"pca"`` (first singular direction of the
            uncentred differences, signed and scaled to the mean difference's projection),
            ``"probe"`` (logistic-regression direction separating the two sides), or any
            callable ``f(positive, negative) -> [layer, d_model]`` over ``[pair, layer,
            d_model]`` activations (see :mod:`actsteer.aggregators`); ``meta.method``
            records the name.
        diagnostics: also measure, per layer, how consistent the pair differences are
            and how well the direction separates held-out pairs
            (:func:`actsteer.diagnostics.vector_diagnostics`, ``folds``-fold
            cross-fitting with the same aggregator) into ``meta.diagnostics``. Cheap for
            ``mean_diff``; costs ``folds`` extra fits per layer for ``"probe"``.
        strata: one label per pair to stratify the diagnostics' folds by; by default
            (``"answer"``) each pair's positive answer, i.e. its matching letter on A/B
            items, whose letter component would otherwise bias held-out separation below
            0.5 (see :func:`actsteer.diagnostics.vector_diagnostics`); ``None``: plain
            shuffled folds (pairs with nothing in common to balance).
        batch_size, padding_side: batching only; results equal one-at-a-time.

    Returns:
        A :class:`SteeringVector` with ``directions`` of shape ``[n_layers, d_model]`` and
        metadata recording the model, site, read position, method, dataset and (unless
        ``diagnostics=False``) the per-layer diagnostics, keyed by layer as a string.

    Example:
        >>> pairs = [ContrastivePair(paper_prompt(q), "A", "B") for q in questions]
        >>> vector = caa_vector(model, pairs, dataset="myopia")
        >>> vector.directions.shape            # (n_layers, d_model)
    """
    name, aggregate = resolve_aggregator(method)
    if diagnostics and folds < 2:
        raise InvalidValueError(f"folds must be >= 2 for cross-fitted diagnostics, got {folds}; "
                                "or pass diagnostics=False")
    if isinstance(strata, str):
        if strata != "answer":
            raise InvalidValueError(f"strata {strata!r}: give 'answer' (each pair's positive "
                                    "answer), one label per pair, or None")
        strata = [pair.positive for pair in pairs]
    layer_list = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    positive, negative = contrastive_activations(
        model, pairs, layers=layer_list, site=site, read=read, batch_size=batch_size,
        padding_side=padding_side, progress=progress)
    measured = (diagnostics_to_meta(vector_diagnostics(
        positive, negative, layer_list, folds=folds, aggregator=aggregate, strata=strata))
        if diagnostics else {})
    return SteeringVector(
        _aggregate(aggregate, positive, negative),
        tuple(layer_list),
        site,
        _meta(model, read_position=read, method=name, dataset=dataset, n_items=len(pairs),
              diagnostics=measured),
    )


def corpus_mean(
    model: Any,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    site: str = "resid_post",
    read: Literal["last", "mean"] = "last",
    max_tokens: int = 512,
    batch_size: int = 8,
    padding_side: PaddingSide = "left",
    progress: bool = False,
    desc: str = "corpus mean",
) -> Float[Tensor, "layer d_model"]:
    """Mean over documents of the activation at each document's last token (the paper)
    or averaged over its tokens (``read="mean"``); documents truncated to ``max_tokens``."""
    if not texts:
        raise InvalidValueError("corpus_mean needs at least one text")
    if max_tokens < 1:
        raise InvalidValueError(f"max_tokens must be >= 1, got {max_tokens}")
    sequences = [ids[:max_tokens] for ids in encode_many(model, texts)]
    spans = [(len(s) - 1, len(s)) if read == "last" else (0, len(s)) for s in sequences]
    acts = read_activations(model, sequences, layers=layers, site=site, spans=spans,
                            batch_size=batch_size, padding_side=padding_side,
                            progress=progress, desc=desc)
    return acts.mean(0)
