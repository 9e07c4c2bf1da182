"""Where a map's frame lies in the original image: the one place for crop geometry.

A saliency map (Simonyan et al. 2014, Sect. 3.1) lives in the frame of what the network saw:

- ``"center"``: the network's centre crop, a square of side ``floor(crop_fraction * min(W, H))``
  centred as TensorFlow's ``_decode_and_center_crop`` does (offset ``(size - side + 1) // 2``),
  resized to ``input_size``;
- ``"ten"``: the paper's 10-crop average ("we computed 10 saliency maps on the 10 sub-images, and
  then averaged them", Sect. 3.1, after Krizhevsky et al. 2012): the central square of side
  ``min(W, H)`` resized to ``resize_size``, from which the four corner crops and the centre crop
  of side ``input_size`` and their mirror images are cut;
- ``"full"``: the whole image, resized so its shorter side is ``input_size`` (fully convolutional
  networks with global pooling classify any size).

Boxes are ``(x0, y0, x1, y1)`` half-open pixels. Every module that needs one of these frames
(saliency, localisation, evaluation, plotting, the CLI) asks this module; :func:`check_crops`
validates a ``crops`` argument everywhere.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["CROPS", "MAP_CROPS", "Crops", "check_crops", "center_crop_box", "square_box",
           "frame_box", "box_mask", "ten_crop_boxes", "ten_crop_coverage", "ten_crop_batch", "central_square",
           "full_image_size", "map_to_image", "working_copy"]

#: Every frame a map can have: centre crop, 10-crop square, whole image.
CROPS: tuple[str, ...] = ("center", "ten", "full")
#: The frames :func:`deepinside.compute_maps` computes from PIL images (``"full"`` is a tensor input).
MAP_CROPS: tuple[str, ...] = ("center", "ten")
Crops = Literal["center", "ten", "full"]
Box = tuple[int, int, int, int]


class Geometry(Protocol):
    """What the frames need of a classifier (a :class:`deepinside.Classifier` has it)."""

    input_size: int
    crop_fraction: float

    @property
    def resize_size(self) -> int: ...


def check_crops(crops: object, allowed: Sequence[str] = CROPS) -> str:
    """``crops`` itself when it is one of ``allowed``; else a ValueError naming the choices."""
    if not isinstance(crops, str) or crops not in allowed:
        raise ValueError(f"crops must be one of {tuple(allowed)}, got {crops!r}")
    return crops


def _size(width: int, height: int) -> tuple[int, int]:
    w, h = int(width), int(height)
    if w < 1 or h < 1:
        raise ValueError(f"image size must be positive, got {(width, height)}")
    return w, h


def center_crop_box(width: int, height: int, crop_fraction: float) -> Box:
    """The network's centre crop in original pixels: a square of side
    ``max(1, floor(crop_fraction * min(W, H)))``, offset ``(size - side + 1) // 2`` (TensorFlow)."""
    width, height = _size(width, height)
    side = max(1, int(crop_fraction * min(width, height)))
    x0, y0 = (width - side + 1) // 2, (height - side + 1) // 2
    return x0, y0, x0 + side, y0 + side


def square_box(width: int, height: int) -> Box:
    """The central square of side ``min(W, H)``, centred like the centre crop: the frame of
    ``crops="ten"`` maps."""
    width, height = _size(width, height)
    side = min(width, height)
    x0, y0 = (width - side + 1) // 2, (height - side + 1) // 2
    return x0, y0, x0 + side, y0 + side


def frame_box(clf: Geometry, crops: str, width: int, height: int) -> Box:
    """Where the frame of a ``crops`` map lies in a ``W x H`` image (see the module docstring)."""
    check_crops(crops)
    if crops == "center":
        return center_crop_box(width, height, clf.crop_fraction)
    if crops == "ten":
        return square_box(width, height)
    return (0, 0, *_size(width, height))


