"""Steerability figures (plotly): per-item distributions and steerability by layer.

Inputs are plain data, so the figures serve any experiment:

* :func:`steerability_distributions` — ``{behaviour: per-item slopes}``: one row per
  behaviour (a horizontal violin with every item shown), the anti-steerable share
  (slope < 0) annotated at the row's end;
* :func:`steerability_by_layer` — ``{behaviour: {layer: mean slope with interval}}``:
  one line per behaviour with interval error bars.

Example::

    fig = steerability_distributions({"sycophancy": profile.slopes[0]})
    save_html(fig, "figures/steerability.html")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import torch
from torch import Tensor

from actsteer.errors import InvalidValueError
from actsteer.stats import Estimate

__all__ = ["steerability_by_layer", "steerability_distributions"]

EstimateLike = Estimate | Mapping[str, Any]
"""An :class:`Estimate` or its ``as_dict()`` (``value``, ``low``, ``high``)."""


def _floats(values: Sequence[float] | Tensor) -> list[float]:
    return [float(v) for v in torch.as_tensor(values, dtype=torch.float64).flatten()]


def steerability_distributions(
    slopes: Mapping[str, Sequence[float] | Tensor],
    *,
    title: str = "Per-item steerability (slope of propensity vs multiplier)",
) -> go.Figure:
    """One horizontal violin per behaviour of its items' slopes (all points shown), a
    zero line, and the anti-steerable share annotated beside each row."""
    if not slopes:
        raise InvalidValueError("no behaviours to plot: slopes is empty")
    fig = go.Figure()
    for behaviour, values in slopes.items():
        xs = _floats(values)
        if not xs:
            raise InvalidValueError(f"behaviour {behaviour!r} has no slopes to plot")
        anti = sum(x < 0 for x in xs) / len(xs)
        fig.add_trace(go.Violin(x=xs, y=[behaviour] * len(xs), name=behaviour,
                                orientation="h", points="all", side="positive",
                                meanline_visible=True, showlegend=False))
        fig.add_annotation(x=1.0, xref="paper", xanchor="left", y=behaviour, yref="y",
                           text=f"anti-steerable {anti:.0%} of {len(xs)}",
                           showarrow=False, name=f"anti:{behaviour}")
    fig.add_vline(x=0.0, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, xaxis_title="steerability (Δ logit diff per unit multiplier)",
                      margin={"r": 170}, template="plotly_white",
                      height=160 + 110 * len(slopes))
    return fig


def _interval(found: EstimateLike) -> tuple[float, float, float]:
    if isinstance(found, Estimate):
        return found.value, found.low, found.high
    try:
        return float(found["value"]), float(found["low"]), float(found["high"])
    except KeyError as error:
        raise InvalidValueError(f"an estimate needs value, low and high; {dict(found)!r} lacks "
                                f"{error}") from None


def steerability_by_layer(
    by_behaviour: Mapping[str, Mapping[int, EstimateLike]],
    *,
    title: str = "Mean steerability by layer (95% bootstrap interval over items)",
) -> go.Figure:
    """One line per behaviour: the mean slope at each layer with its interval as
    asymmetric error bars (layers sorted)."""
    if not by_behaviour:
        raise InvalidValueError("no behaviours to plot: by_behaviour is empty")
    fig = go.Figure()
    for behaviour, by_layer in by_behaviour.items():
        layers = sorted(by_layer)
        if not layers:
            raise InvalidValueError(f"behaviour {behaviour!r} has no layers to plot")
        points = [_interval(by_layer[layer]) for layer in layers]
        values = [p[0] for p in points]
        fig.add_trace(go.Scatter(
            x=layers, y=values, mode="lines+markers", name=behaviour,
            error_y={"type": "data", "symmetric": False,
                     "array": [high - value for value, _, high in points],
                     "arrayminus": [value - low for value, low, _ in points]},
            customdata=[[low, high] for _, low, high in points],
            hovertemplate="layer %{x}: %{y:.3f} [%{customdata[0]:.3f}, "
                          "%{customdata[1]:.3f}]<extra>" + behaviour + "</extra>"))
    fig.add_hline(y=0.0, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="mean steerability",
                      template="plotly_white")
    return fig
