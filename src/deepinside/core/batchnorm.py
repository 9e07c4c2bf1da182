"""Batch normalisation in eval mode that keeps no activation for the backward pass (issue 21).

In eval mode a BatchNorm layer is a fixed affine map per channel,
``y = (x - mu) / sqrt(var + eps) * w + b``, so the gradient with respect to its input is
``dy * s`` with ``s = w / sqrt(var + eps)``: it needs ``s`` (C numbers), not ``x``. PyTorch's
``batch_norm`` saves its whole input for the backward pass anyway (for the gradients of ``w`` and
``b``, which no map of this package asks for). On EfficientNet-Lite0 that is a third of what a
backward pass keeps alive: measured, the saved tensors of a batch of 8 at 224 px fall from 624 MB
to 418 MB, the forward outputs are bit-identical, the input gradients equal up to float32
rounding (3e-7 of their maximum), and the time of forward + backward is the same within noise.

:func:`lean_batchnorm` makes every BatchNorm of a network do that while it is in eval mode, its
``weight`` and ``bias`` frozen and gradients enabled; in every other case (training, trainable
affine parameters, no running statistics) the layer's own forward runs unchanged.
:func:`~deepinside.core.models.load_classifier` applies it to the networks it loads (torchvision's
``nn.BatchNorm2d`` and timm's ``BatchNormAct2d``, which adds dropout and the activation).
"""

from __future__ import annotations

import copy
import functools
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["lean_batchnorm", "is_lean", "EvalBatchNorm", "inference_twin", "twin_forward",
           "gradient_net"]


class EvalBatchNorm(torch.autograd.Function):
    """``F.batch_norm`` with running statistics, backward ``dx = dy * w / sqrt(var + eps)``.

    Shapes: ``x`` ``(N, C, ...)``; ``mean``, ``var``, ``weight``, ``bias`` ``(C,)``. Only the
    gradient of ``x`` is returned (the statistics and the affine parameters are constants)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
        scale = torch.rsqrt(var + eps)
        if weight is not None:
            scale = scale * weight
        ctx.save_for_backward(scale)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        shape = (1, -1) + (1,) * (grad.dim() - 2)
        return grad * scale.view(shape).to(grad.dtype), None, None, None, None, None


def _lean(module: nn.Module) -> bool:
    """Whether ``module`` may take the lean path for this call."""
    if module.training or not torch.is_grad_enabled():
        return False
    if module.running_mean is None or module.running_var is None:
        return False
    return not any(p is not None and p.requires_grad for p in (module.weight, module.bias))


def _lean_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not _lean(self):
        return type(self).forward(self, x)     # the class's own forward, unchanged
    y = EvalBatchNorm.apply(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
    if self._deepinside_act:                 # timm's BatchNormAct2d: dropout, then activation
        y = self.act(self.drop(y))
    return y


def is_lean(module: nn.Module) -> bool:
    """Whether :func:`lean_batchnorm` gave ``module`` its lean forward."""
    current = module.__dict__.get("forward")
    return isinstance(current, functools.partial) and current.func is _lean_forward


def lean_batchnorm(net: nn.Module) -> int:
    """Give every BatchNorm of ``net`` (``nn.BatchNorm1d/2d/3d`` and subclasses whose forward
    is plain BN, or timm's ``BatchNormAct2d``) the lean eval-mode backward; idempotent.

    Modules whose forward is another subclass's own are left as they are. Returns how many
    modules take the lean path from now on. The modules keep their class, parameters, buffers and
    hooks; ``copy.deepcopy(net)`` and ``pickle`` / ``torch.save(net)`` keep the change.
    """
    count = 0
    for m in net.modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        if is_lean(m):
            count += 1
            continue
        own = type(m).forward
        plain = own is nn.modules.batchnorm._BatchNorm.forward
        timm_act = type(m).__name__ == "BatchNormAct2d" and all(
            hasattr(m, a) for a in ("act", "drop"))
        if "forward" in m.__dict__ or not (plain or timm_act):
            continue
        m._deepinside_act = timm_act
        # a partial of a module-level function, not a bound method: the network still pickles
        m.forward = functools.partial(_lean_forward, m)
        count += 1
    return count


# -- inference twin: BatchNorm folded into the convolution before it ------------------------------


class _Activation(nn.Module):
    """What is left of a folded timm ``BatchNormAct2d``: its dropout, then its activation."""

    def __init__(self, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


#: net -> [its state's signature, its twin or None, verified: None / True / False]
_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(net: nn.Module) -> tuple:
    """What a twin depends on: every parameter and buffer (identity and in-place version), the
    module tree (identities), and whether any module has hooks (a twin would skip them)."""
    modules = list(net.modules())
    tensors = tuple((id(t), t._version) for t in (*net.parameters(), *net.buffers()))
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in modules)
    return tensors, tuple(map(id, modules)), hooked


def _fold_pairs(twin: nn.Module) -> int:
    """Fold, in place, each eval-mode BatchNorm2d that directly follows a Conv2d among its
    parent's children: ``W' = W s``, ``b' = (b - mu) s + beta`` with ``s = gamma / sqrt(var +
    eps)``; the BatchNorm becomes its activation (timm) or the identity. Returns the count."""
    count = 0
    for parent in list(twin.modules()):
        kids = list(parent.named_children())
        for (_, conv), (name, bn) in zip(kids, kids[1:]):
            plain = type(bn) is nn.BatchNorm2d
            timm_act = type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act") and hasattr(bn, "drop")
            if not (isinstance(conv, nn.Conv2d) and (plain or timm_act)) or bn.running_var is None:
                continue
            if conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                scale = torch.rsqrt(bn.running_var + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                shift = (bias - bn.running_mean) * scale
                if bn.bias is not None:
                    shift = shift + bn.bias
                conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype),
                                           requires_grad=False)
                conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
            setattr(parent, name, _Activation(bn.drop, bn.act) if timm_act else nn.Identity())
            count += 1
    return count


def inference_twin(net: nn.Module) -> nn.Module:
    """A copy of ``net`` for forward passes without gradients, each eval-mode BatchNorm folded
    into the convolution before it, or ``net`` itself.

    In eval mode ``BN(conv(x)) = conv'(x)`` with the convolution's weights scaled per output
    channel and a bias added, which saves one pass over every activation: forward passes of
    EfficientNet-Lite0 run about 1.3x faster on CPU (issue 21; chapter 6 spends a third of its
    time in such passes: deletion, insertion, occlusion). The twin is made once per state of
    ``net`` and remade when a parameter, buffer or module changes (in-place updates included);
    ``net`` is never modified. Returns ``net`` itself when nothing folds, when a module has
    hooks (the twin would not run them), or when the twin's scores on the first batch it sees
    differ from ``net``'s (:func:`twin_forward` checks; a fold that does not match the forward
    order, e.g. a BatchNorm applied elsewhere than after its sibling convolution).

    Use it in eval mode only (the twin has no BatchNorm to update), under ``torch.no_grad()``.
    """
    sig = _signature(net)
    entry = _TWINS.get(net)
    if entry is None or entry[0] != sig:
        twin = None
        if not sig[2]:
            with torch.inference_mode(False):   # ordinary tensors, whatever mode the caller is in
                twin = copy.deepcopy(net).eval()
                if _fold_pairs(twin) == 0:
                    twin = None
                else:   # a constant copy: differentiated for its input only (gradient_net)
                    twin.requires_grad_(False)
        entry = _TWINS[net] = [sig, twin, None]
    return net if entry[1] is None or entry[2] is False else entry[1]


def twin_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` through :func:`inference_twin` (no gradients, eval mode). The first batch a twin
    sees is also run through ``net``: a difference beyond float32 rounding (1e-4 of the largest
    score) retires the twin for this state of ``net``, and ``net``'s scores are returned."""
    twin = inference_twin(net)
    if twin is net:
        return net(x)
    entry = _TWINS[net]
    if entry[2] is None:
        ref, out = net(x), twin(x)
        ok = (isinstance(ref, torch.Tensor) and isinstance(out, torch.Tensor)
              and ref.shape == out.shape
              and bool((ref - out).abs().max() <= 1e-4 * (1.0 + float(ref.abs().max()))))
        entry[2] = ok
        return out if ok else ref
    return twin(x)


