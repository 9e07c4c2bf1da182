"""Gaussian smoothing of maps and images: the package's one place for it.

Two border conventions are used on purpose, each where a protocol fixes it:

- :func:`gaussian_blur` (batched tensors): zero padding for the pointing game (as TorchRay's
  ``imsmooth``, kernel truncated at 4 sigma) and reflect padding for the blurred canvas of
  insertion (RISE's 11 x 11 kernel, sigma 5). On CPU, without autograd, each plane goes through
  OpenCV's separable filter: torch's grouped one-channel convolution took 95 ms for a 500 x 375
  map at sigma 10 where ``cv2.sepFilter2D`` takes 4.4 (the same taps; equal up to float
  rounding, 5e-7); chapter 6's pointing game spent 21 s of its 80 in that blur (issue 21);
- :func:`smooth_saliency` (OpenCV, one ``(H, W)`` map): sigma as a fraction of the shorter side,
  reflected borders, before the seeds of the GraphCut and the threshold boxes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur", "smooth_maps", "smooth_saliency"]


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int, border: str = "zeros") -> torch.Tensor:
    """Separable Gaussian blur of each channel of ``x`` ``(N, C, H, W)``, kernel ``2 radius + 1``
    taps normalised to sum 1, ``border`` ``"zeros"`` or ``"reflect"``; ``sigma <= 0``: a copy."""
    if sigma <= 0:
        return x.clone()
    if border not in ("zeros", "reflect"):
        raise ValueError(f"border must be 'zeros' or 'reflect', got {border!r}")
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    if _opencv_path(x, border, radius):
        return _opencv_blur(x, g, border)
    c, k = x.shape[1], 2 * radius + 1
    pad = radius
    if border == "reflect":
        x, pad = F.pad(x, (radius, radius, radius, radius), mode="reflect"), 0
    y = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, k), padding=(0, pad), groups=c)
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, k, 1), padding=(pad, 0), groups=c)


def _opencv_path(x: torch.Tensor, border: str, radius: int) -> bool:
    """Whether :func:`gaussian_blur` may filter ``x`` with OpenCV: a CPU float32/64 ``(N, C, H, W)``
    tensor no gradient is asked of, and (reflect) a radius the reflection can serve as torch's."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.ndim != 4:
        return False
    if x.requires_grad and torch.is_grad_enabled():
        return False
    return border == "zeros" or radius < min(x.shape[-2:])


def _opencv_blur(x: torch.Tensor, g: torch.Tensor, border: str) -> torch.Tensor:
    """:func:`gaussian_blur` plane by plane with ``cv2.sepFilter2D`` (rows, then columns);
    ``"zeros"``: constant 0 outside, ``"reflect"``: reflection without the edge pixel
    (``BORDER_REFLECT_101``, as ``F.pad(mode="reflect")``). Same shape, dtype and memory layout."""
    import cv2

    kind = cv2.BORDER_CONSTANT if border == "zeros" else cv2.BORDER_REFLECT_101
    taps = g.detach().cpu().numpy()
    depth = cv2.CV_32F if x.dtype == torch.float32 else cv2.CV_64F
    src = x.detach().contiguous().numpy()
    out = np.empty_like(src)
    n, c = src.shape[:2]
    for i in range(n):
        for j in range(c):
            out[i, j] = cv2.sepFilter2D(src[i, j], depth, taps, taps, borderType=kind)
    y = torch.from_numpy(out)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = y.contiguous(memory_format=torch.channels_last)
    return y


def smooth_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``(N, H, W)`` maps with standard deviation ``sigma`` pixels, zero
    padding, kernel truncated at 4 sigma (TorchRay's ``imsmooth``, used by its pointing-game
    benchmark with sigma = 2 % of the image's larger side). ``sigma <= 0``: unchanged."""
    if sigma <= 0:
        return maps
    r = max(1, int(np.ceil(4 * sigma)))
    return gaussian_blur(maps.float()[:, None], sigma, r, "zeros")[:, 0]


def smooth_saliency(saliency: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a map ``(H, W)`` with standard deviation ``sigma * min(H, W)`` pixels.

    Gradient saliency is speckled (single pixels of high magnitude next to zeros); smoothing first
    makes the 95 % quantile select a few connected regions rather than scattered pixels. The paper
    does not smooth; ``sigma=0`` returns the map unchanged.
    """
    if sigma < 0:
        raise ValueError(f"smoothing sigma must be >= 0, got {sigma}")
    s = np.asarray(saliency, dtype=np.float64)
    px = sigma * min(s.shape)
    if px <= 0:
        return s
    import cv2

    return cv2.GaussianBlur(s, (0, 0), sigmaX=px, sigmaY=px, borderType=cv2.BORDER_REFLECT)
