"""The paper's ConvNet and an explicit Zeiler & Fergus DeconvNet (Sect. 4).

Simonyan et al. (2014), Sect. 4: "DeconvNet-based reconstruction of the n-th layer input
:math:`X_n` is either equivalent or similar to computing the gradient of the visualised neuron
activity :math:`f` with respect to :math:`X_n`". Three statements, each made computable here:

1. convolution :math:`X_{n+1} = X_n \\star K_n`: :math:`\\partial f/\\partial X_n =
   \\partial f/\\partial X_{n+1} \\star \\widehat{K_n}` (flipped kernel), the DeconvNet's
   :math:`R_n = R_{n+1} \\star \\widehat{K_n}`: :func:`flipped_kernel_conv`;
2. max-pooling :math:`X_{n+1}(p) = \\max_{q \\in \\Omega(p)} X_n(q)`: :math:`\\partial f/\\partial
   X_n(s) = \\partial f/\\partial X_{n+1}(p) \\mathbf{1}(s = \\arg\\max_{q \\in \\Omega(p)} X_n(q))`,
   the argmax being the DeconvNet's "switch": :func:`unpool_with_switches`;
3. RELU: gradient :math:`\\mathbf{1}(X_n > 0)` vs. DeconvNet :math:`\\mathbf{1}(R_{n+1} > 0)`: the
   only difference, so :func:`deconvnet_reconstruct` equals autograd under
   :func:`deepinside.backward_rule` ``"deconvnet"``, and equals the gradient with
   ``relu_rule="gradient"`` or on the same network built without rectifiers.

The network is :class:`PaperConvNet`, the paper's "conv64-conv256-conv256-conv256-conv256-
full4096-full4096-full1000" ("ConvNet implementation details"), with random weights: the
identities hold for any weights.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backprop import RULES, backward_rule

__all__ = ["PaperConvNet", "paper_convnet", "deconvnet_reconstruct", "layer_activity",
           "flipped_kernel_conv", "unpool_with_switches", "record_forward", "RELU_RULES",
           "without_rectifiers", "check_conv_identity", "check_unpool_identity", "check_deconvnet_identity"]

#: How :func:`deconvnet_reconstruct` passes a signal back through a RELU (Sect. 4).
RELU_RULES: tuple[str, ...] = ("deconvnet", "gradient", "guided")


class SwitchedMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that always runs the indices-returning kernel.

    Autograd then routes the gradient through exactly the switches :func:`record_forward` records
    (ties, frequent among rectified zeros, are broken the same way in both).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=True)[0]


class PaperConvNet(nn.Sequential):
    """The paper's ConvNet: conv64-conv256-conv256-conv256-conv256-full4096-full4096-full1000.

    Simonyan et al. (2014) give only the filter counts; their net "is similar to that of [8]"
    (Krizhevsky et al. 2012). Kernel sizes, strides and pools follow Zeiler & Fergus (2014),
    Fig. 3, whose DeconvNet Sect. 4 discusses, for a 224 x 224 input (sizes at width 1)::

        conv1 7x7/2 pad 1 -> 64 x 110 x 110, relu1, pool1 3x3/2 (ceil) -> 55 x 55
        conv2 5x5/2       -> 256 x 26 x 26,  relu2, pool2 3x3/2 (ceil) -> 13 x 13
        conv3, conv4, conv5 3x3/1 pad 1 -> 256 x 13 x 13, relu3..relu5, pool5 3x3/2 -> 6 x 6
        flatten -> fc6 9216 -> 4096, relu6, fc7 4096 -> 4096, relu7, fc8 4096 -> 1000 (class scores)

    Local contrast normalisation and dropout are left out (not part of Sect. 4's argument).
    Pools overlap (3x3 windows, stride 2), as in both papers. At width 1 the network has 61 M
    parameters (fc6 alone 38 M, 151 MB in float32).

    Attributes:
        rectify: whether ``relu*`` are ``nn.ReLU`` (True) or ``nn.Identity`` (the same network
            "without rectification").
        input_size: the side of the square input the fully connected layers were built for.
    """

    rectify: bool
    input_size: int


def _conv_out(n: int, k: int, s: int, p: int = 0, ceil: bool = False) -> int:
    out = (n + 2 * p - k) / s + 1
    out = math.ceil(out) if ceil else math.floor(out)
    if ceil and (out - 1) * s >= n + p:                 # PyTorch's ceil_mode rule
        out -= 1
    return int(out)


def paper_convnet(*, seed: int = 0, width: float = 1.0, rectify: bool = True, input_size: int = 224,
                  num_classes: int = 1000) -> PaperConvNet:
    """Build :class:`PaperConvNet` with seeded random (He-normal) weights, in eval mode.

    Args:
        seed: weights depend on ``seed`` only (and the shape arguments): the same seed with
            ``rectify=True`` and ``False`` gives the same weights.
        width: multiplies every layer's width (``width=1/16`` gives conv4-conv16-...-full256 for
            fast tests).
        rectify: ``False`` puts ``nn.Identity`` where the RELUs are.
        input_size: side of the square input (>= 64); fixes fc6's input size.
        num_classes: outputs of fc8.
    """
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    if input_size < 64:
        raise ValueError(f"input_size must be at least 64 (five conv/pool stages), got {input_size}")
    c1, c = max(1, round(64 * width)), max(1, round(256 * width))
    fc = max(1, round(4096 * width))
    s = _conv_out(input_size, 7, 2, 1)
    s = _conv_out(s, 3, 2, 0, ceil=True)
    s = _conv_out(s, 5, 2)
    s = _conv_out(s, 3, 2, 0, ceil=True)
    s = _conv_out(s, 3, 2)
    act = nn.ReLU if rectify else nn.Identity
    gen = torch.Generator().manual_seed(seed)
    layers = OrderedDict([
        ("conv1", nn.Conv2d(3, c1, 7, stride=2, padding=1)), ("relu1", act()),
        ("pool1", SwitchedMaxPool2d(3, 2, ceil_mode=True)),
        ("conv2", nn.Conv2d(c1, c, 5, stride=2)), ("relu2", act()),
        ("pool2", SwitchedMaxPool2d(3, 2, ceil_mode=True)),
        ("conv3", nn.Conv2d(c, c, 3, padding=1)), ("relu3", act()),
        ("conv4", nn.Conv2d(c, c, 3, padding=1)), ("relu4", act()),
        ("conv5", nn.Conv2d(c, c, 3, padding=1)), ("relu5", act()),
        ("pool5", SwitchedMaxPool2d(3, 2)),
        ("flatten", nn.Flatten()),
        ("fc6", nn.Linear(c * s * s, fc)), ("relu6", act()),
        ("fc7", nn.Linear(fc, fc)), ("relu7", act()),
        ("fc8", nn.Linear(fc, num_classes)),
    ])
    with torch.no_grad():
        for m in layers.values():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.01)
    net = PaperConvNet(layers)
    net.rectify, net.input_size = rectify, input_size
    return net.eval()


# --- the three statements -------------------------------------------------------------------------


def flipped_kernel_conv(r: torch.Tensor, weight: torch.Tensor, stride: int | Sequence[int] = 1,
                        padding: int | Sequence[int] = 0,
                        input_hw: Sequence[int] | None = None) -> torch.Tensor:
    """:math:`R_n = R_{n+1} \\star \\widehat{K_n}`: the DeconvNet's convolution with flipped kernels.

    Sect. 4: "the gradient is computed as :math:`\\partial f/\\partial X_n = \\partial f/\\partial
    X_{n+1} \\star \\widehat{K_n}`, where :math:`K_n` and :math:`\\widehat{K_n}` are the convolution
    kernel and its flipped version". Written out for ``F.conv2d(x, weight, stride, padding)``
    (a cross-correlation, groups = dilation = 1):

    1. spread :math:`R_{n+1}` on a grid of step ``stride`` (zeros in between);
    2. pad by ``k - 1 - padding`` on each side (plus the rows/columns the forward stride dropped,
       so the result has the input's size ``input_hw``);
    3. correlate with ``weight.flip(2, 3).transpose(0, 1)``: the kernel flipped in space, input and
       output channels swapped.

    Equal to ``F.conv_transpose2d`` and to autograd's backward of the convolution.

    Args:
        r: ``(N, C_out, H_out, W_out)`` signal at the convolution's output.
        weight: ``(C_out, C_in, kh, kw)`` kernel :math:`K_n`.
        input_hw: ``(H_in, W_in)`` of the forward input (default: the smallest consistent size).

    Returns:
        ``(N, C_in, H_in, W_in)``.
    """
    if r.ndim != 4 or weight.ndim != 4 or r.shape[1] != weight.shape[0]:
        raise ValueError(f"flipped_kernel_conv needs r (N, C_out, H, W) and weight (C_out, C_in, kh, kw) "
                         f"with matching C_out; got {tuple(r.shape)} and {tuple(weight.shape)}")
    sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
    ph, pw = (padding, padding) if isinstance(padding, int) else tuple(padding)
    kh, kw = weight.shape[-2:]
    n, c_out, ho, wo = r.shape
    spread = r.new_zeros(n, c_out, (ho - 1) * sh + 1, (wo - 1) * sw + 1)
    spread[:, :, ::sh, ::sw] = r
    if input_hw is None:
        input_hw = ((ho - 1) * sh + kh - 2 * ph, (wo - 1) * sw + kw - 2 * pw)
    extra_h = input_hw[0] - ((ho - 1) * sh + kh - 2 * ph)
    extra_w = input_hw[1] - ((wo - 1) * sw + kw - 2 * pw)
    if not (0 <= extra_h < sh and 0 <= extra_w < sw):
        raise ValueError(f"input_hw {tuple(input_hw)} is inconsistent with output {(ho, wo)}, "
                         f"kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}")
    # F.pad takes (left, right, top, bottom); negative values crop (padding > k - 1).
    spread = F.pad(spread, (kw - 1 - pw, kw - 1 - pw + extra_w, kh - 1 - ph, kh - 1 - ph + extra_h))
    return F.conv2d(spread, weight.flip(2, 3).transpose(0, 1))


def unpool_with_switches(r: torch.Tensor, switches: torch.Tensor, input_hw: Sequence[int]) -> torch.Tensor:
    """Max-unpooling: put :math:`R_{n+1}(p)` back where the max came from (the "switch").

    Sect. 4: :math:`\\partial f/\\partial X_n(s) = \\sum_p \\partial f/\\partial X_{n+1}(p)
    \\mathbf{1}(s = \\arg\\max_{q \\in \\Omega(p)} X_n(q))`. With overlapping windows (3x3, stride 2)
    one input can be the max of several windows: its reconstructions are ADDED (a scatter-add),
    which is what the sub-gradient does. ``F.max_unpool2d`` writes instead of adding and loses
    all but one of them (measured in chapter 4).

    Args:
        r: ``(N, C, H_out, W_out)``.
        switches: ``(N, C, H_out, W_out)`` flat indices into ``H_in * W_in`` from
            ``F.max_pool2d(..., return_indices=True)``.
        input_hw: ``(H_in, W_in)``.

    Returns:
        ``(N, C, H_in, W_in)``.
    """
    if r.shape != switches.shape:
        raise ValueError(f"r {tuple(r.shape)} and switches {tuple(switches.shape)} must have the same shape")
    n, c = r.shape[:2]
    out = r.new_zeros(n, c, int(input_hw[0]) * int(input_hw[1]))
    out.scatter_add_(2, switches.reshape(n, c, -1), r.reshape(n, c, -1))
    return out.view(n, c, int(input_hw[0]), int(input_hw[1]))


# --- forward with switches, and the DeconvNet -------------------------------------------------------


def _check_net_and_layer(net: nn.Module, layer: str) -> list[tuple[str, nn.Module]]:
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"the DeconvNet needs a sequential network (e.g. paper_convnet()), got {type(net).__name__}")
    names = [n for n, _ in net.named_children()]
    if layer not in names:
        raise ValueError(f"unknown layer {layer!r}; the network's layers are {names}")
    children = list(net.named_children())
    return children[: names.index(layer) + 1]


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")


def record_forward(net: nn.Sequential, x: torch.Tensor, layer: str) -> list[dict]:
    """Run ``net`` up to and including ``layer``, recording what the DeconvNet needs.

    Returns one dict per layer, in forward order: ``name``, ``module``, ``input`` (the layer's
    input :math:`X_n`, needed for the gradient's RELU gate) and, for max-pools, ``switches``.
    The last entry also has ``output``. No gradient is tracked.
    """
    _check_input(x)
    records = []
    h = x
    with torch.no_grad():
        for name, m in _check_net_and_layer(net, layer):
            rec = {"name": name, "module": m, "input": h}
            if isinstance(m, nn.MaxPool2d):
                h, rec["switches"] = F.max_pool2d(h, m.kernel_size, m.stride, m.padding, m.dilation,
                                                  ceil_mode=m.ceil_mode, return_indices=True)
            else:
                h = m(h)
            records.append(rec)
    records[-1]["output"] = h
    return records


def _seed(out: torch.Tensor, unit: int | Sequence[int], position: tuple[int, int] | None) -> torch.Tensor:
    """One-hot signal at ``unit`` (and position: given, or each image's argmax) of ``out``."""
    n = out.shape[0]
    units = torch.as_tensor([unit] * n if isinstance(unit, int) else list(unit), device=out.device)
    if units.ndim != 1 or len(units) != n:
        raise ValueError(f"unit must be an int or a sequence of {n} ints (one per image), got {unit!r}")
    if ((units < 0) | (units >= out.shape[1])).any():
        raise ValueError(f"unit {unit!r} out of range: the layer has {out.shape[1]} units/channels")
    seed = torch.zeros_like(out)
    rows = torch.arange(n, device=out.device)
    if out.ndim == 2:
        if position is not None:
            raise ValueError("position is only defined for convolutional layers")
        seed[rows, units] = 1.0
        return seed
    maps = out[rows, units]                                         # (N, H, W)
    if position is None:
        flat = maps.flatten(1).argmax(1)
        ys, xs = flat // maps.shape[2], flat % maps.shape[2]
    else:
        y, x_ = position
        if not (0 <= y < maps.shape[1] and 0 <= x_ < maps.shape[2]):
            raise ValueError(f"position {position} outside the {tuple(maps.shape[1:])} feature map")
        ys = torch.full((n,), y, device=out.device)
        xs = torch.full((n,), x_, device=out.device)
    seed[rows, units, ys, xs] = 1.0
    return seed


def layer_activity(net: nn.Sequential, x: torch.Tensor, layer: str, unit: int | Sequence[int],
                   position: tuple[int, int] | None = None) -> torch.Tensor:
    """The visualised neuron activity :math:`f` (Sect. 4), differentiably: ``(N,)``.

    ``f`` is the output of ``layer`` at ``unit`` (a channel for conv/pool/relu layers, at
    ``position`` or, if None, at each image's strongest location, as Zeiler & Fergus do), computed
    by calling the modules, so :func:`deepinside.backward_rule` applies to its backward.
    """
    _check_input(x)
    h = x
    for _, m in _check_net_and_layer(net, layer):
        h = m(h)
    seed = _seed(h.detach(), unit, position)
    return (h * seed).flatten(1).sum(1)


def _relu_back(r: torch.Tensor, x_in: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "deconvnet":
        return r.clamp(min=0)                   # R_n = R_{n+1} 1(R_{n+1} > 0)
    if rule == "gradient":
        return r * (x_in > 0)                   # dR_n = dR_{n+1} 1(X_n > 0)
    return r.clamp(min=0) * (x_in > 0)          # guided: both


def deconvnet_reconstruct(net: nn.Sequential, x: torch.Tensor, layer: str, unit: int | Sequence[int],
                          *, position: tuple[int, int] | None = None, relu_rule: str = "deconvnet",
                          unpool: str = "add") -> torch.Tensor:
    """Zeiler & Fergus's DeconvNet: project one neuron of ``layer`` down to the input.

    Forward pass recording the max-pool switches, then, from a one-hot signal at the neuron
    (value 1: :math:`R = \\partial f/\\partial f`), layer by layer backwards (Sect. 4):

    - convolution: :math:`R_n = R_{n+1} \\star \\widehat{K_n}` (:func:`flipped_kernel_conv`);
    - fully connected (a convolution covering its whole input): :math:`R_n = W_n^\\top R_{n+1}`;
    - max-pooling: unpooling with the switches (:func:`unpool_with_switches`);
    - RELU: :math:`R_n = R_{n+1} \\mathbf{1}(R_{n+1} > 0)` ("rectify the reconstruction"); other
      ``relu_rule`` values give the gradient's :math:`\\mathbf{1}(X_n > 0)` or guided (both);
    - biases play no part (neither in the DeconvNet nor in the gradient).

    Args:
        net: a sequential network of ``Conv2d`` (groups 1, dilation 1), ``ReLU``, ``MaxPool2d``,
            ``Flatten``, ``Linear``, ``Identity`` and ``Dropout`` (eval) layers, e.g.
            :func:`paper_convnet`.
        x: ``(N, C, H, W)`` input batch.
        layer: name of the layer whose output holds the neuron (``"conv5"``, ``"pool5"``,
            ``"fc8"``, ...).
        unit: the channel (or fully connected unit / class), one int or one per image.
        position: ``(y, x)`` in the layer's feature map; None: each image's strongest location.
        relu_rule: ``"deconvnet"`` (Zeiler & Fergus), ``"gradient"`` or ``"guided"``.
        unpool: ``"add"`` (scatter-add, the sub-gradient) or ``"write"`` (``F.max_unpool2d``).

    Returns:
        ``(N, C, H, W)``: the reconstruction :math:`R_0` in input space (same as ``x``).
    """
    if relu_rule not in RELU_RULES:
        raise ValueError(f"unknown relu_rule {relu_rule!r}; choose one of {RELU_RULES}")
    if unpool not in ("add", "write"):
        raise ValueError(f"unknown unpool {unpool!r}; choose 'add' or 'write'")
    records = record_forward(net, x, layer)
    r = _seed(records[-1]["output"], unit, position)
    with torch.no_grad():
        for rec in reversed(records):
            m, x_in = rec["module"], rec["input"]
            if isinstance(m, nn.Conv2d):
                if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros":
                    raise ValueError(f"layer {rec['name']}: only plain convolutions are supported")
                r = flipped_kernel_conv(r, m.weight, m.stride, m.padding, x_in.shape[-2:])
            elif isinstance(m, nn.Linear):
                r = r @ m.weight
            elif isinstance(m, nn.MaxPool2d):
                if unpool == "add":
                    r = unpool_with_switches(r, rec["switches"], x_in.shape[-2:])
                else:
                    r = F.max_unpool2d(r, rec["switches"], m.kernel_size, m.stride, m.padding,
                                       output_size=x_in.shape[-2:])
            elif isinstance(m, nn.ReLU):
                r = _relu_back(r, x_in, relu_rule)
            elif isinstance(m, nn.Flatten):
                r = r.reshape(x_in.shape)
            elif isinstance(m, (nn.Identity, nn.Dropout)):
                pass
            else:
                raise ValueError(f"layer {rec['name']} ({type(m).__name__}) is not supported by the DeconvNet")
    return r


def without_rectifiers(net: nn.Sequential) -> nn.Sequential:
    """The same network "without rectification": every ``nn.ReLU`` replaced by ``nn.Identity``.

    Shares the parameter tensors with ``net`` (no copy, no extra memory); ``net`` is unchanged.
    """
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"without_rectifiers needs a sequential network, got {type(net).__name__}")
    layers = OrderedDict((n, nn.Identity() if isinstance(m, nn.ReLU) else m) for n, m in net.named_children())
    out = PaperConvNet(layers) if isinstance(net, PaperConvNet) else nn.Sequential(layers)
    if isinstance(net, PaperConvNet):
        out.rectify, out.input_size = False, net.input_size
    return out.train(net.training)


# --- the three statements, measured on a network --------------------------------------------------


def _signal(shape: torch.Size, like: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(device=like.device, dtype=like.dtype)


def check_conv_identity(net: nn.Sequential, x: torch.Tensor, seed: int = 0) -> list[dict]:
    """Statement 1 at every convolution of ``net``, on the layer inputs ``x`` produces there.

    For a random signal :math:`R_{n+1}` at the convolution's output: autograd's
    :math:`\\partial (R_{n+1} \\cdot X_{n+1}) / \\partial X_n` vs. :func:`flipped_kernel_conv`
    and vs. ``F.conv_transpose2d``.

    Returns:
        one dict per convolution: ``layer``, ``kernel``, ``stride``, ``max_abs`` (of the autograd
        result), ``flipped_vs_autograd``, ``conv_transpose_vs_autograd`` (max abs differences).
    """
    last = [n for n, m in net.named_children() if isinstance(m, nn.Conv2d)][-1]
    rows = []
    for i, rec in enumerate(record_forward(net, x, last)):
        m = rec["module"]
        if not isinstance(m, nn.Conv2d):
            continue
        xin = rec["input"].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = F.conv2d(xin, m.weight, None, m.stride, m.padding)
            r = _signal(y.shape, y, seed + i)
            (grad,) = torch.autograd.grad((y * r).sum(), xin)
        hin, win = xin.shape[-2:]
        extra = tuple((n + 2 * p - k) % s for n, p, k, s in zip((hin, win), m.padding, m.kernel_size, m.stride))
        flipped = flipped_kernel_conv(r, m.weight.detach(), m.stride, m.padding, (hin, win))
        transposed = F.conv_transpose2d(r, m.weight.detach(), stride=m.stride, padding=m.padding, output_padding=extra)
        rows.append({"layer": rec["name"], "kernel": tuple(m.kernel_size), "stride": tuple(m.stride),
                     "max_abs": float(grad.abs().max()),
                     "flipped_vs_autograd": float((flipped - grad).abs().max()),
                     "conv_transpose_vs_autograd": float((transposed - grad).abs().max())})
    return rows


def check_unpool_identity(net: nn.Sequential, x: torch.Tensor, seed: int = 0) -> list[dict]:
    """Statement 2 at every max-pooling of ``net``: unpooling with switches vs. the sub-gradient.

    Returns:
        one dict per pool: ``layer``, ``max_abs`` (of the autograd result),
        ``add_vs_autograd`` (:func:`unpool_with_switches`), ``write_vs_autograd``
        (``F.max_unpool2d``, which overwrites), ``shared`` (fraction of the selected inputs that
        are the maximum of more than one overlapping window).
    """
    last = [n for n, m in net.named_children() if isinstance(m, nn.MaxPool2d)][-1]
    rows = []
    for i, rec in enumerate(record_forward(net, x, last)):
        m = rec["module"]
        if not isinstance(m, nn.MaxPool2d):
            continue
        xin = rec["input"].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = F.max_pool2d(xin, m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
            r = _signal(y.shape, y, seed + i)
            (grad,) = torch.autograd.grad((y * r).sum(), xin)
        sw = rec["switches"]
        add = unpool_with_switches(r, sw, xin.shape[-2:])
        write = F.max_unpool2d(r, sw, m.kernel_size, m.stride, m.padding, output_size=xin.shape[-2:])
        n, c = sw.shape[:2]
        hits = torch.zeros(n, c, xin.shape[-2] * xin.shape[-1], device=sw.device)
        hits.scatter_add_(2, sw.reshape(n, c, -1), torch.ones_like(sw.reshape(n, c, -1), dtype=hits.dtype))
        rows.append({"layer": rec["name"], "max_abs": float(grad.abs().max()),
                     "add_vs_autograd": float((add - grad).abs().max()),
                     "write_vs_autograd": float((write - grad).abs().max()),
                     "shared": float((hits > 1).sum() / (hits > 0).sum())})
    return rows


def check_deconvnet_identity(net: nn.Sequential, x: torch.Tensor, layer: str, unit: int | Sequence[int]) -> dict:
    """Statement 3: the explicit DeconvNet vs. autograd, for the neuron ``unit`` of ``layer``.

    Returns a dict of max abs differences (and ``max_abs`` of the gradient):

    - ``"<rule>"`` for each rule of :data:`deepinside.backprop.RULES`: explicit reconstruction
      with ``relu_rule=rule`` vs. autograd under ``backward_rule(net, rule)`` (all ~0);
    - ``"deconvnet_vs_gradient"``: the DeconvNet vs. the true gradient (large: the RELU rule);
    - ``"bare_deconvnet_vs_gradient"``: the same on :func:`without_rectifiers` (net) (~0), and
      ``"bare_max_abs"``: the max abs of that network's gradient, the scale to compare it with
      (without RELUs the gradient is larger, so its float32 rounding is too).
    """
    def autograd(network: nn.Sequential, rule: str) -> torch.Tensor:
        xx = x.detach().clone().requires_grad_(True)
        with torch.enable_grad(), backward_rule(network, rule):
            (g,) = torch.autograd.grad(layer_activity(network, xx, layer, unit).sum(), xx)
        return g

    out: dict = {}
    grads = {}
    for rule in RULES:
        grads[rule] = autograd(net, rule)
        rec = deconvnet_reconstruct(net, x, layer, unit, relu_rule=rule)
        out[rule] = float((rec - grads[rule]).abs().max())
        if rule == "deconvnet":
            deconv = rec
    out["max_abs"] = float(grads["gradient"].abs().max())
    out["deconvnet_vs_gradient"] = float((deconv - grads["gradient"]).abs().max())
    bare = without_rectifiers(net)
    bare_grad = autograd(bare, "gradient")
    out["bare_max_abs"] = float(bare_grad.abs().max())
    out["bare_deconvnet_vs_gradient"] = float((deconvnet_reconstruct(bare, x, layer, unit)
                                               - bare_grad).abs().max())
    return out
