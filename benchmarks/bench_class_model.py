"""Class model visualisation (eq. 1): cost of one optimisation step, per class, against one
forward+backward pass of the same batch, for the paper's pixel parameterisation and the
decorrelated Fourier one (``param="fourier"``: FFT, colour matrix, sigmoid, random transform,
Adam).

The claim measured: one step of ``class_model`` on K classes costs at most 1.1x one
forward+backward pass of the (frozen) network on a batch of K images, i.e. all the extra work
of the parameterisation is cheap next to the network. Same model, same process, interleaved
repetitions, medians; ratios, not seconds, are what carries over between machines.

    python benchmarks/bench_class_model.py [--classes 12] [--steps 4] [--threads 2]

With ``--choices`` it measures instead what each parameter choice of ``param="fourier"`` does to
the class models of the paper's twelve Fig. 1 classes: for each setting in ``CHOICES`` (or those
named after ``--only``) one ``class_model`` run on EfficientNet-Lite0, its images reclassified by
Lite0 itself and by EfficientNet-Lite1 and Lite2 (top-1 and top-5 counts out of 12), the
high-frequency energy share and the seconds it took; one JSON line per setting (``--out``
appends them to a file) and a table at the end. This is the table of chapter 1's closing note:

    python benchmarks/bench_class_model.py --choices --threads 1 --seed 0 --out choices.jsonl

One step is timed as ``(T(class_model with n steps) - T(one forward pass)) / n``: a call of
``class_model`` is its set-up, ``n`` steps and one final scoring pass (forward only), so this
charges the set-up to the steps (conservative). The parts of a Fourier step (rendering the
image from its parameters, the random transform) are timed alone as well, forward and backward.
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
from deepinside.methods.class_model import FourierParam, class_model  # noqa: E402
from deepinside.core.models import frozen  # noqa: E402
from deepinside.methods.param import FourierImage, random_transform  # noqa: E402


FIG1 = ["dumbbell", "cup", "dalmatian", "bell pepper", "lemon", "Siberian husky",
        "washing machine", "computer keyboard", "kit fox", "goose", "ostrich", "limousine"]

#: Settings compared by ``--choices``: key -> (description, class_model keywords, FourierParam
#: fields).
CHOICES: dict[str, tuple[str, dict, dict]] = {
    "defaults": ("24 px, 0.7-1.3, 20 deg, lr 0.05 (defaults)", dict(steps=200, lr=0.05), {}),
    "16px": ("16 px, 0.8-1.2, 15 deg, lr 0.05", dict(steps=200, lr=0.05),
             dict(jitter=16.0, scale=(0.8, 1.2), rotate=15.0)),
    "16px-cosine": ("16 px, 0.8-1.2, 15 deg, cosine lr 0.1", dict(steps=200, lr=0.1),
                    dict(jitter=16.0, scale=(0.8, 1.2), rotate=15.0, schedule="cosine")),
    "16px-norotation": ("16 px, 0.8-1.2, no rotation, lr 0.05", dict(steps=200, lr=0.05),
                        dict(jitter=16.0, scale=(0.8, 1.2), rotate=0.0)),
    "lucid": ("12 px, 0.9-1.1, 10 deg, lr 0.05", dict(steps=200, lr=0.05),
              dict(jitter=12.0, scale=(0.9, 1.1), rotate=10.0)),
}


def choices(args: argparse.Namespace) -> None:
    import json
    import time

    from deepinside.methods.param import high_frequency_share
    from deepinside.measures.transfer import recognition

    clf = di.load_classifier()
    judges = {"L0": clf, "L1": di.load_classifier("efficientnet_lite1"),
              "L2": di.load_classifier("efficientnet_lite2")}
    names = args.only or list(CHOICES)
    rows = []
    for name in names:
        desc, kw, fields = CHOICES[name]
        t0 = time.perf_counter()
        r = class_model(clf, FIG1, param=FourierParam(**fields), seed=args.seed,
                        show_progress=False, **kw)
        row = {"setting": desc, "seed": args.seed, "threads": args.threads,
               "seconds": round(time.perf_counter() - t0, 1)}
        for j, c in judges.items():
            rank = recognition(c, r.images, r.classes)
            row[f"{j} top-1"], row[f"{j} top-5"] = int((rank == 0).sum()), int((rank < 5).sum())
        row["high-freq. share"] = round(float(high_frequency_share(r.images.cpu()).mean()), 3)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        rows.append(row)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--choices", action="store_true", help="measure the parameter choices")
    ap.add_argument("--only", nargs="*", choices=list(CHOICES), help="with --choices: these")
    ap.add_argument("--seed", type=int, default=0, help="with --choices: seed of the transforms")
    ap.add_argument("--out", default=None, help="with --choices: append JSON lines here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.choices:
        return choices(args)
    clf = di.load_classifier()
    k, n, s = args.classes, args.steps, clf.input_size
    classes = list(range(0, 1000, 1000 // k))[:k]
    dev = clf.device
    xk = torch.zeros(k, 3, s, s, device=dev, requires_grad=True)
    rows = torch.arange(k, device=dev)
    target = torch.tensor(classes, device=dev)
    fp = FourierParam()
    fimg = FourierImage(k, s, s, clf.mean, fp.alpha, fp.colour_matrix(), dev)
    p = fimg.zeros().requires_grad_(True)
    gen = torch.Generator().manual_seed(0)

    def fwd_bwd() -> None:                     # the peer: one pass of the same batch, K images
        xk.grad = None
        with frozen(clf.net) as net:
            net(xk)[rows, target].sum().backward()

    def fwd_bwd_cl() -> None:                  # the same in channels-last layout (class_model's)
        xk.grad = None
        with frozen(clf.net) as net:
            net(xk.contiguous(memory_format=torch.channels_last))[rows, target].sum().backward()

    def fwd() -> None:                         # the final scoring pass of a class_model call
        with torch.no_grad():
            clf.net(xk.contiguous(memory_format=torch.channels_last))

    def render() -> None:
        p.grad = None
        clf.normalize(fimg(p)).sum().backward()

    def render_move() -> None:
        p.grad = None
        x = clf.normalize(fimg(p))
        random_transform(x, gen, fp.jitter, fp.scale, fp.rotate).sum().backward()

    def run(param: str):
        return lambda: class_model(clf, classes, steps=n, param=param, show_progress=False)

    with frozen(clf.net):
        fns = {"pixel": run("pixel"), "fourier": run("fourier"), "fwd+bwd": fwd_bwd,
               "fwd+bwd cl": fwd_bwd_cl,
               "fwd": fwd, "render": render, "render+move": render_move}
        t = compare(fns, repeats=args.repeats, warmup=1)
    per_step = {f"class_model {q}, one step": (t[q] - t["fwd"]) / n for q in ("pixel", "fourier")}
    per_step["  of which: render P -> I"] = t["render"]
    per_step["  of which: render + random transform"] = t["render+move"]
    per_step["forward+backward, channels-last"] = t["fwd+bwd cl"]
    per_step["forward+backward"] = t["fwd+bwd"]
    ratios = report(f"class_model: {k} classes, {args.threads} thread(s), one step of all K "
                    f"(= K class-steps) vs one forward+backward of K images", per_step,
                    baseline="forward+backward")
    for q in ("pixel", "fourier"):
        print(f"ratio per class-step, {q}: {ratios[f'class_model {q}, one step']:.3f} "
              "(target <= 1.1)")


if __name__ == "__main__":
    main()
