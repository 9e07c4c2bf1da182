"""Benchmark: the top-k activation scan (Zeiler & Fergus Fig. 2) vs. a plain forward pass.

Same model, same 64 images (network input, preprocessing excluded), same batch size, same
process, interleaved repetitions (benchmarks/_runner.py):

- ``top_activations`` over the chapter's four layers (``blocks.1``, ``blocks.2``, ``blocks.4``,
  ``conv_head``; one pass, the network stops after ``conv_head``) and over ``bn2`` alone;
- a plain ``net(x)`` forward pass over the same batches (the floor: a scan reads every image once).

Before timing, the scan is checked equal to a brute force (every image's spatial maximum per unit,
then a stable sort over images): values and image indices.

Target (issue 12): scan time <= 1.15x the plain forward pass.

Run: ``python benchmarks/bench_features.py [--images 64] [--batch 32] [--repeats 5] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import compare, report  # noqa: E402

import deepinside as di  # noqa: E402
from deepinside import features  # noqa: E402

LAYERS = ["blocks.1", "blocks.2", "blocks.4", "conv_head"]


def images(n: int) -> tuple[list, str]:
    data, what, _ = features.book_images()
    step = max(1, len(data) // n)
    idx = list(range(0, len(data), step))[:n]
    return [data.image(i) for i in idx], f"{len(idx)} of {what}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 on a shared machine: multi-threaded timings are bimodal there)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = di.load_classifier()
    imgs, what = images(args.images)
    x = clf.preprocess(imgs)
    print(f"model {clf.name} on {clf.device}, {torch.get_num_threads()} threads; {what}; batch {args.batch}")

    # same numbers first: the scan equals a brute-force per-image maximum
    top = features.top_activations(clf, x, LAYERS, k=9, batch_size=args.batch, show_progress=False)
    for layer in LAYERS:
        a = features.activations(clf, x, layer, batch_size=args.batch)      # (N, C, h, w)
        v = a.flatten(2).amax(2).T                                          # (C, N)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :9]
        assert torch.equal(top[layer].image_index, order), f"{layer}: image indices differ"
        assert torch.allclose(top[layer].values, v.gather(1, order)), f"{layer}: values differ"
    print(f"  top-9 of {', '.join(LAYERS)} equal to the brute force on {len(x)} images")

    def plain():
        with torch.inference_mode():
            return [clf.net(x[i:i + args.batch]) for i in range(0, len(x), args.batch)]

    def scan4():
        return features.top_activations(clf, x, LAYERS, k=9, batch_size=args.batch, show_progress=False)

    def scan_last():
        return features.top_activations(clf, x, "bn2", k=9, batch_size=args.batch, show_progress=False)

    times = compare({"top-9 scan, 4 layers": scan4, "top-9 scan, bn2": scan_last, "plain forward": plain},
                    repeats=args.repeats, warmup=1)
    r = report(f"top-k scan over {len(x)} images vs. a plain forward pass", times, baseline="plain forward")
    print("\nsummary (target: <= 1.15)")
    print(f"  scan (4 layers) / plain forward   {r['top-9 scan, 4 layers']:.3f}")
    print(f"  scan (bn2) / plain forward        {r['top-9 scan, bn2']:.3f}")


if __name__ == "__main__":
    main()
