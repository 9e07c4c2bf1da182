"""Command line: ``deepinside localise IMAGE...``, ``deepinside evaluate ILSVRC_ROOT``, and
``top-activations``, ``class-models``, ``fetch-data`` (the book's ILSVRC sample).

``localise`` prints, as JSON on stdout, the boxes of the top-k classes of each image found by the
weakly supervised localisation of Simonyan et al. (2014, Sect. 3.2), and with ``--out DIR`` writes
the four-panel figure of their Fig. 3 for each image. ``evaluate`` prints the ILSVRC localisation
error of that method and of the baselines on a folder in the ILSVRC layout (``images/``,
``annotations/``). User errors (missing or unreadable files, a folder in the wrong layout, bad
options) end with a one-line message on stderr and exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

if TYPE_CHECKING:
    from .core.data import IlsvrcDataset

# Only the standard library at import: `deepinside --help` answers without torch (issue 22). Each
# command imports what it needs; the lists of choices (maps, box rules, frames) are read from the
# package when argparse first checks or prints them.

__all__ = ["main"]


class UserError(Exception):
    """An error caused by the command's input: reported without a traceback."""


class _Choices:
    """The names of a package list, read when argparse checks a value or prints a command's help."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load

    def __contains__(self, value: object) -> bool:
        return value in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _map_names() -> tuple[str, ...]:
    from .methods.maps import map_names

    return map_names()


def _box_names() -> tuple[str, ...]:
    from .measures.evaluation import METHODS

    return METHODS


def _crop_names() -> tuple[str, ...]:
    from .core.frames import CROPS

    return CROPS


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _map_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(key, value)``; the value as int, float, bool or string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. n=50), got {text!r}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepinside",
        description="Weakly supervised localisation from class saliency maps (Simonyan et al. 2014, Sect. 3.2).")
    sub = p.add_subparsers(dest="command", required=True,
                           metavar="{localise,evaluate,top-activations,class-models,fetch-data}")

    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--model", default="efficientnet_lite0", help="classifier name (default: %(default)s)")
    base.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', ... (default: %(default)s)")
    common = argparse.ArgumentParser(add_help=False, parents=[base])
    common.add_argument("--topk", type=_positive_int, default=5, help="classes per image (default: %(default)s)")
    common.add_argument("--crops", choices=_Choices(_crop_names), default=None, metavar="FRAME",
                        help="saliency from the 10-crop average (paper), the centre crop, or the whole image: "
                             "one of %(choices)s (default: ten for localise, full for evaluate: every "
                             "pixel seen)")

    loc = sub.add_parser("localise", parents=[common], help="boxes of the top-k classes as JSON",
                         description="Print the top-k (class, box) guesses of each image as JSON; "
                                     "with --out, save the Fig. 3 panels of the top-1 class.")
    loc.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    loc.add_argument("--out", type=Path, metavar="DIR", help="write <image stem>_localisation.png here")

    ev = sub.add_parser("evaluate", parents=[common], help="ILSVRC localisation error and baselines",
                        description="Top-1/top-k localisation error (ILSVRC rule, IoU >= 0.5) of the "
                                    "GraphCut method (default: seeds from the gradient map gated by "
                                    "Grad-CAM, whole image), CAM's threshold box and the baselines on "
                                    "an ILSVRC-layout folder; --maps/--boxes evaluate another "
                                    "combination.")
    ev.add_argument("root", type=Path, metavar="ILSVRC_ROOT", help="folder with images/ and annotations/")
    ev.add_argument("--limit", type=_positive_int, help="use only the first N annotated images")
    ev.add_argument("--out", type=Path, metavar="DIR",
                    help="write each shard's counts to DIR/shards/ as it finishes: a killed run "
                         "restarts where it stopped, and a finished one only merges")
    ev.add_argument("--shard-size", type=_positive_int, default=64,
                    help="images per shard (default: %(default)s; the unit of work of a process)")
    ev.add_argument("--threads", type=_positive_int,
                    help="torch threads per process (default: torch's; torchrun sets 1)")
    ev.add_argument("--maps", choices=_Choices(_map_names), metavar="NAME",
                    help="evaluate the boxes of this saliency method only (beside the baselines); "
                         "one of %(choices)s (default: the table of the usual rows)")
    ev.add_argument("--boxes", choices=_Choices(_box_names), metavar="NAME",
                    help="box rule with --maps: one of %(choices)s (default: graphcut)")
    ev.add_argument("--metric", choices=("ilsvrc", "maxboxacc"), default="ilsvrc",
                    help="ilsvrc: the top-1/top-k localisation error table (default); maxboxacc: "
                         "MaxBoxAccV2 of Choe et al. (2020) per map (whole image resized to the "
                         "input size, ground-truth class, all contours, thresholds 0.00-0.99; "
                         "maps: --maps, else cam, gradient and the default map)")
    ev.add_argument("--map-option", action="append", type=_map_option, default=[], metavar="KEY=VALUE",
                    help="an option of the --maps method, repeatable (e.g. n=50 for smoothgrad, "
                         "stride=16 for occlusion)")
    loc.set_defaults(crops_default="ten")
    ev.set_defaults(crops_default="full")

    def sharded(q: argparse.ArgumentParser, size: int, what: str) -> None:
        q.add_argument("--out", type=Path, metavar="DIR", required=True,
                       help="results, and one file per finished shard under DIR/shards/ (a killed "
                            "run restarts where it stopped)")
        q.add_argument("--shard-size", type=_positive_int, default=size,
                       help=f"{what} per shard (default: %(default)s)")
        q.add_argument("--threads", type=_positive_int,
                       help="torch threads per process (default: torch's; torchrun sets 1)")

    top = sub.add_parser("top-activations", parents=[base],
                         help="Zeiler & Fergus's top-k images of feature maps over image folders",
                         description="Stream image folders through the network and keep, for each "
                                     "feature map (unit) of each layer, the k images where it is "
                                     "strongest (spatial maximum), as in Zeiler & Fergus's Fig. 2.")
    top.add_argument("roots", nargs="+", type=Path, metavar="ILSVRC_ROOT",
                     help="folders with images/ and annotations/ (scanned in this order)")
    top.add_argument("--layer", action="append", required=True, metavar="NAME",
                     help="module name of the network (repeat for several layers)")
    top.add_argument("--units", type=_positive_int, metavar="N",
                     help="a seeded random subset of N feature maps per layer (default: all)")
    top.add_argument("--k", type=_positive_int, default=9, help="images per unit (default: %(default)s)")
    top.add_argument("--batch-size", type=_positive_int, default=32, help="(default: %(default)s)")
    top.add_argument("--seed", type=int, default=0, help="for --units (default: %(default)s)")
    top.add_argument("--limit", type=_positive_int, help="use only the first N images of each root")
    sharded(top, 256, "images")

    cm = sub.add_parser("class-models", parents=[base], help="class models (Sect. 2, eq. 1) as PNGs",
                        description="Class model visualisation (Simonyan et al. 2014, eq. 1) for "
                                    "many classes, batched; writes DIR/<index>_<name>.png and "
                                    "DIR/class_models.json.")
    cm.add_argument("classes", nargs="*", metavar="CLASS",
                    help="class names, WordNet ids or indices (default with --gallery: its 48)")
    cm.add_argument("--gallery", action="store_true", help="the 48 classes of chapter 1's gallery")
    cm.add_argument("--all", action="store_true", help="all classes of the model")
    cm.add_argument("--param", choices=("pixel", "fourier"), default="fourier",
                    help="parameterisation (default: %(default)s)")
    cm.add_argument("--steps", type=_positive_int, help="optimisation steps (default: the method's)")
    cm.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    sharded(cm, 8, "classes")

    fd = sub.add_parser("fetch-data", help="fetch the book's ILSVRC sample (850 images, 46 MB)",
                        description="Fetch the book's ILSVRC-2012 validation sample (850 images "
                                    "with boxes, two folders) from its public sources, check every "
                                    "file's SHA-256, and print the two folders. "
                                    "$DEEPINSIDE_DATA_URL replaces https://raw.githubusercontent.com "
                                    "(a mirror). A second run fetches nothing; an interrupted one, "
                                    "rerun, fetches only what is missing.")
    fd.add_argument("--dest", type=Path, default=None,
                    help="destination folder (default: $DEEPINSIDE_DATA, else the per-user cache)")
    fd.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _fetch_data(args) -> int:
    from .core.fetch import FetchError, fetch_ilsvrc_sample

    try:
        roots = fetch_ilsvrc_sample(args.dest, progress=not args.quiet)
    except FetchError as e:
        raise UserError(str(e)) from None
    for folder, root in roots.items():
        print(f"{folder}\t{root}")
    return 0


def _top_activations(args) -> int:
    import torch

    from .core.data import IlsvrcDataset
    from .methods.features import ImageList
    from .jobs import save_top_activations, top_activations_job
    from .core.layers import resolve_layer

    try:
        parts = [IlsvrcDataset(r, limit=args.limit) for r in args.roots]
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UserError(str(e)) from None
    data = ImageList(parts)
    clf = _classifier(args)  # needed for the layer shapes (cheap next to the scan)
    units: dict = {}
    gen = torch.Generator().manual_seed(args.seed)
    for name in args.layer:
        try:
            mod = resolve_layer(clf.net, name)
        except (ValueError, KeyError, AttributeError) as e:
            raise UserError(str(e)) from None
        c = _channels(clf, mod)
        if args.units is not None and args.units < c:
            units[name] = sorted(torch.randperm(c, generator=gen)[:args.units].tolist())
        else:
            units[name] = None
    key = {"job": "top-activations", "model": args.model, "layers": args.layer, "units": units,
           "k": args.k, "batch_size": args.batch_size, "shard_size": args.shard_size,
           "data": data.key()}
    store = _store(args.out, key, inputs=_records_digest(data.records),
                   check=_check_top(args.layer, units, args.k))
    try:
        res = top_activations_job(lambda: clf, data, args.layer, units, args.k,
                                  batch_size=args.batch_size, shard_size=args.shard_size,
                                  device=clf.device, threads=args.threads, store=store)
    except ValueError as e:
        raise UserError(str(e)) from None
    if res is None:
        return 0
    save_top_activations(args.out / "top_activations.json", res)
    names = [r.image_path.name for r in data.records]
    for name, r in res.items():
        print(f"{name}: {len(r.units)} units, {r.n_images} images, top-{r.k} in "
              f"{args.out / 'top_activations.json'}")
        for row in range(min(3, len(r.units))):
            best = ", ".join(f"{names[int(i)]} ({float(v):.2f})"
                             for v, i in zip(r.values[row, :3], r.image_index[row, :3]))
            print(f"  unit {int(r.units[row])}: {best}, ...")
    return 0


def _channels(clf, module) -> int:
    """Channels of a module's output, from one forward pass of a blank input."""
    import torch

    out: dict[str, int] = {}

    def hook(m, a, y) -> None:  # returns None: the output is left as it is
        out["c"] = int(y.shape[1])

    from .core.hooks import forward_hook

    with forward_hook(module, hook), torch.inference_mode():
        s = clf.input_size
        clf.net(torch.zeros(1, 3, s, s, device=clf.device))
    return int(out["c"])


