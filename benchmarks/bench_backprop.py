"""Benchmark: guided back-propagation (Sect. 4) — ours vs. Captum's GuidedBackprop.

1. Speed and agreement on torchvision's VGG-11 (random weights, every ReLU set to
   ``inplace=False``, where Captum's module hooks are correct): the same batch, the same targets,
   the same process, interleaved repetitions (benchmarks/_runner.py); the median ratio
   ours / Captum (target <= 1.0), and the plain gradient (forward + ``autograd.grad``) as the floor.
   Agreement: max |ours - Captum| / max |Captum|, for guided and for DeconvNet (Captum's
   ``Deconvolution``), target <= 1e-4.
2. Correctness on EfficientNet-Lite0 (in-place ``nn.ReLU6`` inside timm's ``BatchNormAct2d``):
   relative difference of each method's map from the plain gradient. Captum hooks only
   ``nn.ReLU`` and silently returns the gradient (difference 0); ours must differ.

Run: ``python benchmarks/bench_backprop.py [--repeats 5] [--batch 4] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import compare, report  # noqa: E402

import deepinside as di  # noqa: E402


def ours(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, rule: str) -> torch.Tensor:
    xx = x.clone().requires_grad_()
    with di.backward_rule(net, rule):
        (g,) = torch.autograd.grad(net(xx).gather(1, target[:, None]).sum(), xx)
    return g


def captum(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, rule: str) -> torch.Tensor:
    from captum.attr import Deconvolution, GuidedBackprop

    method = GuidedBackprop if rule == "guided" else Deconvolution
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Setting backward hooks on ReLU activations"
        return method(net).attribute(x.clone().requires_grad_(), target=target.tolist())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def vgg_part(batch: int, repeats: int) -> tuple[float, dict[str, float]]:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.vgg11(weights=None).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    target = torch.arange(batch) * 7
    agree = {rule: rel(ours(net, x, target, rule), captum(net, x, target, rule)) for rule in ("guided", "deconvnet")}

    def gradient() -> torch.Tensor:
        return ours(net, x, target, "gradient")

    times = compare({"ours guided": lambda: ours(net, x, target, "guided"),
                     "captum guided": lambda: captum(net, x, target, "guided"),
                     "plain gradient": gradient}, repeats=repeats, warmup=1)
    ratios = report(f"guided backprop, VGG-11 (random weights, ReLU inplace=False), batch {batch} x 224^2",
                    times, baseline="captum guided")
    print("  agreement with Captum (max |ours - captum| / max |captum|): "
          + ", ".join(f"{k} {v:.2e}" for k, v in agree.items()))
    return ratios["ours guided"], agree


def lite0_part() -> dict[str, tuple[float, float]]:
    clf = di.load_classifier(device="cpu")
    photos = di.sample_images()
    x = clf.preprocess([photos["chelsea"], photos["coffee"]])
    target = clf.scores(x).argmax(1)
    grad = ours(clf.net, x, target, "gradient")
    table = {rule: (rel(ours(clf.net, x, target, rule), grad), rel(captum(clf.net, x, target, rule), grad))
             for rule in ("deconvnet", "guided")}
    print("\ncorrectness on EfficientNet-Lite0 (in-place ReLU6): max |map - gradient| / max |gradient|")
    print(f"  {'rule':<10} {'ours':>10} {'captum':>10}")
    for rule, (o, c) in table.items():
        print(f"  {rule:<10} {o:10.3f} {c:10.3f}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ratio, agree = vgg_part(args.batch, args.repeats)
    table = lite0_part()
    print(f"\nsummary: ours/captum guided = {ratio:.3f} (target <= 1.0); "
          f"agreement {max(agree.values()):.1e} (target <= 1e-4); "
          f"Lite0 captum == gradient: {all(c == 0 for _, c in table.values())}, "
          f"ours != gradient: {all(o > 0.01 for o, _ in table.values())}")


if __name__ == "__main__":
    main()
