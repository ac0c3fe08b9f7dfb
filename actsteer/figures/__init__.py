"""Plotly figures for the paper's experiments (HTML, open in a browser).

Figures are written next to one shared ``plotly.min.js`` (plotly's ``"directory"`` mode):
each HTML file is a few kB instead of ~4.8 MB, and still opens offline with no CDN.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from actsteer.atomic import atomic_write

__all__ = ["save_html"]


def save_html(fig: go.Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` atomically, with ``plotly.min.js`` beside it.

    The HTML loads ``plotly.min.js`` from its own folder, so keep the two together when
    moving figures. Returns ``path``.
    """
    # A str path (not a file object) makes plotly write plotly.min.js beside it.
    return atomic_write(path, lambda tmp: fig.write_html(str(tmp), include_plotlyjs="directory",
                                                        full_html=True), suffix=".html")
