"""Do the maps explain the model? Three tests for every saliency method of :mod:`deepinside.maps`.

- **Pointing game** (Zhang et al. 2016/2018, the protocol of TorchRay's benchmark): the map's
  maximum, in original image pixels, is a *hit* when it lies within ``tolerance`` (15) pixels of
  a ground-truth box of the class; accuracy over images and averaged over classes, beside the
  centre-point baseline (the image's centre as the "maximum"). TorchRay computes the maps on the
  whole image at the network's scale and smooths them before taking the maximum
  (``crops="full", smooth=0.02``); maps of the centre crop (the default frame) are zero in the
  margins, a centre prior of their own.
- **Deletion and insertion** (Petsiuk et al. 2018, RISE, Sect. 4.1): pixels are removed (deletion:
  set to the fill value) or added (insertion: copied onto a blurred version of the image) in the
  order of the map, a fixed number per step, while the probability of the class is tracked; the
  area under each curve (AUC) summarises it (deletion: lower is better; insertion: higher).
  Random-order and centre-first orders are the baselines.
- **Model randomisation** (Adebayo et al. 2018, Sect. 3.1 "cascading randomization" and
  "independent randomization"): the weights of one block after the other are re-initialised,
  from the classifier down to the stem, on a *copy* of the network; each map is recomputed and
  compared with the original one by Spearman rank correlation (signed and absolute values), SSIM
  and the correlation of HOG features. A map that explains the model must change when the model
  does.

All three take maps by method name (:func:`deepinside.compute_maps`) or precomputed ``(N, H, W)``
tensors on the centre crop's input grid (the frame of :mod:`deepinside.maps`); the pointing game
also takes a list of ``(h, w)`` maps in its ``crops`` frame.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core.models import BATCH_SIZE
from ..core._progress import progress
from ..core.cache import cached as _cached, register_cacheable
from ..core.frames import box_mask, map_to_image
from ..core.batchnorm import twin_forward
from ..core.smoothing import gaussian_blur, smooth_maps
from ..core.inputs import check_int, check_real
from ..methods.maps import _REGISTRY, compute_maps, map_names
from ..core.models import Classifier, frozen

__all__ = ["pointing_game", "pointing_hits", "centre_point", "pointing_maps", "map_points",
           "smooth_maps", "pointing_protocols", "PROTOCOLS", "deletion_insertion", "baseline_maps",
           "randomisation_test", "randomisation_blocks", "RandomisationResult", "map_similarity",
           "map_features",
           "SIMILARITIES", "BASELINES", "evaluate_maps", "cached", "sem",
           "spaced_items", "unlabelled_items", "dataset_key"]

#: Orders that are not saliency methods: the baselines of the pointing game and deletion/insertion.
BASELINES = ("centre", "random")
#: Similarity measures of the randomisation test (Adebayo et al. 2018, Sect. 3).
SIMILARITIES = ("spearman", "spearman_abs", "ssim", "hog")


def sem(values: Iterable[float]) -> float:
    """Standard error of the mean, ``std(ddof=1) / sqrt(n)`` (NaN for n < 2), ignoring NaN."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


# -- pointing game -----------------------------------------------------------------------------------


def centre_point(width: int, height: int) -> tuple[int, int]:
    """The centre-point baseline: pixel ``(W // 2, H // 2)`` (x, y) of a ``W x H`` image."""
    return int(width) // 2, int(height) // 2


def _check_boxes(boxes: Sequence[Sequence[float]], size: tuple[int, int], i: int) -> None:
    """Every box of image ``i`` (``W x H``) is finite, non-empty and inside the image (one pixel
    past the right/bottom border tolerated: ILSVRC's inclusive ``xmax == width``, half-open)."""
    w, h = size
    if len(boxes) == 0:
        raise ValueError(f"image {i} has no ground-truth box")
    for b in boxes:
        try:
            x0, y0, x1, y1 = (float(v) for v in b)
        except (TypeError, ValueError) as e:
            raise ValueError(f"box {b!r} of image {i} is not (x0, y0, x1, y1)") from e
        if not (np.isfinite([x0, y0, x1, y1]).all() and 0 <= x0 < x1 <= w + 1
                and 0 <= y0 < y1 <= h + 1):
            raise ValueError(f"box {tuple(b)!r} of image {i} is empty or outside the {w}x{h} "
                             f"image (need 0 <= x0 < x1 <= W + 1, 0 <= y0 < y1 <= H + 1)")


