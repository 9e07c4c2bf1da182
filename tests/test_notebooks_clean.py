"""Committed notebooks carry no outputs and no execution counts, and use the python3 kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "book").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path: Path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name}: code cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name}: code cell {i} has an execution count"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_title_and_is_listed(path: Path):
    nb = json.loads(path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    src = "".join(first["source"])
    assert src.startswith("# "), f"{path.name}: first markdown cell must start with a '# Title'"
    toc = (path.parents[1] / "_toc.yml").read_text()
    assert f"book/{path.stem}" in toc, f"{path.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_lines_fit_the_page(path: Path):
    """Code cells show whole lines in the book's content column: at most 88 characters."""
    nb = json.loads(path.read_text())
    long = [(i, line) for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if len(line) > 88]
    assert not long, f"{path.name}: code lines over 88 characters (cell, line): {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_figure_cells_are_named_and_captioned(path: Path):
    """Every figure the book numbers has a name ({numref} target) and a caption."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        fig = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if fig is not None:
            assert fig.get("name", "").startswith("fig-"), f"{path.name} cell {i}: name fig-..."
            assert len(fig.get("caption", "")) > 20, f"{path.name} cell {i}: no real caption"