def _store(out: Path, key: dict, **checks):
    """The shard store of ``--out`` (``checks``: ``inputs`` and ``check`` of :class:`ShardStore`)."""
    from .core.distributed import ShardStore

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    try:
        return ShardStore(out, key, **checks)
    except ValueError as e:
        raise UserError(str(e)) from None


def _records_digest(records: Sequence) -> Callable[[int, int], str]:
    """A shard's content hash: the bytes of its images and their annotations."""
    from .core.data import record_files
    from .core.distributed import files_digest

    return lambda a, b: files_digest([f for r in records[a:b] for f in record_files(r)])


def _is_count(x: object, n: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= n


def _wrong_rows(res: dict, n: int, names: Sequence[str]) -> str | None:
    """An evaluate shard of ``n`` images that has another size or other rows than the job's."""
    if res["n"] != n:
        return f"n = {res['n']!r} for a shard of {n} images"
    if sorted(res["rows"]) != sorted(names):
        return f"rows {sorted(res['rows'])}, expected {sorted(names)}"
    return None


def _check_counts(names: Sequence[str], k: int) -> Callable[[dict, int, int], str | None]:
    """What is impossible in an evaluate shard of images ``a..b-1``."""
    def check(res: dict, a: int, b: int) -> str | None:
        n = b - a
        wrong = _wrong_rows(res, n, names)
        if wrong:
            return wrong
        for name, c in res["rows"].items():
            if len(c) != 2 or not all(_is_count(x, n) for x in c):
                return f"counts {c} of {name!r} are not two integers in 0..{n}"
        c1, ck = res["rows"]["classification"]
        if c1 > ck:
            return f"top-1 correct ({c1}) exceeds top-{k} correct ({ck})"
        return None
    return check


def _check_top(layers: Sequence[str], units: dict, k: int) -> Callable[[dict, int, int], str | None]:
    """What is impossible in a top-activations shard of images ``a..b-1``."""
    import torch

    def check(res: dict, a: int, b: int) -> str | None:
        if sorted(res) != sorted(layers):
            return f"layers {sorted(res)}, expected {sorted(layers)}"
        for name, r in res.items():
            if r["n_images"] != b - a:
                return f"{name}: n_images = {r['n_images']!r} for {b - a} images"
            if units.get(name) is not None and r["units"] != units[name]:
                return f"{name}: other units than the job's"
            idx = torch.tensor(r["image_index"], dtype=torch.int64)
            val = torch.tensor(r["values"], dtype=torch.float32)
            pos = torch.tensor(r["position"], dtype=torch.int64).reshape(len(r["units"]), -1, 2)
            h, w = r["map_size"]
            if idx.shape != val.shape or idx.shape[0] != len(r["units"]) or idx.shape[1] > k:
                return f"{name}: lists of shape {tuple(idx.shape)} / {tuple(val.shape)}"
            if idx.numel() and (idx.min() < a or idx.max() >= b):
                return f"{name}: image index outside {a}..{b - 1}"
            if not torch.isfinite(val).all():
                return f"{name}: non-finite activation values"
            if pos.numel() and (pos.min() < 0 or pos[..., 0].max() >= h or pos[..., 1].max() >= w):
                return f"{name}: position outside the {h}x{w} map"
        return None
    return check


def _check_class_models(classes: Sequence[int]) -> Callable[[list, int, int], str | None]:
    """What is impossible in a class-models shard of classes ``a..b-1`` (the PNGs decode)."""
    import math

    from .jobs import _unpng

    def check(res: list, a: int, b: int) -> str | None:
        if [e["class_index"] for e in res] != list(classes[a:b]):
            return f"classes {[e['class_index'] for e in res]}, expected {list(classes[a:b])}"
        for e in res:
            if not math.isfinite(float(e["score"])):
                return f"class {e['class_index']}: non-finite score"
            try:
                img = _unpng(e["png"])
            except Exception as err:  # any decoding failure of PIL/base64 means a bad file
                return f"class {e['class_index']}: image does not decode ({type(err).__name__})"
            if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
                return f"class {e['class_index']}: image of shape {img.shape}"
        return None
    return check


def _check_map_options(method: str, opts: dict) -> None:
    """``--map-option`` values that the method ``method`` accepts, with the right types."""
    import inspect

    from .methods.maps import _REGISTRY

    params = {p.name: p for p in inspect.signature(_REGISTRY[method]).parameters.values()
              if p.kind == p.KEYWORD_ONLY}
    for name, value in opts.items():
        if name not in params:
            raise UserError(f"--map-option {name}={value}: {method} has no option {name!r} "
                            f"(its options: {', '.join(params) or 'none'})")
        default = params[name].default
        if default is inspect.Parameter.empty or default is None:
            ann = str(params[name].annotation)
            kinds = [t for t in (bool, int, float, str) if t.__name__ in ann] or [type(value)]
        else:
            kinds = [type(default)] + ([int] if isinstance(default, float) else [])
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, tuple(kinds)):
            raise UserError(f"--map-option {name}={value}: {method}'s {name} takes "
                            f"{' or '.join(t.__name__ for t in kinds)}")


