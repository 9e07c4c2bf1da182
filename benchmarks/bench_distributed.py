"""Benchmark: `deepinside evaluate` with 1 process vs 2 processes under torchrun, same images.

    python benchmarks/bench_distributed.py [--images 200] [--root DIR]

Both runs use one torch thread per process (torchrun's default), so 2 processes may use 2 cores
where 1 uses one; the ratio says how much of the second core the sharding turns into speed
(ideal: 2.0). Two clocks, interleaved runs (1, 2, 1, 2, ...):

- the whole command (process start, ``import torch``/timm, torchrun's launcher included): what a
  user waits for on this small job;
- the sharded job itself, from the barrier after which every rank computes to the merged table
  (model loading included), as ``run_sharded`` reports it on stderr: what scales with the number
  of images (the start-up, ~5 s per process, is paid once whatever the dataset size).

The two tables must be identical, and the script fails otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import deepinside as di


TIMING = re.compile(r"deepinside: evaluate: .* in ([0-9.]+) s on (\d+) process")


def run(cmd: list[str]) -> tuple[float, float, str]:
    """(whole command s, sharded job s, the table) of one run."""
    env = dict(os.environ, DEEPINSIDE_PROGRESS="text", OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    job = TIMING.search(p.stderr)
    if job is None:
        raise SystemExit(f"no timing line on stderr of {' '.join(cmd)}:\n{p.stderr[-2000:]}")
    return wall, float(job.group(1)), p.stdout[p.stdout.index("images,"):]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    roots = [a.root] if a.root else [r for r in (di.default_ilsvrc_root(),) if r]
    here = Path(di.default_ilsvrc_root() or ".").parent / "ilsvrc2012-val-650-227px"
    root = a.root or (here if here.is_dir() else (roots[0] if roots else None))
    if root is None:
        print("no ILSVRC folder (set DEEPINSIDE_ILSVRC): nothing to measure")
        return
    args = ["evaluate", str(root), "--limit", str(a.images), "--device", "cpu", "--shard-size", "16"]
    one = [sys.executable, "-m", "deepinside", *args, "--threads", "1"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "deepinside", *args]
    times: dict[str, list[float]] = {"1 process": [], "2 processes (torchrun)": []}
    jobs: dict[str, list[float]] = {k: [] for k in times}
    tables = set()
    for _ in range(a.repeats):
        for name, cmd in (("1 process", one), ("2 processes (torchrun)", two)):
            t, job, table = run(cmd)
            times[name].append(t)
            jobs[name].append(job)
            tables.add(table)
    if len(tables) != 1:
        raise SystemExit("the tables differ between 1 and 2 processes:\n" + "\n".join(tables))
    print(next(iter(tables)))
    t1, t2 = (statistics.median(v) for v in times.values())
    j1, j2 = (statistics.median(v) for v in jobs.values())
    print(f"evaluate, {a.images} images of {root.name}, 1 thread per process (median of {a.repeats})")
    print(f"{'':24s} {'sharded job':>18s} {'whole command':>22s}")
    for name, j, t in (("1 process", j1, t1), ("2 processes (torchrun)", j2, t2)):
        print(f"  {name:22s} {j:7.1f} s {a.images / j:6.2f} img/s {t:7.1f} s {a.images / t:6.2f} img/s")
    print(f"  {'speed-up':22s} {j1 / j2:7.2f}x {'':12s} {t1 / t2:7.2f}x   (target >= 1.7)")
    print(f"  start-up and merge outside the job: {t1 - j1:.1f} s (1 process), {t2 - j2:.1f} s (2)")


if __name__ == "__main__":
    main()
