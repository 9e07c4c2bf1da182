r"""MaxBoxAccV2: the box-localisation metric of Choe et al. (2020), as wsolevaluation computes it.

Choe, Oh, Lee, Chun, Akata, Shim, "Evaluating Weakly Supervised Object Localization Methods
Right", CVPR 2020, Sect. 4 ("Evaluation metrics"), and its reference code
(github:clovaai/wsolevaluation, ``evaluation.py`` / ``inference.py`` / ``data_loaders.py``).
For a score map :math:`s(X_n) \in [0, 1]^{H \times W}`, a score-map threshold :math:`\tau` and
an IoU threshold :math:`\delta`,

.. math::

    \mathrm{BoxAcc}(\tau, \delta) = \frac1N \sum_{n=1}^N
        \mathbb 1\bigl[\mathrm{IoU}(\mathrm{box}(s(X_n), \tau), B_n) \ge \delta\bigr],
    \qquad
    \mathrm{MaxBoxAcc}(\delta) = \max_\tau \mathrm{BoxAcc}(\tau, \delta),

and :math:`\mathrm{MaxBoxAccV2} = \frac13 \sum_{\delta \in \{0.3, 0.5, 0.7\}}
\mathrm{MaxBoxAcc}(\delta)`. In the V2 metric, :math:`\mathrm{box}(s, \tau)` is the set of the
bounding boxes of **all** contours of :math:`\{s > \tau\}` and :math:`B_n` the set of all
ground-truth boxes of the image; the IoU is the best match between the two sets. The V1
metric (``multi_contour=False``) keeps only the largest contour; the paper's MaxBoxAcc (V1) is
its value at :math:`\delta = 0.5`.

The protocol, step by step (wsolevaluation's conventions, kept here):

* the test image is resized as a whole to 224 x 224 (no crop; ``transforms.Resize((224, 224))``);
* the CAM of the ground-truth class is resized to 224 (``cv2.INTER_CUBIC``) and min-max
  normalised (a constant or NaN map becomes all zeros);
* :math:`\tau \in` ``np.arange(0, 1, cam_curve_interval)``; the command line of
  ``evaluation.py`` defaults to ``cam_curve_interval = 0.01`` (100 thresholds, our default),
  the training config to 0.001;
* at each :math:`\tau`: ``cv2.threshold`` of ``(s * 255).astype(uint8)`` at
  ``int(tau * max)`` (``THRESH_BINARY``: strictly greater), ``cv2.findContours`` (``RETR_TREE``,
  ``CHAIN_APPROX_SIMPLE``: holes are contours too), and ``x, y, w, h = cv2.boundingRect(c)``
  gives the box ``(x, y, min(x + w, W - 1), min(y + h, H - 1))`` (for V2 the same boxes come,
  where that is faster, from the mask's connected components and holes: ``_component_boxes``).
  Note that ``x + w`` is one past the last pixel while the IoU below treats ``x1`` as inclusive:
  a map that is exactly an inclusive ``w x h`` box scores IoU ``wh / ((w+1)(h+1))`` against it,
  not 1 (their quirk, kept);
* no contour (an empty mask): the box ``[0, 0, 0, 0]``;
* IoU with inclusive areas, ``(x1 - x0 + 1) * (y1 - y0 + 1)``; a non-positive union gives 0;
* ground-truth boxes, given in wsolevaluation's ``localization.txt`` as the XML's
  ``(xmin, ymin, xmax, ymax)`` in original pixels (inclusive corners), are scaled to 224 as
  ``int(x * 224 / width)`` (each corner, truncated);
* an image is correct at :math:`(\tau, \delta)` if the largest IoU over (predicted boxes x
  ground-truth boxes) is :math:`\ge \delta`.

Where this module differs:

* Frames. :class:`~deepinside.data.IlsvrcRecord` boxes are half-open
  (``x1 = xmax + 1``). :func:`max_box_accuracy` converts them back to the XML's inclusive corners,
  ``(x0, y0, x1 - 1, y1 - 1)``, then scales each corner by ``int(v * S / width)`` (``S`` =
  ``clf.input_size``; ``height`` for y), which is exactly wsolevaluation's ``resize_bbox`` of
  the XML box. :func:`box_hits` takes boxes already in that inclusive frame.
* Resizing the image uses ``clf.interpolation`` (the classifier's PIL filter: bicubic for
  EfficientNet-Lite0) where wsolevaluation uses torchvision's default (PIL bilinear).
* Maps come from :func:`deepinside.maps.compute_maps`, already on the ``S x S`` input grid: for
  ``"cam"`` that is the coarse CAM rectified (ReLU) and upsampled bilinearly, not wsolevaluation's
  unrectified CAM upsampled bicubically (``signed=True`` skips the ReLU). A map on another grid
  is resized with ``cv2.INTER_CUBIC`` as theirs.
* Accuracies are fractions in [0, 1], not percentages.
* ``best_threshold`` (not reported by wsolevaluation) is the smallest :math:`\tau` attaining the
  maximum. Choe et al. choose :math:`\tau` on a held-out split (``train-fullsup``); with
  :func:`accuracy_at` thresholds chosen on one set are applied to another, and
  :func:`max_box_accuracy` itself maximises over :math:`\tau` on the set it is given, as
  ``BoxEvaluator.compute`` does.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.models import BATCH_SIZE
from ..core.memory import release_memory
from ..core.parallel import thread_map

__all__ = ["DEFAULT_IOUS", "accuracy_at", "bootstrap_se_maxboxacc", "box_hits", "box_iou",
           "default_thresholds", "max_box_accuracy", "max_box_accuracy_from_counts",
           "max_box_accuracy_from_hits", "paired_maxboxacc", "maxboxacc_comparisons", "CENTRE", "centre_map", "maxboxacc_table", "transferred_thresholds"]

DEFAULT_IOUS: tuple[float, ...] = (0.3, 0.5, 0.7)
"""The IoU thresholds :math:`\\delta` of MaxBoxAccV2 (Choe et al. 2020, Sect. 4)."""


def default_thresholds(cam_curve_interval: float = 0.01) -> np.ndarray:
    """``np.arange(0, 1, cam_curve_interval)``, rounded to 10 decimals, ``(T,)`` float64.

    The rounding only tidies the reported thresholds (0.07 rather than 0.07000000000000001): for
    the interval 0.01 every ``int(tau * 255)`` is the same as with the unrounded values.
    """
    if not isinstance(cam_curve_interval, numbers.Real) or not 0 < float(cam_curve_interval) < 1:
        raise ValueError(f"cam_curve_interval must be in (0, 1), got {cam_curve_interval!r}")
    return np.round(np.arange(0.0, 1.0, float(cam_curve_interval)), 10)


# -- argument checks ---------------------------------------------------------------------------


def _check_ious(ious: Any) -> tuple[float, ...]:
    try:
        vals = tuple(ious)
    except TypeError:
        raise TypeError(f"ious must be a sequence of numbers in (0, 1], got {ious!r}") from None
    if not vals:
        raise ValueError("ious must hold at least one IoU threshold in (0, 1]")
    out = []
    for v in vals:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"ious must be numbers in (0, 1], got {v!r}")
        if not (math.isfinite(float(v)) and 0.0 < float(v) <= 1.0):
            raise ValueError(f"every IoU threshold must be in (0, 1], got {v!r} in {vals}")
        out.append(float(v))
    if len(set(out)) != len(out):
        raise ValueError(f"ious has repeated values: {vals}")
    return tuple(out)


def _check_thresholds(thresholds: Any) -> np.ndarray:
    if thresholds is None:
        return default_thresholds()
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or t.min() < 0 or t.max() >= 1:
        raise ValueError("score-map thresholds must lie in [0, 1) (s > tau at tau = 1 is empty)")
    return t


def _check_hits(hits: Any, ious: tuple[float, ...], thresholds: np.ndarray | None = None) -> np.ndarray:
    h = np.asarray(hits)
    if h.ndim != 3 or h.dtype != np.bool_:
        raise ValueError(f"hits must be a boolean (N, T, D) array, got {h.dtype} of shape {h.shape}")
    if h.shape[0] == 0:
        raise ValueError("hits holds no image (N = 0)")
    if h.shape[2] != len(ious):
        raise ValueError(f"hits has D = {h.shape[2]} IoU columns but ious has {len(ious)}: {ious}")
    if thresholds is not None and h.shape[1] != len(thresholds):
        raise ValueError(f"hits has T = {h.shape[1]} thresholds but thresholds has {len(thresholds)}")
    return h


def _check_gt(gt_boxes: Any, n: int) -> list[np.ndarray]:
    if len(gt_boxes) != n:
        raise ValueError(f"gt_boxes has {len(gt_boxes)} entries for {n} score maps: give one list of "
                         "boxes per map")
    out = []
    for i, boxes in enumerate(gt_boxes):
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
        if b.shape[0] == 0:
            raise ValueError(f"image {i} has no ground-truth box")
        if not np.all(np.isfinite(b)) or (b < 0).any():
            raise ValueError(f"image {i}: box coordinates must be finite and non-negative, got {b.tolist()}")
        if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
            raise ValueError(f"image {i}: boxes must be (x0, y0, x1, y1) with x1 >= x0, y1 >= y0 "
                             f"(inclusive corners), got {b.tolist()}")
        out.append(b)
    return out


# -- the core -----------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(K, 4)`` with every box of ``b`` ``(G, 4)``: ``(K, G)`` float64.

    wsolevaluation's ``calculate_multiple_iou``: boxes ``(x0, y0, x1, y1)`` with inclusive corners,
    areas ``(x1 - x0 + 1) * (y1 - y0 + 1)``, intersection clipped at 0, and IoU 0 where the union is
    not positive.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    ok = union > 0
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


_CHUNK = 16  # images read, mapped and scored together by max_box_accuracy
_FEW = 16  # up to this many contours, cv2.boundingRect in a loop beats the vectorised reduceat


def _contour_boxes(contours: Sequence[np.ndarray], width: int, height: int, multi_contour: bool) -> np.ndarray:
    """Boxes ``(k, 4)`` int64 of ``cv2.findContours``' contours, as wsolevaluation's ``scoremap2bbox``.

    ``cv2.boundingRect`` of integer points is ``(min x, min y, max x - min x + 1, ...)``, so the box
    ``(x, y, x + w, y + h)`` is ``(min x, min y, max x + 1, max y + 1)``, then clipped to
    ``W - 1, H - 1``: computed for all contours at once with ``reduceat`` when there are many
    (noisy maps give hundreds), with ``cv2.boundingRect`` when there are few (cheaper). For V1 the
    largest contour by ``cv2.contourArea`` (the first among equals, as Python's ``max``) is kept.
    """
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if len(contours) <= _FEW or not multi_contour:
        import cv2

        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        rects = [cv2.boundingRect(c) for c in contours]
        return np.array([(x, y, min(x + w, width - 1), min(y + h, height - 1)) for x, y, w, h in rects],
                        dtype=np.int64)
    lens = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    lo_x = np.minimum.reduceat(pts[:, 0], starts)
    lo_y = np.minimum.reduceat(pts[:, 1], starts)
    hi_x = np.minimum(np.maximum.reduceat(pts[:, 0], starts) + 1, width - 1)
    hi_y = np.minimum(np.maximum.reduceat(pts[:, 1], starts) + 1, height - 1)
    return np.stack([lo_x, lo_y, hi_x, hi_y], axis=1)


def box_hits(
    scoremaps: np.ndarray,
    gt_boxes: Sequence[Sequence[Sequence[float]]],
    thresholds: Sequence[float] | np.ndarray | None = None,
    ious: Sequence[float] = DEFAULT_IOUS,
    multi_contour: bool = True,
) -> np.ndarray:
    r"""Which image is correctly localised at each (score-map threshold, IoU threshold).

    ``hits[n, t, d] = 1[max IoU(box(s_n, tau_t), B_n) >= delta_d]``, the summand of Choe et al.'s
    BoxAcc: see the module docstring for the exact protocol (wsolevaluation's
    ``compute_bboxes_from_scoremaps`` and ``BoxEvaluator.accumulate``).

    Args:
        scoremaps: ``(N, H, W)`` score maps in [0, 1] (min-max normalised: wsolevaluation requires
            each map to attain 0 and 1, or to be all zeros); float.
        gt_boxes: for each map, its ground-truth boxes ``(x0, y0, x1, y1)`` in the map's pixel
            frame with **inclusive** corners (wsolevaluation's convention: the XML's ``xmin ..
            xmax`` scaled to the map), at least one per map.
        thresholds: ``(T,)`` score-map thresholds :math:`\tau` in [0, 1); None = ``np.arange(0, 1,
            0.01)`` (:func:`default_thresholds`).
        ious: ``(D,)`` IoU thresholds :math:`\delta` in (0, 1].
        multi_contour: True: boxes of all contours (MaxBoxAccV2); False: the largest contour only
            (the V1 metric).

    Returns:
        ``(N, T, D)`` bool.
    """
    ious = _check_ious(ious)
    t = _check_thresholds(thresholds)
    multi_contour = bool(multi_contour)
    s = np.asarray(scoremaps)
    if s.ndim != 3 or s.shape[0] == 0 or s.shape[1] < 1 or s.shape[2] < 1:
        raise ValueError(f"scoremaps must be a non-empty (N, H, W) array, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        raise ValueError(f"scoremaps must be floating point in [0, 1], got {s.dtype}")
    if np.isnan(s).any() or s.min() < 0 or s.max() > 1:
        raise ValueError("scoremaps must lie in [0, 1] without NaN (min-max normalise each map first)")
    gts = _check_gt(gt_boxes, s.shape[0])
    n = s.shape[0]
    delta = np.asarray(ious, dtype=np.float64)
    img8_all = (s * 255).astype(np.uint8)          # wsolevaluation: (scoremap * 255).astype(uint8)
    one = lambda i: _image_hits(img8_all[i], gts[i], t, delta, multi_contour)  # noqa: E731
    # OpenCV releases the GIL: the images' contours on every core given to this process
    return np.stack(thread_map(one, range(n)))


def _component_boxes(img8: np.ndarray, level: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The boxes of :func:`_contour_boxes` (all contours) of ``{img8 > level}``, from connected components.

    ``cv2.findContours`` pads the image with zeros and (Suzuki-Abe) traces one outer border per
    8-connected foreground component and one hole border per 4-connected background component that
    does not reach the frame; a component's border holds its extreme pixels, and a hole's border
    is the foreground pixels 4-adjacent to it, one pixel outside it on each side. So the contours'
    boxes are the bounding boxes of the 8-connected components of the mask and those of the holes
    grown by one pixel (a hole never touches the frame, so the grown box stays inside), which
    ``cv2.connectedComponentsWithStats`` gives for all components at once. Both are computed on
    the mask cropped to the bounding box of its foreground (``rows``, ``cols``: the maxima of
    ``img8`` along each row and column): a background component reaching the crop's edge reaches
    the image's frame through the empty band outside it (or is on the frame), so the holes are the
    same. Checked against ``findContours`` (identical sets of boxes) on some 10^5 masks: uniform and
    smoothed noise, rings and holes, 1-pixel lines and checkerboards, masks touching the frame,
    maps from 1 x 1 to 224 x 224 (``tests/test_maxboxacc.py`` keeps a seeded sample of them).
    """
    import cv2

    height, width = img8.shape
    r = np.flatnonzero(rows > level)
    if r.size == 0:                                   # an empty mask: no contour
        return np.zeros((1, 4), dtype=np.int64)
    c = np.flatnonzero(cols > level)
    y0, x0 = int(r[0]), int(c[0])
    sub = img8[y0:int(r[-1]) + 1, x0:int(c[-1]) + 1]
    h, w = sub.shape
    ltype = cv2.CV_16U if h * w < 65535 else cv2.CV_32S   # 16-bit labels: fewer than 2^16 components
    _, fg = cv2.threshold(sub, level, 1, cv2.THRESH_BINARY)
    _, bg = cv2.threshold(sub, level, 1, cv2.THRESH_BINARY_INV)
    comp = cv2.connectedComponentsWithStats(fg, connectivity=8, ltype=ltype)[2][1:, :4].astype(np.int64)
    hole = cv2.connectedComponentsWithStats(bg, connectivity=4, ltype=ltype)[2][1:, :4].astype(np.int64)
    inside = (hole[:, 0] > 0) & (hole[:, 1] > 0) & (hole[:, 0] + hole[:, 2] < w) & (hole[:, 1] + hole[:, 3] < h)
    hole = hole[inside]                             # off the crop's edge: a hole
    # component (x, y, w, h): pixels x .. x + w - 1, contour box (x, y, x + w, y + h) clipped;
    # a hole's border: pixels x - 1 .. x + w, box (x - 1, y - 1, x + w + 1, y + h + 1) clipped
    lo = np.concatenate([comp[:, :2], hole[:, :2] - 1]) + (x0, y0)
    hi = np.concatenate([comp[:, :2] + comp[:, 2:], hole[:, :2] + hole[:, 2:] + 1]) + (x0, y0)
    return np.concatenate([lo, np.minimum(hi, (width - 1, height - 1))], axis=1)


def _edge_counts(img8: np.ndarray) -> np.ndarray:
    """``(256,)``: for each level, the number of pairs of 4-adjacent pixels on either side of
    ``{img8 > level}`` (the length of its borders, which is what ``findContours`` pays for)."""
    import cv2

    counts = np.zeros(256)
    for a, b in ((img8[:, 1:], img8[:, :-1]), (img8[1:], img8[:-1])):   # a pair is split at
        if a.size:                                                        # min <= level < max
            counts += cv2.calcHist([cv2.min(a, b)], [0], None, [256], [0, 256]).ravel()  # (4x faster
            counts -= cv2.calcHist([cv2.max(a, b)], [0], None, [256], [0, 256]).ravel()  # than bincount)
    return np.cumsum(counts)


def _image_hits(img8: np.ndarray, gt: np.ndarray, t: np.ndarray, delta: np.ndarray,
                multi_contour: bool, method: str = "auto") -> np.ndarray:
    """``(T, D)`` bool: :func:`box_hits` of one ``(H, W)`` uint8 score map.

    For all contours (V2), each mask's boxes come from ``cv2.findContours`` or, with identical
    boxes (:func:`_component_boxes`), from connected components, whichever is expected cheaper:
    ``findContours`` costs about its borders' length, the components the area of the mask's
    bounding box (on noisy gradient maps, 2-2.5x faster). ``method``: ``"auto"`` (that choice),
    ``"contours"`` or ``"components"`` (always one, for tests); V1 always uses ``findContours``.
    """
    import cv2

    height, width = img8.shape
    top = int(img8.max())
    levels = (t * top).astype(np.int64)          # int(threshold * np.max(scoremap_image))
    # masks {img8 > level} are nested: a threshold that adds no pixel gives the same boxes
    above = img8.size - np.cumsum(np.bincount(img8.ravel(), minlength=256))[levels]
    new = np.ones(len(t), dtype=bool)
    new[1:] = above[1:] != above[:-1]
    rows, cols = img8.max(axis=1), img8.max(axis=0)
    todo = np.flatnonzero(new)
    use_cc = np.full(len(t), multi_contour and method == "components")
    if multi_contour and method == "auto":
        lv = levels[todo, None]
        span = [(len(v) - np.argmax(v[::-1] > lv, axis=1)) - np.argmax(v > lv, axis=1) for v in (rows, cols)]
        area = span[0] * span[1]                   # of the mask's bounding box (garbage if empty)
        # timed: components ~30 us + 0.012 us per pixel of that box, contours ~20 us + 0.17 us
        # per border edge; this rule costs within 5 % of always taking the better one
        use_cc[todo] = area < 10 * (_edge_counts(img8)[levels[todo]] - 100)
    boxes, owner = [], []
    for j in todo:
        level = int(levels[j])
        if use_cc[j]:
            b = _component_boxes(img8, level, rows, cols)
        else:
            _, binary = cv2.threshold(img8, level, 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            b = _contour_boxes(contours, width, height, multi_contour)
        boxes.append(b)
        owner.append(len(b))
    best = box_iou(np.concatenate(boxes), gt).max(axis=1)        # (K,) over the gt boxes
    per_mask = np.maximum.reduceat(best, np.concatenate(([0], np.cumsum(owner)[:-1])))
    per_t = per_mask[np.cumsum(new) - 1]                             # (T,)
    return per_t[:, None] >= delta[None, :]


# -- from hits to accuracies ---------------------------------------------------------------------


def max_box_accuracy_from_hits(
    hits: np.ndarray,
    ious: Sequence[float] = DEFAULT_IOUS,
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    r"""MaxBoxAcc per IoU threshold and MaxBoxAccV2 from :func:`box_hits`' ``(N, T, D)`` hits.

    :math:`\mathrm{BoxAcc}(\tau, \delta)` = ``hits.mean(0)`` ``(T, D)``; MaxBoxAcc(delta) is its
    maximum over :math:`\tau` (on these same images, as wsolevaluation's ``BoxEvaluator.compute``);
    MaxBoxAccV2 the mean of those over the D IoU thresholds.

    Args:
        hits: ``(N, T, D)`` bool.
        ious: the D IoU thresholds, in the order of ``hits``' last axis.
        thresholds: the T score-map thresholds (None: :func:`default_thresholds`), for
            ``best_threshold``.

    Returns:
        ``{"maxboxacc_v2": float, "per_iou": {delta: float}, "best_threshold": {delta: tau},
        "n": N}``. Accuracies are fractions in [0, 1] (the paper's tables give percentages).
        ``best_threshold`` is the smallest :math:`\tau` attaining the maximum. With hits from
        ``multi_contour=False``, ``"maxboxacc_v2"`` is the mean of the single-contour values and the
        paper's V1 MaxBoxAcc is ``per_iou[0.5]``.
    """
    ious = _check_ious(ious)
    t = _check_thresholds(thresholds)
    h = _check_hits(hits, ious, t)
    return max_box_accuracy_from_counts(h.sum(axis=0), int(h.shape[0]), ious, t)


def max_box_accuracy_from_counts(
    counts: np.ndarray,
    n: int,
    ious: Sequence[float] = DEFAULT_IOUS,
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    r""":func:`max_box_accuracy_from_hits` from the number of correct images per
    :math:`(\tau, \delta)`, ``counts`` ``(T, D)`` ints out of ``n`` images: counts of disjoint
    shards add up, so a sharded run merges exactly (``deepinside evaluate --metric maxboxacc``)."""
    ious = _check_ious(ious)
    t = _check_thresholds(thresholds)
    c = np.asarray(counts)
    if c.shape != (len(t), len(ious)) or n < 1 or (c < 0).any() or (c > n).any():
        raise ValueError(f"counts must be ({len(t)}, {len(ious)}) integers in 0..n with n >= 1, got "
                         f"shape {c.shape} and n = {n}")
    acc = c / n                                # (T, D): BoxAcc(tau, delta)
    best = acc.argmax(axis=0)                  # (D,), first maximum = smallest tau
    per = {d: float(acc[best[k], k]) for k, d in enumerate(ious)}
    return {"maxboxacc_v2": float(np.mean(list(per.values()))), "per_iou": per,
            "best_threshold": {d: float(t[best[k]]) for k, d in enumerate(ious)}, "n": int(n)}


def accuracy_at(
    hits: np.ndarray,
    thresholds_chosen: Mapping[float, float],
    *,
    ious: Sequence[float] = DEFAULT_IOUS,
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> dict[float, float]:
    r"""BoxAcc(tau_delta, delta) at score-map thresholds chosen elsewhere (e.g. on another split).

    Choe et al. (2020, Sect. 5) choose hyper-parameters, the score-map threshold included, on a
    held-out fully supervised split (``train-fullsup``) and report on ``test``; pass here the
    ``best_threshold`` of :func:`max_box_accuracy_from_hits` on the first set and the hits of the
    second.

    Args:
        hits: ``(N, T, D)`` bool (:func:`box_hits`).
        thresholds_chosen: ``{delta: tau}`` for some or all ``delta`` of ``ious``; each ``tau`` must
            be one of ``thresholds`` (to 1e-9).
        ious: the D IoU thresholds of ``hits``' last axis.
        thresholds: the T score-map thresholds of ``hits``' second axis (None: the default).

    Returns:
        ``{delta: accuracy}`` (fractions in [0, 1]) for each ``delta`` of ``thresholds_chosen``.
    """
    ious = _check_ious(ious)
    t = _check_thresholds(thresholds)
    h = _check_hits(hits, ious, t)
    if not isinstance(thresholds_chosen, Mapping) or not thresholds_chosen:
        raise ValueError(f"thresholds_chosen must be a non-empty {{iou: threshold}} mapping, got "
                         f"{thresholds_chosen!r}")
    out = {}
    for d, tau in thresholds_chosen.items():
        col = [k for k, v in enumerate(ious) if math.isclose(float(d), v, abs_tol=1e-9)]
        if not col:
            raise ValueError(f"IoU threshold {d!r} is not one of ious {ious}")
        row = np.flatnonzero(np.isclose(t, float(tau), rtol=0, atol=1e-9))
        if row.size == 0:
            raise ValueError(f"threshold {tau!r} (for IoU {d}) is not one of the {len(t)} score-map "
                             f"thresholds of hits ({t[0]:g} .. {t[-1]:g})")
        out[ious[col[0]]] = float(h[:, row[0], col[0]].mean())
    return out


def bootstrap_se_maxboxacc(
    hits: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    ious: Sequence[float] = DEFAULT_IOUS,
) -> dict[str, Any]:
    r"""Bootstrap standard errors of MaxBoxAccV2 and of each MaxBoxAcc(delta), resampling images.

    Each of ``n_boot`` resamples draws N images with replacement (``numpy.random.default_rng(seed)``)
    and **re-maximises over** :math:`\tau` within the resample, so the optimism of choosing
    :math:`\tau` on the test images is part of the spread. Vectorised: the resampled counts
    ``(B, N)`` (``np.bincount``) times the hits ``(N, T*D)`` give every resample's BoxAcc at once.

    Args:
        hits: ``(N, T, D)`` bool.
        n_boot: number of resamples (>= 2).
        seed: the generator's seed; same seed, same answer.
        ious: the D IoU thresholds of ``hits``' last axis (the keys of ``per_iou``).

    Returns:
        ``{"maxboxacc_v2": se, "per_iou": {delta: se}, "n_boot": n_boot}``: standard deviations
        (``ddof=1``) of the resampled values, fractions as the accuracies.
    """
    from ..core.inputs import check_int

    ious = _check_ious(ious)
    h = _check_hits(hits, ious)
    n_boot = check_int("n_boot", n_boot, lo=2)
    seed = check_int("seed", seed, lo=0)
    per = _resampled_maxima([h], n_boot, seed)[0]          # (n_boot, D)
    v2 = per.mean(axis=1)
    return {"maxboxacc_v2": float(v2.std(ddof=1)),
            "per_iou": {dl: float(per[:, k].std(ddof=1)) for k, dl in enumerate(ious)},
            "n_boot": n_boot}


def _resampled_maxima(hits: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """MaxBoxAcc(delta) ``(n_boot, D)`` of each ``(N, T, D)`` hits array on the same ``n_boot``
    resamples of the N images (so differences are paired). Vectorised: the resampled counts
    ``(B, N)`` (``np.bincount``) times the hits ``(N, T*D)`` give every resample's BoxAcc."""
    n = hits[0].shape[0]
    rng = np.random.default_rng(seed)
    flats = [h.reshape(n, -1).astype(np.float64) for h in hits]
    chunk = max(1, min(n_boot, 4_000_000 // n))
    out = [np.empty((n_boot, h.shape[2])) for h in hits]
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        for h, flat, o in zip(hits, flats, out):
            acc = (counts @ flat).reshape(b, h.shape[1], h.shape[2]) / n   # BoxAcc per resample
            o[lo:lo + b] = acc.max(axis=1)
    return out


def paired_maxboxacc(hits_a: np.ndarray, hits_b: np.ndarray, n_boot: int = 1000, seed: int = 0, *,
                     ious: Sequence[float] = DEFAULT_IOUS) -> dict[str, float]:
    r"""MaxBoxAccV2 of ``a`` minus that of ``b`` on the same images, with its bootstrap standard
    error (images resampled, both re-maximised over :math:`\tau` in each resample).

    Returns:
        ``{"diff": float, "se": float, "significant": bool}`` (fractions; ``significant``: the
        difference exceeds two standard errors).
    """
    from ..core.inputs import check_int

    ious = _check_ious(ious)
    a, b = _check_hits(hits_a, ious), _check_hits(hits_b, ious)
    if a.shape != b.shape:
        raise ValueError(f"paired hits must have one shape, got {a.shape} and {b.shape}")
    n_boot = check_int("n_boot", n_boot, lo=2)
    seed = check_int("seed", seed, lo=0)
    diff = (max_box_accuracy_from_hits(a, ious)["maxboxacc_v2"]
            - max_box_accuracy_from_hits(b, ious)["maxboxacc_v2"])
    pa, pb = _resampled_maxima([a, b], n_boot, seed)
    se = float((pa.mean(axis=1) - pb.mean(axis=1)).std(ddof=1))
    return {"diff": float(diff), "se": se, "significant": bool(abs(diff) > 2 * se)}


def maxboxacc_table(clf: Any, datasets: Mapping[str, Any], maps: Sequence[str],
                    options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, dict]]:
    """:func:`max_box_accuracy` (with its hits) of every map on every dataset:
    ``{map: {folder: result}}``, in the order given; ``options``: map -> its options. The maps of
    one folder are computed in one sweep over its images, and those of
    :data:`deepinside.maps.JOINT_MAPS` (gradient, CAM, Grad-CAM, the gated gradient) share one
    forward and backward pass (:func:`deepinside.maps.compute_map_set`; the same maps up to float
    rounding)."""
    maps = list(dict.fromkeys(maps))
    options = dict(options or {})
    by_folder = {f: _max_box_accuracies(clf, ds, {m: dict(options.get(m) or {}) for m in maps},
                                        return_hits=True)
                 for f, ds in datasets.items()}
    return {m: {f: by_folder[f][m] for f in datasets} for m in maps}


def transferred_thresholds(chosen_on: Mapping[str, Any], applied_to: Mapping[str, Any]) -> float:
    """MaxBoxAccV2 on ``applied_to`` (a result with ``"hits"``) at the thresholds that were best on
    ``chosen_on``: what choosing them on a separate split (as wsolevaluation does) gives."""
    acc = accuracy_at(applied_to["hits"], chosen_on["best_threshold"], thresholds=applied_to.get("thresholds"))
    return float(np.mean(list(acc.values())))


# -- end to end -----------------------------------------------------------------------------------


def _normalise_maps(m: np.ndarray) -> np.ndarray:
    """Min-max normalise each map of ``(B, H, W)`` to [0, 1]; a constant or NaN map -> zeros
    (wsolevaluation's ``normalize_scoremap``)."""
    m = m.astype(np.float64, copy=True)
    lo = m.min(axis=(1, 2), keepdims=True)
    hi = m.max(axis=(1, 2), keepdims=True)
    bad = np.isnan(m).any(axis=(1, 2)) | (lo[:, 0, 0] == hi[:, 0, 0])
    out = (m - lo) / np.where(hi > lo, hi - lo, 1.0)
    out[bad] = 0.0
    return np.clip(out, 0.0, 1.0)


def _record_boxes(rec: Any, size: int) -> list[tuple[int, int, int, int]]:
    """The record's half-open boxes -> XML inclusive corners -> wsolevaluation's ``resize_bbox``."""
    w, h = float(rec.width), float(rec.height)
    out = []
    for x0, y0, x1, y1 in rec.boxes:
        inc = (float(x0), float(y0), float(x1) - 1.0, float(y1) - 1.0)
        out.append((int(inc[0] * size / w), int(inc[1] * size / h),
                    int(inc[2] * size / w), int(inc[3] * size / h)))
    return out


#: The map name of the baseline that looks at no image: a centred Gaussian (every threshold gives a
#: centred box, from the whole image down to a few pixels).
CENTRE = "centre"


def centre_map(size: int) -> np.ndarray:
    """``(size, size)`` isotropic Gaussian centred on the image, sigma ``size / 4``, max 1: the
    centre baseline (thresholded, centred squares of every size)."""
    c = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    return np.exp(-((y - c) ** 2 + (x - c) ** 2) / (2 * (size / 4) ** 2)).astype(np.float32)


def max_box_accuracy(
    clf: Any,
    ds: Iterable[tuple[Any, Any]],
    maps: str = "cam",
    *,
    ious: Sequence[float] = DEFAULT_IOUS,
    multi_contour: bool = True,
    batch_size: int = BATCH_SIZE,
    return_hits: bool = False,
    thresholds: Sequence[float] | np.ndarray | None = None,
    **options: Any,
) -> dict[str, Any]:
    r"""MaxBoxAccV2 (Choe et al. 2020) of a saliency-map method on an annotated ILSVRC set.

    For each ``(image, record)`` of ``ds``: the whole image is resized to ``S x S`` (``S =
    clf.input_size``, filter ``clf.interpolation``; no crop), normalised
    (``clf.normalize(clf.to_tensor01(...))``), and the map of the ground-truth class
    ``record.label`` is computed with :func:`deepinside.maps.compute_maps` (``method=maps``,
    batched), min-max normalised, and scored by :func:`box_hits` against the record's boxes
    converted to wsolevaluation's frame (half-open -> inclusive, ``int(v * S / width)``; see the
    module docstring for this and the other differences from wsolevaluation).

    Args:
        clf: a :class:`~deepinside.models.Classifier`; the maps are computed on ``clf.device`` and
            the model's state is left unchanged.
        ds: an :class:`~deepinside.data.IlsvrcDataset` (or any sized iterable of ``(PIL image,
            IlsvrcRecord)``).
        maps: a registered map name (:func:`deepinside.maps.map_names`), e.g. ``"cam"``,
            ``"gradcam"``, ``"gradient"``, or :data:`CENTRE` (``"centre"``: the baseline that
            looks at no image, :func:`centre_map`).
        ious: the IoU thresholds :math:`\delta`, each in (0, 1].
        multi_contour: True: all contours (MaxBoxAccV2); False: the largest contour (V1).
        batch_size: images per forward / backward pass of :func:`compute_maps`; the images are
            read, mapped and scored ``max(batch_size, 16)`` at a time.
        return_hits: also return ``"hits"`` ``(N, T, D)`` bool and ``"thresholds"`` ``(T,)``.
        thresholds: score-map thresholds (None: ``np.arange(0, 1, 0.01)``).
        **options: passed to the map method (e.g. ``signed=True`` for the unrectified CAM).

    Returns:
        :func:`max_box_accuracy_from_hits`' dict: ``{"maxboxacc_v2", "per_iou", "best_threshold",
        "n"}`` (fractions in [0, 1]), plus ``"hits"`` and ``"thresholds"`` when ``return_hits``.

    Raises:
        ValueError: unknown map name (listing the known ones), an IoU threshold outside (0, 1],
            an empty dataset, bad thresholds.
    """
    if not isinstance(maps, str):
        raise ValueError(f"maps must be the name of a map method, got {type(maps).__name__}")
    return _max_box_accuracies(clf, ds, {maps: options}, ious=ious, multi_contour=multi_contour,
                               batch_size=batch_size, return_hits=return_hits,
                               thresholds=thresholds)[maps]


def _max_box_accuracies(clf: Any, ds: Iterable[tuple[Any, Any]], maps: Mapping[str, Mapping[str, Any]],
                        *, ious: Sequence[float] = DEFAULT_IOUS, multi_contour: bool = True,
                        batch_size: int = BATCH_SIZE, return_hits: bool = False,
                        thresholds: Sequence[float] | np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """:func:`max_box_accuracy` of several maps (name -> options) in one sweep over ``ds``."""
    from ..core._progress import progress
    from ..core.inputs import check_bool, check_int
    from ..methods.maps import compute_map_set, map_names

    for m, options in maps.items():
        if not isinstance(m, str) or (m not in map_names() and m != CENTRE):
            raise ValueError(f"unknown map method {m!r}; known methods: {', '.join(map_names())} "
                             f"(and {CENTRE!r}, the baseline)")
        if m == CENTRE and options:
            raise ValueError(f"the {CENTRE!r} baseline has no options, got {sorted(options)}")
    ious = _check_ious(ious)
    t = _check_thresholds(thresholds)
    multi_contour = check_bool("multi_contour", multi_contour)
    return_hits = check_bool("return_hits", return_hits)
    batch_size = check_int("batch_size", batch_size)
    try:
        total = len(ds)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if total == 0:
        raise ValueError("max_box_accuracy(): the dataset is empty")
    size = int(clf.input_size)
    hits: dict[str, list[np.ndarray]] = {m: [] for m in maps}
    imgs: list[Any] = []
    labels: list[int] = []
    boxes: list[list[tuple[int, int, int, int]]] = []
    net_maps = [m for m in maps if m != CENTRE]

    def flush() -> None:
        import cv2

        got = {}
        if CENTRE in maps:   # no network: the same centred Gaussian for every image
            got[CENTRE] = np.repeat(centre_map(size)[None], len(imgs), axis=0)
        if net_maps:
            x = clf.normalize(clf.to_tensor01(imgs))
            tgt = torch.tensor(labels, dtype=torch.long, device=clf.device)
            out = compute_map_set(clf, x, tgt, net_maps, batch_size=batch_size,
                                  options={m: dict(o) for m, o in maps.items() if o})
            got |= {m: v.detach().float().cpu().numpy() for m, v in out.items()}
        for name, m in got.items():
            if m.shape[1:] != (size, size):
                m = np.stack([cv2.resize(a, (size, size), interpolation=cv2.INTER_CUBIC) for a in m])
            hits[name].append(box_hits(_normalise_maps(m), boxes, t, ious, multi_contour))
        release_memory()   # the chunk's freed activations back to the OS (issue 21)
        imgs.clear()
        labels.clear()
        boxes.clear()

    for img, rec in progress(ds, total=total, desc=f"MaxBoxAcc ({', '.join(maps)})"):
        imgs.append(img.convert("RGB").resize((size, size), clf.interpolation))
        labels.append(int(rec.label))
        boxes.append(_record_boxes(rec, size))
        if len(imgs) == max(batch_size, _CHUNK):
            flush()
    if imgs:
        flush()
    results = {}
    for name, parts in hits.items():
        if not parts:
            raise ValueError("max_box_accuracy(): the dataset is empty")
        h = np.concatenate(parts)
        res = max_box_accuracy_from_hits(h, ious, t)
        if return_hits:
            res["hits"] = h
            res["thresholds"] = t
        results[name] = res
    return results


def maxboxacc_comparisons(table: Mapping[str, Mapping[str, Mapping[str, Any]]],
                          pairs: Sequence[tuple[str, str]], n_boot: int = 1000,
                          seed: int = 0) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
    """:func:`paired_maxboxacc` of each pair of maps of :func:`maxboxacc_table` on each folder:
    ``{(a, b): {folder: {"diff", "se", "significant"}}}``."""
    return {(a, b): {f: paired_maxboxacc(table[a][f]["hits"], table[b][f]["hits"], n_boot, seed)
                     for f in table[a]} for a, b in pairs}
