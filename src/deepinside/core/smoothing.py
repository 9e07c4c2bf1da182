"""Gaussian smoothing of maps and images: the package's one place for it.

Two border conventions are used on purpose, each where a protocol fixes it:

- :func:`gaussian_blur` (torch, batched): zero padding for the pointing game (as TorchRay's
  ``imsmooth``, kernel truncated at 4 sigma) and reflect padding for the blurred canvas of
  insertion (RISE's 11 x 11 kernel, sigma 5);
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
    c, k = x.shape[1], 2 * radius + 1
    pad = radius
    if border == "reflect":
        x, pad = F.pad(x, (radius, radius, radius, radius), mode="reflect"), 0
    y = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, k), padding=(0, pad), groups=c)
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, k, 1), padding=(pad, 0), groups=c)


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
