"""Shared test helpers: model-state snapshots (what every call of the package must leave
unchanged) and tiny classifiers whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from deepinside.core.models import Classifier

C, FRAC = 8, 0.8  # tiny crop side; resize_size = 10


def model_state(net: torch.nn.Module) -> dict:
    """Everything a call must leave unchanged: modes, requires_grad flags, hooks, parameters."""
    return {
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in net.modules()],
        "forward": [type(m).forward for m in net.modules()] + [m.__dict__.get("forward") for m in net.modules()],
        "inplace": [getattr(m, "inplace", None) for m in net.modules()],
        "params": [p.detach().clone() for p in net.parameters()],
        "buffers": [b.detach().clone() for b in net.buffers()],  # BatchNorm running statistics
        "grads": [p.grad for p in net.parameters()],
    }


def assert_same_state(before: dict, after: dict) -> None:
    for k in before:
        if k in ("params", "buffers"):
            assert len(before[k]) == len(after[k]) and all(
                torch.equal(a, b) for a, b in zip(before[k], after[k])), f"{k} changed"
        elif k == "grads":
            assert all((a is None) == (b is None) for a, b in zip(before[k], after[k])), "parameter .grad changed"
        else:
            assert before[k] == after[k], f"model state {k!r} changed"


# -- tiny classifiers ----------------------------------------------------------------------------


def tiny_clf(net: nn.Module, k: int, size: int = C, frac: float = FRAC, mean=(0.5,) * 3,
             std=(0.25,) * 3) -> Classifier:
    """A :class:`Classifier` around any small ``net`` with ``k`` classes, CPU, bicubic."""
    return Classifier(net=net, device=torch.device("cpu"), input_size=size, crop_fraction=frac,
                      mean=mean, std=std, interpolation=Image.BICUBIC,
                      class_names=[f"class{i}" for i in range(k)],
                      wnids=[f"n{i:08d}" for i in range(k)], name="tiny")


def linear_clf(weight: torch.Tensor, size: int = C) -> Classifier:
    """S(x) = W vec(x) + b: the paper's eq. 2, the saliency is exactly max_c |W_c| (by hand)."""
    k = weight.shape[0]
    lin = nn.Linear(3 * size * size, k)
    with torch.no_grad():
        lin.weight.copy_(weight.reshape(k, -1))
        lin.bias.uniform_(-1, 1)
    return tiny_clf(nn.Sequential(nn.Flatten(), lin), k, size)


def conv_clf(seed: int = 0, k: int = 4, bn: bool = False, relu6: bool = False) -> Classifier:
    """A small non-linear ConvNet (any input side >= 4), eval mode, frozen; ``relu6``: in-place
    ``nn.ReLU6`` rectifiers as in EfficientNet-Lite."""
    torch.manual_seed(seed)

    def act() -> nn.Module:
        return nn.ReLU6(inplace=True) if relu6 else nn.ReLU()

    layers = [nn.Conv2d(3, 6, 3, padding=1)] + ([nn.BatchNorm2d(6)] if bn else []) + [
        act(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), act(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, k)]
    net = nn.Sequential(*layers).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return tiny_clf(net, k)


def gap_clf(seed: int = 0, k: int = 4, size: int = C) -> Classifier:
    """A small ConvNet ending in global average pooling + one linear layer (CAM is exact), with
    BatchNorm (random statistics) and in-place ReLU6 as in EfficientNet-Lite; eval mode, frozen."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU6(inplace=True),
                        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(5, k))
    bn = net[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return tiny_clf(net, k, size=size)


def rand_pil(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
