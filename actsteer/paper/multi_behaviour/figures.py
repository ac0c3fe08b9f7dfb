"""Figures of the multi-behaviour reproduction (HTML beside a shared plotly.min.js).

* ``effects.html`` — per behaviour, the paired ΔP(matching) (test split, 95% interval) of
  its own vector subtracted/added, the combined vector subtracted/added and simultaneous
  steering at the reported scale;
* ``simultaneous.html`` — ΔP(matching) against the global scale per behaviour (lines with
  interval bars), and below it, on its own axis, the share of faulty answers;
* ``steerability.html`` — per-item steerability distributions, one row per behaviour, at
  its most steerable profiled layer, anti-steerable share annotated;
* ``steerability_by_layer.html`` — mean per-item steerability with its interval at every
  profiled layer, one line per behaviour;
* ``alignment_tax.html`` — next-token top-1 accuracy against the global scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from actsteer.figures import save_html
from actsteer.figures.steerability import steerability_by_layer, steerability_distributions
from actsteer.paper.multi_behaviour.analysis import (
    cell,
    cells_of,
    reported_plans,
    steerability_rows,
)
from actsteer.paper.multi_behaviour.keys import (
    DefaultKey,
    SimultaneousKey,
    SteerabilityKey,
    TaxKey,
)

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def effects(results: Mapping[str, Any], metric: str = "p_matching") -> go.Figure:
    """Grouped bars: behaviour × reported plan, paired Δ with its 95% interval."""
    behaviours = list(results["behaviours"])
    rows = {b: reported_plans(results, b) for b in behaviours}
    plans = [plan for plan, _, _ in rows[behaviours[0]]] if behaviours else []
    fig = go.Figure()
    for colour, index in zip(_COLOURS * 2, range(len(plans)), strict=False):
        values, plus, minus, notes = [], [], [], []
        for behaviour in behaviours:
            _, setting, found = rows[behaviour][index]
            if isinstance(found, Mapping):
                effect = found["effects"][metric]
                values.append(effect["value"])
                plus.append(effect["high"] - effect["value"])
                minus.append(effect["value"] - effect["low"])
                notes.append(f"{setting}: {effect['verdict']}")
            else:
                values.append(None)
                plus.append(0.0)
                minus.append(0.0)
                notes.append(str(found or "not run"))
        fig.add_bar(name=plans[index], x=behaviours, y=values, marker_color=colour,
                    customdata=notes, hovertemplate="%{x}: Δ %{y:+.3f}<br>%{customdata}",
                    error_y={"type": "data", "array": plus, "arrayminus": minus})
    fig.add_hline(y=0, line={"color": "black", "width": 1})
    fig.update_layout(barmode="group", template="plotly_white",
                      title=f"Paired effect on {metric.replace('_', ' ')} (test split, 95% CI); "
                            "a missing bar: no setting moved the behaviour on the grid split",
                      yaxis_title=f"Δ {metric.replace('_', ' ')} vs unsteered")
    return fig


def simultaneous_curves(results: Mapping[str, Any], metric: str = "p_matching") -> go.Figure:
    """ΔP(matching) against the global scale (top) and the faulty share (bottom)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3],
                        vertical_spacing=0.06)
    for colour, behaviour in zip(_COLOURS * 3, results["behaviours"], strict=False):
        points = sorted((key.scale, found) for key, found in cells_of(results, SimultaneousKey)
                        if key.behaviour == behaviour and key.split == "test")
        base = cell(results, DefaultKey(behaviour, "test"))
        if not points or base is None:
            continue
        scales = [0.0, *(s for s, _ in points)]
        deltas = [0.0, *(c["effects"][metric]["value"] for _, c in points)]
        plus = [0.0, *(c["effects"][metric]["high"] - c["effects"][metric]["value"]
                       for _, c in points)]
        minus = [0.0, *(c["effects"][metric]["value"] - c["effects"][metric]["low"]
                        for _, c in points)]
        order = sorted(range(len(scales)), key=scales.__getitem__)
        fig.add_scatter(x=[scales[i] for i in order], y=[deltas[i] for i in order],
                        error_y={"type": "data", "array": [plus[i] for i in order],
                                 "arrayminus": [minus[i] for i in order]},
                        mode="lines+markers", line={"color": colour}, name=behaviour,
                        legendgroup=behaviour, row=1, col=1)
        faulty = [base["faulty_rate"]["value"], *(c["faulty_rate"]["value"] for _, c in points)]
        fig.add_scatter(x=[scales[i] for i in order], y=[faulty[i] for i in order],
                        mode="lines", line={"color": colour, "dash": "dot"},
                        name=f"{behaviour} faulty", legendgroup=behaviour, showlegend=False,
                        row=2, col=1)
    fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=1)
    fig.update_yaxes(title_text=f"Δ {metric.replace('_', ' ')}", row=1, col=1)
    fig.update_yaxes(title_text="faulty share", range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="global scale", row=2, col=1)
    fig.update_layout(template="plotly_white",
                      title="Simultaneous steering: each behaviour at its own layer, one scale")
    return fig


def alignment_tax(results: Mapping[str, Any]) -> go.Figure:
    """Top-1 next-token accuracy (with interval) against the simultaneous scale."""
    points = sorted((key.scale, found["top1"]) for key, found in cells_of(results, TaxKey))
    fig = go.Figure()
    if points:
        fig.add_scatter(x=[s for s, _ in points], y=[e["value"] for _, e in points],
                        mode="lines+markers", name="top-1 accuracy",
                        error_y={"type": "data", "array": [e["high"] - e["value"]
                                                           for _, e in points],
                                 "arrayminus": [e["value"] - e["low"] for _, e in points]})
    fig.update_layout(title="Alignment tax of simultaneous steering", template="plotly_white",
                      xaxis_title="global scale", yaxis_title="next-token top-1 accuracy")
    return fig


def steerability_figures(results: Mapping[str, Any]) -> dict[str, go.Figure]:
    """The two steerability figures (empty when no profile was run)."""
    rows = steerability_rows(results)
    if not rows:
        return {}
    by_layer: dict[str, dict[int, Any]] = {}
    for row in rows:
        by_layer.setdefault(row["behaviour"], {})[row["layer"]] = row["summary"]["mean_slope"]
    slopes = {}
    for behaviour in by_layer:
        own = [r for r in rows if r["behaviour"] == behaviour]
        best = max(own, key=lambda r: r["summary"]["mean_slope"]["low"])
        found = cell(results, SteerabilityKey(behaviour, best["layer"]))
        slopes[f"{behaviour} (L{best['layer']})"] = found["slopes"]
    return {"steerability": steerability_distributions(slopes),
            "steerability_by_layer": steerability_by_layer(by_layer)}


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write every figure as HTML under ``out_dir`` (see :func:`save_html`)."""
    folder = Path(out_dir)
    figures = {"effects": effects(results), "simultaneous": simultaneous_curves(results),
               "alignment_tax": alignment_tax(results), **steerability_figures(results)}
    return [save_html(fig, folder / f"{name}.html") for name, fig in figures.items()]
