"""Benchmark: the metrics of chapter 6 against the network passes they cannot avoid.

Same model, same images, same process, interleaved repetitions (benchmarks/_runner.py):

1. deletion/insertion (Petsiuk et al. 2018) of N images with S steps, maps given, vs. the same
   number of plain forward passes, ``N * 2 * (S + 1)`` rows through ``clf.scores`` in the same
   batch size (target: ratio <= 1.15: building the perturbed inputs, the blur and the ranking
   must cost little next to the network);
2. the cascading randomisation test (Adebayo et al. 2018) over B blocks vs. recomputing the maps
   B + 1 times on the trained model (the original maps and one per block): the ratio is what the
   copy, the re-initialisation and the four similarity measures add.

Run: ``python benchmarks/bench_metrics.py [--images 4] [--steps 16] [--blocks 3] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import compare, report  # noqa: E402

import deepinside as di  # noqa: E402
from deepinside import metrics  # noqa: E402


def some_images(n: int) -> tuple[list, str]:
    """``n`` ILSVRC validation images when present, else the offline photos."""
    root = di.default_ilsvrc_root()
    if root is not None and root.exists():
        ds = di.IlsvrcDataset(root)
        step = max(1, len(ds) // n)
        return [ds[i][0] for i in range(0, step * n, step)][:n], f"{n} ILSVRC validation images from {root}"
    photos = list(di.sample_images().values())
    return (photos * n)[:n], "the offline photos"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = di.load_classifier()
    images, what = some_images(args.images)
    print(f"model {clf.name} on {clf.device}, {torch.get_num_threads()} threads; images: {what}")
    x = clf.preprocess(images)
    maps = di.compute_maps(clf, x)
    rows = args.images * 2 * (args.steps + 1)
    plain = x.repeat(2 * (args.steps + 1), 1, 1, 1).contiguous(memory_format=torch.channels_last)
    assert len(plain) == rows

    def ours():
        return di.deletion_insertion(clf, x, maps, steps=args.steps, batch_size=args.batch_size)

    def forwards():
        return clf.scores(plain, batch_size=args.batch_size)

    times = compare({"deletion_insertion": ours, "plain forward passes": forwards},
                    repeats=args.repeats, warmup=1)
    r_del = report(f"deletion + insertion, {args.images} images x {args.steps + 1} steps "
                   f"= {rows} forward passes", times, baseline="plain forward passes")

    blocks = metrics.randomisation_blocks(clf.net)[:args.blocks]

    def randomisation():
        return di.randomisation_test(clf, x, "gradient", blocks=blocks)

    def recompute():
        for _ in range(len(blocks) + 1):
            di.compute_maps(clf, x, method="gradient", signed=True)

    times = compare({"randomisation_test": randomisation, "maps recomputed": recompute},
                    repeats=max(1, args.repeats // 2), warmup=1)
    r_rand = report(f"cascading randomisation, {len(blocks)} blocks, {args.images} images, gradient",
                    times, baseline="maps recomputed")

    print("\nsummary (targets: deletion/forwards <= 1.15)")
    print(f"  deletion_insertion / plain forwards      {r_del['deletion_insertion']:.3f}")
    print(f"  randomisation_test / maps recomputed     {r_rand['randomisation_test']:.3f}"
          f"   (per block: {times['randomisation_test'] / len(blocks) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