def pointing_hits(points: np.ndarray, boxes: Sequence[Sequence[Sequence[float]]],
                  sizes: Sequence[tuple[int, int]], tolerance: float = 15) -> np.ndarray:
    """Hit or miss of each point (Zhang et al. 2018, Sect. 5.1, TorchRay's protocol).

    A point ``(x, y)`` (pixel indices) is a hit when some pixel of the union of the image's
    boxes lies within Euclidean distance ``tolerance`` of it: the boxes' mask is intersected with
    a disc of radius ``tolerance`` around the point.

    Args:
        points: ``(N, 2)`` integer ``(x, y)``.
        boxes: per image, its ground-truth boxes ``(x0, y0, x1, y1)`` (half-open pixels).
        sizes: per image, ``(W, H)``.
        tolerance: the radius in pixels (15 in the protocol).

    Returns:
        ``(N,)`` bool.

    Raises:
        ValueError: when the lengths differ, a box lies outside its image or a point does.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2 or not len(points) == len(boxes) == len(sizes):
        raise ValueError(f"points must be (N, 2) with N boxes and sizes, got points "
                         f"{points.shape}, {len(boxes)} boxes, {len(sizes)} sizes")
    for n, (bx, (w, h), (px, py)) in enumerate(zip(boxes, sizes, points)):
        _check_boxes(bx, (w, h), n)
        if not (0 <= px < w and 0 <= py < h):
            raise ValueError(f"point {(px, py)} of image {n} lies outside the {w}x{h} image")
    r = int(np.floor(tolerance))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = dx ** 2 + dy ** 2 <= tolerance ** 2
    hits = np.zeros(len(points), dtype=bool)
    for n, ((px, py), bx, (w, h)) in enumerate(zip(np.asarray(points, int), boxes, sizes)):
        mask = np.pad(box_mask(bx, h, w), r)
        hits[n] = bool((mask[py:py + 2 * r + 1, px:px + 2 * r + 1] & disc).any())
    return hits


def _check_item(it: Any, i: int) -> None:
    if not (isinstance(it, tuple) and len(it) == 2 and isinstance(it[0], Image.Image)
            and hasattr(it[1], "boxes") and hasattr(it[1], "label")):
        raise TypeError(f"dataset item {i} must be (PIL image, record with .boxes and .label), as "
                        f"deepinside.IlsvrcDataset gives; got {type(it).__name__}")


def _items(dataset: Any) -> list[tuple[Image.Image, Any]]:
    items = list(dataset)
    if not items:
        raise ValueError("the dataset is empty")
    _check_item(items[0], 0)
    return items


def _indexable(dataset: Any) -> Any:
    """The dataset itself when it can be indexed (images are then loaded one chunk at a time),
    else its items in a list."""
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        return dataset
    return _items(dataset)


def _class_boxes(rec: Any) -> list[tuple[float, float, float, float]]:
    """The boxes of the record's class (ILSVRC validation boxes all carry it)."""
    wnids = getattr(rec, "box_wnids", None)
    if wnids is None:
        return list(rec.boxes)
    return [b for b, w in zip(rec.boxes, wnids) if w == rec.wnid] or list(rec.boxes)


#: Images whose pointing-game maps are computed in one call of :func:`pointing_maps` (in passes
#: of ``batch_size``): whole images (``crops="full"``) share a pass only with images of the same
#: shape, and in chunks of 4 the full-resolution folder's mixed shapes gave passes of 1-2 images
#: (issue 21).
_CHUNK = 32


def pointing_maps(clf: Classifier, images: Sequence[Image.Image], targets: Sequence[int],
                  method: str, crops: str = "center", *, batch_size: int = BATCH_SIZE,
                  **options: Any) -> list[torch.Tensor]:
    """Maps of ``method`` for the pointing game, one ``(h, w)`` CPU tensor per image, in the frame
    ``crops``: ``"center"`` the network's centre crop (:func:`deepinside.compute_maps` on
    ``clf.preprocess``), ``"full"`` the whole image resized so its shorter side is
    ``clf.input_size`` (:func:`deepinside.localisation.full_image_input`, TorchRay's
    ``Resize(224)`` without a crop); equally sized inputs go through the method together."""
    from ..core.frames import check_crops
    from .localisation import full_image_input

    if check_crops(crops, ("center", "full")) == "center":
        return list(compute_maps(clf, list(images), list(targets), method=method,
                                 batch_size=batch_size, **options).cpu())
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    inputs = [full_image_input(clf, im) for im in images]
    for k, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape[2:]), []).append(k)
    for ks in groups.values():
        m = compute_maps(clf, torch.cat([inputs[k] for k in ks]), [targets[k] for k in ks],
                         method=method, batch_size=batch_size, **options).cpu()
        for k, mk in zip(ks, m):
            out[k] = mk
    return out  # type: ignore[return-value]


def map_points(maps: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]], clf: Classifier,
               crops: str = "center", smooth: float = 0.0) -> np.ndarray:
    """The pointing game's point of each map: put back on the original ``W x H`` pixels
    (:func:`deepinside.frames.map_to_image`, bilinear, zero outside the frame), smoothed with a
    Gaussian of sigma ``smooth * max(W, H)`` (:func:`smooth_maps`; TorchRay: 0.02), and its
    maximum (first in raster order on ties). Returns ``(N, 2)`` integer ``(x, y)``."""
    if not smooth >= 0:
        raise ValueError(f"smooth must be >= 0 (a fraction of the image side), got {smooth!r}")
    points = np.zeros((len(maps), 2), dtype=int)
    for k, (m, size) in enumerate(zip(maps, sizes)):
        full = map_to_image(m.float().cpu(), size, clf, crops)
        full = smooth_maps(full[None], smooth * max(size))[0]
        y, x = divmod(int(full.argmax()), full.shape[1])
        points[k] = (x, y)
    return points


