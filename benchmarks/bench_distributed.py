"""Benchmark: `deepinside evaluate` with 1 process vs 2 processes under torchrun, same images.

    python benchmarks/bench_distributed.py [--images 200] [--root DIR]

Both runs use one torch thread per process (torchrun's default), so 2 processes may use 2 cores
where 1 uses one; the ratio says how much of the second core the sharding turns into speed
(ideal: 2.0). Wall-clock seconds of the whole command (model loading included), interleaved
(1, 2, 1, 2, ...); the two tables must be identical, and the script fails otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import deepinside as di


def run(cmd: list[str]) -> tuple[float, str]:
    env = dict(os.environ, DEEPINSIDE_PROGRESS="0", OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t0, out[out.index("images,"):]


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
    tables = set()
    for _ in range(a.repeats):
        for name, cmd in (("1 process", one), ("2 processes (torchrun)", two)):
            t, table = run(cmd)
            times[name].append(t)
            tables.add(table)
    if len(tables) != 1:
        raise SystemExit("the tables differ between 1 and 2 processes:\n" + "\n".join(tables))
    print(next(iter(tables)))
    t1, t2 = (statistics.median(v) for v in times.values())
    print(f"evaluate, {a.images} images of {root.name}, 1 thread per process (median of {a.repeats})")
    print(f"  1 process              {t1:8.1f} s   {a.images / t1:6.2f} img/s")
    print(f"  2 processes (torchrun) {t2:8.1f} s   {a.images / t2:6.2f} img/s")
    print(f"  speed-up               {t1 / t2:8.2f}x  (target >= 1.7)")


if __name__ == "__main__":
    main()
