"""The notebooks run, and render: every figure survives a static render to HTML.

Each notebook is executed with the fast settings CI uses (``ACTSTEER_NOTEBOOK_FAST=1``),
then exported to HTML with nbconvert, as a reader without a live kernel sees it. The check:
no cell errors or writes to stderr (warning boxes), every figure output carries an HTML form
with its data (not only plotly's JSON output, which static renderers do not draw), plotly.js
is embedded in the page, and the HTML draws as many figures as the notebook produced.
Committed notebooks carry no outputs and have cell ids.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
PLOTLY_JSON = "application/vnd.plotly.v1+json"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_are_clean(path: Path) -> None:
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) >= (4, 5)
    for cell in notebook.cells:
        assert cell.get("id"), f"{path.name}: a cell without an id"
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}: commit notebooks without outputs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_figures_survive_a_static_render(path: Path, monkeypatch) -> None:
    _run_and_render(path, monkeypatch)


@pytest.mark.slow
def test_broad_skills_notebook_renders_without_the_reference_data(monkeypatch,
                                                                  tmp_path: Path) -> None:
    """A clone without ``../shared/data``: WikiText-2 is missing, the text corpus is the
    built-in one, and the notebook says so in a printed note, not a warning box."""
    from actsteer.paths import DATA_DIR_ENV

    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(empty))
    path = next(p for p in NOTEBOOKS if p.stem == "03_broad_skills")
    notebook = _run_and_render(path, monkeypatch)
    printed = "".join(output.get("text", "") for cell in notebook.cells
                      for output in cell.get("outputs", []) if output.output_type == "stream")
    assert "WikiText-2 is not on this machine" in printed


def _run_and_render(path: Path, monkeypatch) -> Any:
    """Execute ``path`` on the fast settings and check its outputs and HTML render; returns
    the executed notebook."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    monkeypatch.setenv("ACTSTEER_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    figures = 0
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            where = f"{path.name}, cell {index}"
            assert output.output_type != "error", f"{where}: {output.get('ename')}"
            assert not (output.output_type == "stream" and output.name == "stderr"), (
                f"{where} writes to stderr (a warning box when rendered): {output.text[:300]}")
            data = output.get("data", {})
            html = data.get("text/html", "")
            if PLOTLY_JSON in data:
                assert "plotly-graph-div" in html, f"{where}: a figure only a live kernel draws"
            if "plotly-graph-div" in html:
                figures += 1
    assert figures >= 1, f"{path.name} shows no figure"
    body, _ = HTMLExporter().from_notebook_node(notebook)
    assert body.count("Plotly.newPlot(") >= figures
    assert "plotly.js v" in body or "plotly-latest" in body or "Plotly=" in body.replace(" ", ""), (
        "plotly.js is not embedded: the figures would be blank offline")
    assert os.environ["ACTSTEER_NOTEBOOK_FAST"] == "1"
    return notebook
