"""One figure per behaviour: the three ratings and the combined score against strength on the
``report`` half, each laddered method a line, prompting a dashed reference line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from actsteer.figures import save_html
from actsteer.harness.analysis import RATED_SCORES, summarise
from actsteer.harness.methods import METHODS
from actsteer.harness.report import LABEL

__all__ = ["behaviour_figure", "write_figures"]

_OWN_LADDER = {name for name, method in METHODS.items() if method.ladder is not None}
"""Methods left out of the figure: their ladder is not in fractions of the norm."""
_COLOURS = {"steering": "#1f77b4", "prompting+steering": "#2ca02c", "prompting": "#d62728",
            "unsteered": "#7f7f7f"}


def behaviour_figure(results: Mapping[str, Any], behaviour: str) -> go.Figure:
    """Ratings (0-2, mean over the report half) against strength for one behaviour."""
    summary = results.get("summary") or summarise(results)
    methods = summary[behaviour]["methods"]
    fig = make_subplots(rows=1, cols=len(RATED_SCORES), shared_yaxes=True,
                        subplot_titles=RATED_SCORES)
    for col, score in enumerate(RATED_SCORES, start=1):
        for method, row in methods.items():
            if method in _OWN_LADDER:
                continue  # its strengths are not fractions of the norm
            colour = _COLOURS.get(method, "#9467bd")
            if not row["laddered"]:
                if method != "unsteered":
                    fig.add_hline(y=row["curve"]["0"][score], line_dash="dash",
                                  line_color=colour, row=1, col=col)  # type: ignore[arg-type]
                continue
            xs = [float(s) for s in row["curve"]]
            fig.add_scatter(x=xs, y=[row["curve"][s][score] for s in row["curve"]],
                            mode="lines+markers", name=method, legendgroup=method,
                            showlegend=col == 1, line={"color": colour}, row=1, col=col)
            fig.add_scatter(x=[row["strength"]], y=[row["curve"][f"{row['strength']:g}"][score]],
                            mode="markers", marker={"symbol": "star", "size": 12,
                                                    "color": colour},
                            name=f"{method}: chosen on the select half", legendgroup=method,
                            showlegend=col == 1, row=1, col=col)
    fig.update_yaxes(range=[-0.05, 2.05], title_text="rating (0-2)", row=1, col=1)
    fig.update_xaxes(title_text="strength (fraction of |resid|)")
    fig.update_layout(template="plotly_white", height=420,
                      title=f"{behaviour}: ratings against strength, report half "
                            f"(dashed: prompting)<br><sup>{LABEL}</sup>")
    return fig


def write_figures(results: Mapping[str, Any], folder: str | Path) -> list[Path]:
    """``harness_<behaviour>.html`` for each behaviour; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [save_html(behaviour_figure(results, name), folder / f"harness_{name}.html")
            for name in results["behaviours"]]
