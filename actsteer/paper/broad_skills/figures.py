"""Figures of the broad-skills reproduction (HTML beside a shared plotly.min.js).

* ``skills_<vector>.html`` — relative next-token top-1 accuracy against the coefficient,
  one line per layer and evaluation set (the skill solid, text dashed, the other code set
  dotted), with the 95% bootstrap band: the paper's two main figures (general code and
  Python vectors) plus any control vector that was run;
* ``skills_tradeoff.html`` — relative text top-1 against relative skill top-1, every
  vector and layer on one plot (up and to the right of another curve is better: the
  skill is removed at less cost to text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from actsteer.figures import save_html
from actsteer.paper.broad_skills.curves import other_of, skill_of
from actsteer.paper.broad_skills.keys import SweepKey

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_DASH = {"skill": "solid", "text": "dash", "other": "dot"}


def _num(value: Any) -> float:
    """A stored number (NaN is stored as null)."""
    return float("nan") if value is None else float(value)


def _curve(results: Mapping[str, Any], vector: str, layer: int, eval_set: str
           ) -> tuple[list[float], list[float], list[float], list[float]]:
    cells = results["cells"]
    coefs, values, lows, highs = [0.0], [1.0], [1.0], [1.0]
    for c in results["config"]["coefficients"]:
        cell = cells.get(str(SweepKey(vector, layer, float(c))))
        if float(c) == 0 or cell is None:
            continue
        est = cell[eval_set]["rel_top1"]
        coefs.append(float(c))
        values.append(_num(est["value"]))
        lows.append(_num(est["low"]))
        highs.append(_num(est["high"]))
    return coefs, values, lows, highs


def _layers(results: Mapping[str, Any]) -> Sequence[int]:
    return [int(layer) for layer in results["layers"]]


def relative_accuracy(results: Mapping[str, Any], vector: str) -> go.Figure:
    """Relative top-1 of the skill, text and the other code set against the coefficient."""
    fig = go.Figure()
    for colour, layer in zip(_COLOURS * 4, _layers(results), strict=False):
        for role, eval_set in (("skill", skill_of(vector)), ("text", "text"),
                               ("other", other_of(vector))):
            coefs, values, lows, highs = _curve(results, vector, layer, eval_set)
            if len(coefs) < 2:
                continue  # not swept at this layer
            name = f"L{layer} {eval_set}" + (" (skill)" if role == "skill" else "")
            fig.add_scatter(x=coefs + coefs[::-1], y=highs + lows[::-1], fill="toself",
                            line={"width": 0}, fillcolor=colour, opacity=0.12,
                            hoverinfo="skip", showlegend=False, legendgroup=name)
            fig.add_scatter(x=coefs, y=values, mode="lines+markers", name=name,
                            legendgroup=name,
                            line={"color": colour, "dash": _DASH[role]})
    fig.add_hline(y=0.5, line={"color": "grey", "width": 1, "dash": "dot"})
    fig.update_layout(
        title=f"{vector} vector: next-token top-1 accuracy relative to coefficient 0",
        xaxis_title="coefficient", yaxis_title="relative top-1 accuracy",
        template="plotly_white")
    return fig


def tradeoff(results: Mapping[str, Any]) -> go.Figure:
    """Relative text top-1 against relative skill top-1, every vector and layer."""
    fig = go.Figure()
    vectors = list(results["config"]["vectors"])
    symbols = ("circle", "square", "diamond", "cross", "x", "triangle-up")
    for colour, vector in zip(_COLOURS * 4, vectors, strict=False):
        for symbol, layer in zip(symbols * 8, _layers(results), strict=False):
            coefs, skill, _, _ = _curve(results, vector, layer, skill_of(vector))
            if len(coefs) < 2:
                continue  # not swept at this layer (e.g. a control run at one layer only)
            _, text, _, _ = _curve(results, vector, layer, "text")
            fig.add_scatter(x=skill, y=text, mode="lines+markers",
                            name=f"{vector} L{layer}", text=[f"x{c:g}" for c in coefs],
                            hovertemplate="skill %{x:.3f}<br>text %{y:.3f}<br>%{text}",
                            marker={"symbol": symbol, "color": colour},
                            line={"color": colour,
                                  "dash": "solid" if "_" not in vector else "dot"})
    fig.add_vline(x=0.5, line={"color": "grey", "width": 1, "dash": "dot"})
    fig.update_layout(
        title="Skill removed vs text kept (relative top-1; general: code, python: Python)",
        xaxis_title="relative skill top-1 accuracy", yaxis_title="relative text top-1 accuracy",
        xaxis_autorange="reversed", template="plotly_white")
    return fig


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write every figure as HTML under ``out_dir`` (see :func:`save_html`); return the paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {f"skills_{vector}.html": relative_accuracy(results, vector)
               for vector in results["config"]["vectors"]}
    figures["skills_tradeoff.html"] = tradeoff(results)
    paths = []
    for name, fig in figures.items():
        paths.append(save_html(fig, folder / name))
    return paths
