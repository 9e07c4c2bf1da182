"""Benchmark: every chapter of the book executed cold, one after the other, each in a fresh kernel.

For each ``book/*.ipynb`` (sorted) the script executes the notebook with ``nbclient`` (kernel
``python3``, cwd the notebook's ``book/`` folder) and reports, as a Markdown table:

- ``wall s``: from the kernel's start to the end of its last cell (start-up included, shutdown not);
- ``CPU s``: user + sys of the kernel's process tree (the kernel, its live children, and the
  children it has reaped), read just before the kernel shuts down;
- ``peak RSS MB``: the largest sum of the RSS of the kernel and its child processes, polled every
  0.2 s in a thread;
- ``its cell``: the cell during which the resident memory peaked (per-cell peaks in ``--json``);
- ``slowest cell``: the notebook cell (index into ``cells``, 0-based) that took longest, and its
  seconds (each cell timed here, from the execute request to its reply);
- ``unit s`` and ``wall / unit``: the unit is measured in this process just before each chapter,
  the median of 3 timings (after one warm-up) of one EfficientNet-Lite0 forward + backward on 16
  random 224x224 images (``di.load_classifier()``). Seconds depend on the machine, the ratio much
  less: compare ratios across machines (a laptop, CI, Binder).

"Cold" means that nothing a chapter computed before is reused. Each chapter runs in a fresh kernel
inside a fresh temporary copy of the book (``_config.yml``, ``_toc.yml`` and ``book/``), removed
afterwards, so these caches start empty:

- ``_build/cache`` of the book, which ``deepinside.class_model.default_cache_dir`` (class models,
  chapter 1) and ``deepinside.features.default_cache_dir`` (top activations, chapter 5) find as
  the first folder upwards holding ``_config.yml`` / ``_toc.yml``, and which chapter 6 builds
  itself as ``../_build/cache/06`` (map quality, pointing, randomisation);
- ``$DEEPINSIDE_CACHE`` (class models) is set to the copy's ``_build/cache`` too, so a value in
  the caller's environment is not used;
- in-memory caches (``functools.lru_cache`` in the package) die with each kernel.

Not emptied, because they hold inputs rather than results: the ILSVRC sample (found from the real
``book/`` folder, as the chapters would, and passed to the kernel as ``$DEEPINSIDE_ILSVRC``
because the copy lies outside the checkout), the model weights (offline), Python's bytecode,
matplotlib's font cache and the OS page cache. jupyter-book's ``.jupyter_cache`` is not involved
(nbclient does not read it). The kernel gets ``DEEPINSIDE_PROGRESS=0`` like the book build
(``_ext/deepinside_book.py``).

``--cores 1`` runs each kernel on one core, as Binder does: ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``TORCH_NUM_THREADS`` = 1 in the kernel's environment and its CPU
affinity one core from the fork on (inherited from this process, pinned to the core while it
starts the kernel; every kernel thread pinned again once it is up; processes it spawns inherit
it); the unit is then measured on that core with one torch thread as well.

Targets of the project: 4 min per chapter, 120 s per cell, 1800 MB; ``--fail-over-minutes 4
--max-cell-s 120 --max-rss-mb 1800`` exit 1 naming each chapter over one. A failing cell is
recorded (first line of the error) and the next chapter runs; the exit status is then 1.

Run: ``python benchmarks/bench_book.py [--chapters 00 03] [--cores 1] [--json rows.json]
[--cell-timeout 1800] [--fail-over-minutes 4 --max-cell-s 120 --max-rss-mb 1800]``.
Do not run it beside other heavy work: it measures the machine as much as the book.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import psutil  # a dependency of ipykernel
import torch
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import timeit_once  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
POLL_S = 0.2
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS")


@dataclass
class Row:
    chapter: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    slowest_cell: int = -1
    slowest_cell_s: float = 0.0
    unit_s: float = 0.0
    error: str = ""
    cell_s: list[float] = field(default_factory=list)
    cell_rss_mb: list[float] = field(default_factory=list)  # the peak during each cell

    @property
    def wall_per_unit(self) -> float:
        return self.wall_s / self.unit_s if self.unit_s else float("nan")


# -- the unit -----------------------------------------------------------------------------------


def unit_seconds(net: torch.nn.Module, device: Any, core: int | None) -> float:
    """Median of 3 timings (after a warm-up) of forward + backward of 16 random 224x224 images,
    on one core with one torch thread when ``core`` is given (restored afterwards)."""
    threads, affinity = torch.get_num_threads(), os.sched_getaffinity(0)
    if core is not None:
        torch.set_num_threads(1)
        os.sched_setaffinity(0, {core})
    try:
        def step() -> None:
            x = torch.randn(16, 3, 224, 224, device=device, requires_grad=True)
            net(x).sum().backward()
            net.zero_grad(set_to_none=True)

        step()
        return statistics.median(timeit_once(step) for _ in range(3))
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, affinity)


# -- the kernel's process tree ------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def tree_rss(pid: int) -> int:
    """Bytes resident in the process ``pid`` and all its descendants."""
    total = 0
    for p in _tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def tree_cpu(pid: int) -> float:
    """User + sys seconds of ``pid``, its live descendants and the children they have reaped."""
    total = 0.0
    for p in _tree(pid):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class PeakRss:
    """Polls :func:`tree_rss` of ``pid`` every :data:`POLL_S` seconds in a thread; keeps the max."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.cell_peak = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                now = tree_rss(self.pid)
            except psutil.Error:
                return
            self.peak, self.cell_peak = max(self.peak, now), max(self.cell_peak, now)
            if self._stop.wait(POLL_S):
                return

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.peak = max(self.peak, tree_rss(self.pid))
        except psutil.Error:
            pass


