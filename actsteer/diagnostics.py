"""Vector diagnostics from the paired activations alone (no steering needed).

Braun et al. 2025 ("Understanding (Un)Reliability of Steering Vectors", arXiv 2505.22637)
find that steering is more reliable where (1) the per-pair activation differences point
the same way and (2) the vector separates the two sides' activations. Both are cheap
once the activations are read, so :func:`actsteer.caa_vector` measures them per layer:

* ``consistency`` — mean cosine similarity over all pairs ``i != j`` of the differences
  ``positive_i − negative_i`` (1: every pair moves the same way; ~0: unrelated);
* ``separation`` — on pairs *not* used to build the direction (k-fold cross-fitting: each
  pair is held out once, the direction comes from the other folds with the same
  aggregator), the share of pairs whose positive side projects higher than its negative
  (ties count half; 0.5 is chance);
* ``effect_size`` — the standardised mean difference (Cohen's d, pooled sd) of those
  held-out projections, positive minus negative.

Example::

    positive, negative = contrastive_activations(model, pairs)
    found = vector_diagnostics(positive, negative, layers=range(model.cfg.n_layers))
    found[14].consistency, found[14].separation
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.aggregators import Aggregator, mean_diff
from actsteer.errors import InvalidValueError

__all__ = [
    "LayerDiagnostics",
    "diagnostics_from_meta",
    "diagnostics_table",
    "diagnostics_to_meta",
    "difference_consistency",
    "fold_of",
    "held_out_projections",
    "vector_diagnostics",
]


@dataclass(frozen=True)
class LayerDiagnostics:
    """Diagnostics of one layer's direction; ``None`` where undefined (fewer than 2 pairs,
    or no spread in the projections)."""

    layer: int
    n_pairs: int
    folds: int
    """Cross-fitting folds used for ``separation`` and ``effect_size`` (0: not measured)."""
    consistency: float | None
    """Mean pairwise cosine similarity of the per-pair differences."""
    separation: float | None
    """Share of held-out pairs whose positive side projects higher (ties count half)."""
    effect_size: float | None
    """Standardised mean difference of held-out projections (positive − negative)."""

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerDiagnostics:
        missing = {"layer", "n_pairs", "folds", "consistency", "separation",
                   "effect_size"} - set(data)
        if missing:
            raise InvalidValueError(f"diagnostics entry lacks {sorted(missing)}: {dict(data)!r}")
        return cls(int(data["layer"]), int(data["n_pairs"]), int(data["folds"]),
                   *(None if data[k] is None else float(data[k])
                     for k in ("consistency", "separation", "effect_size")))


def _check_pairs(positive: Tensor, negative: Tensor) -> None:
    if positive.shape != negative.shape or positive.dim() != 3:
        raise InvalidValueError(f"positive and negative must share a [pair, layer, d_model] shape, "
                                f"got {tuple(positive.shape)} and {tuple(negative.shape)}")
    if positive.shape[0] == 0:
        raise InvalidValueError("need at least one pair")


def difference_consistency(positive: Float[Tensor, "pair layer d"],
                           negative: Float[Tensor, "pair layer d"]) -> Float[Tensor, " layer"]:
    """Per layer, the mean over ordered pairs ``i != j`` of ``cos(diff_i, diff_j)`` with
    ``diff = positive − negative`` (a zero difference counts as cosine 0). NaN for one pair.

    Computed in O(pairs) from ``|sum_i u_i|² = sum_i |u_i|² + sum_{i!=j} u_i·u_j`` of the
    unit differences ``u_i``.
    """
    _check_pairs(positive, negative)
    diffs = (positive - negative).double()
    n = diffs.shape[0]
    if n < 2:
        return torch.full((diffs.shape[1],), float("nan"), dtype=torch.float64)
    norms = diffs.norm(dim=-1, keepdim=True)
    units = torch.where(norms > 0, diffs / norms.clamp_min(1e-300), torch.zeros_like(diffs))
    total = units.sum(0).pow(2).sum(-1)
    self_terms = units.pow(2).sum(-1).sum(0)
    return (total - self_terms) / (n * (n - 1))


def fold_of(n: int, folds: int, seed: int = 0,
            strata: Sequence[Hashable] | None = None) -> Tensor:
    """Fold of each of ``n`` pairs: a ``seed``-ed shuffle dealt round-robin into ``folds``
    folds, within each stratum when ``strata`` (one label per pair) are given, so every
    fold holds each stratum in the same proportion (to one pair)."""
    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty(n, dtype=torch.long)
    if strata is None:
        order = torch.randperm(n, generator=generator)
        fold[order] = torch.arange(n) % folds
        return fold
    if len(strata) != n:
        raise InvalidValueError(f"{len(strata)} strata labels for {n} pairs; give one per pair")
    dealt = 0
    for label in sorted(set(strata), key=str):
        members = torch.tensor([i for i, s in enumerate(strata) if s == label])
        members = members[torch.randperm(len(members), generator=generator)]
        # continue the deal where the previous stratum stopped, so fold sizes stay even
        fold[members] = (dealt + torch.arange(len(members))) % folds
        dealt += len(members)
    return fold


def held_out_projections(
    positive: Float[Tensor, "pair layer d"],
    negative: Float[Tensor, "pair layer d"],
    *,
    folds: int = 5,
    aggregator: Aggregator = mean_diff,
    seed: int = 0,
    strata: Sequence[Hashable] | None = None,
) -> tuple[Float[Tensor, "pair layer"], Float[Tensor, "pair layer"]]:
    """Projections of each pair's two sides on the unit direction built (by
    ``aggregator``) from the *other* folds: k-fold cross-fitting, pairs assigned to
    ``min(folds, pairs)`` folds by a ``seed``-ed shuffle (stratified by ``strata``, see
    :func:`fold_of`). Needs at least 2 pairs."""
    _check_pairs(positive, negative)
    n = positive.shape[0]
    if folds < 2:
        raise InvalidValueError(f"folds must be >= 2 to hold pairs out, got {folds}")
    if n < 2:
        raise InvalidValueError(f"cross-fitting needs at least 2 pairs, got {n}")
    k = min(folds, n)
    fold = fold_of(n, k, seed, strata)
    pos_proj = torch.zeros(n, positive.shape[1], dtype=torch.float64)
    neg_proj = torch.zeros_like(pos_proj)
    for f in range(k):
        held, train = fold == f, fold != f
        directions = aggregator(positive[train], negative[train]).double()
        if directions.shape != positive.shape[1:]:
            raise InvalidValueError(f"the aggregator returned shape {tuple(directions.shape)}; "
                                    f"expected [layer, d_model] = {tuple(positive.shape[1:])}")
        units = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        pos_proj[held] = torch.einsum("pld,ld->pl", positive[held].double(), units)
        neg_proj[held] = torch.einsum("pld,ld->pl", negative[held].double(), units)
    return pos_proj, neg_proj


def _effect_size(pos: Tensor, neg: Tensor) -> float | None:
    pooled = math.sqrt((float(pos.var()) + float(neg.var())) / 2)
    if not pooled > 0:
        return None
    return (float(pos.mean()) - float(neg.mean())) / pooled


def vector_diagnostics(
    positive: Float[Tensor, "pair layer d"],
    negative: Float[Tensor, "pair layer d"],
    layers: Sequence[int],
    *,
    folds: int = 5,
    aggregator: Aggregator = mean_diff,
    seed: int = 0,
    strata: Sequence[Hashable] | None = None,
) -> dict[int, LayerDiagnostics]:
    """:class:`LayerDiagnostics` for each layer; ``layers[j]`` names column ``j`` of the
    activations. Separation and effect size use ``aggregator`` (the vector's own) under
    ``folds``-fold cross-fitting; with one pair only ``n_pairs`` is filled in.

    Pass ``strata`` (e.g. each pair's matching answer letter) when the pairs carry a
    component that is balanced overall but not within random folds: on A/B items the
    answer letter's component is far larger than the behaviour's, so a held-out fold
    with more A-matching pairs leaves a training direction tilted towards B, which
    projects that fold the wrong way and biases separation below 0.5 (leave-one-out on a
    balanced set gives 0). Stratified folds keep every fold balanced."""
    _check_pairs(positive, negative)
    layer_list = [int(layer) for layer in layers]
    if len(layer_list) != positive.shape[1]:
        raise InvalidValueError(
            f"{len(layer_list)} layer numbers for {positive.shape[1]} activation "
            "columns; give one per column")
    n = int(positive.shape[0])
    consistency = difference_consistency(positive, negative)
    if n >= 2:
        pos_proj, neg_proj = held_out_projections(positive, negative, folds=folds,
                                                  aggregator=aggregator, seed=seed,
                                                  strata=strata)
        margin = pos_proj - neg_proj
        share = ((margin > 0).double() + 0.5 * (margin == 0).double()).mean(0)
    out: dict[int, LayerDiagnostics] = {}
    for j, layer in enumerate(layer_list):
        if n < 2:
            out[layer] = LayerDiagnostics(layer, n, 0, None, None, None)
            continue
        out[layer] = LayerDiagnostics(
            layer, n, min(folds, n), float(consistency[j]), float(share[j]),
            _effect_size(pos_proj[:, j], neg_proj[:, j]))
    return out


def diagnostics_to_meta(found: Mapping[int, LayerDiagnostics]) -> dict[str, dict[str, Any]]:
    """JSON-able form for :attr:`actsteer.vector.VectorMeta.diagnostics`: layer number as
    a string → :meth:`LayerDiagnostics.to_dict`."""
    return {str(layer): diag.to_dict() for layer, diag in sorted(found.items())}


def diagnostics_from_meta(stored: Mapping[str, Any]) -> dict[int, LayerDiagnostics]:
    """Inverse of :func:`diagnostics_to_meta` (e.g. ``vector.meta.diagnostics`` of a
    loaded vector); empty when nothing was measured."""
    return {int(layer): LayerDiagnostics.from_dict(entry) for layer, entry in stored.items()}


def diagnostics_table(vector: Any) -> str:
    """Per layer: the vector's norm and the diagnostics stored at extraction."""
    diagnostics: Mapping[str, Mapping[str, Any]] = vector.meta.diagnostics or {}
    norms = vector.norms()
    counts = {"layer", "n_pairs", "folds"}  # bookkeeping, not diagnostics
    metrics = sorted({m for row in diagnostics.values() for m in row
                      if m not in counts and isinstance(row.get(m), (int, float))})
    header = f"{'layer':>5} {'norm':>8}" + "".join(f" {m:>16}" for m in metrics)
    pairs = sorted({int(row["n_pairs"]) for row in diagnostics.values()
                    if row.get("n_pairs") is not None})
    folds = sorted({int(row["folds"]) for row in diagnostics.values()
                    if row.get("folds") is not None})
    lines = [f"{', '.join(map(str, pairs))} pairs, {', '.join(map(str, folds))}"
             "-fold held-out separation"] if pairs and folds else []
    lines += [header, "-" * len(header)]
    for layer in vector.layers:
        row = diagnostics.get(str(layer), {})
        lines.append(f"{layer:>5} {norms[layer]:>8.2f}" + "".join(
            f" {row[m]:>16.3f}" if isinstance(row.get(m), (int, float)) else f" {'-':>16}"
            for m in metrics))
    if not metrics:
        lines.append("(no diagnostics stored in this vector)")
    return "\n".join(lines)
