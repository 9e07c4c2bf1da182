"""Threads for the per-image work that is not the network's (issue 21).

The network's passes use every core through torch's own threads. What comes after them, image by
image (GraphCut segmentations, contours of thresholded maps), runs in Python calling NumPy,
OpenCV and PyMaxflow, which release the GIL for part of their work: on a 2-core machine two
threads take 0.85 of one thread's time for the GraphCut boxes of 40 ILSVRC images
(``benchmarks/bench_segment.py``; 0.69 for 24 segmentations of one image size).
:func:`thread_map` spreads such work over the cores this process may use; the results come back
in the input's order, so they do not depend on the number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: More threads than this gain nothing measurable on GIL-bound per-image work.
MAX_WORKERS = 8


def usable_cores() -> int:
    """The number of cores this process may run on (its CPU affinity; ``os.cpu_count()`` where
    the platform has no affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_map(fn: Callable[[T], R], items: Sequence[T] | Iterable[T], workers: int | None = None,
               on_done: Callable[[R], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]``, over up to ``workers`` threads (default: :func:`usable_cores`,
    at most :data:`MAX_WORKERS`), in the order of ``items``.

    ``fn`` must be safe to call from several threads at once on different items (no shared
    mutable state but what it owns per item). One worker, or one item, runs in the calling thread.
    An exception in ``fn`` is raised here, as the plain loop would raise it.

    Args:
        on_done: called with each result in the calling thread, in order (e.g. a progress bar).
    """
    from .inputs import check_int

    items = list(items)
    workers = min(usable_cores(), MAX_WORKERS) if workers is None else check_int("workers", workers)
    workers = max(1, min(workers, len(items)))
    out: list[R] = []
    if workers == 1:
        for x in items:
            out.append(fn(x))
            if on_done is not None:
                on_done(out[-1])
        return out
    with ThreadPoolExecutor(workers) as pool:
        for r in pool.map(fn, items):
            out.append(r)
            if on_done is not None:
                on_done(r)
    return out
