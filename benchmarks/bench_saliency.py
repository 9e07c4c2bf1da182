"""Benchmark: saliency maps (Sect. 3.1) — ours vs. Captum vs. a bare forward+backward pass.

Same model, same 16 images, same process, interleaved repetitions (benchmarks/_runner.py):

1. one centre-crop map per image, batch of 16, given the same target classes:
   ``deepinside.saliency`` vs. Captum's ``Saliency(abs=True)`` followed by the max over the
   colour channels (the same quantity) vs. a bare ``forward`` + ``autograd.grad`` (the floor:
   eq. 4 cannot cost less than one forward and one backward pass);
2. the paper's 10-crop map vs. the centre-crop map, both from PIL images (preprocessing
   included): the 10-crop map should cost at most ~10x a centre-crop map;
3. four maps of the same images (the gradient, CAM, Grad-CAM, the gradient gated by Grad-CAM,
   as chapter 3 computes them): ``deepinside.compute_map_set`` (one shared pass) vs. four calls
   of ``deepinside.compute_maps`` vs. Captum's ``Saliency`` + ``LayerGradCam`` (two passes; the
   gated map and CAM from those).

Run: ``python benchmarks/bench_saliency.py [--repeats 7] [--ten-repeats 3] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import compare, report  # noqa: E402

import deepinside as di  # noqa: E402


def sixteen_images() -> tuple[list, str]:
    """16 ILSVRC validation images when present, else the 8 offline photos and their mirrors."""
    root = di.default_ilsvrc_root()
    if root is not None and root.exists():
        ds = di.IlsvrcDataset(root)
        step = max(1, len(ds) // 16)
        return [ds[i][0] for i in range(0, step * 16, step)][:16], f"16 ILSVRC validation images from {root}"
    from PIL import ImageOps

    photos = list(di.sample_images().values())
    return photos + [ImageOps.mirror(p) for p in photos], "the 8 offline photos and their mirror images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ten-repeats", type=int, default=3, help="repetitions of the (slow) 10-crop comparison")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared machine, OpenMP threads that other processes deschedule make "
                         "multi-threaded timings bimodal)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from captum.attr import Saliency

    clf = di.load_classifier()
    images, what = sixteen_images()
    print(f"model {clf.name} on {clf.device}, {torch.get_num_threads()} threads; images: {what}")
    x = clf.preprocess(images)
    target = clf.scores(x).argmax(1)
    tlist = target.tolist()
    captum = Saliency(clf.net)

    def ours():
        return di.saliency(clf, x, target=target, batch_size=16)

    def ours_top1():
        return di.saliency(clf, x, target=None, batch_size=16)

    def peer_captum():
        return captum.attribute(x, target=tlist, abs=True).amax(dim=1)

    def bare():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(clf.net(xg).gather(1, target[:, None]).sum(), xg)
        return g

    # same numbers first: a benchmark of different answers means nothing
    ref = peer_captum()
    assert torch.allclose(ours(), ref, rtol=1e-5, atol=1e-8), "ours and Captum disagree"
    assert torch.allclose(ours_top1(), ref, rtol=1e-5, atol=1e-8), "target=None is not the top-1 class"

    times = compare({"ours": ours, "ours (target=None)": ours_top1, "captum Saliency(abs)+max": peer_captum,
                     "bare forward+backward": bare}, repeats=args.repeats, warmup=1)
    r_captum = report("centre-crop saliency, 16 images, one batch", times, baseline="captum Saliency(abs)+max")
    r_bare = report("  same, relative to the bare pass", times, baseline="bare forward+backward")

    # batches of 10 for both: on CPU this network runs fastest per image in small batches
    # (measured, 1 thread: ~78 ms per crop in batches of 10, ~94 in 20, ~112 in 40)
    ten = compare({"10-crop map (crops='ten')": lambda: di.saliency(clf, images, crops="ten", batch_size=10),
                   "centre-crop map (crops='center')": lambda: di.saliency(clf, images, batch_size=10)},
                  repeats=args.ten_repeats, warmup=1)
    r_ten = report("10-crop vs. centre-crop map, 16 PIL images (preprocessing included), batches of 10", ten,
                   baseline="centre-crop map (crops='center')")

    # four maps of the same images: one shared pass vs. one pass per method
    from captum.attr import LayerAttribution, LayerGradCam

    four = list(di.maps.JOINT_MAPS)
    last = di.maps.conv_layers(clf.net, x)[-1]
    gradcam_peer = LayerGradCam(clf.net, clf.net.get_submodule(last))

    def captum_two_passes():
        g = captum.attribute(x, target=tlist, abs=True).amax(dim=1)
        gc = gradcam_peer.attribute(x, target=tlist, relu_attributions=True)
        gc = LayerAttribution.interpolate(gc, tuple(x.shape[2:]), "bilinear")[:, 0]
        return {"gradient": g, "gradcam": gc, "gradient_gradcam": g * gc}

    shared = di.compute_map_set(clf, x, target, four, batch_size=16)
    peer = captum_two_passes()
    for m in peer:
        assert torch.allclose(shared[m], peer[m], rtol=1e-4, atol=1e-7), f"{m}: ours and Captum disagree"
    sets = compare({"compute_map_set (one pass)": lambda: di.compute_map_set(clf, x, target, four, batch_size=16),
                    "4 x compute_maps": lambda: [di.compute_maps(clf, x, target, m, batch_size=16) for m in four],
                    "captum Saliency + LayerGradCam": captum_two_passes}, repeats=args.repeats, warmup=1)
    r_set = report("gradient, CAM, Grad-CAM, gated gradient of 16 images", sets,
                   baseline="captum Saliency + LayerGradCam")

    print("\nsummary (targets: ours/captum <= 1.05, ours/bare <= 1.05, ten/centre <= 10.5, "
          "map set/captum < 1)")
    print(f"  four maps: one pass / captum's two   {r_set['compute_map_set (one pass)']:.3f}   "
          f"(4 x compute_maps: {r_set['4 x compute_maps']:.3f})")
    print(f"  ours / captum          {r_captum['ours']:.3f}")
    print(f"  ours / bare fwd+bwd    {r_bare['ours']:.3f}   (target=None: {r_bare['ours (target=None)']:.3f})")
    print(f"  10-crop / centre crop  {r_ten[next(iter(ten))]:.2f}")


if __name__ == "__main__":
    main()