def pointing_game(
    clf: Classifier,
    dataset: Any,
    maps: str | torch.Tensor | Sequence[torch.Tensor] = "gradient",
    tolerance: float = 15,
    *,
    crops: str = "center",
    smooth: float = 0.0,
    batch_size: int = BATCH_SIZE,
    **options: Any,
) -> dict[str, Any]:
    """The pointing game (Zhang et al. 2016/2018) on images with ground-truth boxes.

    For each image the map of its ground-truth class is computed in the frame ``crops``
    (:func:`pointing_maps`), put back on the original pixels, optionally smoothed, and its
    maximum is the point (:func:`map_points`); :func:`pointing_hits` decides hit or miss.
    ``maps="centre"`` is the centre-point baseline (:func:`centre_point`).

    TorchRay's benchmark protocol (Fong et al. 2019, ``examples/attribution_benchmark.py``) is
    ``crops="full", smooth=0.02`` for the gradient-type maps (no smoothing for Grad-CAM); the
    defaults (centre crop, no smoothing) are the frame of :mod:`deepinside.maps`.

    Args:
        clf: the classifier.
        dataset: a :class:`deepinside.IlsvrcDataset` or a sequence of ``(PIL image, record)``
            (records with ``.boxes``, ``.label``, optionally ``.wnid``/``.box_wnids``).
        maps: a method name (:func:`deepinside.map_names`), ``"centre"``, precomputed
            ``(N, H, W)`` maps on the centre crop's input grid, or a list of ``(h, w)`` maps in
            the frame ``crops`` (as :func:`pointing_maps` returns), in dataset order.
        tolerance: hit radius in original pixels (15 in the protocol).
        crops: ``"center"`` or ``"full"`` (see :func:`pointing_maps`).
        smooth: Gaussian sigma as a fraction of the image's larger side (0: none).
        batch_size, **options: passed to :func:`deepinside.compute_maps`.

    Returns:
        ``{"accuracy": mean over images, "class_accuracy": mean over classes of the per-class
        accuracy, "n": images, "classes": number of classes, "accuracy_sem": its standard error,
        "hits": (N,) bool, "labels": (N,), "points": (N, 2) (x, y), "box_area": (N,) share of
        the image inside the class's boxes}`` (Zhang et al.'s "difficult" images are those whose
        boxes cover less than a quarter of the image).

    Raises:
        ValueError: precomputed maps of the wrong shape (the frame's grid: ``input_size`` square
            for ``"center"``, :func:`deepinside.frames.full_image_size` for ``"full"``) or with
            NaN/Inf values; boxes outside their image (:func:`pointing_hits`).
    """
    from ..core.frames import check_crops

    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
    check_crops(crops, ("center", "full"))
    if not smooth >= 0:
        raise ValueError(f"smooth must be >= 0 (a fraction of the image side), got {smooth!r}")
    seq = _indexable(dataset)
    n = len(seq)
    if isinstance(maps, torch.Tensor):
        if maps.ndim != 3 or len(maps) != n:
            raise ValueError(f"precomputed maps must be (N={n}, H, W), got {tuple(maps.shape)}")
    elif isinstance(maps, (list, tuple)):
        if len(maps) != n or not all(isinstance(m, torch.Tensor) and m.ndim == 2 for m in maps):
            raise ValueError(f"a list of maps must hold N={n} (h, w) tensors")
    elif not isinstance(maps, str) or (maps not in map_names() and maps != "centre"):
        raise ValueError(f"unknown map {maps!r}: give one of {', '.join(map_names())}, 'centre', "
                         f"a (N, H, W) tensor or a list of (h, w) tensors")
    points = np.zeros((n, 2), dtype=int)
    sizes: list[tuple[int, int]] = []
    boxes: list[list[tuple[float, float, float, float]]] = []
    labels_: list[int] = []
    what = maps if isinstance(maps, str) else "maps"
    step = max(batch_size, _CHUNK)
    for i in progress(range(0, n, step), desc=f"pointing game ({what})"):
        part = [seq[j] for j in range(i, min(i + step, n))]
        _check_item(part[0], i)
        size = [im.size for im, _ in part]
        sizes += size
        boxes += [_class_boxes(r) for _, r in part]
        labels_ += [r.label for _, r in part]
        for k, b in enumerate(boxes[i:]):
            _check_boxes(b, size[k], i + k)
        if isinstance(maps, str) and maps == "centre":
            points[i:i + len(part)] = [centre_point(*s) for s in size]
            continue
        if isinstance(maps, str):
            m = pointing_maps(clf, [im for im, _ in part], [r.label for _, r in part], maps,
                              crops, batch_size=batch_size, **options)
        else:
            m = list(maps[i:i + len(part)])
            _check_precomputed(m, size, clf, crops, i)
        points[i:i + len(part)] = map_points(m, size, clf, crops, smooth)
    hits = pointing_hits(points, boxes, sizes, tolerance)
    labels = np.array(labels_)
    per_class = [hits[labels == c].mean() for c in np.unique(labels)]
    area = np.array([box_mask(b, h, w).mean() for b, (w, h) in zip(boxes, sizes)])
    return {"accuracy": float(hits.mean()), "class_accuracy": float(np.mean(per_class)), "n": n,
            "classes": len(per_class), "accuracy_sem": sem(hits.astype(float)), "hits": hits,
            "labels": labels, "points": points, "box_area": area}


def _check_precomputed(maps: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]], clf: Classifier,
                       crops: str, start: int) -> None:
    """Precomputed maps of images ``start, start + 1, ...`` have their frame's grid and are finite."""
    from ..core.frames import full_image_size

    for k, (m, (w, h)) in enumerate(zip(maps, sizes)):
        c = clf.input_size
        want = (c, c) if crops == "center" else full_image_size(w, h, c)[::-1]
        if tuple(m.shape) != tuple(want):
            raise ValueError(f"shape mismatch of the precomputed map at index {start + k}: expected "
                             f"{tuple(want)} (the {crops!r} frame's grid of a {w}x{h} image), got "
                             f"{tuple(m.shape)}")
        if not bool(torch.isfinite(m).all()):
            raise ValueError(f"non-finite map at index {start + k} (NaN or Inf values)")


#: The pointing-game protocols compared in chapter 6: (frame, smoothing), TorchRay's last.
PROTOCOLS = (("center", 0.0), ("center", 0.02), ("full", 0.0), ("full", 0.02))


