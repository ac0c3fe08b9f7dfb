"""Plotly figures for the paper's experiments (HTML, open in a browser).

Figures are written next to one shared ``plotly.min.js`` (plotly's ``"directory"`` mode):
each HTML file is a few kB instead of ~4.8 MB, and still opens offline with no CDN.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import plotly.graph_objects as go

from actsteer.results import readable_mode

__all__ = ["save_html"]


def save_html(fig: go.Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` atomically, with ``plotly.min.js`` beside it.

    The HTML loads ``plotly.min.js`` from its own folder, so keep the two together when
    moving figures. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".html", dir=path.parent)
    os.close(handle)
    try:
        # A str path (not a file object) makes plotly write plotly.min.js beside it.
        fig.write_html(tmp, include_plotlyjs="directory", full_html=True)
        readable_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
