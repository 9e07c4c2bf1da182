"""Class model visualisation (eq. 1): cost of one optimisation step, per class, against one
forward+backward pass of the same batch, for the paper's pixel parameterisation and the
decorrelated Fourier one (``param="fourier"``: FFT, colour matrix, sigmoid, random transform).

The claim measured: one step of ``class_model`` on K classes costs at most 1.1x one
forward+backward pass of the network on a batch of K images (all the extra work of the
parameterisation is cheap next to the network). Same model, same process, interleaved
repetitions; ratios, not seconds, are what carries over between machines.

    python benchmarks/bench_class_model.py [--classes 12] [--steps 2] [--threads 2]

One step is timed as the difference of a (1 + steps)-step and a 1-step call, divided by steps.
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
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = di.load_classifier()
    k, steps = args.classes, args.steps
    classes = list(range(0, 1000, 1000 // k))[:k]
    xk = torch.zeros(k, 3, clf.input_size, clf.input_size, device=clf.device, requires_grad=True)
    rows = torch.arange(k, device=clf.device)
    target = torch.tensor(classes, device=clf.device)

    def fwd_bwd() -> None:                     # the peer: one pass of the same batch, K images
        xk.grad = None
        clf.net(xk)[rows, target].sum().backward()

    def run(param: str, n: int):
        return lambda: class_model(clf, classes, steps=n, param=param, show_progress=False)

    # one step = (time of 1 + steps steps - time of 1 step) / steps: the set-up and the final
    # scoring pass, paid once per call, cancel
    fns = {f"{p} {n}": run(p, n) for p in ("pixel", "fourier") for n in (1, 1 + steps)}
    times = compare({**fns, "fwd+bwd": fwd_bwd}, repeats=args.repeats, warmup=1)
    per_step = {f"class_model {p}, one step": (times[f"{p} {1 + steps}"] - times[f"{p} 1"]) / steps
                for p in ("pixel", "fourier")}
    per_step["forward+backward"] = times["fwd+bwd"]
    ratios = report(f"class_model: {k} classes, {args.threads} thread(s), one step of all K "
                    f"(= K class-steps) vs one forward+backward of K images", per_step,
                    baseline="forward+backward")
    for p in ("pixel", "fourier"):
        print(f"ratio per class-step, {p}: {ratios[f'class_model {p}, one step']:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
