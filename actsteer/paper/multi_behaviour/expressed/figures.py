"""Figures of the expressed-behaviour comparison.

* ``comparison.html`` — per behaviour, the paired Δ of its own propensity (95% interval)
  alone at its own layer, and under simultaneous steering and each combined vector;
* ``cross_talk.html`` — what each behaviour's vector alone does to every behaviour's
  propensity (a heatmap of paired Δ);
* ``layers.html`` — each behaviour's own effect at every candidate layer (grid prompts),
  the chosen layer marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from actsteer.figures import save_html
from actsteer.paper.multi_behaviour.expressed import analysis
from actsteer.paper.multi_behaviour.expressed.report import PLAN_TITLES

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def comparison(results: Mapping[str, Any]) -> go.Figure:
    """Grouped bars: behaviour × plan, paired Δ of the behaviour's own propensity."""
    behaviours = list(results["behaviours"])
    plans = [("individual", "alone (own layer)"),
             *((p, PLAN_TITLES[p]) for p in analysis.MULTI_PLANS)]
    fig = go.Figure()
    for colour, (plan, title) in zip(_COLOURS, plans, strict=False):
        values, plus, minus = [], [], []
        for behaviour in behaviours:
            name = f"individual:{behaviour}" if plan == "individual" else plan
            found = analysis.effect(results, name, behaviour)
            values.append(None if found is None else found.value)
            plus.append(0.0 if found is None else found.high - found.value)
            minus.append(0.0 if found is None else found.value - found.low)
        fig.add_bar(name=title, x=behaviours, y=values, marker_color=colour,
                    error_y={"type": "data", "array": plus, "arrayminus": minus},
                    hovertemplate="%{x}: Δ %{y:+.2f} nats")
    fig.add_hline(y=0, line={"color": "black", "width": 1})
    fig.update_layout(barmode="group", template="plotly_white",
                      title="Each behaviour steered alone and together (paired Δ, 95% CI)",
                      yaxis_title="Δ own propensity vs unsteered (nats)")
    return fig


def cross_talk(results: Mapping[str, Any]) -> go.Figure:
    """Heatmap: rows = the vector added alone, columns = the propensity measured."""
    names = list(results["behaviours"])
    matrix = analysis.cross_talk(results)
    z = [[None if matrix[s][m] is None else matrix[s][m].value for m in names]  # type: ignore[union-attr]
         for s in names]
    text = [["-" if matrix[s][m] is None else format(matrix[s][m], ".2f") for m in names]
            for s in names]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, text=text, texttemplate="%{text}",
                               colorscale="RdBu", zmid=0, colorbar={"title": "Δ nats"}))
    fig.update_layout(template="plotly_white", title="Cross-talk: one vector alone, every "
                      "behaviour measured", xaxis_title="measured", yaxis_title="steered")
    return fig


def layers(results: Mapping[str, Any]) -> go.Figure:
    """Own effect per candidate layer on the grid prompts, the chosen layer marked."""
    fig = go.Figure()
    chosen = results.get("own_layers") or {}
    for colour, behaviour in zip(_COLOURS, results["behaviours"], strict=False):
        entry = chosen.get(behaviour)
        if not entry:
            continue
        by_layer = sorted((int(k), v) for k, v in entry["by_layer"].items())
        fig.add_scatter(x=[k for k, _ in by_layer], y=[v["value"] for _, v in by_layer],
                        error_y={"type": "data", "array": [v["high"] - v["value"]
                                                           for _, v in by_layer],
                                 "arrayminus": [v["value"] - v["low"] for _, v in by_layer]},
                        mode="lines+markers", name=behaviour, line={"color": colour})
        fig.add_scatter(x=[entry["layer"]], y=[entry["effect"]["value"]], mode="markers",
                        marker={"symbol": "star", "size": 16, "color": colour},
                        showlegend=False, hoverinfo="skip")
    fig.update_layout(template="plotly_white", xaxis_title="layer",
                      yaxis_title="Δ own propensity (grid prompts, nats)",
                      title="Where each behaviour steers (star: its chosen layer)")
    return fig


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write every figure as HTML under ``out_dir``."""
    folder = Path(out_dir)
    figures = {"comparison": comparison(results), "cross_talk": cross_talk(results),
               "layers": layers(results)}
    return [save_html(fig, folder / f"{name}.html") for name, fig in figures.items()]
