"""Occlusion sensitivity (Zeiler & Fergus 2014, Sect. 4.2 and their Fig. 7).

Zeiler & Fergus ask whether a classifier "is truly identifying the location of the object in the
image, or just using the surrounding context", and answer it by "systematically occluding
different portions of the input image with a grey square, and monitoring the output of the
classifier". Their Fig. 7 shows, as a function of the occluder's position:

- (b) "the total activation in one layer 5 feature map (the one with the strongest response in
  the unoccluded image)";
- (d) "a map of correct class probability";
- (e) "the most probable label".

:func:`occlusion` computes all of these, plus the class score (the logit :math:`S_c` that
Simonyan et al. visualise), in ONE pass: every occluded copy of every image goes through the
network once, in batches of ``batch_size`` (memory is bounded by the batch, not by the number of
positions), and the logits, the softmax and a forward hook on ``layer`` are read from the same
forward pass.

Positions are laid out exactly as Captum's ``Occlusion`` lays them: the window's top-left corner
is at ``(i * stride, j * stride)`` for ``i < Py = ceil((H - window) / stride) + 1`` (and the same
for ``j``), the last window being clipped at the image border. The per-pixel attribution in
Captum's convention (each pixel gets the mean score drop over the windows covering it) follows
from the score map alone: :meth:`OcclusionResult.attribution`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core.batchnorm import inference_twin, twin_forward
from ..core.models import BATCH_SIZE
from ..core._progress import progress
from ..core.hooks import forward_hook
from ..core.inputs import as_batch, check_int
from ..core.memory import release_memory
from ..core.layers import device_of, net_of, resolve_layer

__all__ = ["occlusion", "OcclusionResult", "occlusion_grid", "window_boxes", "resolve_layer",
           "box_to_input", "inside_box_share", "object_vs_background", "own_field_effect",
           "occlusion_study", "OcclusionStudy", "pick_small_objects",
           "DEFAULT_WINDOW", "DEFAULT_STRIDE", "LOCAL_MIN_COPIES", "LOCAL_MIN_COPIES_KNOWN"]

#: Default occluder side (network-input pixels). Zeiler & Fergus do not state theirs; their
#: Fig. 7 square covers an object part (a dog's face). 48 px is 3/14 of a 224 input: about the
#: size of a part, 1.5 cells of the last 7x7 feature map of EfficientNet-Lite0 (32 px per cell).
DEFAULT_WINDOW = 48
#: Default stride: 16 px, half a cell of the last feature map, so every pixel is covered by 9
#: windows (3 x 3) and the 224 input is tiled exactly: (224 - 48) / 16 + 1 = 12 positions a side.
DEFAULT_STRIDE = 16


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    """``v`` as a ``(height, width)`` pair of positive ints; else a TypeError/ValueError naming ``name``."""
    def is_int(a: Any) -> bool:
        return isinstance(a, numbers.Integral) and not isinstance(a, bool)

    if is_int(v):
        t = (int(v), int(v))
    elif isinstance(v, (tuple, list, torch.Size)) and len(v) == 2 and all(is_int(a) for a in v):
        t = (int(v[0]), int(v[1]))
    elif isinstance(v, (tuple, list, torch.Size)) and all(is_int(a) for a in v):
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {v!r}")
    else:
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints, got {v!r}")
    if min(t) < 1:
        raise ValueError(f"{name} must be positive, got {v!r}")
    return t  # type: ignore[return-value]


def _hook_module(module: nn.Module) -> nn.Module:
    """The module whose forward hook sees ``module``'s output on every path: ``module`` itself,
    or for a plain ``nn.Sequential`` container its last (innermost) child, whose output is the
    container's. The local path runs a chain's containers child by child (:func:`_stages`), so a
    hook on the container itself would never run there."""
    while type(module) is nn.Sequential and len(module):
        module = module[-1]
    return module


def occlusion_grid(size: Sequence[int], window: int | Sequence[int], stride: int | Sequence[int]
                   ) -> tuple[int, int]:
    """Number of occluder positions ``(Py, Px)`` on an image of ``size = (H, W)``.

    As Captum's ``Occlusion``: ``P = ceil((H - window) / stride) + 1`` per dimension.

    Raises:
        ValueError: the window is larger than the image, or the stride is larger than the window
            (some pixels would never be occluded; Captum refuses it too).
    """
    (h, w), (wh, ww), (sh, sw) = tuple(size), _pair(window, "window"), _pair(stride, "stride")
    if wh > h or ww > w:
        raise ValueError(f"occlusion window {wh}x{ww} is larger than the {h}x{w} image")
    if (sh > wh and wh < h) or (sw > ww and ww < w):
        raise ValueError(f"stride {sh}x{sw} is larger than the window {wh}x{ww}: some pixels would "
                         "never be occluded")
    return math.ceil((h - wh) / sh) + 1, math.ceil((w - ww) / sw) + 1


def window_boxes(size: Sequence[int], window: int | Sequence[int], stride: int | Sequence[int]
                 ) -> torch.Tensor:
    """Occluder boxes ``(Py, Px, 4)`` as ``(x0, y0, x1, y1)``, half-open, clipped to the image."""
    h, w = size
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    py, px = occlusion_grid(size, window, stride)
    y0 = torch.arange(py) * sh
    x0 = torch.arange(px) * sw
    y1, x1 = (y0 + wh).clamp(max=h), (x0 + ww).clamp(max=w)
    return torch.stack(torch.broadcast_tensors(x0[None, :], y0[:, None], x1[None, :], y1[:, None]), -1)


@dataclass
class OcclusionResult:
    """What :func:`occlusion` measured, one map per image, positions as Captum's ``Occlusion``.

    Entry ``[n, i, j]`` of every map is measured with the occluder's top-left corner at
    ``(i * stride[0], j * stride[1])`` (network-input pixels) in image ``n``.

    Attributes:
        score: ``(N, Py, Px)`` the target class score (logit) :math:`S_c`.
        prob: ``(N, Py, Px)`` the target's softmax probability (Zeiler & Fergus Fig. 7d).
        top_class: ``(N, Py, Px)`` int64, the most probable class (Fig. 7e).
        activity: ``(N, Py, Px)`` total activation of feature map ``unit[n]`` of ``layer``
            (Fig. 7b), or None when no ``layer`` was given.
        target: ``(N,)`` the class of ``score``/``prob`` per image.
        base_score, base_prob: ``(N,)`` the same, unoccluded.
        base_top_class: ``(N,)`` the top class of the unoccluded image.
        base_activity: ``(N,)`` the unoccluded total activation of ``unit[n]`` (or None).
        unit: ``(N,)`` the feature map of ``layer`` followed in each image (or None).
        layer: the module name (or None).
        window, stride: ``(height, width)`` of the occluder and its step.
        input_shape: ``(C, H, W)`` of the network input.
        fill: the occluder's value, in network-input units (a float or a ``(C,)`` list).
    """

    score: torch.Tensor
    prob: torch.Tensor
    top_class: torch.Tensor
    activity: torch.Tensor | None
    target: torch.Tensor
    base_score: torch.Tensor
    base_prob: torch.Tensor
    base_top_class: torch.Tensor
    base_activity: torch.Tensor | None
    unit: torch.Tensor | None
    layer: str | None
    window: tuple[int, int]
    stride: tuple[int, int]
    input_shape: tuple[int, int, int]
    fill: Any

    @property
    def grid(self) -> tuple[int, int]:
        """``(Py, Px)``: occluder positions per column and per row."""
        return tuple(self.score.shape[1:])  # type: ignore[return-value]

    def boxes(self) -> torch.Tensor:
        """The occluder of every position: ``(Py, Px, 4)`` boxes ``(x0, y0, x1, y1)``, half-open."""
        return window_boxes(self.input_shape[1:], self.window, self.stride)

    def attribution(self, of: str = "score") -> torch.Tensor:
        """Per-pixel attribution in Captum's ``Occlusion`` convention: ``(N, C, H, W)``.

        Each pixel gets the mean, over the windows that cover it, of the drop
        ``base - occluded`` of ``of`` (``"score"``, ``"prob"`` or ``"activity"``); all channels
        get the same value (the window covers every channel). Equal to
        ``Occlusion(net).attribute(x, sliding_window_shapes=(C, *window), strides=(C, *stride),
        baselines=fill, target=target)`` for ``"score"``.
        """
        maps = {"score": (self.score, self.base_score), "prob": (self.prob, self.base_prob),
                "activity": (self.activity, self.base_activity)}
        if of not in maps:
            raise ValueError(f"attribution of {of!r}: choose one of {list(maps)}")
        occluded, base = maps[of]
        if occluded is None:
            raise ValueError("no layer activity was measured: call occlusion(..., layer=...)")
        c, h, w = self.input_shape
        drop = (base.double()[:, None, None] - occluded.double())[:, None]       # (N, 1, Py, Px)
        kernel = torch.ones(1, 1, *self.window, dtype=torch.float64, device=drop.device)
        total = F.conv_transpose2d(drop, kernel, stride=self.stride)[..., :h, :w]
        count = F.conv_transpose2d(torch.ones_like(drop[:1]), kernel, stride=self.stride)[..., :h, :w]
        return (total / count).float().expand(-1, c, -1, -1)


def _targets(clf: Any, target: Any, n: int, base_top: torch.Tensor, k: int) -> torch.Tensor:
    if target is None:
        return base_top.clone()
    if isinstance(target, torch.Tensor):
        t = target.reshape(-1).long().to(base_top.device)
    elif isinstance(target, (int, str)) and not isinstance(target, bool):
        t = torch.full((n,), _class(clf, target, k), dtype=torch.long, device=base_top.device)
    else:
        t = torch.tensor([_class(clf, c, k) for c in target], dtype=torch.long, device=base_top.device)
    return _one_per_image(t, n, k, "target", "classes", "the network has {k} classes")


def _one_per_image(v: torch.Tensor, n: int, k: int, name: str, what: str, limit: str) -> torch.Tensor:
    """``v`` ``(N,)``, one index per image (a single one repeated), each in ``[0, k)``; else a
    ValueError naming ``name``, ``what`` it holds and the ``limit`` (``{k}`` formatted)."""
    if v.numel() == 1 and n > 1:
        v = v.expand(n).clone()
    if v.numel() != n:
        raise ValueError(f"{name} has {v.numel()} {what} for {n} images")
    if int(v.min()) < 0 or int(v.max()) >= k:
        raise ValueError(f"{name} {v.tolist()} out of range: {limit.format(k=k)}")
    return v


def _class(clf: Any, c: Any, k: int) -> int:
    if hasattr(clf, "class_index"):
        return clf.class_index(c)
    if isinstance(c, str):
        raise ValueError("class names need a Classifier; give class indices for a bare network")
    return int(c)


def _fill_tensor(clf: Any, fill: Any, c: int, device: torch.device) -> tuple[torch.Tensor, Any]:
    """The occluder value as a ``(1, C, 1, 1)`` tensor of network-input units (and for display)."""
    if fill is None:
        return torch.zeros(1, c, 1, 1, device=device), 0.0
    if isinstance(fill, str):
        if fill != "grey" or not hasattr(clf, "normalize"):
            raise ValueError(f"fill {fill!r}: use None (input 0), 'grey' (with a Classifier), a number "
                             "or a (C,) tensor of network-input values")
        grey = clf.normalize(torch.full((1, c, 1, 1), 127.0 / 255.0)).to(device)
        return grey, grey.flatten().tolist()
    t = torch.as_tensor(fill, dtype=torch.float32, device=device)
    if t.numel() == 1:
        if not torch.isfinite(t).all():
            raise ValueError("fill must be finite")
        return t.reshape(1, 1, 1, 1).expand(1, c, 1, 1), float(t)
    if t.numel() != c or not torch.isfinite(t).all():
        raise ValueError(f"fill must be a finite number or {c} per-channel values, got {fill!r}")
    return t.reshape(1, c, 1, 1), t.tolist()


# -- the local fast path ----------------------------------------------------------------------
#
# An occluder changes the input only inside its window, so the early, high-resolution layers
# (most of the cost of a modern ConvNet: EfficientNet-Lite0 spends ~60 % of its time before its
# first stride-4 map) change only in the window's neighbourhood. When the network is a plain chain
# of stages, those layers are computed on a crop around the window, aligned to the stage's stride,
# and pasted into the unoccluded image's activation; the rest of the network runs as usual. The
# units pasted are exactly those whose receptive field (traced from the network) meets the
# window, and the crop holds their whole receptive field, so the result is the full computation's
# (checked against it on the first batch of each geometry; otherwise the plain path is used).

#: Fewest occluded copies in one call for the local path. Setting a plan up for a new input size
#: (receptive fields traced, the first batch computed both ways) costs about 0.6 s; then a copy
#: costs half of a plain one. EfficientNet-Lite0, 224 x 299 inputs, stride 48 (25 copies per
#: image), 2 threads, cold: 1 image 1.2-1.5 s local against 0.7-0.9 s plain, 3 images 2.2-2.3
#: against 2.2, 6 images 3.6-3.8 against 3.7-4.7, 16 images 7.6-9.3 against 15.0-19.4. Chapter
#: 3's whole images of the 201 folder have 22 sizes among 50 images, 18 of them once (issue 21).
LOCAL_MIN_COPIES = 128
#: Fewest occluded copies per image for the local path on a geometry (input size, window,
#: stride, layer) met before on this network: from its second call the geometry is traced
#: (once) and checked, then a call costs the split's activation of each image (about half a
#: forward pass) and half a plain pass per copy. Chapter 3's whole images at 224 x 299, stride
#: 48: 25 copies per image, one image per call (issue 21).
LOCAL_MIN_COPIES_KNOWN = 4

_VERIFIED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
#: net -> {geometry key: calls of occlusion with it}.
_SEEN: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
#: net -> {geometry key: (stages, split, stride, crop, geo) or None}: traced once per geometry
#: (the key holds the ids of the network's modules: a module replaced makes another geometry).
_GEOMETRY: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _stages(net: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """``net``'s children in order, ``nn.Sequential`` containers expanded recursively."""
    out: list[tuple[str, nn.Module]] = []
    for name, m in net.named_children():
        q = f"{prefix}{name}"
        if isinstance(m, nn.Sequential) and len(m):
            out.extend(_stages(m, q + "."))
        else:
            out.append((q, m))
    return out