def _class_models(args) -> int:
    from .methods.class_model import GALLERY
    from .jobs import class_models_job

    clf = _classifier(args)
    names = list(args.classes)
    if args.gallery:
        names += [c for group in GALLERY.values() for c in group]
    try:
        classes = (list(range(len(clf.class_names))) if args.all
                   else [clf.class_index(c) for c in names])
    except (ValueError, KeyError) as e:
        raise UserError(str(e)) from None
    if not classes:
        raise UserError("no classes given (name them, or use --gallery or --all)")
    opts = {"param": args.param, "seed": args.seed}
    if args.steps is not None:
        opts["steps"] = args.steps
    key = {"job": "class-models", "model": args.model, "classes": classes,
           "shard_size": args.shard_size, **opts}
    store = _store(args.out, key, check=_check_class_models(classes))
    res = class_models_job(lambda: clf, classes, shard_size=args.shard_size, device=clf.device,
                           threads=args.threads, store=store, **opts)
    if res is None:
        return 0
    from PIL import Image

    index = []
    for e in res:
        fname = f"{e.class_index:04d}_{e.class_name.replace(' ', '_').replace('/', '_')}.png"
        Image.fromarray(e.image).save(args.out / fname)
        index.append({"class_index": e.class_index, "class_name": e.class_name,
                      "score": e.score, "file": fname})
    (args.out / "class_models.json").write_text(json.dumps(index, indent=1))
    print(f"{len(res)} class models ({args.param}) in {args.out}")
    return 0


