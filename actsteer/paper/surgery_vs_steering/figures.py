"""Figure of a surgery-versus-steering comparison: what each arm buys and what it costs.

:func:`effect_vs_tax` — per comparison (one panel each), every arm's ladder as a line from
the unsteered model (ratio 1, Δ 0): x the perplexity on text over the unsteered model's,
y the paired Δ of the behaviour's propensity, both with 95% intervals; the matched-effect
points as stars. An arm up and to the left moves the behaviour more for less damage.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from actsteer.errors import InvalidValueError
from actsteer.paper.surgery_vs_steering.comparison import Comparison

__all__ = ["effect_vs_tax"]

_COLOURS = {"steer:probe": "#1f77b4", "steer:caa": "#ff7f0e", "surgery": "#2ca02c",
            "surgery:random": "#7f7f7f"}
_OTHER = ("#d62728", "#9467bd", "#8c564b", "#e377c2")


def effect_vs_tax(comparisons: Comparison | Sequence[Comparison]) -> go.Figure:
    """Behaviour effect against perplexity cost, one panel per comparison."""
    results = [comparisons] if isinstance(comparisons, Comparison) else list(comparisons)
    if not results:
        raise InvalidValueError("give at least one Comparison to plot")
    if any(row.perplexity_ratio is None for r in results for row in r.rows):
        raise InvalidValueError("a comparison without perplexity (documents=None) has no tax "
                                "to plot; run compare with documents")
    titles = [f"{r.behaviour}: {'raise' if r.direction == 1 else 'lower'}" for r in results]
    fig = make_subplots(rows=1, cols=len(results), subplot_titles=titles, shared_yaxes=False)
    others = iter(_OTHER * 4)
    colours: dict[str, str] = {}
    for column, result in enumerate(results, start=1):
        for arm in result.ladders:
            colour = colours.setdefault(arm, _COLOURS.get(arm) or next(others))
            for matched in (False, True):
                rows = [row for row in result.rows if row.arm == arm and row.matched == matched]
                if not rows:
                    continue
                ratios = [row.perplexity_ratio for row in rows]
                x = [r.value for r in ratios if r is not None]
                y = [row.effect.value for row in rows]
                fig.add_scatter(
                    x=x if matched else [1.0, *x], y=y if matched else [0.0, *y],
                    mode="markers" if matched else "lines+markers", name=arm,
                    legendgroup=arm, showlegend=column == 1 and not matched,
                    marker={"color": colour, "symbol": "star" if matched else "circle",
                            "size": 14 if matched else 8},
                    line={"color": colour},
                    error_y={"type": "data",
                             "array": ([] if matched else [0.0])
                             + [row.effect.high - row.effect.value for row in rows],
                             "arrayminus": ([] if matched else [0.0])
                             + [row.effect.value - row.effect.low for row in rows]},
                    error_x={"type": "data",
                             "array": ([] if matched else [0.0])
                             + [r.high - r.value for r in ratios if r is not None],
                             "arrayminus": ([] if matched else [0.0])
                             + [r.value - r.low for r in ratios if r is not None]},
                    text=([] if matched else ["unsteered"])
                    + [f"{arm} {row.strength:.3g}{' (matched)' if matched else ''}"
                       for row in rows],
                    hovertemplate="%{text}<br>perplexity x%{x:.2f}<br>Δ %{y:+.2f} nats"
                                  "<extra></extra>",
                    row=1, col=column)
        fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=column)
        if result.target is not None:
            fig.add_hline(y=result.direction * result.target,
                          line={"color": "black", "width": 1, "dash": "dot"}, row=1, col=column)
        fig.update_xaxes(title_text="perplexity x unsteered", row=1, col=column)
    fig.update_yaxes(title_text="Δ behaviour propensity (nats)", row=1, col=1)
    fig.update_layout(template="plotly_white",
                      title="Effect against tax: ladders (lines) and matched effect (stars)")
    return fig
