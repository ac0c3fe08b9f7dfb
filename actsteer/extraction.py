"""Build steering vectors from activations: contrastive (CAA), corpus means, PCA, probes.

Every extractor reads all requested layers in one forward pass per batch, stops the
forward at the deepest layer it needs, and keeps only the read positions (never a full
activation cache).

Example::

    pairs = [ContrastivePair(prompt, " A", " B"), ...]     # matching, non-matching
    vector = caa_vector(model, pairs, dataset="myopia")   # [n_layers, d_model]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from actsteer.batching import PaddingSide, encode, encode_many, length_batches, pad
from actsteer.models import model_info
from actsteer.sites import check_layers
from actsteer.vector import SteeringVector, VectorMeta

logger = logging.getLogger(__name__)

ReadPosition = Literal["last", "answer", "answer_mean", "mean"]
"""``last``: the final token; ``answer``: the first token of the appended answer;
``answer_mean``: mean over the answer's tokens; ``mean``: mean over all real tokens."""

Method = Literal["mean_diff", "pca", "probe"]

Span = tuple[int, int]


@dataclass(frozen=True)
class ContrastivePair:
    """A prompt with the answer showing the behaviour and the one that does not."""

    prompt: str
    positive: str
    negative: str


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
        raise ValueError(f"{len(spans)} spans for {len(sequences)} sequences")
    for i, ((start, end), seq) in enumerate(zip(spans, sequences, strict=True)):
        if not 0 <= start < end <= len(seq):
            raise ValueError(f"span {(start, end)} of sequence {i} is outside its "
                             f"{len(seq)} tokens")
    out = torch.zeros(len(sequences), len(layers), int(model.cfg.d_model))
    stop_at = max(layers) + 1
    groups = list(length_batches([len(s) for s in sequences], batch_size))
    for group in tqdm(groups, desc=desc, disable=not progress, leave=False):
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
    raise ValueError(f"unknown read position {read!r}; use last, answer, answer_mean or mean")


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

    The answer is tokenised on its own and appended, so its tokens are exactly the ones
    an evaluator scores (no merges across the prompt/answer boundary).
    """
    if not pairs:
        raise ValueError("need at least one contrastive pair")
    prompts = [encode(model, p.prompt) for p in pairs]
    answers = encode_many(model, [a for p in pairs for a in (p.positive, p.negative)], bos=False)
    sequences, spans = [], []
    for i, prompt in enumerate(prompts):
        for answer in answers[2 * i : 2 * i + 2]:
            if not answer:
                raise ValueError(f"pair {i} has an empty answer; answers need a token")
            sequences.append(prompt + answer)
            spans.append(_pair_spans(len(prompt), len(prompt) + len(answer), read))
    acts = read_activations(model, sequences, layers=layers, site=site, spans=spans,
                            batch_size=batch_size, padding_side=padding_side,
                            progress=progress, desc="contrastive pairs")
    return acts[0::2], acts[1::2]


def _pca_direction(diffs: Float[Tensor, "n d"]) -> Float[Tensor, " d"]:
    """First principal direction of the paired differences, signed and scaled to agree with
    the mean difference (its projection on the direction).

    The differences are not centred: centring would remove the consistent shift that the
    pairs share, which is the behaviour direction, leaving only item-to-item noise.
    """
    mean = diffs.mean(0)
    if diffs.shape[0] < 2:
        return mean
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    component = vh[0]
    projection = torch.dot(mean, component)
    if projection < 0:
        component, projection = -component, -projection
    return component * projection


def _probe_direction(positive: Float[Tensor, "n d"], negative: Float[Tensor, "n d"],
                     *, l2: float = 1e-2, steps: int = 100) -> Float[Tensor, " d"]:
    """Logistic-regression weight separating positive from negative activations, scaled
    so that its projection of the mean difference equals the mean difference's."""
    x = torch.cat([positive, negative]).double()
    y = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).double()
    centre, spread = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - centre) / spread
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, y)
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    direction = (weight.detach() / spread).float()  # back to activation coordinates
    unit = direction / direction.norm().clamp_min(1e-12)
    mean_diff = (positive - negative).mean(0)
    return unit * torch.dot(mean_diff, unit)