def _load_images(paths: Sequence[str]) -> list:
    """Every image decoded and checked (size) before anything else happens."""
    from .core.data import load_image
    from .measures.localisation import MIN_SIDE

    images = []
    for p in paths:
        try:
            im = load_image(p)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise UserError(str(e)) from None
        if min(im.size) < MIN_SIDE:
            raise UserError(f"{p} is {im.size[0]}x{im.size[1]} pixels: too small to localise in "
                            f"(both sides must be at least {MIN_SIDE} pixels)")
        images.append(im)
    return images


def figure_names(paths: Sequence[str]) -> list[str]:
    """One distinct file name per input for ``--out``: ``<stem>_localisation.png``; inputs whose
    stems collide (``a/x.webp``, ``a/x.gif``, ``b/x.webp``) get their extension and, if still
    equal, their position (``x_webp_localisation.png``, ``x_webp_3_localisation.png``)."""
    stems = [Path(p).stem for p in paths]
    names = []
    for i, p in enumerate(paths):
        name = stems[i]
        if stems.count(name) > 1:
            suffix = Path(p).suffix.lstrip(".").lower()
            name = f"{name}_{suffix}" if suffix else name
        names.append(name)
    out = []
    for i, name in enumerate(names):
        if names.count(name) > 1:
            name = f"{name}_{i + 1}"
        out.append(f"{name}_localisation.png")
    return out