def _backward_hooked(net: nn.Module) -> bool:
    """Whether a module of ``net`` has a backward hook (the twin would not run it). Global
    module hooks are not consulted: :func:`~deepinside.methods.backprop.backward_rule` installs
    one while any thread has a block open, and a thread's result must not depend on another's."""
    return any(m._backward_hooks or getattr(m, "_backward_pre_hooks", None) for m in net.modules())


def gradient_net(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """The network to differentiate with respect to its input ``x`` ``(N, C, H, W)``: the
    folded twin of :func:`inference_twin`, or ``net`` itself.

    The twin computes the same function (eval mode: each BatchNorm is the affine map folded
    into its convolution), so its input gradient is the same derivative, eq. 4 of Simonyan et
    al. (2014), without the BatchNorm layers' forward and backward passes: forward + backward
    of EfficientNet-Lite0 on CPU in 0.80-0.90 of the time (batches of 6-16 at 224 px; issue 21).
    It is not the same float computation: a unit whose pre-activation sits at a rectifier's
    bound within float32 rounding may pass gradient in one and not the other. Measured on four
    photographs: the largest difference 0.2-1.3 % of the map's maximum, the mean 1e-5 to 4e-4 of
    the mean, correlation > 0.99999; a change of thread count gives up to 0.3 %, a change of
    memory layout about 1 %. ``net`` itself is returned in train mode, when any module has a
    forward or backward hook, when nothing folds, and when the twin's scores on the first input
    of this state of ``net`` (checked here, without gradients) differ from ``net``'s beyond
    float32 rounding. Use it only for input gradients with the true backward rule, where float
    rounding does not matter: its callers are the class models' ascent and SmoothGrad's noisy
    gradients (:func:`deepinside.methods.backprop.score_gradient` with ``folded=True``); eq. 4
    itself, which the book compares with autograd and Captum exactly, is taken on ``net``.
    """
    if net.training or _backward_hooked(net):
        return net
    twin = inference_twin(net)
    if twin is net:
        return net
    entry = _TWINS[net]
    if entry[2] is None:
        try:
            with torch.no_grad():
                twin_forward(net, x[:1].detach())   # checks the twin against net: entry[2]
        except RuntimeError:   # an input the network cannot take: its own call will say so
            return net
    return twin if entry[2] else net

