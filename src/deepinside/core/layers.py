"""Layer plumbing in one place: which network a caller means, a layer by its name, the network
run up to some layers, the layers with a spatial output.

Used by every function that works at a layer (``top_activations``, ``project``, ``receptive_field``,
``occlusion(layer=...)``, Grad-CAM, the CLI). The hooks are :mod:`deepinside.hooks`' (scoped to the
calling thread, removed in ``finally``).
"""

from __future__ import annotations

import difflib
import weakref
from typing import Any

import torch
from torch import nn

from .models import BATCH_SIZE
from .hooks import StopForward, forward_hooks

__all__ = ["net_of", "device_of", "resolve_layer", "forward_to", "activations", "spatial_layers"]


def net_of(clf: Any) -> nn.Module:
    """The network of a :class:`~deepinside.Classifier`, or ``clf`` itself if it is an ``nn.Module``.

    Raises:
        TypeError: neither.
    """
    net = getattr(clf, "net", clf)
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected a deepinside Classifier or an nn.Module, got {type(clf).__name__}")
    return net


def device_of(clf: Any) -> torch.device:
    """``clf.device`` if it has one, else the device of the network's first parameter (CPU)."""
    dev = getattr(clf, "device", None)
    if dev is not None:
        return torch.device(dev)
    p = next(net_of(clf).parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def resolve_layer(net: nn.Module, layer: str) -> nn.Module:
    """The sub-module of ``net`` named ``layer`` (a name from ``net.named_modules()``).

    Raises:
        ValueError: unknown or empty name; the message lists the closest names.
    """
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a module name of the network, got {layer!r}")
    modules = dict(net.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(layer, [n for n in modules if n], n=5)
        hint = f"; did you mean one of {close}?" if close else ""
        raise ValueError(f"unknown layer {layer!r} in {type(net).__name__}{hint}")
    return modules[layer]


def forward_to(net: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Run ``net`` on ``x`` ``(N, C, H, W)`` until every module of ``modules`` has produced its
    output (its first call); ``{name: (N, K, h, w) output}``. The pass stops there
    (:class:`~deepinside.hooks.StopForward`); the hooks are removed in ``finally``.

    Raises:
        ValueError: a layer whose output is not ``(N, K, h, w)``, or one that did not run.
    """
    got: dict[str, torch.Tensor] = {}

    def make(name: str):
        def hook(m: nn.Module, args: Any, out: Any) -> None:
            if name in got:
                return
            if not isinstance(out, torch.Tensor) or out.ndim != 4:
                raise ValueError(f"layer {name!r} returned {type(out).__name__} of shape "
                                 f"{tuple(getattr(out, 'shape', ()))}; expected (N, C, h, w) feature maps")
            got[name] = out
            if len(got) == len(modules):
                raise StopForward
        return hook

    with forward_hooks((m, make(name)) for name, m in modules.items()):
        try:
            net(x)
        except StopForward:
            pass
    missing = [n for n in modules if n not in got]
    if missing:
        raise ValueError(f"layer(s) {missing} did not run in the network's forward pass")
    return got


#: spatial_layers' answers per network, keyed by its modules (names and identities) and the input's
#: shape: Grad-CAM asks for every batch, and each answer costs a forward pass (4 % of chapter 3).
_SPATIAL: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def spatial_layers(net: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Names of the modules whose output is a ``(B, K, h, w)`` map with ``h * w > 1``, in the order
    they finish in a forward pass of ``x[:1]`` (default: one 224 x 224 zero image); the model's
    state is unchanged (:func:`~deepinside.frozen`). Remembered per network, its modules (a module
    added, removed or replaced asks again) and the input's shape."""
    if x is None:
        p = next(net.parameters(), None)
        x = torch.zeros(1, 3, 224, 224, device=p.device if p is not None else "cpu")
    key = (tuple((name, id(m)) for name, m in net.named_modules()), tuple(x.shape[1:]))
    try:
        memo = _SPATIAL.setdefault(net, {})
    except TypeError:              # a network that cannot be weakly referenced: no memo
        memo = {}
    if key not in memo:
        if len(memo) >= 256:       # bounded: images of many shapes
            memo.clear()
        memo[key] = _spatial_layers(net, x)
    return list(memo[key])


def _spatial_layers(net: nn.Module, x: torch.Tensor) -> list[str]:
    from .models import frozen

    order: list[str] = []

    def make(name: str):
        def hook(_m: nn.Module, _a: tuple, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                order.append(name)
        return hook

    with forward_hooks((m, make(name)) for name, m in net.named_modules() if name), \
            frozen(net), torch.no_grad():
        net(x[:1])
    return list(dict.fromkeys(order))


def activations(clf: Any, images: Any, layer: str, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """The feature maps of ``layer`` for some images (PIL images or a network-input tensor):
    ``(N, K, h, w)`` float32 on the CPU; each pass stops at ``layer``, the model is left as found."""
    from .inputs import as_batch, check_int
    from .models import frozen

    net = net_of(clf)
    module = resolve_layer(net, layer)
    batch_size = check_int("batch_size", batch_size)
    x = as_batch(clf, images, "activations").to(device_of(clf))
    outs = []
    with frozen(net), torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(forward_to(net, x[i:i + batch_size], {layer: module})[layer].float().cpu())
    return torch.cat(outs).clone()
