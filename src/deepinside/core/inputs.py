"""One validation of the images given to a public entry point (issue 24).

Every function that takes "PIL image(s) or a normalised tensor" (``compute_maps``, ``saliency``,
``occlusion``, ``top_activations``, ``deletion_insertion``, ...) checks them here, so a bad input
fails the same way everywhere, with a one-line error that names the function and the problem,
before any forward pass:

- a tensor must be real, floating point, ``(N, C, H, W)`` with ``N >= 1``, finite; float64 and
  float16 are cast to the network's dtype (float32 for the shipped models);
- ``C`` must be what the network's first convolution takes (3 for every shipped model): a
  grayscale or RGBA tensor is refused by name instead of failing deep inside the network;
- a list must be non-empty and hold only PIL images (which :meth:`Classifier.preprocess` turns
  into RGB, whatever their mode).

Options are checked here too (:func:`check_int`, :func:`check_real`, :func:`check_bool`): a
wrong type is a TypeError and a value out of range a ValueError, both naming the option, so
``window="32"``, ``seed=None`` or ``signed="no"`` never reach ``int()`` or ``bool()``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

__all__ = ["net_dtype", "first_conv_channels", "check_batch", "as_images", "as_input", "as_batch",
           "check_int", "check_real", "check_bool"]


def check_int(name: str, value: Any, lo: int | None = 1, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi`` (None: unbounded; the default: a positive int).

    Raises:
        TypeError: not an integer (bools, floats and strings included), naming ``name``.
        ValueError: out of range, naming ``name``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = (f"in {lo}..{hi}" if lo is not None and hi is not None
               else f">= {lo}" if lo is not None else f"<= {hi}")
        raise ValueError(f"{name} must be an integer {rng}, got {v}")
    return v


def check_real(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (None: unbounded).

    Raises:
        TypeError: not a real number (bools and strings included), naming ``name``.
        ValueError: NaN, infinite or out of range, naming ``name``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = (f"in [{lo}, {hi}]" if lo is not None and hi is not None
               else f">= {lo}" if lo is not None else f"<= {hi}")
        raise ValueError(f"{name} must be {rng}, got {value!r}")
    return v


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool: TypeError naming ``name`` unless it is one (``"no"`` is not False)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")
    return bool(value)


def net_dtype(net: nn.Module) -> torch.dtype:
    """The floating-point dtype of ``net``'s parameters (float32 when it has none)."""
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)


def first_conv_channels(net: nn.Module) -> int | None:
    """Input channels of the first ``nn.Conv2d`` of ``net`` (None: no convolution)."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def check_batch(x: Any, where: str, net: nn.Module | None = None, *,
                channels: int | None = 3) -> torch.Tensor:
    """``x`` checked as a network input batch ``(N, C, H, W)``, detached, cast to ``net``'s dtype.

    ``channels`` None: as many as ``net``'s first convolution takes (any, without one).

    Raises:
        TypeError: not a tensor, an integer/bool/complex tensor.
        ValueError: wrong number of dimensions or channels, an empty batch, NaN or Inf values.
    """
    shape = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}() expects a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{where}() expects a normalised batch of shape {shape}, "
                         f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{where}() got an empty batch, shape {tuple(x.shape)}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{where}() expects a floating-point tensor (the normalised network "
                        f"input), got {x.dtype}")
    want = channels if channels is not None else (first_conv_channels(net) if net is not None else None)
    if want is not None and x.shape[1] != want:
        hint = (": convert grayscale/RGBA images to RGB (or pass PIL images, which are converted)"
                if want == 3 else "")
        raise ValueError(f"{where}() expects {want} channels (N, {want}, H, W), got {x.shape[1]} "
                         f"channels, shape {tuple(x.shape)}{hint}")
    # one reduction first (NaN and inf propagate through a sum), the elementwise check only if
    # it fails or overflows: 20x cheaper on a clean batch
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError(f"{where}() got an input tensor with NaN or infinite values")
    x = x.detach()
    if net is not None:
        dtype = net_dtype(net)
        if x.dtype != dtype:
            x = x.to(dtype)
            if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
                raise ValueError(f"{where}() got values that overflow the network's {dtype} "
                                 f"(infinite after the cast)")
    return x


def as_batch(clf: Any, images: Any, where: str) -> torch.Tensor:
    """:func:`as_input` for functions that take any network (a Classifier or a bare
    ``nn.Module``): a ``(C, H, W)`` tensor gets its batch dimension, and ``C`` is what the
    network's first convolution takes."""
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    return as_input(clf, images, where, channels=None)


def as_images(images: Any, where: str) -> list[Image.Image] | None:
    """PIL image(s) as a non-empty list; None when ``images`` is not an image or a list."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"{where}() got an empty list of images")
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image):
                raise TypeError(f"{where}(): images[{i}] is a {type(im).__name__}, expected a PIL "
                                f"image (or pass one normalised (N, 3, H, W) tensor)")
        return list(images)
    return None


def as_input(clf: Any, images: Any, where: str, *, channels: int | None = 3) -> torch.Tensor:
    """PIL image(s) -> ``clf.preprocess``; a tensor -> :func:`check_batch`; on ``clf``'s device.

    ``clf`` may be a bare network for tensors (then ``channels`` None is its first convolution's).
    """
    net = getattr(clf, "net", clf)
    ims = as_images(images, where)
    if ims is not None:
        if not hasattr(clf, "preprocess"):
            raise TypeError(f"{where}(): PIL images need a Classifier (with its preprocessing), "
                            f"not a bare network")
        return clf.preprocess(ims)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{where}() expects PIL image(s) or a normalised (N, 3, H, W) tensor, "
                        f"got {type(images).__name__}")
    x = check_batch(images, where, net if isinstance(net, nn.Module) else None, channels=channels)
    device = getattr(clf, "device", None)
    if device is None and isinstance(net, nn.Module):
        p = next(net.parameters(), None)
        device = p.device if p is not None else None
    return x if device is None else x.to(device)


def as_targets(clf: Any, targets: Any, n: int, name: str = "targets") -> torch.Tensor | None:
    """The classes asked of ``n`` images -> ``(n,)`` long tensor on ``clf.device``; None stays None
    (the caller takes each image's top-1 class).

    ``targets``: one class (int index, WordNet id or class name, resolved by ``clf.class_index``)
    for every image, or one per image (a sequence, a 1-D tensor or array).

    Raises:
        ValueError: a tensor/array that is not 0-D or 1-D, a sequence whose length is not ``n``,
            an unknown or out-of-range class (from ``clf.class_index``).
        TypeError: anything else.
    """
    if targets is None:
        return None
    if isinstance(targets, (torch.Tensor, np.ndarray)):
        if targets.ndim > 1:
            raise ValueError(f"{name} must be 1-D (one class per image), got shape {tuple(targets.shape)}")
        targets = targets.tolist() if targets.ndim else targets.item()
    if isinstance(targets, (str, numbers.Integral)) and not isinstance(targets, (bool, np.bool_)):
        idx = [clf.class_index(targets)] * n
    elif isinstance(targets, (list, tuple)):
        if len(targets) != n:
            raise ValueError(f"{name} has {len(targets)} classes for {n} images: give one class per "
                             f"image, one class for all, or None for the top-1 class of each")
        idx = [clf.class_index(t.item() if isinstance(t, (torch.Tensor, np.ndarray)) else t)
               for t in targets]
    else:
        raise TypeError(f"{name} must be None, a class (int index, WordNet id or name) or one class "
                        f"per image, not {type(targets).__name__}")
    return torch.tensor(idx, dtype=torch.long, device=clf.device)
