"""Image-specific class saliency maps (Simonyan et al. 2014, Sect. 3.1, eq. 4, Fig. 2).

Around an image :math:`I_0` the class score is approximated by its first-order Taylor expansion
(Sect. 3, eq. 3), :math:`S_c(I) \\approx w^T I + b`, with

.. math:: w = \\left.\\frac{\\partial S_c}{\\partial I}\\right|_{I_0}   \\qquad (4)

and the saliency of pixel :math:`(i, j)` is the largest magnitude of :math:`w` over the colour
channels, :math:`M_{ij} = \\max_c |w_{h(i,j,c)}|` (Sect. 3.1). :math:`S_c` is the *unnormalised*
class score (the logit), not the softmax posterior. :math:`w` comes from a single
back-propagation pass; here one pass serves a whole chunk of images, because
:math:`\\partial \\sum_n S_{c_n}(I_n) / \\partial I_m = \\partial S_{c_m}(I_m) / \\partial I_m`
when the network treats the images of a batch independently (eval mode: no batch statistics).

**Which input.** :math:`w` is taken with respect to the network's input, i.e. the *normalised*
image ``x = (rgb01 - mean) / std`` — as in the paper, whose ConvNet input is the mean-subtracted
image. Since ``x`` is an affine per-channel function of the [0, 1] pixels,
:math:`\\partial S / \\partial\\, rgb01_c = (\\partial S / \\partial x_c) / std_c`. With the
TensorFlow preprocessing of the default model, ``std = 128/255`` on all three channels, so the map
with respect to [0, 1] pixels is this map times the constant ``255/128``: same picture, same
ranking of pixels. For models with ImageNet mean/std (a different ``std`` per channel) the two
differ slightly (the channel maximum can pick a different channel); we return the one with
respect to the network input.

**Ten crops.** "Similarly to the ConvNet classification procedure [Krizhevsky et al. 2012], where
the class predictions are computed on 10 cropped and reflected sub-images, we computed 10
saliency maps on the 10 sub-images, and then averaged them" (Sect. 3.1). The crops follow that
convention (AlexNet / cuda-convnet): the central square of the image (side = the shorter side) is
resized to ``clf.resize_size`` (256), which equals resizing the shorter side to 256 and cutting the
central 256 x 256 square; from it the four corner crops and the centre crop of side
``clf.input_size`` (224) are taken, plus their horizontal flips. Each crop's map is un-flipped,
put back where the crop came from, and the maps are averaged over the crops covering each pixel.
The output frame of ``crops="ten"`` is that resized central square; of ``crops="center"`` the
network's centre crop (:meth:`Classifier.center_crop_box`). :func:`saliency_to_image` maps either
back onto the original image's pixels.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.inputs import check_int
from ..core.models import BATCH_SIZE
from ..core._progress import progress
from .backprop import RULES, map_correlation
from ..core.frames import MAP_CROPS, box_mask, check_crops, map_to_image, ten_crop_boxes
from ..core.inputs import as_targets
from .maps import map_pipeline, rule_map
from ..core.models import Classifier

__all__ = ["saliency", "ten_crop_boxes",  # ten_crop_boxes: re-exported from frames
           "saliency_to_image", "saliency_box_share", "box_share", "saliency_cost",
           "CROPS", "SALIENCY_RULES", "class_sensitivity"]

#: Accepted values of ``crops`` (the frames of :mod:`deepinside.frames` computed from PIL images).
CROPS = MAP_CROPS
#: Accepted values of ``rule`` (Sect. 4: plain gradient, DeconvNet, guided backpropagation).
SALIENCY_RULES = RULES

Target = int | str | Sequence[int | str] | np.ndarray | torch.Tensor | None


# -- public API ------------------------------------------------------------------------------------


def saliency(
    clf: Classifier,
    images: Image.Image | Sequence[Image.Image] | torch.Tensor,
    target: Target = None,
    crops: str = "center",
    rule: str | None = None,
    batch_size: int = BATCH_SIZE,
    return_target: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Image-specific class saliency maps :math:`M_{ij} = \\max_c |w_{h(i,j,c)}|` (Sect. 3.1).

    :math:`w = \\partial S_c / \\partial I |_{I_0}` (eq. 4) is the derivative of the unnormalised
    class score (logit) with respect to the network input (the normalised image, see the module
    docstring), found by one back-propagation pass per chunk of ``batch_size`` images or crops.

    Args:
        clf: the classifier (network + preprocessing).
        images: a PIL image, a list of PIL images, or an already normalised ``(N, 3, H, W)``
            tensor (e.g. from ``clf.preprocess``), which is used as is (``crops`` must then be
            ``"center"``; the caller's tensor is not modified).
        target: None = the top-1 class of each image (for ``crops="ten"``: of the scores averaged
            over the 10 crops, as in the paper's classification); one class (int index, WordNet
            id or name) for all images; or a sequence/1-D tensor with one class per image.
        crops: ``"center"``: the network's centre crop, output ``(N, input_size, input_size)``
            (or ``(N, H, W)`` for a tensor input); ``"ten"``: the paper's 10-crop average,
            output ``(N, resize_size, resize_size)`` in the frame of the resized central square
            (see :func:`ten_crop_boxes`).
        rule: ``"gradient"`` (eq. 4), or ``"deconvnet"`` / ``"guided"``: the same pass with the
            rectifiers' backward rule replaced (Sect. 4, :func:`deepinside.backward_rule`).
            An explicit rule wins over an open ``backward_rule`` block; None (default): the
            rule of the block open in this thread, else the gradient.
        batch_size: images (or crops) per forward/backward pass; bounds the memory. For
            ``crops="ten"`` chunks hold whole images (``10 * (batch_size // 10)`` crops) when
            ``batch_size >= 10``; below that, ``target=None`` costs one extra forward pass.
        return_target: also return the class of each map (useful with ``target=None``).

    Returns:
        ``(N, H, W)`` float tensor, ``>= 0``, on ``clf.device``, detached; with
        ``return_target``, the pair ``(maps, classes)`` with ``classes`` an ``(N,)`` long tensor.
        The model's state (mode, ``requires_grad``, hooks) is unchanged.

    Raises:
        ValueError: NaN/inf or wrongly shaped input tensor, empty input, unknown or out-of-range
            class, a target list whose length is not the number of images, unknown ``crops`` or
            ``rule``, a tensor input with ``crops="ten"``.
        TypeError: inputs of the wrong type.
    """
    check_crops(crops, CROPS)
    if rule is not None and rule not in SALIENCY_RULES:
        raise ValueError(f"rule must be one of {SALIENCY_RULES}, got {rule!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    maps, classes = map_pipeline(clf, images, target, rule_map(rule), crops=crops,
                                 batch_size=batch_size, where="saliency")
    return (maps, classes) if return_target else maps


