"""Aggregators: how paired activations become one direction per layer.

An aggregator is any callable ``f(positive, negative) -> directions`` taking the two
sides' activations ``[pair, layer, d_model]`` (row ``i`` of each is the same prompt) and
returning ``[layer, d_model]``. Three are built in, by name:

* ``"mean_diff"`` — mean over pairs of (positive − negative): CAA;
* ``"pca"`` — first singular direction of the uncentred differences, signed and scaled to
  the mean difference's projection on it;
* ``"probe"`` — logistic-regression direction separating the two sides, scaled likewise
  (the fit itself is :func:`logistic_fit`, which :mod:`actsteer.surgery` also uses).

Pass your own to :func:`actsteer.caa_vector` (its ``__name__`` is recorded as the
vector's ``meta.method``); :func:`per_layer` lifts a one-layer ``[pair, d] -> [d]``
function to all layers.

Example::

    def median_diff(positive, negative):
        return (positive - negative).median(0).values
    vector = caa_vector(model, pairs, method=median_diff)   # meta.method == "median_diff"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from actsteer.errors import InvalidTypeError, InvalidValueError

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "Method",
    "logistic_fit",
    "mean_diff",
    "pca",
    "per_layer",
    "probe",
    "resolve_aggregator",
]

Aggregator = Callable[[Tensor, Tensor], Tensor]
"""``f(positive [pair, layer, d], negative [pair, layer, d]) -> directions [layer, d]``."""

Method = Literal["mean_diff", "pca", "probe"]
"""Names of the built-in aggregators."""


def mean_diff(positive: Float[Tensor, "pair layer d"],
              negative: Float[Tensor, "pair layer d"]) -> Float[Tensor, "layer d"]:
    """Mean over pairs of ``positive − negative`` (contrastive activation addition)."""
    return (positive - negative).mean(0)


def per_layer(direction: Callable[[Tensor, Tensor], Tensor], name: str | None = None
              ) -> Aggregator:
    """Lift ``direction(positive [pair, d], negative [pair, d]) -> [d]`` to an aggregator
    over ``[pair, layer, d]`` that applies it to each layer in turn, named ``name``
    (default: ``direction``'s own name)."""

    def aggregate(positive: Tensor, negative: Tensor) -> Tensor:
        return torch.stack([direction(positive[:, j], negative[:, j])
                            for j in range(positive.shape[1])])

    aggregate.__name__ = name or str(getattr(direction, "__name__", "per_layer"))
    aggregate.__doc__ = direction.__doc__
    return aggregate


def _pca_direction(positive: Float[Tensor, "pair d"],
                   negative: Float[Tensor, "pair d"]) -> Float[Tensor, " d"]:
    """First principal direction of the paired differences, signed and scaled to agree
    with the mean difference (its projection on the direction).

    The differences are not centred: centring would remove the consistent shift that the
    pairs share, which is the behaviour direction, leaving only item-to-item noise.
    """
    diffs = positive - negative
    mean = diffs.mean(0)
    if diffs.shape[0] < 2:
        return mean
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    component = vh[0]
    projection = torch.dot(mean, component)
    if projection < 0:
        component, projection = -component, -projection
    return component * projection


def logistic_fit(positive: Float[Tensor, "n d"], negative: Float[Tensor, "m d"], *,
                 l2: float = 1e-2, steps: int = 100
                 ) -> tuple[Float[Tensor, " d"], Float[Tensor, ""]]:
    """L2-regularised logistic regression of ``positive`` (label 1) against ``negative``
    (label 0): ``(weight, bias)`` in activation coordinates, float64, so that
    ``x @ weight + bias`` is the logit of "positive" for an activation ``x``.

    The two sides may differ in size. Features are standardised for the fit (L-BFGS,
    ``steps`` iterations, penalty ``l2 * |w|^2`` on the standardised weight) and the result
    mapped back, so the weight is a direction in the activations' own space.
    """
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
    raw = weight.detach() / spread  # activation coordinates
    return raw, bias.detach() - torch.dot(centre, raw)


def _probe_direction(positive: Float[Tensor, "pair d"], negative: Float[Tensor, "pair d"],
                     *, l2: float = 1e-2, steps: int = 100) -> Float[Tensor, " d"]:
    """Logistic-regression weight separating positive from negative activations, scaled
    so that its projection of the mean difference equals the mean difference's."""
    weight, _ = logistic_fit(positive, negative, l2=l2, steps=steps)
    direction = weight.to(positive.dtype)
    unit = direction / direction.norm().clamp_min(1e-12)
    mean_diff = (positive - negative).mean(0)
    return unit * torch.dot(mean_diff, unit)


pca = per_layer(_pca_direction, "pca")
probe = per_layer(_probe_direction, "probe")

AGGREGATORS: dict[str, Aggregator] = {"mean_diff": mean_diff, "pca": pca, "probe": probe}
"""The built-in aggregators by name (the names ``caa_vector(method=...)`` accepts)."""


def resolve_aggregator(method: str | Aggregator) -> tuple[str, Aggregator]:
    """``(name, aggregator)`` for a built-in name or a callable (named by its
    ``__name__``, or ``"custom"`` when it has none, e.g. a ``functools.partial``)."""
    if isinstance(method, str):
        if method not in AGGREGATORS:
            raise InvalidValueError(f"unknown method {method!r}; use one of "
                                    f"{', '.join(AGGREGATORS)} or pass a callable "
                                    "f(positive, negative) -> [layer, d_model]")
        return method, AGGREGATORS[method]
    if not callable(method):
        raise InvalidTypeError(f"method must be a name ({', '.join(AGGREGATORS)}) or a callable "
                               f"f(positive, negative) -> [layer, d_model], got {method!r}")
    name = getattr(method, "__name__", "") or "custom"
    return ("custom" if name == "<lambda>" else name), method
