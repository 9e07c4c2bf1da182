"""Receptive fields computed from the network itself (Zeiler & Fergus 2014, Fig. 2: the image
patches beside each projection are the units' receptive fields).

The input box a unit sees is where the input gradient of that unit is non-zero in a copy of the
network in which every path is open and every weight positive (:func:`_linearised_copy`); the
extents are traced once per (network, layer, input size) and cached.
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import Any, Sequence

import torch
from torch import nn

from ..core.layers import forward_to, net_of, resolve_layer

__all__ = ["receptive_field"]


_RF_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _linearised_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in which every path is open and every weight positive.

    Convolutions and linear maps average (weight ``1 / fan_in``, no bias), normalisations are
    identities, max-pooling becomes average pooling (so every input of a pooling window, not only
    the arg-max, reaches the output), and hooks are dropped. With a small positive input all
    activations stay in the linear range of every rectifier (0 < x < 6 for ReLU6), so the input
    gradient of a unit is positive exactly on the pixels connected to it: its receptive field.
    """
    c = copy.deepcopy(net).float().cpu().eval()
    for m in c.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m._backward_hooks.clear()
        for name, child in list(m.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(m, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                              ceil_mode=child.ceil_mode, count_include_pad=True))
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(m, name, nn.AdaptiveAvgPool2d(child.output_size))
    with torch.no_grad():
        for m in c.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.running_mean is not None:
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0)
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor):
                if w.ndim >= 2:
                    w.fill_(1.0 / w[0].numel())
                else:
                    w.fill_(1.0)
            b = getattr(m, "bias", None)
            if isinstance(b, torch.Tensor):
                b.zero_()
    for p in c.parameters():
        p.requires_grad_(False)
    return c


