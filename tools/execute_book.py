"""Execute the book's chapters into jupyter-book's execution cache, several kernels at a time.

``make book`` runs this before ``jupyter-book build``. The build (``execute_notebooks: cache`` in
``_config.yml``) executes every chapter missing from ``.jupyter_cache`` one after the other, each
kernel with every core; a chapter spends much of its time in single-threaded Python and NumPy
(GraphCut, box rules, plotting), so two kernels of one thread each on two cores finish the book
sooner than one kernel of two threads (issue 21: about 13 instead of 17 minutes of chapters on
the 2-core reference machine). Chapters are started longest first (their one-core seconds from
``benchmarks/bench_book.py --cores 1``), each in a fresh kernel with ``cwd`` its own folder, the
``timeout`` of ``_config.yml`` and ``DEEPINSIDE_PROGRESS=0``, exactly as MyST-NB would run it, and
cached under the same key (the code cells and the kernelspec), so the build finds every chapter
executed and only renders it. A chapter already cached is not run again.

Jobs: ``--jobs`` or ``$DEEPINSIDE_BOOK_JOBS``; by default 2 when the process may use at least 2
cores and the machine has at least 4.5 GB available (each chapter's kernel peaks below 1.8 GB),
else 1. With 1 job this script does nothing and the build executes the chapters itself, as before.
Each of ``N`` jobs gives its kernels ``cores // N`` threads (``OMP_NUM_THREADS`` and friends).

A failing cell stops the book: the script prints the chapter, the cell's traceback, and exits 1
(the build is not started), as the build itself does with ``raise_on_error``.

Run from the repository root: ``python tools/execute_book.py [--jobs 2] [--dry-run]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Seconds of each chapter on one core, idle 2-core reference machine (`benchmarks/bench_book.py
#: --cores 1`, issue 21): only their order matters (longest first); a new chapter counts as 60 s.
#: The key is the file name up to its first "_" ("03b" is chapter 3's page on every map; these
#: two measured on a slower day, stop 39, when chapter 3 became two pages).
ONE_CORE_S = {"03b": 455, "03": 281, "01": 343, "06": 341, "05": 81, "02": 72, "00": 37, "04": 31, "07": 9}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS")
MIN_AVAILABLE_GB_PER_JOB = 2.25


def chapters(root: Path) -> list[Path]:
    """The notebooks of the table of contents (``_toc.yml``), in its order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("root", "file") and isinstance(v, str):
                    files.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return [root / f"{f}.ipynb" for f in files if (root / f"{f}.ipynb").exists()]


def longest_first(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: -ONE_CORE_S.get(p.name.split("_")[0], 60))


def available_gb() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` in GB (inf where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("inf")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_jobs() -> int:
    """2 on a machine with >= 2 cores and >= 4.5 GB available, else 1; ``$DEEPINSIDE_BOOK_JOBS``
    wins."""
    env = os.environ.get("DEEPINSIDE_BOOK_JOBS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise SystemExit(f"DEEPINSIDE_BOOK_JOBS must be a whole number, got {env!r}") from None
    return 2 if cores() >= 2 and available_gb() >= 2 * MIN_AVAILABLE_GB_PER_JOB else 1


def execute(path: str, timeout: int, threads: int) -> tuple[str, str | None, str | None, float]:
    """Run one chapter in a fresh kernel (in a worker process): ``(path, executed notebook as
    JSON or None, the error's traceback or None, seconds)``."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    for k in THREAD_ENV:
        os.environ[k] = str(threads)
    os.environ["DEEPINSIDE_PROGRESS"] = "0"   # as _ext/deepinside_book.py sets for the build
    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout,
                                 allow_errors=False, meta_override=True)
    if result.err is not None:
        return path, None, result.exc_string or repr(result.err), result.time
    return path, nbformat.writes(nb), None, result.time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="the book's root (holds _config.yml)")
    ap.add_argument("--jobs", type=int, default=None, help="kernels at a time (default: see above)")
    ap.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    args = ap.parse_args(argv)

    import nbformat
    import yaml
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    root = args.root.resolve()
    jobs = args.jobs if args.jobs is not None else default_jobs()
    if jobs < 1:
        ap.error(f"--jobs must be >= 1, got {jobs}")
    execute_cfg = yaml.safe_load((root / "_config.yml").read_text()).get("execute", {})
    cache = get_cache(str(root / execute_cfg.get("cache", ".jupyter_cache")))
    todo = []
    for p in chapters(root):
        try:
            cache.match_cache_notebook(nbformat.read(p, as_version=4))
        except KeyError:
            todo.append(p)
    todo = longest_first(todo)
    names = [p.name for p in todo]
    if jobs == 1 or len(todo) < 2:
        print(f"execute_book: {len(todo)} chapter(s) to execute, {jobs} job(s): "
              "left to jupyter-book's own (serial) execution", flush=True)
        return 0
    threads = max(1, cores() // jobs)
    print(f"execute_book: {len(todo)} chapters, {jobs} kernels at a time, {threads} thread(s) "
          f"each, longest first: {names}", flush=True)
    if args.dry_run:
        return 0
    timeout = int(execute_cfg.get("timeout", 3600))
    t0, failed = time.perf_counter(), []
    # spawn: the workers start clean (no inherited threads or locks)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        pending = {pool.submit(execute, str(p), timeout, threads) for p in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                if fut.cancelled():   # after a failure
                    continue
                path, text, err, secs = fut.result()
                rel = Path(path).relative_to(root)
                if err is not None:
                    failed.append(rel)
                    print(f"execute_book: {rel} FAILED after {secs:.0f} s:\n{err}", file=sys.stderr,
                          flush=True)
                    for f in pending:
                        f.cancel()
                    continue
                nb = nbformat.reads(text, as_version=4)
                record = cache.add_nb_to_project(path)
                cache.cache_notebook_bundle(
                    CacheBundleIn(nb, record.uri, data={"execution_seconds": secs}),
                    check_validity=False, overwrite=True)
                print(f"execute_book: {rel} executed in {secs:.0f} s "
                      f"({time.perf_counter() - t0:.0f} s since start)", flush=True)
    if failed:
        print(f"execute_book: failing chapter(s): {[str(f) for f in failed]}", file=sys.stderr)
        return 1
    print(f"execute_book: all {len(todo)} chapters in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