def pin_to_core(pid: int, core: int) -> None:
    """CPU affinity of every thread of ``pid`` (``sched_setaffinity`` sets one thread only)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except ProcessLookupError:
            pass


# -- one chapter --------------------------------------------------------------------------------


def ilsvrc_root() -> str | None:
    """The ILSVRC sample the chapters find from the real ``book/`` folder (never fetched here)."""
    if os.environ.get("DEEPINSIDE_ILSVRC"):
        return os.environ["DEEPINSIDE_ILSVRC"]
    import deepinside as di

    here = Path.cwd()
    try:
        os.chdir(BOOK)
        root = di.default_ilsvrc_root(fetch=False)
    finally:
        os.chdir(here)
    return str(root) if root is not None else None


def cold_copy(tmp: Path) -> Path:
    """A copy of the book (configuration and ``book/``) under ``tmp`` with no ``_build``; its
    ``book/`` folder."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, tmp / name)
    shutil.copytree(BOOK, tmp / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp / "book"


def kernel_env(tmp: Path, core: int | None, data: str | None) -> dict[str, str]:
    env = dict(os.environ, DEEPINSIDE_CACHE=str(tmp / "_build" / "cache"), DEEPINSIDE_PROGRESS="0")
    if data:
        env["DEEPINSIDE_ILSVRC"] = data
    if core is not None:
        env.update({k: "1" for k in THREAD_ENV})
    return env


def first_line(e: BaseException) -> str:
    text = getattr(e, "ename", "") and f"{e.ename}: {e.evalue}"  # nbclient's CellExecutionError
    lines = [ln.strip() for ln in (text or str(e) or type(e).__name__).splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(e).__name__


def run_cells(client: NotebookClient, env: dict[str, str], row: Row, core: int | None) -> None:
    """Start the kernel, execute every cell, timing each; fill ``row`` before the kernel stops.

    With ``core``, the kernel inherits this thread's affinity, set to ``core`` for its start, and
    all its threads are pinned again once it is up."""
    t0 = time.perf_counter()
    affinity = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        with client.setup_kernel(env=env):
            os.sched_setaffinity(0, affinity)
            pid = client.km.provisioner.pid
            if core is not None:
                pin_to_core(pid, core)
            with PeakRss(pid) as rss:
                execute_all(client, row, pid, t0, rss)
            row.peak_rss_mb = rss.peak / 2**20
    finally:
        os.sched_setaffinity(0, affinity)
    if row.cell_s:
        row.slowest_cell = max(range(len(row.cell_s)), key=row.cell_s.__getitem__)
        row.slowest_cell_s = row.cell_s[row.slowest_cell]


def execute_all(client: NotebookClient, row: Row, pid: int, t0: float, rss: PeakRss) -> None:
    """Every cell of ``client.nb`` in its kernel ``pid``, each timed (the failing one too); stops at
    the first error. Wall time from ``t0`` and CPU time of the tree are read at the end."""
    for index, cell in enumerate(client.nb.cells):
        c0, rss.cell_peak = time.perf_counter(), 0
        try:
            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        except Exception as e:  # a failing cell, a timeout, a dead kernel
            row.error = f"cell {index}: {first_line(e)}"
            break
        finally:
            row.cell_s.append(time.perf_counter() - c0)
            row.cell_rss_mb.append(rss.cell_peak / 2**20)
    row.wall_s = time.perf_counter() - t0
    try:
        row.cpu_s = tree_cpu(pid)
    except psutil.Error:
        pass


def run_chapter(path: Path, core: int | None, cell_timeout: int, data: str | None,
                save: Path | None) -> Row:
    row = Row(path.stem)
    with tempfile.TemporaryDirectory(prefix="bench_book-") as t:
        tmp = Path(t)
        book = cold_copy(tmp)
        nb = nbformat.read(book / path.name, as_version=4)
        client = NotebookClient(nb, kernel_name="python3", timeout=cell_timeout,
                                resources={"metadata": {"path": str(book)}})
        try:
            run_cells(client, kernel_env(tmp, core, data), row, core)
        except Exception as e:  # the kernel did not start
            row.error = row.error or f"kernel: {first_line(e)}"
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, save / path.name)
    return row


# -- report -------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    head = ["chapter", "wall s", "CPU s", "peak RSS MB", "its cell", "slowest cell", "unit s",
            "wall / unit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        cell = f"{r.slowest_cell} ({r.slowest_cell_s:.1f} s)" if r.slowest_cell >= 0 else "-"
        name = r.chapter + (f" **failed: {r.error}**" if r.error else "")
        rss = r.cell_rss_mb
        top = str(max(range(len(rss)), key=rss.__getitem__)) if rss else "-"
        lines.append(f"| {name} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.peak_rss_mb:.0f} | {top} | {cell} | "
                     f"{r.unit_s:.3f} | {r.wall_per_unit:.0f} |")
    return "\n".join(lines)


def over_targets(rows: list[Row], args: argparse.Namespace) -> list[str]:
    out = []
    for r in rows:
        if args.fail_over_minutes is not None and r.wall_s > 60 * args.fail_over_minutes:
            out.append(f"{r.chapter}: wall {r.wall_s:.0f} s > {args.fail_over_minutes:g} min")
        if args.max_cell_s is not None and r.slowest_cell_s > args.max_cell_s:
            out.append(f"{r.chapter}: cell {r.slowest_cell} took {r.slowest_cell_s:.0f} s "
                       f"> {args.max_cell_s:g} s")
        if args.max_rss_mb is not None and r.peak_rss_mb > args.max_rss_mb:
            out.append(f"{r.chapter}: peak RSS {r.peak_rss_mb:.0f} MB > {args.max_rss_mb:g} MB")
    return out


def chapters(prefixes: list[str] | None) -> list[Path]:
    paths = sorted(BOOK.glob("*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(x) for x in prefixes)]
    return paths


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chapters", nargs="+", metavar="PREFIX",
                    help="only the notebooks whose names start with these (e.g. 00 03)")
    ap.add_argument("--cores", type=int, choices=[1], default=None,
                    help="1: each kernel (and the unit) on one core, one thread, as on Binder")
    ap.add_argument("--core", type=int, default=None,
                    help="which core --cores 1 uses (default: the first this process may use)")
    ap.add_argument("--cell-timeout", type=int, default=1800, help="seconds per cell")
    ap.add_argument("--json", type=Path, help="also write the rows here as JSON")
    ap.add_argument("--save-executed", type=Path, metavar="DIR",
                    help="write the executed notebooks here (to read their outputs)")
    ap.add_argument("--fail-over-minutes", type=float, help="exit 1 if a chapter's wall time exceeds this")
    ap.add_argument("--max-cell-s", type=float, help="exit 1 if a chapter's slowest cell exceeds this")
    ap.add_argument("--max-rss-mb", type=float, help="exit 1 if a chapter's peak RSS exceeds this")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    paths = chapters(args.chapters)
    if not paths:
        sys.exit(f"no notebook in {BOOK} matches {args.chapters}")
    core = None if args.cores is None else (args.core if args.core is not None
                                            else min(os.sched_getaffinity(0)))
    import deepinside as di

    clf = di.load_classifier()
    net, device = clf.net, next(clf.net.parameters()).device
    data = ilsvrc_root()
    print(f"{len(paths)} chapters, {'core ' + str(core) if core is not None else 'all cores'}; "
          f"ILSVRC sample: {data or 'none'}", flush=True)
    rows = []
    for path in paths:
        unit = unit_seconds(net, device, core)
        print(f"[{path.stem}] start (unit {unit:.3f} s)", flush=True)
        row = run_chapter(path, core, args.cell_timeout, data, args.save_executed)
        row.unit_s = unit
        rows.append(row)
        status = f"FAILED {row.error}" if row.error else "ok"
        print(f"[{path.stem}] end: {row.wall_s:.1f} s wall, {row.cpu_s:.1f} s CPU, "
              f"{row.peak_rss_mb:.0f} MB peak; {status}", flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{**asdict(r), "wall_per_unit": r.wall_per_unit} for r in rows],
                                        indent=1))
    over = over_targets(rows, args)
    for line in over:
        print("over target:", line)
    return 1 if over or any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
