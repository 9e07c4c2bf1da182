"""Root pytest configuration: run the notebooks once, keep what they computed.

nbval executes every ``book/*.ipynb`` in a fresh kernel, one pytest item per code cell. The
checks are the ``assert`` statements inside the cells (notebooks are committed without outputs,
so there is nothing to compare). Executing the chapters is the expensive part of the test-suite,
so it is done once: the outputs nbval collects are written to ``_build/nbval/book/`` when every
cell of a notebook passed, and ``tests/test_book_build.py`` (ordered last) builds the book from
those executed copies instead of executing the chapters a second time.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
EXECUTED = ROOT / "_build" / "nbval"
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

_cells_per_nb: dict[str, int] = defaultdict(int)
_done: dict[str, set] = defaultdict(set)
_failed: set[str] = set()


def _is_nbval(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Kernels started by nbval inherit this: no progress-bar widgets in the executed chapters
    # (the book build does the same through deepinside._progress).
    os.environ.setdefault("DEEPINSIDE_PROGRESS", "0")


def pytest_collection_modifyitems(session, config, items):
    # Notebook cells after unit tests, the book build last (it reuses the notebooks' outputs).
    def rank(item):
        if "test_browser" in item.nodeid:
            return 3  # opens the pages the book build wrote
        if "test_book_build" in item.nodeid or "test_timeouts" in item.nodeid:
            return 2
        return 1 if _is_nbval(item) else 0

    items.sort(key=rank)
    for it in items:
        if _is_nbval(it):
            _cells_per_nb[str(it.parent.path)] += 1


DURATIONS = EXECUTED / "durations.json"
_durations: dict[str, dict[str, float]] = defaultdict(dict)


def _record_duration(notebook: str, cell: int, seconds: float) -> None:
    """Seconds of every executed cell of this session, in ``_build/nbval/durations.json``
    (``tests/test_timeouts.py``, ordered after the notebooks, compares them with the timeout)."""
    _durations[Path(notebook).name][str(cell)] = round(float(seconds), 3)
    DURATIONS.parent.mkdir(parents=True, exist_ok=True)
    DURATIONS.write_text(json.dumps(_durations, indent=1, sort_keys=True))


def _clean(outputs) -> list:
    """Outputs as nbformat wants them; widget views (progress bars) dropped: their state is not
    captured by nbval, and a static page cannot show them anyway."""
    kept = []
    for out in outputs or []:
        data = out.get("data", {})
        if _WIDGET_MIME in data:
            continue
        if out.get("output_type") == "execute_result":
            out.setdefault("metadata", {})
        kept.append(out)
    return kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _is_nbval(item) or call.when != "call":
        return
    report = outcome.get_result()
    key = str(item.parent.path)
    _record_duration(key, item.cell_num, report.duration)
    if report.failed:
        _failed.add(key)
        return
    item.cell.outputs = _clean(item.test_outputs)
    item.cell.execution_count = item.cell_num + 1
    for out in item.cell.outputs:
        if out.get("output_type") == "execute_result":
            out["execution_count"] = item.cell_num + 1
    _done[key].add(item.cell_num)
    if len(_done[key]) == _cells_per_nb[key] and key not in _failed:
        import nbformat

        dest = EXECUTED / Path(key).relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(item.parent.nb, str(dest))