def _classifier(args):
    from .core.models import WeightsUnavailableError, load_classifier

    try:
        return load_classifier(args.model, device=args.device)
    except (ValueError, WeightsUnavailableError, RuntimeError) as e:
        raise UserError(f"cannot load model {args.model!r}: {e}") from None


def _localise(args) -> int:
    from .measures.localisation import localise_details

    images = _load_images(args.images)  # fail on a bad file before loading the network
    names = figure_names(args.images)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a directory")
    clf = _classifier(args)
    if args.topk > len(clf.class_names):
        raise UserError(f"--topk {args.topk} is more than the {len(clf.class_names)} classes of the model")
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create --out {args.out}: {e}") from None

    results = []
    for path, name, image in zip(args.images, names, images):
        dets = localise_details(clf, image, topk=args.topk, crops=args.crops)
        results.append({
            "image": str(path),
            "width": image.size[0],
            "height": image.size[1],
            "detections": [{
                "rank": r + 1,
                "class_index": d.detection.class_index,
                "class_name": clf.class_names[d.detection.class_index],
                "wnid": clf.wnids[d.detection.class_index],
                "score": round(d.detection.score, 6),
                "box": None if d.detection.box is None else list(d.detection.box),
            } for r, d in enumerate(dets)],
        })
        if args.out is not None:
            results[-1]["figure"] = str(args.out / name)
            _save_figure(args.out / name, image, dets[0], clf)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _save_figure(path: Path, image, det, clf) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures.plotting import localisation_figure, localisation_row

    fig = localisation_figure([localisation_row(image, det, class_names=clf.class_names)])
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e}") from None
    finally:
        plt.close(fig)