def pointing_protocols(
    clf: Classifier,
    dataset: Any,
    method: str = "gradient",
    protocols: Sequence[tuple[str, float]] = PROTOCOLS,
    tolerance: float = 15,
    *,
    batch_size: int = BATCH_SIZE,
    **options: Any,
) -> dict[tuple[str, float], dict[str, Any]]:
    """:func:`pointing_game` of one method under several ``(crops, smooth)`` protocols, the maps
    computed once per frame. Returns ``{(crops, smooth): pointing_game dict}``."""
    items = _items(dataset)
    images, labels = [im for im, _ in items], [r.label for _, r in items]
    maps: dict[str, list[torch.Tensor]] = {}
    out = {}
    for crops, sm in protocols:
        if crops not in maps:
            step = max(batch_size, _CHUNK)
            maps[crops] = [m for i in range(0, len(items), step)
                           for m in pointing_maps(clf, images[i:i + step], labels[i:i + step],
                                                  method, crops, batch_size=batch_size,
                                                  **options)]
        out[(crops, sm)] = pointing_game(clf, items, maps[crops], tolerance, crops=crops,
                                         smooth=sm, batch_size=batch_size)
    return out


# -- deletion and insertion --------------------------------------------------------------------------


def baseline_maps(kind: str, n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Orders that know nothing of the image, as maps ``(n, H, W)`` (larger = earlier):
    ``"random"`` (uniform, seeded) and ``"centre"`` (minus the distance to the centre)."""
    if kind == "random":
        return torch.rand(n, height, width, generator=torch.Generator().manual_seed(seed))
    if kind == "centre":
        yy, xx = torch.meshgrid(torch.arange(height) - (height - 1) / 2,
                                torch.arange(width) - (width - 1) / 2, indexing="ij")
        return (-(yy ** 2 + xx ** 2).sqrt())[None].expand(n, -1, -1).clone()
    raise ValueError(f"unknown baseline {kind!r}; baselines: {BASELINES}")


def _ranks(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """``(N, H*W)`` rank of each pixel in decreasing map order (0 = first); ties broken by a
    seeded random permutation, never by raster order."""
    flat = maps.detach().flatten(1).float().cpu()
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed))
    order = perm[torch.argsort(-flat[:, perm], dim=1, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order).contiguous())
    return ranks


def deletion_insertion(
    clf: Classifier,
    images: Sequence[Image.Image] | torch.Tensor,
    maps: str | torch.Tensor = "gradient",
    targets: Any = None,
    *,
    steps: int = 32,
    fill: float = 0.0,
    blur_size: int = 11,
    blur_sigma: float = 5.0,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    modes: Sequence[str] = ("deletion", "insertion"),
    **options: Any,
) -> dict[str, Any]:
    """Deletion and insertion curves (Petsiuk et al. 2018, RISE, Sect. 4.1), all batched.

    The pixels of the centre crop are ranked by the map (decreasing; ties in a seeded random
    order). At step :math:`s = 0..S` the first :math:`\\lceil s HW / S \\rceil` pixels are

    - *deleted*: set to ``fill`` in network-input units (``|fill| <= 1000``; 0: the training
      mean pixel, grey 127/255 for EfficientNet-Lite; RISE's zero substrate), starting from the
      image;
    - *inserted*: copied from the image onto its blurred copy (Gaussian, ``blur_size`` x
      ``blur_size``, :math:`\\sigma` = ``blur_sigma``: RISE's 11 and 5).

    The softmax probability of the target class is tracked; the AUC is the trapezoid area over
    the fraction of pixels in [0, 1]. Every step of every image is one row of one big batch:
    ``N * len(modes) * (S + 1)`` forward passes in chunks of ``batch_size``, nothing else.

    Args:
        clf: the classifier.
        images: PIL images (centre crop of ``clf.preprocess``) or a normalised ``(N, 3, H, W)``.
        maps: a method name, ``"random"`` / ``"centre"`` (baselines), or precomputed ``(N, H, W)``.
        targets: None = the top-1 class of each image (RISE), else as in :func:`compute_maps`.
        steps: :math:`S`, the number of steps (``H W / S`` pixels each).
        seed: tie-breaking and the random baseline.
        modes: which curves.
        **options: passed to :func:`deepinside.compute_maps`.

    Returns:
        ``{"deletion", "insertion": mean AUC, "deletion_sem", "insertion_sem", "deletion_auc",
        "insertion_auc": (N,), "deletion_curve", "insertion_curve": (N, S+1), "fraction": (S+1,),
        "targets": (N,), "n"}`` (numpy; only the keys of ``modes``).

    Raises:
        TypeError, ValueError: an option of the wrong type or value (named in the message):
            ``steps``, ``batch_size`` positive ints; ``blur_size`` an odd positive int smaller
            than twice the image's side; ``fill`` a finite number (NaN/Inf scores on the filled images are an error naming it); ``blur_sigma`` finite, >= 0;
            ``seed`` a non-negative int; ``modes`` one or both curves; maps with NaN/Inf values.

    The model is left as found: every forward pass (the top-1 targets included) runs in
    :func:`deepinside.frozen` (eval mode), so BatchNorm statistics of a model in train mode are
    not updated.
    """
    if isinstance(modes, str) or not isinstance(modes, Sequence) or len(modes) == 0:
        raise ValueError(f"modes must be a non-empty sequence of 'deletion' and/or 'insertion', "
                         f"got {modes!r}")
    for m in modes:
        if m not in ("deletion", "insertion"):
            raise ValueError(f"modes: unknown mode {m!r}: use 'deletion' and/or 'insertion'")
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    check_int("blur_size", blur_size)
    if blur_size % 2 == 0:
        raise ValueError(f"blur_size must be odd (a centred kernel), got {blur_size!r}")
    check_real("fill", fill, -1e3, 1e3)   # input units (about -3..3): beyond, float32 overflows
    check_real("blur_sigma", blur_sigma, 0.0, 1000.0)   # pixels; beyond, the kernel overflows
    if blur_sigma < 0:
        raise ValueError(f"blur_sigma must be >= 0 (0: no blur), got {blur_sigma!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed!r}")
    from ..methods.maps import _as_input, _as_targets

    x = _as_input(clf, images, "deletion_insertion")
    n, _, h, w = x.shape
    if "insertion" in modes and blur_sigma > 0 and blur_size // 2 >= min(h, w):
        raise ValueError(f"blur_size {blur_size} is too large for {h}x{w} images (reflect padding "
                         f"needs blur_size // 2 < {min(h, w)})")
    with frozen(clf.net):
        tgt = _as_targets(clf, x, targets, batch_size)
    if isinstance(maps, torch.Tensor):
        if maps.shape != (n, h, w):
            raise ValueError(f"precomputed maps must be (N, H, W) = {(n, h, w)}, got {tuple(maps.shape)}")
        m = maps
    elif isinstance(maps, str) and maps in BASELINES:
        m = baseline_maps(maps, n, h, w, seed)
    elif isinstance(maps, str) and maps in map_names():
        m = compute_maps(clf, x, tgt, method=maps, batch_size=batch_size, **options)
    else:
        raise ValueError(f"unknown map {maps!r}: give one of {', '.join(map_names())}, "
                         f"{', '.join(BASELINES)} or a (N, H, W) tensor")
    bad = (~torch.isfinite(m.detach())).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        what = maps if isinstance(maps, str) else "precomputed"
        raise ValueError(f"non-finite map at index {bad[0]} ({what} maps with NaN or Inf values "
                         f"at {len(bad)} of {n} images): no pixel order")
    ranks = _ranks(m, seed).to(x.device).view(n, 1, h, w)
    hw = h * w
    counts = torch.tensor([min(hw, -(-s * hw // steps)) for s in range(steps + 1)], device=x.device)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    blurred = gaussian_blur(x, blur_sigma, blur_size // 2, "reflect") if "insertion" in modes else None
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    # The curves' ends do not depend on the map: deletion starts and insertion ends at the image
    # itself, insertion starts at its blurred copy, deletion ends at the fill colour everywhere
    # (one image for all). Each is scored once: 2N + 1 passes instead of 4N (issue 21).
    whole = ("insertion", steps) if "insertion" in modes else ("deletion", 0)
    ends = [(whole[0], i, whole[1]) for i in range(n)]
    if "insertion" in modes:
        ends += [("insertion", i, 0) for i in range(n)]
    jobs = ends + [(mode, i, s) for mode in modes for i in range(n) for s in range(1, steps)]
    probs = torch.empty(len(jobs))
    with frozen(clf.net), torch.no_grad():
        if "deletion" in modes:   # everything deleted: the fill colour, whatever the image
            grey = torch.full_like(x[:1], float(fill)).contiguous(memory_format=fmt)
            p_fill = twin_forward(clf.net, grey).softmax(1)[0, tgt].float().cpu()
        for j in progress(range(0, len(jobs), batch_size), desc="deletion/insertion"):
            chunk = jobs[j:j + batch_size]
            idx = torch.tensor([i for _, i, _ in chunk], device=x.device)
            first = ranks[idx] < counts[torch.tensor([s for _, _, s in chunk], device=x.device)].view(-1, 1, 1, 1)
            is_del = torch.tensor([mode == "deletion" for mode, _, _ in chunk], device=x.device).view(-1, 1, 1, 1)
            xi = x[idx]  # a copy, in x's memory layout
            # deletion: first pixels -> fill, the rest stay; insertion: first pixels from the image,
            # the rest from the blurred copy. One elementwise pass when the chunk has one mode.
            if bool(is_del.all()):
                batch = xi.masked_fill_(first, fill_t)
            elif not bool(is_del.any()):
                batch = torch.where(first, xi, blurred[idx])
            else:
                other = blurred[idx] if blurred is not None else xi
                batch = torch.where(first, torch.where(is_del, fill_t, xi), torch.where(is_del, xi, other))
            batch = batch.contiguous(memory_format=fmt)
            p = twin_forward(clf.net, batch).softmax(1).gather(1, tgt[idx][:, None])[:, 0]
            probs[j:j + len(chunk)] = p.float().cpu()
    ends_fill = p_fill if "deletion" in modes else probs[:0]
    if not bool(torch.isfinite(probs).all() and torch.isfinite(ends_fill).all()):
        raise ValueError(f"the model's scores are NaN/Inf on the perturbed images (fill={fill!r}, "
                         f"blur_sigma={blur_sigma!r}): use a fill within the range of the "
                         f"network's normalised inputs (about -3 to 3)")
    frac = (counts.float() / hw).cpu().numpy()
    out: dict[str, Any] = {"fraction": frac, "targets": tgt.cpu().numpy(), "n": n}
    p_whole, p_blur = probs[:n], probs[n:len(ends)]
    curves = torch.empty(len(modes), n, steps + 1)
    curves[:, :, 1:steps] = probs[len(ends):].view(len(modes), n, steps - 1)
    for k, mode in enumerate(modes):
        first, last = (p_whole, p_fill) if mode == "deletion" else (p_blur, p_whole)
        curves[k, :, 0], curves[k, :, steps] = first, last
    curves = curves.numpy()
    for k, mode in enumerate(modes):
        auc = np.trapezoid(curves[k], frac, axis=1) if hasattr(np, "trapezoid") else np.trapz(curves[k], frac, axis=1)
        out[f"{mode}_curve"] = curves[k]
        out[f"{mode}_auc"] = auc
        out[mode] = float(auc.mean())
        out[f"{mode}_sem"] = sem(auc)
    return out


# -- model randomisation -----------------------------------------------------------------------------

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def randomisation_blocks(net: nn.Module) -> list[tuple[str, list[str]]]:
    """The blocks re-initialised one at a time, from the classifier down to the stem.

    The network's top-level children with parameters, a ``Sequential``/``ModuleList`` child split
    into its children (EfficientNet's ``blocks.0`` ... ``blocks.6``), and a normalisation layer
    joined to the block before it (``conv_head+bn2``). Returns ``[(name, [module names]), ...]``
    in randomisation order (output side first), as Adebayo et al.'s cascade.
    """
    groups: list[tuple[str, list[str]]] = []
    for name, child in net.named_children():
        parts = ([(f"{name}.{n}", c) for n, c in child.named_children()]
                 if isinstance(child, (nn.Sequential, nn.ModuleList)) else [(name, child)])
        for pname, mod in parts:
            if not any(True for _ in mod.parameters()):
                continue
            if isinstance(mod, _NORMS) and groups:
                gname, members = groups[-1]
                groups[-1] = (f"{gname}+{pname}", members + [pname])
            else:
                groups.append((pname, [pname]))
    if not groups:
        raise ValueError("the network has no parameters to randomise")
    return groups[::-1]


def _reinitialise(net: nn.Module, names: Sequence[str], seed: int) -> None:
    """Re-initialise the named modules of ``net`` in place with PyTorch's default initialisers
    (``reset_parameters``: Kaiming-uniform convolutions and linear layers, unit/zero norms with
    reset running statistics); seeded, without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            for m in net.get_submodule(name).modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
                elif any(True for _ in m.parameters(recurse=False)):
                    for p in m.parameters(recurse=False):
                        with torch.no_grad():
                            p.normal_(0.0, 0.01)


def _map_ranks(m: np.ndarray) -> np.ndarray | None:
    """Ranks of the flattened map (ties averaged, as scipy's ``rankdata``), or None when the map
    is constant (it ranks nothing)."""
    from scipy.stats import rankdata

    r = rankdata(m.ravel())
    return None if r.std() == 0 else r


def _corr(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Pearson correlation of two vectors; 0 when either is None (constant)."""
    return 0.0 if a is None or b is None else float(np.corrcoef(a, b)[0, 1])


def _unit_range(m: np.ndarray) -> np.ndarray:
    """Adebayo et al.'s visualisation normalisation: divide by the 99th percentile, clip to [0, 1]."""
    v = np.percentile(m, 99)
    return np.clip(m / v, 0, 1) if v > 0 else np.zeros_like(m)


def _as_map(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, float)


def map_features(a: np.ndarray | torch.Tensor, metrics: Sequence[str] = SIMILARITIES) -> dict[str, Any]:
    """What :func:`map_similarity` needs of one ``(H, W)`` map for ``metrics``: its ranks (signed
    and absolute), its absolute values scaled to [0, 1] and their HOG features. Computing them once
    for a map compared with many others (the original map in every step of
    :func:`randomisation_test`) halves the cost of the comparisons."""
    from skimage.feature import hog

    a = _as_map(a)
    if a.ndim != 2:
        raise ValueError(f"a map must be an (H, W) array, got shape {a.shape}")
    out: dict[str, Any] = {"shape": a.shape}
    for k in metrics:
        if k == "spearman":
            out[k] = _map_ranks(a)
        elif k == "spearman_abs":
            out[k] = _map_ranks(np.abs(a))
        elif k in ("ssim", "hog"):
            if "unit" not in out:
                out["unit"] = _unit_range(np.abs(a))
            if k == "hog":
                cell = (max(2, min(a.shape) // 14),) * 2   # 16 px cells on a 224 map
                h = hog(out["unit"], pixels_per_cell=cell, cells_per_block=(2, 2))
                out[k] = h if h.std() > 0 else None
        else:
            raise ValueError(f"unknown similarity {k!r}; known: {SIMILARITIES}")
    return out


def map_similarity(a: np.ndarray | torch.Tensor | dict, b: np.ndarray | torch.Tensor | dict,
                   metrics: Sequence[str] = SIMILARITIES) -> dict[str, float]:
    """Similarity of two ``(H, W)`` maps, as in Adebayo et al. (2018), Sect. 3:

    - ``"spearman"``: Spearman rank correlation of the signed maps;
    - ``"spearman_abs"``: the same on absolute values;
    - ``"ssim"``: structural similarity (Wang et al. 2004) of the absolute maps, each scaled to
      [0, 1] by its 99th percentile;
    - ``"hog"``: Pearson correlation of the HOG features (Dalal & Triggs 2005) of those maps
      (9 orientations, cells of 1/14 of the side, 2 x 2 blocks).

    A constant map scores 0 (Spearman, HOG). ``a`` or ``b`` may also be the
    :func:`map_features` of a map (for the same ``metrics``).
    """
    from skimage.metrics import structural_similarity

    fa = a if isinstance(a, dict) else map_features(a, metrics)
    fb = b if isinstance(b, dict) else map_features(b, metrics)
    if fa["shape"] != fb["shape"]:
        raise ValueError(f"maps must be two (H, W) arrays of one shape, got {fa['shape']} and {fb['shape']}")
    out = {}
    for k in metrics:
        need = "unit" if k == "ssim" else k
        if need not in fa or need not in fb:
            raise ValueError(f"unknown similarity {k!r} (or features computed without it); "
                             f"known: {SIMILARITIES}")
        if k == "ssim":
            out[k] = float(structural_similarity(fa["unit"], fb["unit"], data_range=1.0))
        else:
            out[k] = _corr(fa[k], fb[k])
    return out


class RandomisationResult(dict):
    """``{metric: [(block, mean similarity over images), ...]}`` in randomisation order, plus:

    Attributes:
        blocks: block names in randomisation order.
        per_image: ``{metric: (blocks, N) array}``.
        maps: ``(blocks + 1, N, H, W)`` the non-negative maps (original first), when kept.
        method, mode: what was tested.
        targets: ``(N,)`` the classes (fixed by the original model).
    """

    blocks: list[str]
    per_image: dict[str, np.ndarray]
    maps: torch.Tensor | None
    method: str
    mode: str
    targets: np.ndarray

    def sem(self, metric: str) -> list[float]:
        """Standard error over images of each block's mean similarity."""
        return [sem(row) for row in self.per_image[metric]]


def _accepts_signed(method: str) -> bool:
    params = inspect.signature(_REGISTRY[method]).parameters
    return "signed" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def randomisation_test(
    clf: Classifier,
    images: Sequence[Image.Image] | torch.Tensor,
    maps: str = "gradient",
    mode: str = "cascading",
    targets: Any = None,
    *,
    blocks: Sequence[tuple[str, Sequence[str]]] | None = None,
    metrics: Sequence[str] = SIMILARITIES,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    keep_maps: bool = False,
    **options: Any,
) -> RandomisationResult:
    """Model-parameter randomisation test (Adebayo et al. 2018, Sect. 3.1).

    ``mode="cascading"``: blocks are re-initialised cumulatively, from the classifier down to the
    stem (after step k the top k blocks are random); ``"independent"``: one block at a time, the
    others as trained. After each step the maps of ``maps`` (same images, same target classes,
    chosen by the original model) are recomputed and compared with the original maps
    (:func:`map_similarity`). Everything happens on a deep copy of the network: the model passed
    in is never modified.

    Args:
        clf: the classifier.
        images: PIL images or a normalised ``(N, 3, H, W)`` tensor.
        maps: a registered method name.
        mode: ``"cascading"`` or ``"independent"``.
        targets: None = top-1 class of the original model; else as :func:`compute_maps`.
        blocks: ``[(name, [module names]), ...]`` in order (default :func:`randomisation_blocks`).
        metrics: subset of :data:`SIMILARITIES`.
        seed: seeds the re-initialisation (block k uses ``seed + k``).
        keep_maps: keep every map (for figures).
        **options: passed to :func:`compute_maps` (the same for every step, e.g. the seed of
            SmoothGrad: the same noise).

    Returns:
        :class:`RandomisationResult`: ``{metric: [(block, mean similarity), ...]}``.
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    if not isinstance(maps, str) or maps not in map_names():
        raise ValueError(f"unknown map method {maps!r}; known methods: {', '.join(map_names())}")
    for k in metrics:
        if k not in SIMILARITIES:
            raise ValueError(f"unknown similarity {k!r}; known: {SIMILARITIES}")
    from ..methods.maps import _as_input, _as_targets

    x = _as_input(clf, images, "randomisation_test")
    with frozen(clf.net):
        tgt = _as_targets(clf, x, targets, batch_size)
    signed = _accepts_signed(maps)
    opts = dict(options, signed=True) if signed else dict(options)

    def compute(c: Classifier) -> torch.Tensor:
        return compute_maps(c, x, tgt, method=maps, batch_size=batch_size, **opts).cpu()

    original = compute(clf)
    reference = [map_features(m, metrics) for m in original]   # once, not once per block
    groups = list(blocks) if blocks is not None else randomisation_blocks(clf.net)
    twin = dataclasses.replace(clf, net=copy.deepcopy(clf.net))
    per = {k: np.zeros((len(groups), len(x))) for k in metrics}
    kept = [original.abs()] if keep_maps else None
    for b, (name, members) in enumerate(progress(groups, desc=f"randomising ({maps}, {mode})")):
        saved = None
        if mode == "independent":
            saved = {mname: copy.deepcopy(twin.net.get_submodule(mname).state_dict()) for mname in members}
        _reinitialise(twin.net, members, seed + b)
        now = compute(twin)
        if kept is not None:
            kept.append(now.abs())
        for i in range(len(x)):
            sims = map_similarity(reference[i], now[i], metrics)
            for k in metrics:
                per[k][b, i] = sims[k]
        if saved is not None:
            for mname, state in saved.items():
                twin.net.get_submodule(mname).load_state_dict(state)
    res = RandomisationResult({k: [(g[0], float(per[k][b].mean())) for b, g in enumerate(groups)]
                               for k in metrics})
    res.blocks = [g[0] for g in groups]
    res.per_image = per
    res.maps = torch.stack(kept) if kept is not None else None
    res.method, res.mode, res.targets = maps, mode, tgt.cpu().numpy()
    return res


# -- all methods on one dataset, cached ---------------------------------------------------------------


_RANDOMISATION_ATTRS = ("blocks", "per_image", "maps", "method", "mode", "targets")


def _randomisation_state(r: "RandomisationResult") -> dict:
    return {"items": dict(r), "attrs": {k: getattr(r, k) for k in _RANDOMISATION_ATTRS if hasattr(r, k)}}


def _randomisation_restore(state: dict) -> "RandomisationResult":
    res = RandomisationResult(state["items"])
    for k, v in state["attrs"].items():
        if k in _RANDOMISATION_ATTRS:
            setattr(res, k, v)
    return res


register_cacheable(RandomisationResult, _randomisation_state, _randomisation_restore)


def cached(name: str, key: Any, compute: Callable[[], Any], cache_dir: str | Path | None = None) -> Any:
    """Chapter 6's results on disk: :func:`deepinside.core.cache.cached` with
    :data:`CACHE_VERSION` in the key (values: plain data, arrays, tensors and
    :class:`RandomisationResult`; read without unpickling). ``cache_dir`` None: no caching."""
    return _cached(name, (key, CACHE_VERSION), compute, cache_dir)


#: Version of the computations behind :func:`cached` results: bump it when a change of the code
#: changes what the chapter's cached calls return (the key holds model, data and parameters).
CACHE_VERSION = "6.1"


def evaluate_maps(
    clf: Classifier,
    dataset: Any,
    methods: Sequence[str],
    *,
    options: dict[str, dict[str, Any]] | None = None,
    tolerance: float = 15,
    crops: str = "center",
    smooth: float | dict[str, float] = 0.0,
    deletion_images: int | None = None,
    steps: int = 16,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """The pointing game and deletion/insertion for every method on one dataset, maps computed
    once per method (ground-truth class, centre crop) and shared by both tests.

    Args:
        dataset: as :func:`pointing_game`.
        methods: registered names and/or :data:`BASELINES` (``"centre"``: the centre point in the
            pointing game and the centre-first order in deletion/insertion; ``"random"``: random
            order, no pointing game).
        options: per method, options of :func:`compute_maps`.
        crops, smooth: the pointing game's frame and smoothing (:func:`pointing_game`);
            ``smooth`` may be one value per method (``{method: fraction}``, missing: 0). With
            ``crops="full"`` the pointing game computes its own maps on the whole image.
        deletion_images: deletion/insertion on the first this many images (None: all).
        steps: deletion/insertion steps.

    Returns:
        ``{method: {"pointing": pointing_game dict (or None), "deletion": deletion_insertion dict}}``.

    Two methods whose maps put the pixels of every image in the same order (CAM and Grad-CAM
    on a network that pools its last features globally: chapter 6) have the same curves; they
    are computed once, for the first, and copied for the other (issue 21: no work twice).
    """
    items = _items(dataset)
    curves: dict[str, dict[str, Any]] = {}   # pixel order's digest -> deletion_insertion result

    def curves_of(maps: torch.Tensor) -> dict[str, Any]:
        digest = hashlib.sha256(_ranks(maps, seed).numpy().tobytes()).hexdigest()
        if digest not in curves:
            curves[digest] = deletion_insertion(clf, x, maps.to(clf.device), labels[:nd],
                                                steps=steps, batch_size=batch_size, seed=seed)
        return copy.deepcopy(curves[digest])

    nd = len(items) if deletion_images is None else min(int(deletion_images), len(items))
    labels = [r.label for _, r in items]
    x = clf.preprocess([im for im, _ in items[:nd]]) if nd else None
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        opts = dict((options or {}).get(method, {}))
        if method in BASELINES:
            pg = pointing_game(clf, items, "centre", tolerance) if method == "centre" else None
            di_ = deletion_insertion(clf, x, method, labels[:nd], steps=steps, batch_size=batch_size,
                                     seed=seed) if nd else None
        else:
            sm = smooth.get(method, 0.0) if isinstance(smooth, dict) else smooth
            reach = len(items) if crops == "center" else nd
            m = torch.cat([compute_maps(clf, [im for im, _ in items[i:i + batch_size]],
                                        labels[i:i + batch_size], method, batch_size=batch_size,
                                        **opts).cpu()
                           for i in range(0, reach, batch_size)]) if reach else None
            pg = (pointing_game(clf, items, m, tolerance, smooth=sm) if crops == "center" else
                  pointing_game(clf, items, method, tolerance, crops=crops, smooth=sm,
                                batch_size=batch_size, **opts))
            di_ = curves_of(m[:nd]) if nd else None
        out[method] = {"pointing": pg, "deletion": di_}
    return out


def spaced_items(datasets: Sequence[Any], n_each: int) -> list[tuple[Image.Image, Any]]:
    """``n_each`` (image, record) pairs from each dataset, evenly spaced over it (its first and
    last included), loaded once, interleaved (first of each dataset, second of each, ...), so
    that any prefix holds the datasets in equal parts."""
    picks = []
    for ds in datasets:
        idx = np.unique(np.linspace(0, len(ds) - 1, min(n_each, len(ds))).round().astype(int))
        picks.append([ds[int(i)] for i in idx])
    return [p[k] for k in range(max(map(len, picks), default=0)) for p in picks if k < len(p)]


def unlabelled_items(clf: Classifier, images: Iterable[Image.Image]) -> list[tuple[Image.Image, Any]]:
    """Images without annotations as (image, record) pairs: the label is the top-1 class and the
    "box" the whole image (so the pointing game is trivial on them: only the other tests mean
    anything). For running the chapter without ILSVRC data."""
    from types import SimpleNamespace

    images = list(images)
    top = clf.scores(clf.preprocess(images)).argmax(1).tolist()
    return [(im, SimpleNamespace(boxes=((0, 0, *im.size),), label=c, wnid=clf.wnids[c],
                                 box_wnids=(clf.wnids[c],), image_path=f"photo-{k}",
                                 width=im.size[0], height=im.size[1]))
            for k, (im, c) in enumerate(zip(images, top))]


def dataset_key(items: Sequence[tuple[Image.Image, Any]]) -> list[str]:
    """What identifies a list of (image, record) pairs in a cache key: file names and sizes."""
    return [f"{Path(str(getattr(r, 'image_path', ''))).name}:{im.size}" for im, r in items]


# -- figures (matplotlib imported here only) ------------------------------------------------------