def saliency_to_image(
    maps: torch.Tensor | np.ndarray,
    image_size: tuple[int, int] | Image.Image,
    clf: Classifier,
    crops: str = "center",
) -> torch.Tensor | np.ndarray:
    """Put saliency maps back onto the original image's pixels (:func:`frames.map_to_image`).

    The frame of ``crops="center"`` maps is the centre crop, of ``crops="ten"`` maps the central
    square of side ``min(W, H)``, of ``"full"`` the whole image; pixels outside get 0.

    Args:
        maps: ``(h, w)`` or ``(N, h, w)`` maps (tensor or numpy array).
        image_size: ``(W, H)`` of the original image, or the PIL image.
        clf: the classifier that produced the maps (its crop geometry).
        crops: the ``crops`` the maps were computed with.

    Returns:
        ``(H, W)`` or ``(N, H, W)``, same type (tensor on the same device, or numpy) as ``maps``.
    """
    return map_to_image(maps, image_size, clf, crops)


# -- where the saliency lies -----------------------------------------------------------------------

Box = tuple[float, float, float, float]


def box_share(full_map: np.ndarray | torch.Tensor, boxes: Sequence[Box]) -> float:
    """Share of a map's total saliency inside the union of ``boxes``: ``sum_{in} M / sum M``.

    Args:
        full_map: ``(H, W)`` non-negative map on the original image's pixels
            (:func:`saliency_to_image`).
        boxes: ``(x0, y0, x1, y1)`` half-open boxes in the same pixels (e.g. ILSVRC ground truth).

    Returns:
        A number in [0, 1] (NaN for an all-zero map).
    """
    m = full_map.detach().float().cpu().numpy() if isinstance(full_map, torch.Tensor) else np.asarray(full_map, float)
    if m.ndim != 2:
        raise ValueError(f"full_map must be (H, W), got shape {m.shape}")
    if (m < 0).any() or not np.isfinite(m).all():
        raise ValueError("full_map must be finite and non-negative (a saliency map)")
    total = float(m.sum())
    return float(m[box_mask(boxes, *m.shape)].sum()) / total if total > 0 else float("nan")


