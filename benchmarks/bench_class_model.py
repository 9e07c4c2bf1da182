"""Class model visualisation (eq. 1): cost per class per step, batched, vs. one forward+backward.

``class_model`` optimises K classes in one batch. The claim measured here: one step for K classes
costs at most about K single-image forward+backward passes (ratio per class-step <= 1.1), i.e.
batching costs nothing and usually saves. Same model, same process, interleaved repetitions.

    python benchmarks/bench_class_model.py [--classes 12] [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("DEEPINSIDE_PROGRESS", "0")

from _runner import compare, report  # noqa: E402

import deepinside as di  # noqa: E402
from deepinside.class_model import class_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = di.load_classifier()
    k, steps = args.classes, args.steps
    classes = list(range(0, 1000, 1000 // k))[:k]
    x1 = torch.zeros(1, 3, clf.input_size, clf.input_size, device=clf.device, requires_grad=True)

    def single_fwd_bwd():
        x1.grad = None
        clf.net(x1)[0, 0].backward()

    def batched():
        class_model(clf, classes, steps=steps, lr=1.0, l2=1e-3, show_progress=False)

    times = compare({"class_model batch": batched, "single fwd+bwd": single_fwd_bwd},
                    repeats=args.repeats, warmup=1)
    per_class_step = {"class_model, per class per step": times["class_model batch"] / (k * steps),
                      "single fwd+bwd": times["single fwd+bwd"]}
    ratios = report(f"class_model: {k} classes x {steps} steps ({args.threads} thread(s)), per class-step",
                    per_class_step, baseline="single fwd+bwd")
    print(f"\nratio per class-step / single forward+backward: {ratios['class_model, per class per step']:.3f} "
          f"(target <= 1.1)")


if __name__ == "__main__":
    main()
