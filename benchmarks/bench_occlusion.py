"""Benchmark: occlusion sensitivity (Zeiler & Fergus Fig. 7) — ours vs. Captum's ``Occlusion``.

Same model, same images, same window/stride/baseline/target, same process, interleaved
repetitions (benchmarks/_runner.py):

1. the target's map alone: ``deepinside.occlusion`` (no layer) vs. Captum's
   ``Occlusion.attribute(perturbations_per_eval=16)``; the Captum-convention attribution derived
   from our score map is checked equal to Captum's first (1e-4 of its largest value);
2. the whole Fig. 7 set (score, probability and top class of every position, plus the total
   activity of the strongest feature map of ``bn2``): ours in one call vs. Captum in two calls
   (the class map, then the layer activity through a forward function that runs the network up
   to the layer only and returns the map's total);
3. ours alone on chapter 3's geometry (whole 224 x 299 images, window and stride 48): the local
   path, set up cold, against the full network (issue 21).

Targets (issue 12): ours/Captum <= 0.8 for 1, <= 0.45 for 2.

Run: ``python benchmarks/bench_occlusion.py [--images 2] [--window 56] [--stride 28]
[--repeats 5] [--threads 1] [--whole 16]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import compare, report  # noqa: E402

import deepinside as di  # noqa: E402
from deepinside.methods.occlusion import occlusion, resolve_layer  # noqa: E402


def some_images(n: int) -> tuple[list, str]:
    """``n`` ILSVRC validation images when present, else the offline photos."""
    root = di.default_ilsvrc_root()
    if root is not None and (root / "images").is_dir():
        ds = di.IlsvrcDataset(root)
        step = max(1, len(ds) // n)
        return [ds[i][0] for i in range(0, step * n, step)][:n], f"{n} ILSVRC validation images"
    photos = list(di.sample_images().values())
    return [photos[i % len(photos)] for i in range(n)], f"{n} offline photos"


class _Stop(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--window", type=int, default=56)
    ap.add_argument("--stride", type=int, default=28)
    ap.add_argument("--layer", default="bn2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--whole", type=int, default=16,
                    help="whole 224 x 299 images of part 3 (chapter 3's occlusion geometry)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 on a shared machine: multi-threaded timings are bimodal there)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from captum.attr import Occlusion

    clf = di.load_classifier()
    images, what = some_images(args.images)
    x = clf.preprocess(images)
    w, s = args.window, args.stride
    print(f"model {clf.name} on {clf.device}, {torch.get_num_threads()} threads; {what}; "
          f"window {w}, stride {s}, layer {args.layer}")
    ref = occlusion(clf, x, window=w, stride=s, layer=args.layer, show_progress=False)
    target, unit = ref.target.tolist(), ref.unit.to(clf.device)
    print(f"{ref.grid[0]}x{ref.grid[1]} positions per image")
    captum_scores = Occlusion(clf.net)
    module = resolve_layer(clf.net, args.layer)

    def layer_total(inp: torch.Tensor) -> torch.Tensor:
        """Total activity of each image's strongest map of ``layer``; the net stops there."""
        got: list[torch.Tensor] = []

        def hook(m, a, out):
            got.append(out)
            raise _Stop

        h = module.register_forward_hook(hook)
        try:
            clf.net(inp)
        except _Stop:
            pass
        finally:
            h.remove()
        out = got[0]
        u = unit.repeat(len(inp) // len(unit))        # Captum tiles the images: [p0: all, p1: all, ...]
        return out[torch.arange(len(out)), u].sum((1, 2))

    captum_layer = Occlusion(layer_total)
    kw = dict(sliding_window_shapes=(3, w, w), strides=(3, s, s), baselines=0.0, perturbations_per_eval=16)

    def ours_map():
        return occlusion(clf, x, target=ref.target, window=w, stride=s, show_progress=False)

    def ours_all():
        return occlusion(clf, x, window=w, stride=s, layer=args.layer, show_progress=False)

    def peer_map():
        return captum_scores.attribute(x, target=target, **kw)

    def peer_all():
        return peer_map(), captum_layer.attribute(x, **kw)

    # same numbers first: a benchmark of different answers means nothing
    a_ref, a_layer = peer_all()
    ours = ours_all()
    for name, mine, theirs in (("score", ours.attribution("score"), a_ref),
                               ("activity", ours.attribution("activity"), a_layer)):
        err = float((mine - theirs).abs().max() / theirs.abs().max())
        print(f"  attribution of the {name}: max |ours - captum| / max |captum| = {err:.2e}")
        assert err <= 1e-4, f"ours and Captum disagree on the {name} attribution"
    # (Captum's layer total over one batch of 16 equals ours: same unit per image)

    times = compare({"ours: target map": ours_map, "captum Occlusion: target map": peer_map},
                    repeats=args.repeats, warmup=0)
    r1 = report("target map alone", times, baseline="captum Occlusion: target map")
    times2 = compare({"ours: Fig. 7 set, one call": ours_all, "captum: class map + layer activity": peer_all},
                     repeats=args.repeats, warmup=0)
    r2 = report("the whole Fig. 7 set (score, prob, top class, layer activity)", times2,
                baseline="captum: class map + layer activity")
    print("\nsummary (targets: <= 0.80 and <= 0.45)")
    print(f"  ours / captum, target map     {r1['ours: target map']:.3f}")
    print(f"  ours / captum, Fig. 7 set     {r2['ours: Fig. 7 set, one call']:.3f}")
    whole_images(clf, args.whole, args.repeats)


def whole_images(clf, n: int, repeats: int) -> None:
    """3. Chapter 3's occlusion maps: ``n`` whole images of one size (shorter side 224, e.g.
    224 x 299, a side not a multiple of 4), window 48, stride 48: the local path set up cold on
    each call (the plan and its receptive fields made anew, as for each new image size in the
    chapter) against the full network on every copy; the same scores checked first."""
    from deepinside.methods import occlusion as occ_mod
    from deepinside.methods import receptive

    x = torch.randn(n, 3, 224, 299, generator=torch.Generator().manual_seed(0))

    def local():
        occ_mod._VERIFIED.clear()
        receptive._RF_CACHE.clear()
        return occlusion(clf, x, window=48, stride=48, show_progress=False)

    def full():
        return occlusion(clf, x, window=48, stride=48, show_progress=False, local=False)

    assert torch.equal(local().score, full().score), "the local path changed the scores"
    times = compare({"local path, cold": local, "full network": full}, repeats=repeats, warmup=0)
    report(f"{n} whole images of 224 x 299, window 48, stride 48 ({n * 25} copies; "
           f"local from {occ_mod.LOCAL_MIN_COPIES})", times, baseline="full network")


if __name__ == "__main__":
    main()