def _runs(m: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool tensor, as half-open ``(start, end)``."""
    d = torch.diff(torch.cat([m.new_zeros(1), m, m.new_zeros(1)]).to(torch.int8))
    starts, ends = (d == 1).nonzero()[:, 0].tolist(), (d == -1).nonzero()[:, 0].tolist()
    return list(zip(starts, ends))


def _trace(lin: nn.Module, layer: str, module: nn.Module, size: tuple[int, int, int],
           units: list[tuple[int, int]], axes: Sequence[int]) -> dict[int, torch.Tensor]:
    """Extents ``(len(units), 2)`` along each axis in ``axes`` (0: rows, 1: columns) of the input
    support of each unit (all channels), from as few backward passes as possible: units whose
    supports cannot touch share a sample, and the runs of that sample's support are assigned to
    its units in order (checked; a sample whose runs do not match is redone one unit at a time)."""
    cin, hh, ww = size

    def supports(groups: list[list[int]]) -> torch.Tensor:
        # one sample per backward pass: the linearised copy's graph up to an early layer of a
        # whole 224 x 300 image holds ~0.2 GB per sample (three at once were chapter 3's memory
        # peak, +0.66 GB; issue 21), and a layer of 56 units could ask for dozens at once
        parts = []
        for grp in groups:
            with torch.inference_mode(False), torch.enable_grad():
                x = torch.full((1, cin, hh, ww), 1e-6, requires_grad=True)
                out = forward_to(lin, x, {layer: module})[layer]
                seed = sum(out[0, :, units[i][0], units[i][1]].sum() for i in grp)
                (grad,) = torch.autograd.grad(seed, x)
            parts.append(grad.abs().amax(1) > 0)
        return torch.cat(parts)                                # (G, H, W)

    res = {a: torch.zeros(len(units), 2, dtype=torch.long) for a in axes}
    full = {0: hh, 1: ww}
    last, mid = len(units) - 1, len(units) // 2
    three = supports([[mid], [0], [last]])
    r = {a: [_runs(three[j].any(1 - a)) for j in range(3)] for a in axes}
    if not all(all(r[a]) for a in axes):
        raise ValueError(f"could not trace the receptive field of layer {layer!r}: no input pixel "
                         "reaches it (a layer that does not depend on the input?)")
    ext = {a: [(rr[0][0], rr[-1][1]) for rr in r[a]] for a in axes}
    if all(e == (0, full[a]) for a in axes for e in ext[a]):
        # extents grow with the position: when the first and the last unit both span the whole
        # input, so does every unit in between
        for a in axes:
            res[a][:, 1] = full[a]
        return res
    # translation: unit i sees the middle unit's box shifted by (i - mid) strides, clipped to the
    # input; exact for convolution and pooling stacks, checked on the first and last unit
    n_map = {a: len(units) for a in axes}
    predicted = {}
    for a in axes:
        lo, hi = ext[a][0]
        if lo == 0 or hi == full[a] or full[a] % n_map[a]:
            break
        step = full[a] // n_map[a]
        shift = (torch.arange(len(units)) - mid) * step
        predicted[a] = torch.stack([(lo + shift).clamp(0, full[a]), (hi + shift).clamp(0, full[a])], 1)
    if len(predicted) == len(axes) and all(
            tuple(predicted[a][0].tolist()) == ext[a][1] and tuple(predicted[a][last].tolist()) == ext[a][2]
            for a in axes):
        return predicted
    sup = three[0]
    mid_runs = [_runs(sup.any(1 - a)) for a in axes]
    if not all(mid_runs):
        raise ValueError(f"could not trace the receptive field of layer {layer!r}: no input pixel "
                         "reaches it (a layer that does not depend on the input?)")
    span = max(r[-1][1] - r[0][0] for r in mid_runs)
    step = max(1, min(hh // max(1, len(units)), ww // max(1, len(units))))
    spacing = min(len(units), math.ceil((span + 1) / max(1, step)) + 1)
    groups = [list(range(r, len(units), spacing)) for r in range(spacing)]
    sups = supports(groups)
    redo: list[int] = []
    for g, grp in enumerate(groups):
        ok = True
        found = {a: _runs(sups[g].any(1 - a)) for a in axes}
        for a in axes:
            if len(found[a]) != len(grp):
                ok = False
        if not ok:
            redo.extend(grp)
            continue
        for a in axes:
            for i, (lo, hi) in zip(grp, found[a]):
                res[a][i] = torch.tensor([lo, hi])
    if redo:
        sups = supports([[i] for i in redo])
        for j, i in enumerate(redo):
            for a in axes:
                r = _runs(sups[j].any(1 - a))
                if not r:
                    raise ValueError(f"could not trace the receptive field of layer {layer!r}: no "
                                     "input pixel reaches it")
                res[a][i] = torch.tensor([r[0][0], r[-1][1]])
    return res


def _rf_extents(net: nn.Module, layer: str, size: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row extents ``(h, 2)`` and column extents ``(w, 2)`` (half-open, input pixels) of the units
    of ``layer``; cached per network, layer and input size."""
    per_net = _RF_CACHE.setdefault(net, {})
    key = (layer, tuple(size))
    if key in per_net:
        return per_net[key]
    if "_linearised" not in per_net:
        per_net["_linearised"] = _linearised_copy(net)
    lin = per_net["_linearised"]
    module = resolve_layer(lin, layer)
    cin, hh, ww = size
    with torch.no_grad():
        h, w = forward_to(lin, torch.zeros(1, cin, hh, ww), {layer: module})[layer].shape[2:]
    if h == w:                                     # the diagonal units give rows and columns at once
        ext = _trace(lin, layer, module, size, [(i, i) for i in range(h)], (0, 1))
        y_ext, x_ext = ext[0], ext[1]
    else:
        y_ext = _trace(lin, layer, module, size, [(i, w // 2) for i in range(h)], (0,))[0]
        x_ext = _trace(lin, layer, module, size, [(h // 2, j) for j in range(w)], (1,))[1]
    per_net[key] = (y_ext, x_ext)
    return y_ext, x_ext


def receptive_field(clf: Any, layer: str, y: int | torch.Tensor, x: int | torch.Tensor,
                    input_size: Sequence[int] | None = None) -> tuple[int, int, int, int] | torch.Tensor:
    """The input box a unit of ``layer`` at map position ``(y, x)`` sees: ``(x0, y0, x1, y1)``.

    Computed from the network itself, not from a table of kernel sizes: in a copy of the network
    whose weights are all positive and whose rectifiers all pass (see ``_linearised_copy``), the
    input gradient of the unit is non-zero exactly on the pixels connected to it; its bounding
    box is the receptive field, clipped to the input (half-open, network-input pixels). The
    extents of all units of a layer come from one batched backward pass (the units on the
    diagonal: rows and columns separate for convolutions and pooling) and are cached.

    Args:
        clf: a Classifier (input size ``clf.input_size``) or a network (give ``input_size``).
        layer: a module name of the network.
        y, x: map positions (ints, or equal-length int tensors for many units).
        input_size: ``(C, H, W)`` of the input (default ``(3, clf.input_size, clf.input_size)``).

    Returns:
        ``(x0, y0, x1, y1)`` for one unit, or a ``(M, 4)`` int64 tensor for tensors ``y``, ``x``.

    Raises:
        ValueError: unknown layer; a position outside the layer's map.
    """
    net = net_of(clf)
    resolve_layer(net, layer)
    if input_size is None:
        s = getattr(clf, "input_size", None)
        if s is None:
            raise ValueError("give input_size=(C, H, W) for a bare network")
        input_size = (3, int(s), int(s))
    y_ext, x_ext = _rf_extents(net, layer, tuple(int(v) for v in input_size))  # type: ignore[arg-type]
    scalar = not isinstance(y, torch.Tensor) and not isinstance(x, torch.Tensor)
    yy = torch.as_tensor(y, dtype=torch.long).reshape(-1)
    xx = torch.as_tensor(x, dtype=torch.long).reshape(-1)
    h, w = len(y_ext), len(x_ext)
    if len(yy) != len(xx):
        raise ValueError(f"y and x hold {len(yy)} and {len(xx)} positions")
    if len(yy) and (int(yy.min()) < 0 or int(yy.max()) >= h or int(xx.min()) < 0 or int(xx.max()) >= w):
        raise ValueError(f"position outside the {h}x{w} map of layer {layer!r}")
    box = torch.stack([x_ext[xx, 0], y_ext[yy, 0], x_ext[xx, 1], y_ext[yy, 1]], 1)
    return tuple(box[0].tolist()) if scalar else box  # type: ignore[return-value]


