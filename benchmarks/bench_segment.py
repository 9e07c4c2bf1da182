"""Benchmark: deepinside.segment vs OpenCV grabCut (1 iteration), same image, same seeds.

    python benchmarks/bench_segment.py [--images N] [--root DIR] [--maps NAME ...]

Both start from the paper's seeds on the same saliency map (top-1 class, centre crop): the pixels
above the 95 % quantile are definite foreground, below the 30 % quantile definite background
(``GC_FGD`` / ``GC_BGD``), the others "probably foreground" above the median saliency and "probably
background" below (``GC_PR_FGD`` / ``GC_PR_BGD``); grabCut runs one iteration from that mask
(``GC_INIT_WITH_MASK``). Two comparisons, interleaved in one process:

1. ``segment`` with its defaults (it works at shorter side 112 px) vs grabCut on the full image,
   i.e. what a user gets from each;
2. both on the same 112-px working image (``segment(work_side=None)``): the cost of the
   algorithms alone.

Then the seconds per image of ``evaluate_localisation`` on ILSVRC images (when present; ``--root``
another folder, ``--maps`` the map methods): the saliency (``precompute_saliency``) and the
GraphCut boxes separately, for the default map (gradient x Grad-CAM, whole image) and the paper's
centre-crop gradient, in one process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _runner import compare, report  # noqa: E402

import deepinside as di  # noqa: E402
from deepinside.measures.localisation import saliency_in_image, saliency_seeds  # noqa: E402


def grabcut_mask(img: np.ndarray, sal: np.ndarray):
    """OpenCV grabCut, 1 iteration, mask initialised from the paper's quantile seeds."""
    import cv2

    fg, bg = saliency_seeds(sal)
    med = np.median(sal)
    mask = np.where(sal >= med, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[fg], mask[bg] = cv2.GC_FGD, cv2.GC_BGD

    def run():
        m = mask.copy()
        cv2.grabCut(np.ascontiguousarray(img[:, :, ::-1]), m, None, np.zeros((1, 65)), np.zeros((1, 65)), 1,
                    cv2.GC_INIT_WITH_MASK)
        return (m == cv2.GC_FGD) | (m == cv2.GC_PR_FGD)

    return run


def main() -> None:
    import cv2
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20, help="ILSVRC images for the seconds-per-image part")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--root", type=Path, help="ILSVRC-layout folder (default: the 201-image sample)")
    ap.add_argument("--maps", action="append",
                    help="map method(s) of the evaluate_localisation timing (default: the default "
                         "map and the paper's centre-crop gradient, timed in one process)")
    args = ap.parse_args()
    os.environ.setdefault("DEEPINSIDE_PROGRESS", "0")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    clf = di.load_classifier()
    root = args.root or di.default_ilsvrc_root()
    have_ilsvrc = root is not None and (root / "images").is_dir()
    if have_ilsvrc:
        image, rec = di.IlsvrcDataset(root)[3]
        name = rec.image_path.name
    else:
        image, name = di.sample_images(["chelsea"])["chelsea"], "chelsea (skimage)"
    top1 = clf.predict(image, topk=1)[0][0][0]
    sal = saliency_in_image(clf, image, [top1], crops="center")[0].astype(np.float64)
    img = np.asarray(image)
    H, W = img.shape[:2]
    print(f"image {name}: {W}x{H}, class {clf.class_names[top1]!r}")

    times = compare({
        "deepinside.segment (defaults, 112 px)": lambda: di.segment(img, sal),
        "cv2.grabCut 1 iter (full image)": grabcut_mask(img, sal),
    }, repeats=args.repeats, warmup=1)
    report(f"segment vs grabCut, same image ({W}x{H}) and seeds, median of {args.repeats}", times,
           baseline="cv2.grabCut 1 iter (full image)")

    s = 112 / min(H, W)
    w, h = round(W * s), round(H * s)
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    small_sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_AREA)
    times = compare({
        "deepinside.segment (work_side=None)": lambda: di.segment(small, small_sal, work_side=None),
        "cv2.grabCut 1 iter": grabcut_mask(small, small_sal),
    }, repeats=args.repeats, warmup=1)
    report(f"same {w}x{h} working image, same seeds, median of {args.repeats}", times,
           baseline="cv2.grabCut 1 iter")

    if not have_ilsvrc:
        print("\nno ILSVRC data: skipped the seconds-per-image part of evaluate_localisation")
        return
    from deepinside.measures.evaluation import evaluate_localisation, precompute_saliency

    ds = di.IlsvrcDataset(root, limit=args.images)
    n = len(ds)
    runs = [(m, "full") for m in args.maps] if args.maps else \
        [("gradient_gradcam", "full"), ("gradient", "center")]
    print(f"\nevaluate_localisation on {n} images of {root.name} (top-5, GraphCut boxes, "
          f"{torch.get_num_threads()} threads), seconds per image, in one process:")
    for maps, crops in runs:
        t0 = time.perf_counter()
        cache = precompute_saliency(clf, ds, crops=crops, maps=maps)
        t1 = time.perf_counter()
        evaluate_localisation(clf, ds, cache=cache)
        t2 = time.perf_counter()
        print(f"  {maps:>17s} ({crops:6s}): saliency {(t1 - t0) / n:.3f}, boxes {(t2 - t1) / n:.3f}, "
              f"total {(t2 - t0) / n:.3f} s/image -> {(t2 - t0) / n * 650 / 60:.1f} min for 650")
    boxes_over_threads(clf, ds, cache, args.repeats)


def boxes_over_threads(clf, ds, cache, repeats: int) -> None:
    """The GraphCut boxes of one cache on one thread and over every core this process may use
    (``localisation_outcomes(workers=...)``, :func:`deepinside.core.parallel.thread_map`),
    alternated, the same boxes checked."""
    from deepinside.core.parallel import usable_cores
    from deepinside.measures.evaluation import localisation_outcomes

    cores = usable_cores()
    times: dict[str, list[float]] = {"1 thread": [], f"{cores} threads": []}
    got = {}
    for _ in range(max(2, repeats // 2)):
        for name, workers in (("1 thread", 1), (f"{cores} threads", None)):
            cache.boxes.clear()   # the memo would answer the second run
            t0 = time.perf_counter()
            got[name] = localisation_outcomes(clf, ds, cache, "graphcut", workers=workers).box
            times[name].append(time.perf_counter() - t0)
    a, b = got.values()
    assert np.array_equal(a, b, equal_nan=True), "the boxes depend on the number of threads"
    report(f"GraphCut boxes of {len(ds)} images (the last cache above), 1 thread against {cores}, "
           f"median of {len(times['1 thread'])}",
           {k: float(np.median(v)) for k, v in times.items()}, baseline="1 thread")


if __name__ == "__main__":
    main()