def directions_from_pairs(positive: Float[Tensor, "n layer d"],
                          negative: Float[Tensor, "n layer d"],
                          method: Method = "mean_diff") -> Float[Tensor, "layer d"]:
    """Per-layer direction from paired activations by ``method``."""
    if method == "mean_diff":
        return (positive - negative).mean(0)
    if method == "pca":
        return torch.stack([_pca_direction(positive[:, j] - negative[:, j])
                            for j in range(positive.shape[1])])
    if method == "probe":
        return torch.stack([_probe_direction(positive[:, j], negative[:, j])
                            for j in range(positive.shape[1])])
    raise ValueError(f"unknown method {method!r}; use mean_diff, pca or probe")


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
    method: Method = "mean_diff",
    dataset: str = "",
    batch_size: int = 16,
    padding_side: PaddingSide = "left",
    progress: bool = False,
) -> SteeringVector:
    """Contrastive activation addition: mean over pairs of (positive − negative)
    activations at ``read``, for every layer (or ``method="pca"``/``"probe"``).

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
            uncentred differences, signed and scaled to the mean difference's projection) or
            ``"probe"`` (logistic-regression direction separating the two sides).
        batch_size, padding_side: batching only; results equal one-at-a-time.

    Returns:
        A :class:`SteeringVector` with ``directions`` of shape ``[n_layers, d_model]`` and
        metadata recording the model, site, read position, method and dataset.

    Example:
        >>> pairs = [ContrastivePair(paper_prompt(q), "A", "B") for q in questions]
        >>> vector = caa_vector(model, pairs, dataset="myopia")
        >>> vector.directions.shape            # (n_layers, d_model)
    """
    layer_list = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    positive, negative = contrastive_activations(
        model, pairs, layers=layer_list, site=site, read=read, batch_size=batch_size,
        padding_side=padding_side, progress=progress)
    return SteeringVector(
        directions_from_pairs(positive, negative, method),
        tuple(layer_list),
        site,
        _meta(model, read_position=read, method=method, dataset=dataset, n_items=len(pairs)),
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
        raise ValueError("corpus_mean needs at least one text")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    sequences = [ids[:max_tokens] for ids in encode_many(model, texts)]
    spans = [(len(s) - 1, len(s)) if read == "last" else (0, len(s)) for s in sequences]
    acts = read_activations(model, sequences, layers=layers, site=site, spans=spans,
                            batch_size=batch_size, padding_side=padding_side,
                            progress=progress, desc=desc)
    return acts.mean(0)


def mean_difference_vector(
    model: Any,
    positive_texts: Sequence[str],
    negative_texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    site: str = "resid_post",
    read: Literal["last", "mean"] = "last",
    max_tokens: int = 512,
    batch_size: int = 8,
    dataset: str = "",
    progress: bool = False,
) -> SteeringVector:
    """``mean(positive) − mean(negative)`` of corpus activations, e.g. the paper's skill
    vector ``mean(text) − mean(code)`` (not normalised)."""
    layer_list = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    kwargs: dict[str, Any] = dict(layers=layer_list, site=site, read=read,
                                  max_tokens=max_tokens, batch_size=batch_size,
                                  progress=progress)
    positive = corpus_mean(model, positive_texts, desc="positive corpus", **kwargs)
    negative = corpus_mean(model, negative_texts, desc="negative corpus", **kwargs)
    return SteeringVector(
        positive - negative, tuple(layer_list), site,
        _meta(model, read_position=read, method="corpus_mean_diff", dataset=dataset,
              n_items=len(positive_texts) + len(negative_texts)),
    )
