"""The whole Jupyter Book builds with Sphinx warnings as errors and no failing cell.

Ordered last by the root ``conftest.py``. Chapters that nbval already executed in this session
(``_build/nbval/book/*.ipynb``) are built from those executed copies with execution off; any
other chapter is executed by the build itself (``force``, ``raise_on_error``), so running this
file alone still tests everything.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "nbval" / "book"


VENDOR = ROOT / "_build" / "vendor"


def _stage(tmp: Path) -> tuple[Path, list[str]]:
    stage = tmp / "book-src"
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "_build")
    shutil.copytree(ROOT / "book", stage / "book", ignore=ignore)
    for f in ("_toc.yml", "references.bib"):
        shutil.copy(ROOT / f, stage / f)
    shutil.copytree(ROOT / "_ext", stage / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    reused = []
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        done = EXECUTED / nb.name
        if done.exists() and done.stat().st_mtime >= nb.stat().st_mtime:
            shutil.copy(done, stage / "book" / nb.name)
            reused.append(f"book/{nb.name}")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["execute"].update(execute_notebooks="force", exclude_patterns=reused, cache="")
    sphinx = cfg["sphinx"]["config"]
    # static files (CSS, MathJax, widget manager) from the repository, by absolute path
    sphinx["html_static_path"] = [str(ROOT / p) for p in sphinx["html_static_path"]]
    (stage / "_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return stage, reused


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    assert (VENDOR / "mathjax" / "tex-mml-chtml.js").exists(), (
        f"{VENDOR} lacks MathJax and the widget manager the pages load: run `make vendor`")
    stage, reused = _stage(tmp_path)
    out = ROOT / "_build" / "test-book"
    shutil.rmtree(out, ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(stage), "--path-output", str(out), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=stage)
    log = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, f"jupyter-book build failed (reused executed: {reused}):\n{log}"
    html = out / "_build" / "html"
    for nb in (ROOT / "book").glob("*.ipynb"):
        page = html / "book" / (nb.stem + ".html")
        assert page.exists(), f"{page} was not built"
        assert "Traceback" not in page.read_text(errors="replace"), f"{page} shows a traceback"
    assert (html / "book" / "intro.html").exists()