def saliency_box_share(
    clf: Classifier,
    images: Sequence[Image.Image],
    boxes: Sequence[Sequence[Box]],
    crops: str = "center",
    target: Target = None,
    batch_size: int = BATCH_SIZE,
) -> dict[str, np.ndarray]:
    """How much of each image's saliency (Sect. 3.1) falls inside its ground-truth boxes.

    For each image, the map of ``crops`` is put on the original pixels
    (:func:`saliency_to_image`, zero outside the frame the network saw) and :func:`box_share`
    (the share of the saliency mass :math:`\\sum M_{ij}` inside the union of the boxes) is taken.

    Args:
        images: N PIL images (any sizes).
        boxes: for each image, its boxes ``(x0, y0, x1, y1)`` in original pixels.
        crops, target, batch_size: as in :func:`saliency`; ``target`` None = top-1 class.

    Returns:
        ``(N,)`` float arrays:

        - ``"share"``: share of the map's mass inside the boxes;
        - ``"uniform"``: the same for a uniform map over the map's frame (the boxes' area in the
          frame over the frame's area): what a map knowing nothing about the object gets;
        - ``"share_center"``: ``"share"`` of the map restricted to the centre-crop box, the region
          both ``crops`` settings cover (equal to ``"share"`` for ``crops="center"``);
        - ``"outside_center"``: share of the map's mass outside the centre-crop box (0 for
          ``crops="center"``).
    """
    images = list(images)
    if len(boxes) != len(images):
        raise ValueError(f"got {len(boxes)} box lists for {len(images)} images: give one list of boxes per image")
    tgt = as_targets(clf, target, len(images), "target")
    step = max(1, batch_size // 10) if crops == "ten" else batch_size
    keys = ("share", "uniform", "share_center", "outside_center")
    res: dict[str, list[float]] = {k: [] for k in keys}
    for i in progress(range(0, len(images), step), desc=f"saliency ({crops})", total=-(-len(images) // step)):
        part = images[i:i + step]
        maps = saliency(clf, part, None if tgt is None else tgt[i:i + step], crops=crops, batch_size=batch_size)
        for im, m, bx in zip(part, maps, boxes[i:i + step]):
            full = saliency_to_image(m, im.size, clf, crops)
            x0, y0, x1, y1 = clf.center_crop_box(*im.size)
            inner = torch.zeros_like(full)
            inner[y0:y1, x0:x1] = full[y0:y1, x0:x1]
            res["share"].append(box_share(full, bx))
            res["uniform"].append(box_share(saliency_to_image(torch.ones_like(m), im.size, clf, crops), bx))
            res["share_center"].append(box_share(inner, bx))
            res["outside_center"].append(1.0 - float(inner.sum() / full.sum()))
    return {k: np.array(v) for k, v in res.items()}


def class_sensitivity(clf: Any, images: Any, classes_a: Sequence[int], classes_b: Sequence[int],
                      rules: Sequence[str] = SALIENCY_RULES, batch_size: int = BATCH_SIZE) -> dict[str, torch.Tensor]:
    """How much a saliency map changes with the class, per backward rule.

    For each rule, the saliency maps :math:`M` (Sect. 3.1: max over colour channels of
    :math:`|\\partial S_c / \\partial I|`, centre crop) of image :math:`n` for class
    ``classes_a[n]`` and for ``classes_b[n]``, and their Pearson correlation. Gradient maps of
    two classes differ; DeconvNet and guided maps hardly do (chapter 4).

    Returns:
        rule -> ``(N,)`` correlations.
    """
    if len(classes_a) != len(classes_b):
        raise ValueError(f"classes_a and classes_b must have one class per image, got {len(classes_a)} and {len(classes_b)}")
    out = {}
    for rule in rules:
        ma = saliency(clf, images, list(classes_a), rule=rule, batch_size=batch_size)
        mb = saliency(clf, images, list(classes_b), rule=rule, batch_size=batch_size)
        out[rule] = map_correlation(ma, mb)
    return out



# -- cost ------------------------------------------------------------------------------------------


def saliency_cost(clf: Classifier, images: Sequence[Image.Image], repeats: int = 3,
                  threads: int | None = 1, batch_size: int | None = None) -> dict[str, float]:
    """Measure the paper's cost claim: "the computation of the image-specific saliency map for a
    single class is extremely quick, since it only requires a single back-propagation pass"
    (Sect. 3.1).

    Times, interleaved, the fastest of ``repeats`` runs of: a forward pass of the N images in
    one batch (``clf.scores``), their centre-crop maps from the preprocessed tensor (one forward
    and one backward pass), their centre-crop maps from PIL (preprocessing included), and the
    10-crop map of the first image from PIL (ten forward and ten backward passes), for its 10-crop
    top-1 class found once before the timing: with ``batch_size`` < 10 and no target,
    :func:`saliency` needs an extra forward pass of the ten crops to find the class, which would
    make the 10-crop map look about 13 rather than about 10 centre-crop maps.

    Args:
        images: N PIL images (N = 10 makes every call one batch of 10 network passes).
        threads: torch threads during the timing (restored afterwards); 1 gives stable timings on
            a shared machine, where descheduled OpenMP threads make multi-threaded times bimodal.
            None: leave as is.
        batch_size: network inputs per pass for all four timings (the 10 crops too); None: N.
            A batch of 10 forward+backward passes holds about 0.5 GB of activations at 224 px;
            5 halves that at nearly the same cost per image.

    Returns:
        Seconds per image: ``"forward"``, ``"map"``, ``"map_pil"``, ``"map_ten"``.
    """
    images = list(images)
    n = len(images)
    b = n if batch_size is None else check_int("batch_size", batch_size)
    x = clf.preprocess(images)
    _, top_ten = saliency(clf, images[0], crops="ten", batch_size=min(b, 10), return_target=True)
    fns = {"forward": (lambda: clf.scores(x, batch_size=b), n),
           "map": (lambda: saliency(clf, x, batch_size=b), n),
           "map_pil": (lambda: saliency(clf, images, batch_size=b), n),
           "map_ten": (lambda: saliency(clf, images[0], top_ten, crops="ten", batch_size=min(b, 10)), 1)}
    old = torch.get_num_threads()
    best = {k: float("inf") for k in fns}
    try:
        if threads:
            torch.set_num_threads(threads)
        for f, _ in fns.values():  # warm-up
            f()
        for _ in range(repeats):
            for k, (f, _) in fns.items():
                if clf.device.type == "cuda":
                    torch.cuda.synchronize(clf.device)
                t0 = time.perf_counter()
                f()
                if clf.device.type == "cuda":
                    torch.cuda.synchronize(clf.device)
                best[k] = min(best[k], time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return {k: best[k] / fns[k][1] for k in fns}
