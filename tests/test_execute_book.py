"""tools/execute_book.py: the chapters executed several at a time into jupyter-book's cache, found
there by the cache's own matching, not run twice, and a failing cell stops the book."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))   # the spawned workers get this path too
import execute_book  # noqa: E402


def _book(tmp: Path, cells: dict[str, str]) -> Path:
    (tmp / "book").mkdir()
    (tmp / "_config.yml").write_text("execute:\n  execute_notebooks: cache\n  cache: .jupyter_cache\n"
                                     "  timeout: 120\n")
    toc = "format: jb-book\nroot: book/intro\nchapters:\n" + "".join(f"  - file: book/{n}\n" for n in cells)
    (tmp / "_toc.yml").write_text(toc)
    (tmp / "book" / "intro.md").write_text("# intro\n")
    for name, code in cells.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp / "book" / f"{name}.ipynb")
    return tmp


def _cached_output(root: Path, name: str) -> str:
    from jupyter_cache import get_cache

    cache = get_cache(str(root / ".jupyter_cache"))
    nb = nbformat.read(root / "book" / f"{name}.ipynb", as_version=4)
    _, merged = cache.merge_match_into_notebook(nb)   # KeyError if the cache does not match
    return "".join(o.get("text", "") for o in merged.cells[0].outputs)


@pytest.mark.slow
def test_chapters_run_in_parallel_into_the_cache_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(execute_book, "cores", lambda: 2)
    code = "import os\nprint(os.environ['OMP_NUM_THREADS'], os.getcwd(), os.environ['DEEPINSIDE_PROGRESS'])"
    root = _book(tmp_path, {"00_a": code, "01_b": "print(6 * 7)"})
    assert execute_book.main(["--root", str(root), "--jobs", "2"]) == 0
    # one thread per kernel on 2 cores, cwd the chapter's folder, no progress bars: as the build
    threads, cwd, progress = _cached_output(root, "00_a").split()
    assert (threads, Path(cwd), progress) == ("1", (root / "book").resolve(), "0")
    assert _cached_output(root, "01_b").strip() == "42"
    capsys.readouterr()
    assert execute_book.main(["--root", str(root), "--jobs", "2"]) == 0   # all cached: nothing runs
    assert "0 chapter(s) to execute" in capsys.readouterr().out
    # a changed code cell is a new key: that chapter alone runs again
    nb = nbformat.read(root / "book" / "01_b.ipynb", as_version=4)
    nb.cells[0].source = "print(6 * 9)"
    nbformat.write(nb, root / "book" / "01_b.ipynb")
    assert execute_book.main(["--root", str(root), "--jobs", "2", "--dry-run"]) == 0
    assert "1 chapter(s) to execute" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failing_cell_stops_the_book_naming_the_chapter(tmp_path, capsys):
    root = _book(tmp_path, {"00_ok": "1 + 1", "01_bad": "raise ValueError('no such image: x.jpg')"})
    assert execute_book.main(["--root", str(root), "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "book/01_bad.ipynb FAILED" in err and "no such image: x.jpg" in err
    with pytest.raises(KeyError):
        _cached_output(root, "01_bad")


def test_one_job_leaves_execution_to_the_build(tmp_path, capsys):
    root = _book(tmp_path, {"00_a": "1", "01_b": "2"})
    assert execute_book.main(["--root", str(root), "--jobs", "1"]) == 0
    assert "left to jupyter-book's own (serial) execution" in capsys.readouterr().out
    assert not (root / ".jupyter_cache" / "executed").exists() or not any(
        (root / ".jupyter_cache" / "executed").iterdir())


def test_jobs_default_follows_cores_memory_and_the_environment(monkeypatch):
    monkeypatch.delenv("DEEPINSIDE_BOOK_JOBS", raising=False)
    monkeypatch.setattr(execute_book, "cores", lambda: 2)
    monkeypatch.setattr(execute_book, "available_gb", lambda: 8.0)
    assert execute_book.default_jobs() == 2
    monkeypatch.setattr(execute_book, "available_gb", lambda: 3.0)   # two kernels would not fit
    assert execute_book.default_jobs() == 1
    monkeypatch.setattr(execute_book, "cores", lambda: 1)
    monkeypatch.setattr(execute_book, "available_gb", lambda: 8.0)
    assert execute_book.default_jobs() == 1
    monkeypatch.setenv("DEEPINSIDE_BOOK_JOBS", "3")
    assert execute_book.default_jobs() == 3
    monkeypatch.setenv("DEEPINSIDE_BOOK_JOBS", "two")
    with pytest.raises(SystemExit, match="whole number"):
        execute_book.default_jobs()


def test_longest_chapter_first():
    paths = [Path(f"book/{n}_x.ipynb") for n in ("00", "01", "03", "03b", "06", "99")]
    got = [p.name.split("_")[0] for p in execute_book.longest_first(paths)]
    assert got == ["03b", "01", "06", "03", "99", "00"]
