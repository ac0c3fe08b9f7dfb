"""Figures of the multi-behaviour experiment (HTML beside a shared plotly.min.js).

* ``individual_vs_combined.html`` — per behaviour: matching rate unsteered, with its own
  vector subtracted/added, and with the combined vector subtracted/added;
* ``simultaneous.html`` — matching rate (and P(matching)) against the global scale per
  behaviour, the faulty share shaded;
* ``alignment_tax.html`` — next-token top-1 accuracy against the global scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from actsteer.figures import save_html

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _errors(cells: list[Mapping[str, Any] | None], metric: str
            ) -> tuple[list[float | None], list[float], list[float]]:
    values: list[float | None] = []
    plus: list[float] = []
    minus: list[float] = []
    for cell in cells:
        if cell is None:
            values.append(None)
            plus.append(0.0)
            minus.append(0.0)
            continue
        est = cell[metric]
        values.append(est["value"])
        plus.append(est["high"] - est["value"])
        minus.append(est["value"] - est["low"])
    return values, plus, minus


def combined_variant(results: Mapping[str, Any]) -> str:
    """The combined variant a report shows: ``weighted_mean`` (the paper's) when run."""
    variants = list(results["config"].get("combined_variants") or ["weighted_mean"])
    return "weighted_mean" if "weighted_mean" in variants else variants[0]


def individual_vs_combined(results: Mapping[str, Any],
                           metric: str = "matching_rate") -> go.Figure:
    """Grouped bars: behaviour × {subtract, default, add} for individual and combined."""
    cells = results["cells"]
    behaviours = list(results["behaviours"])
    variant = combined_variant(results)
    series = [
        ("individual subtract", lambda b: cells.get(f"individual/{b}/subtract")),
        ("default", lambda b: cells.get(f"default/{b}/test")),
        ("individual add", lambda b: cells.get(f"individual/{b}/add")),
        (f"combined ({variant}) subtract", lambda b: cells.get(f"combined/{variant}/subtract/{b}")),
        (f"combined ({variant}) add", lambda b: cells.get(f"combined/{variant}/add/{b}")),
    ]
    fig = go.Figure()
    for colour, (name, get) in zip(_COLOURS, series, strict=False):
        values, plus, minus = _errors([get(b) for b in behaviours], metric)
        fig.add_bar(name=name, x=behaviours, y=values, marker_color=colour,
                    error_y={"type": "data", "array": plus, "arrayminus": minus})
    fig.update_layout(barmode="group", title=f"Individual vs combined steering ({metric})",
                      yaxis_title=metric.replace("_", " "), yaxis_range=[0, 1])
    return fig


def _by_scale(results: Mapping[str, Any], behaviour: str) -> list[tuple[float, Mapping[str, Any]]]:
    cells = results["cells"]
    points = [(0.0, cells[f"default/{behaviour}/test"])] if (
        f"default/{behaviour}/test" in cells) else []
    for key, cell in cells.items():
        parts = key.split("/")
        if parts[0] == "simultaneous" and parts[2] == behaviour:
            points.append((float(parts[1]), cell))
    return sorted(points, key=lambda p: p[0])


def simultaneous_curves(results: Mapping[str, Any]) -> go.Figure:
    """Matching rate (solid) and P(matching) (dotted) against the global scale; faulty
    share shaded below."""
    fig = go.Figure()
    for colour, behaviour in zip(_COLOURS * 3, results["behaviours"], strict=False):
        points = _by_scale(results, behaviour)
        if not points:
            continue
        scales = [s for s, _ in points]
        fig.add_scatter(x=scales, y=[c["faulty_rate"]["value"] for _, c in points],
                        fill="tozeroy", mode="none", opacity=0.2, fillcolor=colour,
                        name=f"{behaviour} faulty", legendgroup=behaviour)
        fig.add_scatter(x=scales, y=[c["matching_rate"]["value"] for _, c in points],
                        mode="lines+markers", line={"color": colour},
                        name=f"{behaviour} matching rate", legendgroup=behaviour)
        fig.add_scatter(x=scales, y=[c["p_matching"]["value"] for _, c in points],
                        mode="lines", line={"color": colour, "dash": "dot"},
                        name=f"{behaviour} P(matching)", legendgroup=behaviour)
    fig.update_layout(title="Simultaneous steering: one global scale",
                      xaxis_title="global scale", yaxis_title="share of test items",
                      yaxis_range=[0, 1])
    return fig


def alignment_tax(results: Mapping[str, Any]) -> go.Figure:
    """Top-1 next-token accuracy (with interval) against the simultaneous scale."""
    points = sorted((c["scale"], c["top1"]) for k, c in results["cells"].items()
                    if k.startswith("tax/"))
    fig = go.Figure()
    if points:
        fig.add_scatter(x=[s for s, _ in points], y=[e["value"] for _, e in points],
                        mode="lines+markers", name="top-1 accuracy",
                        error_y={"type": "data", "array": [e["high"] - e["value"]
                                                           for _, e in points],
                                 "arrayminus": [e["value"] - e["low"] for _, e in points]})
    fig.update_layout(title="Alignment tax of simultaneous steering",
                      xaxis_title="global scale", yaxis_title="next-token top-1 accuracy")
    return fig


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the three figures as HTML files under ``out_dir`` (see :func:`save_html`)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in (("individual_vs_combined", individual_vs_combined(results)),
                      ("simultaneous", simultaneous_curves(results)),
                      ("alignment_tax", alignment_tax(results))):
        paths.append(save_html(fig, folder / f"{name}.html"))
    return paths