def _run(stages: Sequence[tuple[str, nn.Module]], x: torch.Tensor,
         keep: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply ``stages`` in order (flattening before a ``Linear``); also return stage ``keep``'s output."""
    kept = None
    for i, (_, m) in enumerate(stages):
        if isinstance(m, nn.Linear) and x.ndim > 2:
            x = x.flatten(1)
        x = m(x)
        if i == keep:
            kept = x
    return x, kept


@dataclass
class _Plan:
    stages: list[tuple[str, nn.Module]]
    split: int                      # stages[: split + 1] run on crops
    stride: int
    crop: tuple[int, int]           # crop height, width (input pixels)
    geo: torch.Tensor               # (P, 6): crop y0, unit rows [a, b), crop x0, unit cols [a, b)
    base_split: torch.Tensor        # (N, C, h, w) the unoccluded activation at the split


def _plan(net: nn.Module, x: torch.Tensor, layer_module: nn.Module | None, boxes: torch.Tensor,
          batch_size: int, key: tuple) -> _Plan | None:
    """A local plan for ``net`` on ``x`` (or None where the network is not a checked chain): the
    geometry of ``key`` (input shape, window, stride, dtype, device, layer, module tree), traced
    once per network and kept (:data:`_GEOMETRY`), and the unoccluded images' activations at the split."""
    if net._forward_hooks or net._forward_pre_hooks or x.shape[0] == 0:
        return None
    known = _GEOMETRY.setdefault(net, {})
    if key not in known:
        known[key] = _geometry(net, x, layer_module, boxes)
    geo = known[key]
    if geo is None:
        return None
    stages, split = geo[0], geo[1]
    n = x.shape[0]
    with torch.inference_mode():
        base_split = torch.cat([_run(stages[: split + 1], x[i:i + batch_size])[0]
                                for i in range(0, n, batch_size)])
    return _Plan(*geo, base_split)


def _geometry(net: nn.Module, x: torch.Tensor, layer_module: nn.Module | None, boxes: torch.Tensor
              ) -> tuple | None:
    """The input-independent part of a local plan: ``(stages, split, stride, crop, geo)``, or
    None where the network is not a checked chain (traced on ``x[:1]``; about 0.6 s on
    EfficientNet-Lite0 at 224 x 299, most of it the receptive fields)."""
    stages = _stages(net)
    if len(stages) < 3:
        return None
    n, c, h, w = x.shape
    shapes: list[tuple[int, ...]] = []
    try:
        with torch.inference_mode():
            y = x[:1]
            for i, (_, m) in enumerate(stages):
                if isinstance(m, nn.Linear) and y.ndim > 2:
                    y = y.flatten(1)
                y = m(y)
                shapes.append(tuple(y.shape))
            if not torch.allclose(y, net(x[:1]), rtol=1e-4, atol=1e-4):
                return None
    except Exception:  # not a chain of its children: use the plain path
        return None
    end = len(shapes) - 1                       # the split must come before the followed layer
    if layer_module is not None:              # its hook must run in a stage, on the whole map
        end = next((i for i, (_, st) in enumerate(stages)
                    if any(m is layer_module for m in st.modules())), None)
        if end is None:
            return None
    split = None
    for i, sh in enumerate(shapes[:end]):
        if len(sh) == 4 and sh[2] * 4 >= h and sh[3] * 4 >= w:
            split = i
    if split is None or split == 0:
        return None
    sh = shapes[split]
    sy = _stage_stride(stages[: split + 1], c, x)
    # the split map must be the input's size divided by the stride, rounded up ("same" padding):
    # then a crop starting at a multiple of the stride sees the same windows as the whole input,
    # and one ending at the input's edge the same padding
    if sy is None or (-(-h // sy), -(-w // sy)) != tuple(sh[2:]):
        return None
    from .receptive import _rf_extents

    with torch.inference_mode(False), torch.enable_grad():
        y_ext, x_ext = _rf_extents(net, stages[split][0], (c, h, w))
    geo = []
    for x0, y0, x1, y1 in boxes.tolist():
        row = []
        for (lo, hi), ext, size in (((y0, y1), y_ext, h), ((x0, x1), x_ext, w)):
            hit = ((ext[:, 1] > lo) & (ext[:, 0] < hi)).nonzero()[:, 0]
            a, b = int(hit[0]), int(hit[-1]) + 1
            c0 = int(ext[a, 0]) // sy * sy
            c1 = -(-int(ext[b - 1, 1]) // sy) * sy
            row += [c0, a, b, c1]
        geo.append(row)
    g = torch.tensor(geo)
    lch = int((g[:, 3] - g[:, 0]).max())
    lcw = int((g[:, 7] - g[:, 4]).max())
    # crop sides congruent to the input's sides modulo the stride: a crop moved back inside the
    # input to end at its edge then still starts at a multiple of the stride (a 224 x 298 input:
    # 298 is not a multiple of 4; issue 21)
    lch, lcw = lch + (h - lch) % sy, lcw + (w - lcw) % sy
    if lch > h or lcw > w or lch * lcw >= 0.6 * h * w:   # the neighbourhood is most of the image
        return None
    g[:, 0] = g[:, 0].clamp(max=h - lch)
    g[:, 4] = g[:, 4].clamp(max=w - lcw)
    return stages, split, sy, (lch, lcw), g[:, [0, 1, 2, 4, 5, 6]]


def _stage_stride(stages: Sequence[tuple[str, nn.Module]], c: int, x: torch.Tensor) -> int | None:
    """The stride (input pixels per unit) of the output of ``stages``, the same along both axes,
    from a probe input of 256 x 256 zeros; None when it is not a whole number."""
    side = 256
    with torch.inference_mode():
        y, _ = _run(stages, torch.zeros(1, c, side, side, dtype=x.dtype, device=x.device))
    if y.ndim != 4 or y.shape[2] != y.shape[3] or side % y.shape[2]:
        return None
    return side // int(y.shape[2])


def _local_forward(plan: _Plan, x: torch.Tensor, img: torch.Tensor, pos: torch.Tensor,
                   boxes: torch.Tensor, fill_t: torch.Tensor) -> torch.Tensor:
    """Logits of the occluded copies ``(img, pos)`` through the plan's crops."""
    lch, lcw = plan.crop
    g = plan.geo[pos.cpu()].tolist()
    crops = torch.stack([x[i, :, cy:cy + lch, cx:cx + lcw] for i, (cy, _, _, cx, _, _)
                         in zip(img.tolist(), g)])
    oy = torch.tensor([r[0] for r in g], device=x.device)[:, None]
    ox = torch.tensor([r[3] for r in g], device=x.device)[:, None]
    b = boxes[pos]
    ry = torch.arange(lch, device=x.device)[None] + oy
    rx = torch.arange(lcw, device=x.device)[None] + ox
    inside = (((ry >= b[:, 1:2]) & (ry < b[:, 3:4]))[:, :, None]
              & ((rx >= b[:, 0:1]) & (rx < b[:, 2:3]))[:, None, :])
    crops = torch.where(inside[:, None], fill_t, crops)
    out_c, _ = _run(plan.stages[: plan.split + 1], crops.contiguous(memory_format=torch.channels_last))
    a = plan.base_split[img].clone()
    s = plan.stride
    for k, (cy, ya, yb, cx, xa, xb) in enumerate(g):
        a[k, :, ya:yb, xa:xb] = out_c[k, :, ya - cy // s:yb - cy // s, xa - cx // s:xb - cx // s]
    return _run(plan.stages[plan.split + 1:], a)[0]




def occlusion(clf: Any, images: Any, target: Any = None, window: int | Sequence[int] = DEFAULT_WINDOW,
              stride: int | Sequence[int] = DEFAULT_STRIDE, fill: Any = None, layer: str | None = None,
              unit: int | Sequence[int] | torch.Tensor | None = None, batch_size: int = BATCH_SIZE,
              show_progress: bool = True, local: bool = True) -> OcclusionResult:
    """Slide an occluder over each image; record score, probability, top class and layer activity.

    Zeiler & Fergus (2014), Sect. 4.2, Fig. 7: "we systematically cover up different portions of
    the scene with a gray square ... and see how the top (layer 5) feature maps and classifier
    output changes". One forward pass per occluded copy yields every map of their figure.

    Args:
        clf: a :class:`~deepinside.Classifier` (or a bare network taking the tensors given).
        images: a PIL image, a list of them (preprocessed with ``clf.preprocess``), or a
            normalised network input ``(N, C, H, W)``.
        target: the class of ``score``/``prob``: None (the top-1 class of the unoccluded image,
            each image its own), an index or name for all images, or one per image.
        window, stride: occluder side and step in network-input pixels (an int or
            ``(height, width)``). Defaults :data:`DEFAULT_WINDOW` = 48 and
            :data:`DEFAULT_STRIDE` = 16 (see there why; Zeiler & Fergus do not state theirs).
        fill: the occluder, in network-input units. None (default): input 0, which is the
            mean pixel of the training preprocessing: grey 127/255 for EfficientNet-Lite's
            ``(x - 127) / 128`` (Zeiler & Fergus's "gray square"), the ImageNet mean colour for a
            model normalised with ImageNet mean/std. ``"grey"``: the mid-grey pixel 127/255 in any
            model's normalisation. A number or ``(C,)`` values: that input value.
        layer: a module name of ``clf.net`` (e.g. ``"bn2"``): also record the total activation
            (sum over space) of one feature map of its output, per position.
        unit: the feature map to follow (an int for all images, or one per image). None: the
            strongest one in each unoccluded image (largest total activation), as Zeiler & Fergus.
        batch_size: occluded copies per forward pass (positions of several images share batches).
        show_progress: a progress bar over the batches.
        local: compute the early, high-resolution layers on a crop around the occluder only,
            where the network is a chain of stages (see ``_plan``; checked equal to the full
            computation on first use of each input size, else not used) and the call has at
            least :data:`LOCAL_MIN_COPIES` occluded copies (below that, setting the plan up costs
            more than it saves), or its geometry (input size, window, stride, layer) was met
            before on this network and each image has :data:`LOCAL_MIN_COPIES_KNOWN` copies:
            then the plan's geometry is traced once and kept (one image per call, 25 copies:
            0.57 of the plain path's time). ``False``: always the full network.

    Returns:
        :class:`OcclusionResult` with ``(N, Py, Px)`` maps, ``Py = ceil((H - window) / stride) + 1``.

    Raises:
        ValueError: NaN/inf input, an input whose channel count differs from the network's first
            convolution, ``window``/``stride``/``batch_size`` not positive, window larger than the
            image, stride larger than the window, unknown ``layer``, ``unit`` out of range, target
            out of range, a layer output that is not ``(N, C, h, w)``.
        TypeError: ``window``/``stride`` not an int or a pair of ints, ``batch_size`` not an int.

    An input of another floating dtype (float64, float16) is cast to the network's. The network
    is scored in eval mode (BatchNorm running statistics are used, never updated); its modes,
    ``requires_grad`` flags, buffers and hooks are unchanged afterwards (restored, and the
    temporary forward hook removed, in ``finally``); no gradient is computed.
    """
    from ..core.models import frozen

    net = net_of(clf)
    module = resolve_layer(net, layer) if layer is not None else None
    window, stride = _pair(window, "window"), _pair(stride, "stride")
    batch_size = check_int("batch_size", batch_size)
    # channels, dtype (float64/float16 cast, overflow after the cast), NaN: inputs.check_batch
    x = as_batch(clf, images, "occlusion").to(device_of(clf))
    n, c, h, w = x.shape
    py, px = occlusion_grid((h, w), window, stride)
    fill_t, fill_v = _fill_tensor(clf, fill, c, x.device)
    fill_t = fill_t.to(x.dtype)

    captured: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ValueError(f"layer {layer!r} returned {type(out).__name__} of shape "
                             f"{tuple(getattr(out, 'shape', ()))}; expected (N, C, h, w) feature maps")
        captured.append(out.sum((2, 3)))                     # (B, C_layer) total activation

    # occluder geometry, all positions of one image, position p = i * px + j
    boxes = window_boxes((h, w), window, stride).reshape(-1, 4).to(x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    n_pos = py * px
    total = n * n_pos

    score = torch.empty(total, device=x.device)
    prob = torch.empty(total, device=x.device)
    top = torch.empty(total, dtype=torch.long, device=x.device)
    act = torch.empty(total, device=x.device) if module is not None else None

    hooked = _hook_module(module) if module is not None else None
    hook_block = forward_hook(hooked, hook) if hooked is not None else contextlib.nullcontext()
    with hook_block, frozen(net), torch.inference_mode():
        # the unoccluded images first: target, base values, the strongest feature map
        base_parts, base_caps = [], []
        for i in range(0, n, batch_size):
            xb = x[i:i + batch_size].contiguous(memory_format=torch.channels_last)
            # without a followed layer the passes may use BatchNorm folded into the convolutions
            # (checked on this first batch against the network itself; issue 21)
            base_parts.append(net(xb) if module is not None else twin_forward(net, xb))
            if module is not None:
                if not captured:
                    raise ValueError(f"layer {layer!r} did not run in the network's forward pass")
                base_caps.append(captured[-1])       # the layer's last call in this pass
                captured.clear()
        base = torch.cat(base_parts)
        if base.ndim != 2:
            raise ValueError(f"the network returned scores of shape {tuple(base.shape)}, "
                             "expected (N, classes)")
        k = base.shape[1]
        base_top = base.argmax(1)
        tgt = _targets(clf, target, n, base_top, k)
        base_logp = base.log_softmax(1)
        units = base_act = None
        if module is not None:
            totals = torch.cat(base_caps)                  # (N, C_layer)
            units = _units(unit, totals, n)
            base_act = totals.gather(1, units[:, None])[:, 0]
        if module is None:
            net = inference_twin(net)   # the network itself if its twin failed the check above
        # the plan (where the crops end) and its check depend on the followed layer too
        key = (tuple(x.shape[1:]), window, stride, str(x.dtype), str(x.device), layer,
               tuple(map(id, net.modules())))
        checked = _VERIFIED.setdefault(net, {}).get(key)
        calls = _SEEN.setdefault(net, {})
        calls[key] = calls.get(key, 0) + 1
        # a geometry met again (one image per call: chapter 3) is traced on its second call
        again = checked is True or (checked is None and calls[key] >= 2)
        worth = total >= LOCAL_MIN_COPIES or (again and n_pos >= LOCAL_MIN_COPIES_KNOWN)
        plan = _plan(net, x, hooked, boxes, batch_size, key) if local and worth else None
        captured.clear()                                   # _plan's own check ran the network
        if checked is False:
            plan = None

        def plain(img: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            b = boxes[pos]                                                # (B, 4)
            inside = (((rows >= b[:, 1:2]) & (rows < b[:, 3:4]))[:, :, None]
                      & ((cols >= b[:, 0:1]) & (cols < b[:, 2:3]))[:, None, :])  # (B, H, W)
            xb = torch.where(inside[:, None], fill_t, x[img])
            return net(xb.contiguous(memory_format=torch.channels_last))

        it = range(0, total, batch_size)
        for s in progress(it, desc="occlusion", total=len(it), disable=not show_progress):
            idx = torch.arange(s, min(s + batch_size, total), device=x.device)
            img, pos = idx // n_pos, idx % n_pos
            if plan is not None and checked is None:      # first use of this geometry: check
                ref = plain(img, pos)
                ref_act = captured.pop() if act is not None else None
                captured.clear()
                out = _local_forward(plan, x, img, pos, boxes, fill_t)
                tol = 1e-4 * (1.0 + float(ref.abs().max()))
                ok = out.shape == ref.shape and bool((out - ref).abs().max() <= tol)
                if ref_act is not None:       # the layer must run once, on the whole map
                    ok = ok and len(captured) == 1 and captured[-1].shape == ref_act.shape
                    ok = ok and bool((captured[-1] - ref_act).abs().max()
                                     <= 1e-4 * (1.0 + float(ref_act.abs().max())))
                _VERIFIED[net][key] = checked = ok
                if not ok:
                    plan = None
                    captured.clear()
                    captured.append(ref_act) if ref_act is not None else None
                    out = ref
            elif plan is not None:
                out = _local_forward(plan, x, img, pos, boxes, fill_t)
            else:
                out = plain(img, pos)
            t = tgt[img]
            score[idx] = out.gather(1, t[:, None])[:, 0]
            prob[idx] = out.log_softmax(1).gather(1, t[:, None])[:, 0].exp()
            top[idx] = out.argmax(1)
            if act is not None:
                act[idx] = captured.pop().gather(1, units[img][:, None])[:, 0]
                captured.clear()

    release_memory()   # dozens of passes of this geometry: their freed activations to the OS
    # tensors made under inference_mode cannot enter autograd later: hand out ordinary copies
    base, tgt, base_top, base_logp = base.clone(), tgt.clone(), base_top.clone(), base_logp.clone()
    units = None if units is None else units.clone()
    base_act = None if base_act is None else base_act.clone()
    shape = (n, py, px)
    return OcclusionResult(
        score=score.reshape(shape).cpu(), prob=prob.reshape(shape).cpu(), top_class=top.reshape(shape).cpu(),
        activity=None if act is None else act.reshape(shape).cpu(), target=tgt.cpu(),
        base_score=base.gather(1, tgt[:, None])[:, 0].cpu(),
        base_prob=base_logp.gather(1, tgt[:, None])[:, 0].exp().cpu(), base_top_class=base_top.cpu(),
        base_activity=None if base_act is None else base_act.cpu(),
        unit=None if units is None else units.cpu(), layer=layer, window=window, stride=stride,
        input_shape=(c, h, w), fill=fill_v)


def _units(unit: Any, totals: torch.Tensor, n: int) -> torch.Tensor:
    """The followed feature map per image: given, or the strongest (largest total activation)."""
    c = totals.shape[1]
    if unit is None:
        return totals.argmax(1)
    u = torch.as_tensor(unit, dtype=torch.long, device=totals.device).reshape(-1)
    return _one_per_image(u, n, c, "unit", "entries", "the layer has {k} feature maps")


# -- boxes for the chapter's measurements ----------------------------------------------------


def box_to_input(clf: Any, box: Sequence[float], image_size: Sequence[int]) -> tuple[float, float, float, float]:
    """A box ``(x0, y0, x1, y1)`` in original image pixels -> network-input pixels.

    Follows ``clf.preprocess``: the centre crop ``clf.center_crop_box`` resized to
    ``clf.input_size``; the result is clipped to the input (it may be empty).
    """
    cx0, cy0, cx1, cy1 = clf.center_crop_box(*image_size)
    s = clf.input_size / (cx1 - cx0)
    x0, y0, x1, y1 = box
    clip = lambda v: min(max(v, 0.0), float(clf.input_size))  # noqa: E731
    return clip((x0 - cx0) * s), clip((y0 - cy0) * s), clip((x1 - cx0) * s), clip((y1 - cy0) * s)


def inside_box_share(boxes: torch.Tensor, object_boxes: Sequence[Sequence[float]]) -> torch.Tensor:
    """Share of each occluder's area inside the union of ``object_boxes``: ``(Py, Px)`` in [0, 1].

    ``boxes`` as :meth:`OcclusionResult.boxes` (network-input pixels); ``object_boxes`` in the
    same pixels (e.g. from :func:`box_to_input`).
    """
    x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
    h, w = int(y1.max()), int(x1.max())
    mask = torch.zeros(h, w, dtype=torch.float64)
    for bx0, by0, bx1, by1 in object_boxes:
        mask[int(round(by0)):int(round(by1)), int(round(bx0)):int(round(bx1))] = 1.0
    ii = mask.cumsum(0).cumsum(1)
    ii = F.pad(ii, (1, 0, 1, 0))                                   # integral image, (H+1, W+1)
    inside = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    return (inside / ((y1 - y0) * (x1 - x0))).float()


def _paired_difference(drop: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image: mean of ``drop`` over positions ``a`` minus its mean over positions ``b``
    (``(N, Py, Px)`` each); images lacking either kind of position are left out."""
    keep = a.flatten(1).any(1) & b.flatten(1).any(1)
    d, a, b = drop[keep].flatten(1), a[keep].flatten(1).double(), b[keep].flatten(1).double()
    return (d * a).sum(1) / a.sum(1) - (d * b).sum(1) / b.sum(1)


def object_vs_background(res: OcclusionResult, object_boxes: Sequence[Sequence[Sequence[float]]],
                         of: str = "prob", inside: float = 0.9, outside: float = 0.1) -> torch.Tensor:
    """Zeiler & Fergus Sect. 4.2 over many images: does covering the object hurt more than covering
    the background?

    For each image, the mean drop ``base - occluded`` of ``of`` (``"prob"``: the correct class's
    probability when ``target`` is the true label) over the occluder positions lying at least
    ``inside`` within the object boxes, minus the mean drop over the positions at most
    ``outside`` within them. ``object_boxes[n]``: image ``n``'s boxes in network-input pixels
    (:func:`box_to_input`). Returns the per-image differences ``(M,)`` (float64), for the M images
    that have both kinds of positions; positive = the object matters more.
    """
    if len(object_boxes) != res.score.shape[0]:
        raise ValueError(f"{len(object_boxes)} box lists for {res.score.shape[0]} images")
    occluded, base = {"prob": (res.prob, res.base_prob), "score": (res.score, res.base_score)}[of]
    drop = base.double()[:, None, None] - occluded.double()
    share = torch.stack([inside_box_share(res.boxes(), b) for b in object_boxes])
    return _paired_difference(drop, share >= inside, share <= outside)


def own_field_effect(res: OcclusionResult, maps: torch.Tensor) -> torch.Tensor:
    """Does the followed feature map lose activity where the occluder covers its own activity?

    Zeiler & Fergus on their Fig. 7(b): the strongest feature is "the dog's face. When this is
    covered-up the activity in the feature map decreases". ``maps``: ``(N, h, w)`` the followed
    map of each unoccluded image (e.g. from :func:`deepinside.layers.activations`). For each
    occluder position, the share of the map's activity lying under the square (each cell spread
    over its input pixels) is correlated, over positions, with the relative drop of the map's
    total activity. Returns the per-image Pearson correlations ``(M,)`` (float64; images whose
    map or drops are constant are left out): positive = covering the feature's own activity is
    what lowers it.
    """
    if res.activity is None:
        raise ValueError("no layer activity was measured: call occlusion(..., layer=...)")
    n, (_, hh, ww) = res.score.shape[0], res.input_shape
    if maps.ndim != 3 or maps.shape[0] != n:
        raise ValueError(f"maps must be (N={n}, h, w), got {tuple(maps.shape)}")
    up = F.interpolate(maps.double().clamp_min(0)[:, None], size=(hh, ww), mode="nearest")[:, 0]
    up = up / up.sum((1, 2), keepdim=True).clamp_min(1e-300)
    ii = F.pad(up.cumsum(1).cumsum(2), (1, 0, 1, 0))                  # (N, H+1, W+1) integral
    b = res.boxes().reshape(-1, 4)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    covered = ii[:, y1, x1] - ii[:, y0, x1] - ii[:, y1, x0] + ii[:, y0, x0]   # (N, P)
    base = res.base_activity.double().clamp_min(1e-12)[:, None]
    drop = (base - res.activity.double().reshape(n, -1)) / base
    cov, drp = covered - covered.mean(1, keepdim=True), drop - drop.mean(1, keepdim=True)
    den = cov.norm(dim=1) * drp.norm(dim=1)
    keep = den > 1e-12
    return (cov * drp).sum(1)[keep] / den[keep]


@dataclass
class OcclusionStudy:
    """:func:`occlusion_study`'s per-image paired differences (float64) and their summary.

    Attributes:
        object_minus_background: ``(M,)`` from :func:`object_vs_background` (empty without boxes).
        own_minus_elsewhere: ``(M',)`` per-image correlations from :func:`own_field_effect`.
        result: the :class:`OcclusionResult` they come from.
    """

    object_minus_background: torch.Tensor
    own_minus_elsewhere: torch.Tensor
    result: OcclusionResult

    @staticmethod
    def summary(d: torch.Tensor) -> tuple[float, float, int]:
        """``(mean, standard error, n)`` of a vector of per-image differences."""
        n = len(d)
        if n < 2:
            return float("nan"), float("nan"), n
        return float(d.mean()), float(d.std() / n ** 0.5), n


def occlusion_study(clf: Any, images: Sequence[Image.Image], labels: Sequence[int] | None = None,
                    boxes: Sequence[Sequence[Sequence[float]]] | None = None, layer: str = "bn2",
                    window: int = 96, stride: int = 64, batch_size: int = BATCH_SIZE,
                    inside: float = 0.5, outside: float = 0.1,
                    show_progress: bool = True) -> OcclusionStudy:
    """Zeiler & Fergus's two readings of Fig. 7, measured over many images at once.

    One :func:`occlusion` call (target: the true ``labels``, else each image's top class; the
    strongest map of ``layer`` followed) gives, per image, (1) how much more the correct class's
    probability drops when the occluder lies on the object (``boxes``, original pixels) than on
    the background (positions at least ``inside`` / at most ``outside`` within the boxes,
    :func:`object_vs_background`), and (2) how well the strongest feature map's activity drop
    follows the share of its own activity under the square (:func:`own_field_effect`).
    ``window``/``stride`` default to a coarse 3 x 3 grid on a 224 input (cheap enough for many
    images).
    """
    from ..core.layers import activations

    x = clf.preprocess(list(images))
    res = occlusion(clf, x, target=None if labels is None else list(labels), window=window,
                    stride=stride, layer=layer, batch_size=batch_size, show_progress=show_progress)
    obj = torch.zeros(0, dtype=torch.float64)
    if boxes is not None:
        in_boxes = [[box_to_input(clf, b, im.size) for b in bs] for im, bs in zip(images, boxes)]
        obj = object_vs_background(res, in_boxes, of="prob", inside=inside, outside=outside)
    maps = activations(clf, x, layer)                              # (N, C, h, w)
    own = maps[torch.arange(len(x)), res.unit]                     # (N, h, w) the followed maps
    return OcclusionStudy(obj, own_field_effect(res, own), res)


def pick_small_objects(clf: Any, records: Sequence[Any], n: int, max_share: float = 0.4,
                       seed: int = 0) -> list[int]:
    """Indices of ``n`` records (seeded random, sorted) whose boxes, mapped into the network's
    input (:func:`box_to_input`), cover at most ``max_share`` of it: images in which an occluder
    can lie on the background as well as on the object. Records need ``width``, ``height`` and
    ``boxes`` (original pixels), as :class:`~deepinside.IlsvrcRecord`."""
    s = clf.input_size
    ok = []
    for i, r in enumerate(records):
        boxes = [box_to_input(clf, b, (r.width, r.height)) for b in r.boxes]
        share = inside_box_share(window_boxes((s, s), s, s), boxes)
        if float(share[0, 0]) <= max_share:
            ok.append(i)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(ok), generator=g)[:n].tolist()
    return sorted(ok[j] for j in pick)
