"""Per-item steerability (Tan et al. 2024, arXiv 2407.12404) and a cheap layer profile.

An item's *propensity* is logit(matching) − logit(non-matching)
(:attr:`actsteer.evaluation.ABScores.logit_diff`); its *steerability* is the
least-squares slope of propensity against the steering multiplier over a symmetric
range that includes 0. Tan et al. find that a vector's mean effect hides a spread:
many items move the wrong way (*anti-steerable*, slope < 0), and steerability depends
on spurious features such as which letter the matching answer has. So a summary reports
the mean slope with a bootstrap interval over items, the anti-steerable share with its
interval, and both split by the matching answer's label.

:func:`layer_profile` scores one vector at every layer (or a list) for a few multipliers
in one call, on A/B items (propensity: the logit difference above) or on an expressed
behaviour (propensity: its word-set propensity after neutral prompts,
:func:`actsteer.likelihood.word_propensities`); with ``norms=`` the multipliers are
fractions of the median residual norm at each layer, and :meth:`LayerProfile.best_layer`
is the layer whose paired effect has the largest lower bound. Plans at layer ``L`` share the
unsteered forward below ``L`` (:func:`actsteer.sweep.sweep_logits`), and multiplier 0
is the unsteered model for every layer. A profile of all 30 layers of SmolLM2 with
multipliers ±8 runs 960 blocks per batch instead of 1,830 for one full forward per cell
(about half the time, measured 50 s vs 101 s on 4 sycophancy items, one CPU thread).

Example::

    items = prepare_items(model, dataset)                   # prompts, answer ids, letters
    profile = layer_profile(model, vector, items, multipliers=symmetric_multipliers(8.0))
    best = max(profile.layers, key=lambda L: profile.mean_slopes()[L])
    profile.summary(best).mean_slope          # Estimate(value, low, high, n)

    wedding = load_expressed("wedding")                     # or a behaviour file
    profile = layer_profile(model, vector, wedding, multipliers=(-0.15, 0, 0.15), norms=norms)
    profile.best_layer(), profile.effect(profile.best_layer(), 0.15)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.data.expressed import ExpressedBehaviour
from actsteer.effects import Effect, paired_effect
from actsteer.errors import InvalidValueError, MissingKeyError
from actsteer.evaluation import ABScores, PreparedItems, score_items
from actsteer.layer_choice import strongest_layer
from actsteer.likelihood import Propensities, word_propensities
from actsteer.norms import ResidualNorms
from actsteer.plan import SteeringPlan, empty_plan, single
from actsteer.stats import Estimate, bootstrap
from actsteer.vector import SteeringVector

if TYPE_CHECKING:
    from actsteer.executor import Executor

__all__ = [
    "LayerProfile",
    "SteerabilitySummary",
    "check_multipliers",
    "layer_profile",
    "propensity_slopes",
    "summarize_steerability",
    "symmetric_multipliers",
]


def symmetric_multipliers(largest: float, per_side: int = 2) -> tuple[float, ...]:
    """``per_side`` evenly spaced multipliers on each side of 0, and 0 itself.

    Example:
        >>> symmetric_multipliers(8.0)
        (-8.0, -4.0, 0.0, 4.0, 8.0)
    """
    if not largest > 0 or not math.isfinite(largest):
        raise InvalidValueError(f"largest must be a positive finite multiplier, got {largest!r}")
    if per_side < 1:
        raise InvalidValueError(f"per_side must be >= 1, got {per_side}")
    side = [largest * (k + 1) / per_side for k in range(per_side)]
    return (*(-m for m in reversed(side)), 0.0, *side)


def check_multipliers(multipliers: Sequence[float]) -> tuple[float, ...]:
    """The multipliers as floats; ``ValueError`` unless finite, distinct and at least two;
    a warning when the range is not symmetric around 0 or lacks 0 (the slope then mixes
    in any asymmetry of the response)."""
    values = tuple(float(m) for m in multipliers)
    if len(values) < 2 or len(set(values)) != len(values):
        raise InvalidValueError(f"a slope needs at least two distinct multipliers, got {values}")
    if not all(math.isfinite(m) for m in values):
        raise InvalidValueError(f"multipliers must be finite, got {values}")
    if 0.0 not in values or sorted(values) != sorted(-m for m in values):
        warnings.warn(f"multipliers {values} are not a symmetric range including 0 "
                      "(Tan et al. 2024 use one, e.g. symmetric_multipliers(8.0))",
                      stacklevel=2)
    return values


def propensity_slopes(propensity: Float[Tensor, "*batch multiplier item"],
                      multipliers: Sequence[float]) -> Float[Tensor, "*batch item"]:
    """Least-squares slope of each item's propensity against the multiplier (axis -2 of
    ``propensity`` runs over ``multipliers``), in float64.

    Example:
        >>> propensity_slopes(torch.tensor([[1.0], [1.5], [2.0]]), [-1, 0, 1])
        tensor([0.5000], dtype=torch.float64)
    """
    x = torch.tensor(check_multipliers(multipliers), dtype=torch.float64)
    y = torch.as_tensor(propensity).double()
    if y.dim() < 2 or y.shape[-2] != x.numel():
        raise InvalidValueError(f"propensity of shape {tuple(y.shape)} needs axis -2 of length "
                                f"{x.numel()} (one row per multiplier)")
    centred = x - x.mean()
    y_centred = y - y.mean(-2, keepdim=True)
    return (centred[:, None] * y_centred).sum(-2) / centred.pow(2).sum()


@dataclass(frozen=True)
class SteerabilitySummary:
    """Steerability of one vector at one layer over ``n`` items.

    ``mean_slope``: mean per-item slope (propensity per unit multiplier) with a bootstrap
    interval over items; ``anti_share``: share of items with slope < 0, with its interval;
    ``by_label``: the same per matching-answer label (e.g. ``"A"`` and ``"B"``), which
    exposes position bias (empty when no labels were given).
    """

    mean_slope: Estimate
    anti_share: Estimate
    by_label: Mapping[str, SteerabilitySummary] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.mean_slope.n

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "mean_slope": self.mean_slope.as_dict(),
                               "anti_share": self.anti_share.as_dict()}
        if self.by_label:
            out["by_label"] = {k: v.to_dict() for k, v in self.by_label.items()}
        return out


def summarize_steerability(
    slopes: Sequence[float] | Float[Tensor, " item"],
    labels: Sequence[str] | None = None,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> SteerabilitySummary:
    """Mean slope and anti-steerable share (slope < 0), each with a percentile-bootstrap
    interval over items, overall and per label in ``labels`` (one per item)."""
    s = torch.as_tensor(slopes, dtype=torch.float64).flatten()
    if s.numel() == 0:
        raise InvalidValueError("no items to summarise: slopes is empty")
    kwargs: dict[str, Any] = {"n_resamples": n_resamples, "level": level, "seed": seed}
    by_label: dict[str, SteerabilitySummary] = {}
    if labels is not None:
        if len(labels) != s.numel():
            raise InvalidValueError(
                f"{len(labels)} labels for {s.numel()} items; give one per item")
        for label in sorted(set(labels)):
            mask = torch.tensor([x == label for x in labels])
            by_label[label] = summarize_steerability(s[mask], **kwargs)
    return SteerabilitySummary(bootstrap(s, **kwargs), bootstrap((s < 0).double(), **kwargs),
                               by_label)


@dataclass(frozen=True, eq=False)
class LayerProfile:
    """Scores of one vector at each of ``layers`` for each of ``multipliers``: A/B scores
    (:class:`~actsteer.evaluation.ABScores`) or an expressed behaviour's word-set
    propensities (:class:`~actsteer.likelihood.Propensities`).

    ``scores`` rows (plans): row 0 is the unsteered model (it stands for multiplier 0 at
    every layer), then for each layer in order, each non-zero multiplier in order; use
    :meth:`plan_index` rather than counting, and :meth:`effect` for a paired effect
    against the unsteered model.
    """

    layers: tuple[int, ...]
    multipliers: tuple[float, ...]
    scores: ABScores | Propensities
    labels: tuple[str, ...] | None = None
    """The matching answer's label per item, for :attr:`SteerabilitySummary.by_label`."""
    fractions: bool = False
    """Whether the multipliers are fractions of the median residual norm (``norms=``)."""

    def plan_index(self, layer: int, multiplier: float) -> int:
        """Row of ``scores`` holding ``layer`` at ``multiplier``."""
        if layer not in self.layers or float(multiplier) not in self.multipliers:
            raise MissingKeyError(f"no plan for layer {layer} x{multiplier:g}; layers "
                                  f"{self.layers}, multipliers {self.multipliers}")
        if float(multiplier) == 0.0:
            return 0
        steered = [m for m in self.multipliers if m != 0.0]
        return 1 + self.layers.index(layer) * len(steered) + steered.index(float(multiplier))

    @property
    def propensity(self) -> Float[Tensor, "layer multiplier item"]:
        """logit(matching) − logit(non-matching) per layer, multiplier and item."""
        rows = [[self.plan_index(layer, m) for m in self.multipliers] for layer in self.layers]
        return self._values()[torch.tensor(rows)].double()

    def _values(self) -> Float[Tensor, "plan item"]:
        if isinstance(self.scores, Propensities):
            return self.scores.summed
        return self.scores.logit_diff

    def effect(self, layer: int, multiplier: float, *, n_resamples: int = 1000,
               seed: int = 0) -> Effect:
        """Paired effect on the propensity of ``layer`` at ``multiplier`` against the
        unsteered model, its verdict read in the direction of the multiplier's sign."""
        if float(multiplier) == 0.0:
            raise InvalidValueError("multiplier 0 is the unsteered model; pick a steered one")
        values = self._values().double()
        return paired_effect(values[self.plan_index(layer, multiplier)], values[0],
                             metric="propensity", direction=1 if multiplier > 0 else -1,
                             n_resamples=n_resamples, seed=seed)

    def best_layer(self, multiplier: float | None = None, **kwargs: Any) -> int:
        """The layer whose :meth:`effect` at ``multiplier`` (default: the largest) has the
        largest lower bound (:func:`actsteer.layer_choice.strongest_layer`)."""
        chosen = max(self.multipliers) if multiplier is None else float(multiplier)
        if not chosen > 0:
            raise InvalidValueError(f"best_layer needs a positive multiplier, got {chosen:g}")
        return strongest_layer({layer: self.effect(layer, chosen, **kwargs)
                                for layer in self.layers})

    @property
    def slopes(self) -> Float[Tensor, "layer item"]:
        """Per-item steerability at each layer."""
        return propensity_slopes(self.propensity, self.multipliers)

    def mean_slopes(self) -> dict[int, float]:
        """Mean steerability per layer (no interval: for ranking layers quickly)."""
        return {layer: float(row.mean()) for layer, row in zip(self.layers, self.slopes,
                                                               strict=True)}

    def summary(self, layer: int, *, n_resamples: int = 1000, level: float = 0.95,
                seed: int = 0) -> SteerabilitySummary:
        """:func:`summarize_steerability` of the items' slopes at ``layer``."""
        if layer not in self.layers:
            raise MissingKeyError(f"layer {layer} was not profiled; layers: {self.layers}")
        return summarize_steerability(self.slopes[self.layers.index(layer)], self.labels,
                                      n_resamples=n_resamples, level=level, seed=seed)

    def summaries(self, **kwargs: Any) -> dict[int, SteerabilitySummary]:
        """:meth:`summary` of every layer."""
        return {layer: self.summary(layer, **kwargs) for layer in self.layers}