def box_mask(boxes: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool: the pixels inside the union of half-open boxes ``(x0, y0, x1, y1)``; a
    pixel is inside when its centre ``(j + 0.5, i + 0.5)`` is (the package's one convention:
    integer boxes cover exactly the pixels ``x0 <= j < x1``, ``y0 <= i < y1``)."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        c0, c1 = (int(np.ceil(v - 0.5)) for v in (x0, x1))
        r0, r1 = (int(np.ceil(v - 0.5)) for v in (y0, y1))
        mask[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = True
    return mask


def ten_crop_boxes(clf: Geometry) -> list[tuple[int, int, int, int, bool]]:
    """The 10 sub-images of the paper's 10-crop averaging, in the resized central square.

    Returns ``[(x0, y0, x1, y1, flipped), ...]`` in the frame of the central square resized to
    ``S = clf.resize_size``: the top-left, top-right, bottom-left, bottom-right and centre crops
    of side ``C = clf.input_size``, then the same five mirrored (Krizhevsky et al. 2012;
    Simonyan et al. 2014, Sect. 3.1). Every pixel is covered when ``C >= S / 2``.
    """
    s, c = clf.resize_size, clf.input_size
    if c > s:
        raise ValueError(f"input_size {c} is larger than resize_size {s}: cannot cut 10 crops")
    o = (s - c + 1) // 2
    five = [(0, 0, c, c), (s - c, 0, s, c), (0, s - c, c, s), (s - c, s - c, s, s),
            (o, o, o + c, o + c)]
    return [(*b, False) for b in five] + [(*b, True) for b in five]


def ten_crop_coverage(clf: Geometry, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(S, S)`` number of the 10 crops covering each pixel of the resized square (>= 1)."""
    s = clf.resize_size
    cnt = torch.zeros(s, s, device=device)
    for x0, y0, x1, y1, _ in ten_crop_boxes(clf):
        cnt[y0:y1, x0:x1] += 1
    if (cnt == 0).any():
        raise ValueError(f"the 10 crops of side {clf.input_size} do not cover the {s}x{s} square")
    return cnt


def ten_crop_batch(clf: Any, images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images -> ``(10 n, 3, C, C)`` normalised crops of :func:`ten_crop_boxes`, image-major
    (crop ``j`` of image ``i`` at row ``10 i + j``), cut from each :func:`central_square`.

    The crops are stacked channels-last (``(B, C, C, 3)`` memory, viewed as ``(B, 3, C, C)``), the
    layout :meth:`Classifier.preprocess` produces: convolutions on CPU run ~15 % faster in it, and
    the centre crop then goes through the same kernels as with ``crops="center"``.
    """
    squares = clf.normalize(clf.to_tensor01([central_square(clf, im, clf.interpolation) for im in images]))
    boxes = ten_crop_boxes(clf)
    crops = []
    for sq in squares:
        hwc = sq.permute(1, 2, 0)
        for x0, y0, x1, y1, fl in boxes:
            c = hwc[y0:y1, x0:x1]
            crops.append(c.flip(1) if fl else c)
    return torch.stack(crops).permute(0, 3, 1, 2)


def central_square(clf: Geometry, image: Image.Image, resample: int) -> Image.Image:
    """The frame of a ``crops="ten"`` map as an image: the central square resized to
    ``resize_size`` with ``resample`` (the classifier's interpolation)."""
    s = clf.resize_size
    return image.convert("RGB").crop(square_box(*image.size)).resize((s, s), resample)


def full_image_size(width: int, height: int, side: int) -> tuple[int, int]:
    """``(w, h)`` of the whole image resized so its shorter side is ``side``, aspect kept."""
    width, height = _size(width, height)
    s = side / min(width, height)
    return max(side, round(width * s)), max(side, round(height * s))


def map_to_image(maps: torch.Tensor | np.ndarray, image_size: tuple[int, int] | Image.Image,
                 clf: Geometry, crops: str = "center") -> torch.Tensor | np.ndarray:
    """Put maps back onto the original image's pixels.

    The map is resized into its frame (:func:`frame_box`) with bilinear interpolation
    (``align_corners=False``: pixel centres aligned); pixels outside the frame get 0 (the
    network never saw them).

    Args:
        maps: ``(h, w)`` or ``(N, h, w)`` maps (tensor or numpy array).
        image_size: ``(W, H)`` of the original image (PIL's ``image.size``), or the PIL image.
        clf: the classifier that produced the maps (its crop geometry).
        crops: the frame of the maps (:data:`CROPS`).

    Returns:
        ``(H, W)`` or ``(N, H, W)`` float32, same type (tensor on the same device, or numpy).
    """
    check_crops(crops)
    if isinstance(image_size, Image.Image):
        image_size = image_size.size
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"image_size must be (W, H) or a PIL image, got {image_size!r}") from e
    if width < 1 or height < 1:
        raise ValueError(f"image_size must be positive, got {(width, height)}")
    is_np = isinstance(maps, np.ndarray)
    m = torch.from_numpy(np.asarray(maps, dtype=np.float32)) if is_np else maps
    if not isinstance(m, torch.Tensor) or m.ndim not in (2, 3):
        raise ValueError(f"maps must be an (h, w) or (N, h, w) tensor/array, got "
                         f"{tuple(m.shape) if hasattr(m, 'shape') else type(maps).__name__}")
    single = m.ndim == 2
    m3 = m[None] if single else m
    x0, y0, x1, y1 = frame_box(clf, crops, width, height)
    inside = F.interpolate(m3[:, None].float(), size=(y1 - y0, x1 - x0), mode="bilinear",
                           align_corners=False)[:, 0]
    full = torch.zeros(m3.shape[0], height, width, dtype=inside.dtype, device=m3.device)
    full[:, y0:y1, x0:x1] = inside
    full = full[0] if single else full
    return full.cpu().numpy() if is_np else full


def working_copy(image: Image.Image, max_short_side: int, resample: int
                 ) -> tuple[Image.Image, tuple[float, float]]:
    """A copy of ``image`` whose shorter side is at most ``max_short_side`` and the scale back.

    Saliency and segmentation work on a grid of a few hundred pixels (the network's 224-256,
    the GraphCut's 112): a 48 Mpx photo is reduced first, once, and boxes found on the copy are
    mapped back with the returned ``(sx, sy)`` = original / copy pixels. Images already small
    enough are returned as they are, with scale ``(1, 1)``.
    """
    w, h = image.size
    if min(w, h) <= max_short_side:
        return image, (1.0, 1.0)
    nw, nh = full_image_size(w, h, max_short_side)
    small = image.convert("RGB").resize((nw, nh), resample, reducing_gap=3.0)
    return small, (w / nw, h / nh)