def _evaluate(args) -> int:
    from .core.data import IlsvrcDataset, UnreadableImageError

    try:
        ds = IlsvrcDataset(args.root, limit=args.limit)   # validates every annotation
        ds.check_images()                                 # every image header, before the model
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UserError(str(e)) from None
    try:
        return _evaluate_table(args, ds)
    except UnreadableImageError as e:                     # truncated after a valid header
        raise UserError(str(e)) from None


def _evaluate_rows(args) -> dict:
    """The rows of the table: :data:`deepinside.evaluation.EVALUATE_ROWS`, or with ``--maps`` /
    ``--boxes`` that one combination beside the two baselines (row name -> a row of
    :func:`deepinside.evaluation.localisation_table`)."""
    from .measures.evaluation import DEFAULT_MAPS, EVALUATE_ROWS, needs_saliency

    baselines = {k: v for k, v in EVALUATE_ROWS.items() if not needs_saliency(v)}
    if args.maps is None and args.boxes is None:   # rows at another scale: whole-image maps only
        return {k: v for k, v in EVALUATE_ROWS.items() if args.crops == "full" or "full_side" not in v}
    m, b = args.maps or DEFAULT_MAPS, args.boxes or "graphcut"
    if not needs_saliency({"boxes": b}):
        return baselines
    return {f"{b} on {m} maps": {"maps": m, "boxes": b}, **baselines}


def _shard_counts(clf, ds, k: int, crops: str, rows: dict, map_options: dict | None = None) -> dict:
    """Correct-guess counts (top-1, top-k) of every row on the images of ``ds`` (a shard), from
    the per-image outcomes: counts add up over shards, fractions would not.
    ``map_options``: map method -> its options (``--map-option``)."""
    from .measures.evaluation import localisation_table

    specs = {name: {"crops": crops, **spec,
                    **({"map_options": map_options[spec["maps"]]}
                       if map_options and spec.get("maps") in map_options else {})}
             for name, spec in rows.items()}
    table = localisation_table(clf, {"shard": ds}, specs, topk=k)
    counts = {name: [int(per["shard"].loc1.sum()), int(per["shard"].lock.sum())]
              for name, per in table.items()}
    o = next(iter(table.values()))["shard"]
    counts["classification"] = [int(o.cls1.sum()), int(o.clsk.sum())]
    return {"n": len(ds), "rows": counts}


#: the maps ``evaluate --metric maxboxacc`` scores without ``--maps``
MAXBOXACC_MAPS = ("cam", "gradient", "gradient_gradcam")


def _maxboxacc_counts(clf, ds, maps: Sequence[str], options: dict | None) -> dict:
    """Correct images per (threshold, IoU) of every map on a shard: they add up over shards."""
    from .measures.maxboxacc import maxboxacc_table

    # one sweep over the shard; gradient, CAM, Grad-CAM and the gated gradient share their passes
    table = maxboxacc_table(clf, {"shard": ds}, maps, {m: o for m, o in (options or {}).items() if o})
    rows = {m: table[m]["shard"]["hits"].sum(axis=0).astype(int).tolist() for m in maps}
    return {"n": len(ds), "rows": rows}


def _check_maxboxacc(maps: Sequence[str]) -> Callable[[dict, int, int], str | None]:
    """What is impossible in a maxboxacc shard of images ``a..b-1``."""
    from .measures.maxboxacc import DEFAULT_IOUS, default_thresholds

    shape = (len(default_thresholds()), len(DEFAULT_IOUS))

    def check(res: dict, a: int, b: int) -> str | None:
        n = b - a
        wrong = _wrong_rows(res, n, maps)
        if wrong:
            return wrong
        for m, c in res["rows"].items():
            if (len(c), len(c[0]) if c else 0) != shape or not all(_is_count(x, n) for r in c for x in r):
                return f"counts of {m!r} are not a {shape[0]}x{shape[1]} table of integers in 0..{n}"
        return None
    return check