def layer_profile(
    model: Any,
    vector: SteeringVector,
    items: PreparedItems | ExpressedBehaviour,
    *,
    multipliers: Sequence[float],
    layers: Sequence[int] | None = None,
    norms: ResidualNorms | None = None,
    prompts: Sequence[str] | None = None,
    batch_size: int = 16,
    progress: bool = False,
    executor: Executor | None = None,
) -> LayerProfile:
    """Score ``vector`` added at each of ``layers`` (default: all of the vector's) with
    each multiplier, plus the unsteered model, in one scoring call.

    Args:
        vector: its row for layer ``L`` is added at ``L`` (:func:`actsteer.single`).
        items: A/B items from :func:`actsteer.evaluation.prepare_items` (each item's
            matching label is kept for the position-bias split, ``summary(L).by_label``),
            or an expressed behaviour (:func:`actsteer.load_expressed`: built in or a
            behaviour file), scored by its word-set propensity after ``prompts``.
        multipliers: a symmetric range including 0, e.g. ``symmetric_multipliers(8.0)``;
            the scale depends on the vector's norm and the model, unless ``norms`` is given.
        norms: :func:`actsteer.residual_norms` at the profiled layers; the multipliers are
            then fractions of the median residual norm at each layer.
        prompts: expressed behaviours only: the prompts to measure after (default: the
            behaviour's held-out neutral prompts).
        executor: where the scoring runs (:mod:`actsteer.executor`; None: here). With
            several workers the layers are split into runs of neighbouring layers, one
            unit each.

    Returns:
        A :class:`LayerProfile`; ``profile.summary(L)`` gives the steerability at ``L``.
    """
    chosen = tuple(vector.layers if layers is None else (int(layer) for layer in layers))
    if not chosen:
        raise InvalidValueError("no layers to profile; pass layers the vector has")
    missing = [layer for layer in chosen if layer not in vector.layers]
    if missing:
        raise InvalidValueError(f"vector has no direction for layers {missing}; it has "
                                f"{vector.layers}")
    values = check_multipliers(multipliers)
    plans: list[SteeringPlan] = [empty_plan()]
    plans += [single(vector, layer, m, norms=norms) for layer in chosen for m in values
              if m != 0.0]
    if isinstance(items, ExpressedBehaviour):
        found = word_propensities(model, list(items.prompts if prompts is None else prompts),
                                  [items.words], plans, batch_size=batch_size,
                                  progress=progress, desc="layer profile", executor=executor)
        return LayerProfile(chosen, values, found[items.name], None, norms is not None)
    if prompts is not None:
        raise InvalidValueError("prompts= is for expressed behaviours; A/B items carry "
                                "their own prompts")
    scores = score_items(model, items, plans, batch_size=batch_size, progress=progress,
                         desc="layer profile", executor=executor)
    return LayerProfile(chosen, values, scores, tuple(items.matching_labels), norms is not None)
