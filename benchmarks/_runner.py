"""Tiny benchmark runner: ours vs. a peer, same inputs, same process, interleaved repetitions.

Timings on shared CI machines are noisy, so absolute seconds mean little; the median of
interleaved repetitions (A B C A B C ...) and the ratio to a baseline in the same run do.

    from _runner import compare, report
    times = compare({"ours": f, "captum": g}, repeats=7, warmup=1)
    report("saliency, 16 images", times, baseline="captum")
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import torch

__all__ = ["compare", "report", "timeit_once"]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timeit_once(fn: Callable[[], object]) -> float:
    """Seconds for one call of ``fn`` (CUDA synchronised before and after)."""
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def compare(fns: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, measured interleaved.

    Each round calls every function once, in rotating order, so that slow drifts of the machine
    (other processes, thermal state) hit all of them alike.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            samples[n].append(timeit_once(fns[n]))
    return {n: statistics.median(s) for n, s in samples.items()}


def report(title: str, times: Mapping[str, float], baseline: str) -> dict[str, float]:
    """Print median times and ratios to ``baseline``; return the ratios."""
    base = times[baseline]
    ratios = {n: t / base for n, t in times.items()}
    print(f"\n{title}")
    width = max(len(n) for n in times)
    for n, t in times.items():
        print(f"  {n:<{width}}  {t * 1e3:10.2f} ms   ratio to {baseline}: {ratios[n]:.3f}")
    return ratios
