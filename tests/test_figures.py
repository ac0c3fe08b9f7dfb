"""Figure and results files: permissions, shared plotly.js, traces only for what was run."""

from __future__ import annotations

import os
import stat

import plotly.graph_objects as go

from actsteer.atomic import write_json_atomic
from actsteer.figures import save_html
from actsteer.paper.broad_skills.figures import relative_accuracy, tradeoff
from actsteer.paper.broad_skills.keys import SweepKey


def test_results_and_figures_are_readable_by_others(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        paths = [write_json_atomic(tmp_path / "r.json", {"a": 1}),
                 save_html(go.Figure(), tmp_path / "f.html")]
    finally:
        os.umask(old)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.html", "plotly.min.js", "r.json"]


def test_skill_figures_leave_out_layers_a_vector_was_not_swept_at() -> None:
    def cell(rel: float) -> dict:
        est = {"value": rel, "low": rel - 0.05, "high": rel + 0.05}
        return {name: {"rel_top1": est} for name in ("text", "code", "python")}

    results = {"layers": [9, 14], "config": {"coefficients": [0.0, 1.0, 2.0],
                                             "vectors": ["general", "general_permuted"]},
               "cells": {str(SweepKey("general", 9, 1.0)): cell(0.8),
                         str(SweepKey("general", 14, 1.0)): cell(0.7),
                         str(SweepKey("general_permuted", 14, 1.0)): cell(0.6)}}
    names = {trace.name for trace in tradeoff(results).data}
    assert names == {"general L9", "general L14", "general_permuted L14"}
    permuted = [t for t in relative_accuracy(results, "general_permuted").data if t.name]
    assert {t.name.split()[0] for t in permuted} == {"L14"}