def _evaluate_table(args, ds: IlsvrcDataset) -> int:
    """The table, computed shard by shard: alone, or one shard set per torchrun process."""
    from .core.distributed import Subset, distributed, run_sharded
    from .core.models import resolve_device

    k = args.topk
    maxboxacc = getattr(args, "metric", "ilsvrc") == "maxboxacc"
    rows = _evaluate_rows(args) if not maxboxacc else [args.maps] if args.maps else list(MAXBOXACC_MAPS)
    opts = dict(getattr(args, "map_option", None) or [])
    if opts and args.maps is None:
        raise UserError("--map-option needs --maps (the method the options are for)")
    if opts:
        _check_map_options(args.maps, opts)
    options = {args.maps: opts} if opts else None
    key = {"job": "evaluate", "model": args.model, "topk": k, "crops": args.crops,
           "root": str(Path(args.root).resolve()), "images": [r.image_path.name for r in ds.records],
           "rows": rows if maxboxacc else {name: {k_: repr(v) for k_, v in sorted(spec.items())}
                                            for name, spec in rows.items()},
           "shard_size": args.shard_size,
           **({"metric": "maxboxacc"} if maxboxacc else {}),
           **({"map_options": {k_: repr(v) for k_, v in sorted(opts.items())}} if opts else {})}
    store = None
    if args.out is not None:
        check = _check_maxboxacc(rows) if maxboxacc else _check_counts([*rows, "classification"], k)
        store = _store(args.out, key, inputs=_records_digest(ds.records), check=check)
    device = resolve_device(args.device)
    with distributed(device, threads=args.threads) as ctx:
        clf = None

        def compute(a: int, b: int) -> dict:
            nonlocal clf
            if clf is None:  # not loaded when every shard is already on disk (merge only)
                clf = _classifier(args)
            part = Subset(ds, range(a, b))
            if maxboxacc:
                return _maxboxacc_counts(clf, part, rows, options)
            return _shard_counts(clf, part, k, args.crops, rows, options)

        shards = run_sharded(len(ds), compute, shard_size=args.shard_size, ctx=ctx,
                             store=store, desc="evaluate")
        if not ctx.is_main:
            return 0
    n = sum(s["n"] for s in shards)
    if maxboxacc:
        return _print_maxboxacc(args, shards, rows, n)
    totals = {name: [sum(s["rows"][name][j] for s in shards) for j in (0, 1)]
              for name in [*rows, "classification"]}
    print(f"{n} images, {args.model}, saliency crops={args.crops}")
    print(f"{'method':46s} {'top-1 loc err':>14s} {f'top-{k} loc err':>14s}")
    for name, (c1, ck) in totals.items():
        label = "classification error" if name == "classification" else name
        print(f"{label:46s} {100 * (1 - c1 / n):13.1f}% {100 * (1 - ck / n):13.1f}%")
    return 0


def _print_maxboxacc(args, shards: list, maps: Sequence[str], n: int) -> int:
    """MaxBoxAccV2 per map from the merged counts (exactly the single-process numbers)."""
    import numpy as np

    from .measures.maxboxacc import DEFAULT_IOUS, max_box_accuracy_from_counts

    print(f"{n} images, {args.model}, MaxBoxAccV2 (Choe et al. 2020): whole image, ground-truth "
          f"class, all contours, thresholds 0.00-0.99")
    ious = "".join(f"{f'IoU {d}':>10s}" for d in DEFAULT_IOUS)
    print(f"{'map':22s} {'MaxBoxAccV2':>12s}{ious}  best thresholds")
    for m in maps:
        counts = np.sum([np.asarray(s["rows"][m]) for s in shards], axis=0)
        r = max_box_accuracy_from_counts(counts, n)
        per = "".join(f"{100 * r['per_iou'][d]:9.1f}%" for d in DEFAULT_IOUS)
        best = " ".join(f"{r['best_threshold'][d]:.2f}" for d in DEFAULT_IOUS)
        print(f"{m:22s} {100 * r['maxboxacc_v2']:11.1f}%{per}  {best}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepinside`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if getattr(args, "crops", "") is None:
        args.crops = args.crops_default
    from .core.distributed import ShardStoreError

    try:
        if args.command == "localise":
            return _localise(args)
        if args.command == "top-activations":
            return _top_activations(args)
        if args.command == "class-models":
            return _class_models(args)
        if args.command == "fetch-data":
            return _fetch_data(args)
        return _evaluate(args)
    except (UserError, ShardStoreError) as e:
        print(f"deepinside: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deepinside: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `deepinside localise ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
