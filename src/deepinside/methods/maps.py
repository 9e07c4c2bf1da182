"""One registry of saliency methods by name: the paper's map and what came after.

Every method answers the same question (which input pixels matter for the score :math:`S_c` of
class :math:`c`?) with the same signature, so that one name works everywhere (localisation,
evaluation, the metrics of chapter 6, the command line, the explorer)::

    maps = compute_maps(clf, images, targets, method="gradient", **options)   # (N, H, W) >= 0

**The frame.** Maps live on the network-input grid of the centre crop: ``images`` are PIL images
(cropped and resized by ``clf.preprocess``: :meth:`Classifier.center_crop_box` of the original
image, resized to ``input_size``) or an already normalised ``(N, 3, H, W)`` tensor, and pixel
``(i, j)`` of a map is pixel ``(i, j)`` of that input. :func:`deepinside.frames.map_to_image`
(``crops="center"``) puts a map back on the original image's pixels.

Registered methods:

- ``"gradient"``: Simonyan et al. (2014), Sect. 3.1, eq. 4:
  :math:`M_{ij} = \\max_c |w_{h(i,j,c)}|`, :math:`w = \\partial S_c / \\partial I |_{I_0}`
  (:func:`deepinside.saliency`).
- ``"deconvnet"`` and ``"guided"``: the same pass with the rectifiers' backward rule of Sect. 4
  (Zeiler & Fergus 2014; Springenberg et al. 2015), :func:`deepinside.backward_rule`.
- ``"smoothgrad"``: Smilkov et al. (2017), eq. 3: :math:`\\hat M_c(x) = \\frac1n \\sum_{k=1}^n
  M_c(x + \\mathcal N(0, \\sigma^2))` with :math:`M_c = \\partial S_c / \\partial x`, reduced like
  eq. 4 (channel maximum of the magnitude).
- ``"cam"``: Zhou et al. (2016), Sect. 2: for a network ending in global average pooling of
  features :math:`f_k(x, y)` and a linear layer, :math:`M_c(x, y) = \\sum_k w^c_k f_k(x, y)` (so
  :math:`S_c = \\frac1Z \\sum_{x,y} M_c(x, y) + b_c`); exact for EfficientNet-Lite0; refused for
  other networks.
- ``"gradcam"``: Selvaraju et al. (2017), eqs. 1-2: :math:`\\alpha^c_k = \\frac1Z \\sum_{ij}
  \\partial y^c / \\partial A^k_{ij}`, :math:`L^c = \\mathrm{ReLU}(\\sum_k \\alpha^c_k A^k)` at any
  convolutional layer (by module name).
- ``"occlusion"``: Zeiler & Fergus (2014), Sect. 4.2: the drop of the class score when a grey
  square hides the pixel, averaged over the square's positions covering it (as Captum's
  ``Occlusion``); needs :func:`deepinside.occlusion`.

A new method is one function ``fn(clf, x, targets, **options) -> (B, H, W)`` and one call of
:func:`register_map`.

**Several methods at once.** ``compute_map_set(clf, images, targets, ["gradient", "cam", ...])``
gives each method's maps for the same images and classes; the gradient, CAM, Grad-CAM and the
gated gradient (:data:`JOINT_MAPS`) come from one forward and one backward pass per batch
(:func:`joint_maps`: eq. 4's input gradient, Grad-CAM's layer gradient and CAM's pooled features
are all in that pass), about 2.5x faster than four calls of :func:`compute_maps` on a CPU.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Any, Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core.models import BATCH_SIZE
from .backprop import RULES, backward_rule, score_gradient
from ..core.frames import MAP_CROPS, check_crops, ten_crop_batch, ten_crop_boxes, ten_crop_coverage
from ..core.hooks import forward_hook
from ..core.layers import spatial_layers
from ..core.inputs import as_images, as_input, as_targets, check_bool, check_int, check_real
from ..core.models import Classifier, frozen

__all__ = ["compute_maps", "compute_map_set", "joint_maps", "JOINT_MAPS", "register_map", "map_names",
           "available_maps", "MapFunction", "cam_layers", "conv_layers", "signed_gradient"]


class MapFunction(Protocol):
    """A saliency method: ``fn(clf, x, targets, **options) -> (B, H, W)`` float tensor.

    ``x`` is a normalised ``(B, 3, H, W)`` batch on ``clf.device``, ``targets`` a ``(B,)`` long
    tensor of classes. The map is on the grid of ``x``; ``>= 0`` unless ``signed=True`` is among
    the options (methods that have a sign accept it; see :func:`compute_maps`).
    """

    def __call__(self, clf: Classifier, x: torch.Tensor, targets: torch.Tensor,
                 **options: Any) -> torch.Tensor: ...


_REGISTRY: dict[str, MapFunction] = {}
_REQUIRES: dict[str, Callable[[], bool]] = {}


def register_map(name: str, fn: MapFunction, *, replace: bool = False,
                 available: Callable[[], bool] | None = None) -> None:
    """Make ``fn`` usable everywhere under ``name`` (``compute_maps(..., method=name)``).

    Args:
        name: the method's name (a non-empty string).
        fn: ``fn(clf, x, targets, **options) -> (B, H, W)`` (see :class:`MapFunction`).
        replace: allow replacing an existing name (otherwise a ValueError).
        available: optional check run by :func:`available_maps` (e.g. an optional dependency).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a map name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"register_map({name!r}, ...): fn must be callable, got {type(fn).__name__}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"a map method named {name!r} is already registered (pass replace=True)")
    _REGISTRY[name] = fn
    if available is not None:
        _REQUIRES[name] = available
    else:
        _REQUIRES.pop(name, None)


def map_names() -> tuple[str, ...]:
    """Every registered method name, in registration order."""
    return tuple(_REGISTRY)


def available_maps() -> tuple[str, ...]:
    """The registered names whose optional dependencies are present (e.g. ``"occlusion"``)."""
    return tuple(n for n in _REGISTRY if _REQUIRES.get(n, lambda: True)())


# -- input handling ------------------------------------------------------------------------------


def _as_input(clf: Classifier, images: Any, where: str = "compute_maps") -> torch.Tensor:
    """PIL image(s) -> ``clf.preprocess``; a normalised ``(N, 3, H, W)`` tensor as is (cast to the
    network's dtype): :func:`deepinside.inputs.as_input`."""
    return as_input(clf, images, where)


def _as_targets(clf: Classifier, x: torch.Tensor, targets: Any, batch_size: int) -> torch.Tensor:
    """``targets`` -> ``(N,)`` long tensor; None = the top-1 class of each image."""
    tgt = as_targets(clf, targets, len(x))
    return clf.scores(x, batch_size=batch_size).argmax(1).to(clf.device) if tgt is None else tgt


def _unknown(method: object) -> ValueError:
    return ValueError(f"unknown map method {method!r}; known methods: {', '.join(map_names())} "
                      f"(add one with deepinside.register_map)")


def _check_options(method: str, fn: MapFunction, options: dict) -> None:
    params = inspect.signature(fn).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        accepted = _options_of(method)
        extra = sorted(set(options) - set(accepted))
        if extra:
            raise ValueError(f"map method {method!r} has no option(s) {extra}; its options: {accepted}")


# -- the one pipeline ------------------------------------------------------------------------------


def compute_maps(
    clf: Classifier,
    images: Image.Image | Sequence[Image.Image] | torch.Tensor,
    targets: int | str | Sequence[int | str] | torch.Tensor | None = None,
    method: str = "gradient",
    *,
    crops: str = "center",
    batch_size: int = BATCH_SIZE,
    return_targets: bool = False,
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Saliency maps of ``method`` for each image and its target class, batched: the one map
    pipeline of the package (:func:`deepinside.saliency` is this with the eq. 4 methods).

    Args:
        clf: the classifier; the maps are computed on ``clf.device``.
        images: PIL image(s), or (``crops="center"`` only) a normalised ``(N, 3, H, W)`` tensor
            used as is (not modified).
        targets: None = the top-1 class of each image (for ``crops="ten"``: of the scores
            averaged over the 10 crops, as in the paper's classification); one class (index,
            WordNet id, name) for all; or one class per image.
        method: a registered name (:func:`map_names`): ``"gradient"`` (eq. 4), ``"deconvnet"``,
            ``"guided"``, ``"smoothgrad"``, ``"cam"``, ``"gradcam"``, ``"occlusion"``, ...
        crops: the frame (:mod:`deepinside.frames`): ``"center"``, the network's centre crop,
            maps ``(N, input_size, input_size)`` (``(N, H, W)`` for a tensor); ``"ten"``, the
            paper's 10-crop average for any method (Sect. 3.1: "we computed 10 saliency maps on
            the 10 sub-images, and then averaged them"): each crop's map un-flipped, put back
            where the crop came from and averaged over the crops covering each pixel, maps
            ``(N, resize_size, resize_size)`` in the resized central square.
        batch_size: inputs (images or crops) per call of the method (bounds the memory); for
            ``crops="ten"`` chunks hold whole images (``10 * (batch_size // 10)`` crops).
        return_targets: also return the class of each map, ``(N,)`` long.
        **options: passed to the method (e.g. ``n``, ``sigma``, ``seed`` for SmoothGrad, ``layer``
            for Grad-CAM, ``window``, ``stride`` for occlusion). ``signed=True`` asks for the
            signed map where the method has a sign (the value whose magnitude ranks pixels:
            gradient-type maps keep the sign of the channel of largest magnitude; CAM/Grad-CAM
            skip the final ReLU; occlusion keeps score increases as negatives).

    Returns:
        ``(N, H, W)`` float tensor on ``clf.device``, detached; ``>= 0`` unless ``signed=True``
        (and ``(maps, classes)`` with ``return_targets``). The model's state (mode,
        ``requires_grad``, hooks, weights) is unchanged.

    Raises:
        ValueError: unknown method (the message lists the known ones), bad input or targets,
            a method that cannot apply to this network (e.g. CAM without global average pooling).
    """
    if not isinstance(method, str) or method not in _REGISTRY:
        raise _unknown(method)
    fn = _REGISTRY[method]
    _check_options(method, fn, options)
    signed = check_bool("signed", options.get("signed", False))
    maps, classes = map_pipeline(clf, images, targets, fn, crops=crops, batch_size=batch_size,
                                 options=options, name=method)
    if not signed and (maps < 0).any():
        raise ValueError(f"map method {method!r} returned negative values: a saliency map must be >= 0")
    return (maps, classes) if return_targets else maps


def map_pipeline(clf: Classifier, images: Any, targets: Any, fn: MapFunction, *, crops: str = "center",
                 batch_size: int = BATCH_SIZE, options: dict | None = None, name: str | None = None,
                 where: str = "compute_maps") -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline behind :func:`compute_maps` and :func:`deepinside.saliency`: inputs and targets
    coerced once, chunks of ``batch_size``, the 10-crop average, the model frozen once.

    ``fn`` need not be registered (``saliency(rule=None)`` runs eq. 4 under the rule in force).
    Eq. 4 maps (functions with a ``rule`` attribute) find the top-1 class in their own forward
    pass (:func:`deepinside.backprop.score_gradient`); other methods get it from one forward pass
    first. Returns ``(maps (N, H, W) float, classes (N,) long)`` on ``clf.device``.
    """
    options = dict(options or {})
    name = name or getattr(fn, "__name__", "map")
    check_crops(crops, MAP_CROPS)
    batch_size = check_int("batch_size", batch_size)
    ims = as_images(images, where)
    if ims is None:
        if crops != "center":
            raise ValueError("a preprocessed tensor has already been cropped: use crops='center' with "
                             "tensor input, or pass PIL images for crops='ten'")
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{where}() expects a PIL image, a list of PIL images or a normalised "
                            f"(N, 3, H, W) tensor, got {type(images).__name__}")
        ims = as_input(clf, images, where)
    n = len(ims)
    tgt = as_targets(clf, targets, n, "target" if where == "saliency" else "targets")
    rule = getattr(fn, "rule", _NO_RULE)
    in_pass = rule is not _NO_RULE and not options.get("signed", False)
    with frozen(clf.net):   # one freeze for the whole call: the top-1 targets included
        if crops == "center":
            maps, classes = _center(clf, ims, tgt, fn, batch_size, options, name, in_pass)
        else:
            maps, classes = _ten(clf, ims, tgt, fn, batch_size, options, name, in_pass)
    if rule in (None, "gradient") and not options.get("signed", False):
        _warn_if_zero(maps, ims, where)
    return maps.float(), classes


_NO_RULE = object()


def _call(clf: Classifier, fn: MapFunction, x: torch.Tensor, t: torch.Tensor | None, group: int,
          options: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: ``fn`` on ``x`` for classes ``t`` (None: eq. 4's own top-1 over groups of rows)."""
    if t is None:
        return eq4_maps(clf, x, None, getattr(fn, "rule"), group=group)
    m = fn(clf, x, t, **options)
    if not isinstance(m, torch.Tensor) or m.shape != (len(x), *x.shape[2:]):
        raise ValueError(f"map method {name!r} returned {getattr(m, 'shape', type(m))}, "
                         f"expected ({len(x)}, {x.shape[2]}, {x.shape[3]})")
    return m.detach(), t


def _center(clf, ims, tgt, fn, batch_size, options, name, in_pass):
    out, classes = [], []
    for i in range(0, len(ims), batch_size):
        part = ims[i:i + batch_size]
        x = part if isinstance(part, torch.Tensor) else clf.preprocess(part)
        t = None if tgt is None else tgt[i:i + batch_size]
        if t is None and not in_pass:
            t = clf.scores(x, batch_size=batch_size).argmax(1).to(clf.device)
        m, c = _call(clf, fn, x, t, 1, options, name)
        out.append(m)
        classes.append(c)
    return torch.cat(out), torch.cat(classes)


def _ten(clf, ims, tgt, fn, batch_size, options, name, in_pass):
    boxes = ten_crop_boxes(clf)
    k = len(boxes)
    s = clf.resize_size
    cover = ten_crop_coverage(clf, clf.device)
    n = len(ims)
    per = max(1, batch_size // k)  # whole images per chunk
    # when the passes cannot give every crop of an image to one eq. 4 pass, the chunk's crops
    # are classified first (the mean of the 10 crops' scores), on the crops built once
    classify = tgt is None and (batch_size < k or not in_pass)
    out = torch.zeros(n, s, s, device=clf.device)
    classes = []
    for i in range(0, n, per):
        crops = ten_crop_batch(clf, ims[i:i + per])
        if classify:
            top = clf.scores(crops, batch_size=batch_size).view(-1, k, len(clf.class_names))
            t = top.mean(1).argmax(1).to(clf.device).repeat_interleave(k)
        else:
            t = None if tgt is None else tgt[i:i + per].repeat_interleave(k)
        parts = [_call(clf, fn, crops[j:j + batch_size], None if t is None else t[j:j + batch_size], k,
                       options, name) for j in range(0, len(crops), batch_size)]
        maps = torch.cat([p[0] for p in parts])
        classes.append(torch.cat([p[1] for p in parts])[::k])
        for r, m in enumerate(maps):
            x0, y0, x1, y1, fl = boxes[r % k]
            out[i + r // k, y0:y1, x0:x1] += m.flip(-1) if fl else m
    return out / cover, torch.cat(classes)


def _warn_if_zero(maps: torch.Tensor, imgs: Any, where: str) -> None:
    """A map that is exactly zero everywhere means the class score does not depend on the input
    (EfficientNet-Lite0 on a tensor of 8 x 8 pixels or less, a dead network): say so, naming the
    image, instead of returning a blank map without a word (issue 24)."""
    zero = (maps.flatten(1).amax(1) == 0).nonzero().flatten().tolist()
    if zero:
        size = f" of {imgs.shape[2]}x{imgs.shape[3]} pixels" if isinstance(imgs, torch.Tensor) else ""
        warnings.warn(f"{where}: the map of image {zero[0]}{size} is exactly zero ({len(zero)} of "
                      f"{len(maps)} images): the class score does not depend on the input there "
                      f"(an input too small for the network?)", RuntimeWarning, stacklevel=4)


# -- gradient-type maps (Sect. 3.1, eq. 4; Sect. 4) ------------------------------------------------


def eq4_maps(clf: Classifier, x: torch.Tensor, targets: torch.Tensor | None, rule: str | None,
             group: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Sect. 3.1: :math:`M_{ij} = \\max_c |w_{h(i,j,c)}|` with :math:`w` of eq. 4
    (:func:`deepinside.backprop.score_gradient`) under the backward ``rule`` of Sect. 4 (None: the
    rule of the :func:`backward_rule` block open in this thread, else the gradient). ``targets``
    None: the top-1 class of the scores averaged over groups of ``group`` rows, in the same pass.
    Returns ``M`` ``(B, H, W)`` and the classes used ``(B,)``."""
    block = contextlib.nullcontext() if rule is None else backward_rule(clf.net, rule)
    with block:
        w, classes = score_gradient(clf.net, x, targets, group=group)
    return w.abs_().amax(dim=1), classes  # w is ours: abs in place saves a copy


def signed_gradient(clf: Classifier, x: torch.Tensor, targets: torch.Tensor,
                    rule: str = "gradient", folded: bool = False) -> torch.Tensor:
    """Eq. 4, :math:`w = \\partial S_c / \\partial I |_{I_0}`, signed, ``(B, 3, H, W)``, under the
    backward ``rule`` of Sect. 4 (one forward and one backward pass for the whole batch);
    ``folded``: through the BatchNorm-folded twin (:func:`deepinside.backprop.score_gradient`)."""
    with frozen(clf.net), backward_rule(clf.net, rule):
        w, _ = score_gradient(clf.net, x, targets, folded=folded)  # the package's one eq. 4
    return w


def _reduce(w: torch.Tensor, signed: bool) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, H, W)``: :math:`\\max_c |w_c|` (Sect. 3.1); with ``signed``, the
    value of the channel of largest magnitude (its absolute value is the unsigned map)."""
    if not signed:
        return w.abs().amax(1)
    idx = w.abs().argmax(1, keepdim=True)
    return w.gather(1, idx)[:, 0]


def rule_map(rule: str | None) -> MapFunction:
    """The eq. 4 map under the backward ``rule`` of Sect. 4 as a map method (None: the rule in
    force in this thread); its ``rule`` attribute lets the pipeline find the top-1 class in the
    same pass."""
    def fn(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, *, signed: bool = False) -> torch.Tensor:
        if signed:
            return _reduce(signed_gradient(clf, x, targets, rule or "gradient"), True)
        return eq4_maps(clf, x, targets, rule)[0]

    fn.rule = rule  # type: ignore[attr-defined]
    fn.__name__ = f"{rule or 'in_force'}_map"
    fn.__doc__ = (f"Sect. 3.1 eq. 4 map :math:`\\max_c |w|` with the ``{rule!r}`` backward rule of "
                  f"Sect. 4; ``(B, H, W)``.")
    return fn


def smoothgrad(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, *, n: int = 50,
               sigma: float = 0.15, seed: int = 0, rule: str = "gradient",
               signed: bool = False) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017, eq. 3): :math:`\\hat M_c(x) = \\frac1n \\sum_{k=1}^n
    M_c(x + \\mathcal N(0, \\sigma^2))`, the signed gradient averaged over ``n`` noisy copies, then
    reduced like eq. 4 (channel maximum of the magnitude).

    Args:
        x: ``(B, 3, H, W)`` normalised input; targets ``(B,)``.
        n: noisy samples per image (the paper's default 50).
        sigma: noise level as a fraction of each image's input range :math:`x_{max} - x_{min}`
            (the paper recommends 10-20 %).
        seed: the noise comes from a CPU generator seeded with it (same noise for the same call).
        rule: backward rule of the gradient (Sect. 4).

    Returns:
        ``(B, H, W)``.

    With the true rule the noisy gradients are taken through the network's BatchNorm-folded
    twin (``score_gradient(..., folded=True)``): 0.9 of the time, and float rounding (about 1 %
    of a map's maximum at a few pixels) far below the differences the noise makes (issue 21).
    """
    n = check_int("smoothgrad: n", n, 1, 100_000)
    sigma = check_real("smoothgrad: sigma", sigma, 0.0, 100.0)
    seed = check_int("smoothgrad: seed", seed, 0, 2 ** 63 - 1)
    gen = torch.Generator().manual_seed(seed)
    flat = x.detach().flatten(1)
    scale = (sigma * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1)
    total = torch.zeros_like(x)
    for _ in range(n):
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        total += signed_gradient(clf, x + noise * scale, targets, rule, folded=True)
    return _reduce(total / n, signed)


# -- CAM and Grad-CAM --------------------------------------------------------------------------------


def _is_global_avg_pool(m: nn.Module) -> bool:
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size
        return size == 1 if isinstance(size, int) else tuple(size) == (1, 1)
    return getattr(m, "pool_type", None) == "avg" and hasattr(m, "flatten")  # timm SelectAdaptivePool2d


def cam_layers(net: nn.Module) -> tuple[str, nn.Linear]:
    """The global-average-pooling module's name and the final linear layer of a CAM network.

    Zhou et al. (2016) need a network whose scores are :math:`S_c = \\sum_k w^c_k F_k + b_c`
    with :math:`F_k = \\frac1Z \\sum_{x,y} f_k(x, y)`: the last module that averages over all
    positions and the last ``nn.Linear``. (Whether the scores really are that composition is
    checked numerically on each call of the CAM map.)

    Raises:
        ValueError: no global average pooling or no final linear layer.
    """
    pools = [n for n, m in net.named_modules() if _is_global_avg_pool(m)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not pools or not linears:
        raise ValueError("CAM (Zhou et al. 2016) needs a network that ends in global average pooling "
                         "followed by one linear layer; this network has "
                         f"{'no global average pooling' if not pools else 'no linear layer'}. "
                         "Use method='gradcam' (any convolutional layer) instead.")
    return pools[-1], linears[-1]


def _pool_features(clf: Classifier, x: torch.Tensor, pool: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass keeping the input of the pooling module: ``(features (B,K,h,w), scores (B,C))``."""
    store: dict[str, torch.Tensor] = {}
    module = clf.net.get_submodule(pool)

    def hook(_m: nn.Module, args: tuple) -> None:
        store["f"] = args[0]

    with forward_hook(module, hook, pre=True):
        scores = clf.net(x)
    if "f" not in store or store["f"].ndim != 4:
        raise ValueError(f"CAM: the pooling module {pool!r} did not receive (B, K, h, w) features")
    return store["f"], scores


def cam(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, *, signed: bool = False) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016, Sect. 2): :math:`M_c(x, y) = \\sum_k w^c_k f_k(x, y)`.

    :math:`f_k` are the features entering the global average pooling, :math:`w^c` the row of the
    final linear layer for class :math:`c`; then :math:`S_c = \\mathrm{mean}_{x,y} M_c + b_c`,
    which is checked (relative error 1e-3) so that a network for which CAM is not exact is
    refused. The coarse ``(h, w)`` map is rectified (as Grad-CAM's ReLU; skipped when ``signed``)
    and resized to the input grid bilinearly (``align_corners=False``). ``(B, H, W)``.
    """
    pool, linear = cam_layers(clf.net)
    with frozen(clf.net), torch.no_grad():
        feats, scores = _pool_features(clf, x, pool)
        m = _cam_sum(feats, scores, linear, targets)
    return _upsample(m, x, signed)


def _cam_sum(feats: torch.Tensor, scores: torch.Tensor, linear: nn.Linear, targets: torch.Tensor
             ) -> torch.Tensor:
    """:math:`\\sum_k w^c_k f_k(x, y)` ``(B, h, w)`` from the pooled module's input ``feats``
    ``(B, K, h, w)``, after checking that the scores ``(B, C)`` are the linear layer of their mean."""
    with torch.no_grad():
        feats, scores = feats.detach(), scores.detach()
        if feats.shape[1] != linear.in_features:
            raise ValueError(f"CAM: the pooled features have {feats.shape[1]} channels but the final "
                             f"linear layer takes {linear.in_features}: the network does not end in global "
                             f"average pooling + one linear layer. Use method='gradcam'.")
        pred = feats.mean((2, 3)) @ linear.weight.T + (0 if linear.bias is None else linear.bias)
        err = (pred - scores).abs().max() / scores.abs().max().clamp_min(1e-12)
        if err > 1e-3:
            raise ValueError("CAM (Zhou et al. 2016) is exact only for networks whose scores are a linear "
                             "layer applied to globally average-pooled features; this network's scores "
                             f"differ from that by {float(err):.2g} (relative). Use method='gradcam'.")
        return torch.einsum("bkhw,bk->bhw", feats, linear.weight[targets])


def _upsample(m: torch.Tensor, x: torch.Tensor, signed: bool) -> torch.Tensor:
    if not signed:
        m = m.relu()
    return F.interpolate(m[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def conv_layers(net: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Names of the modules with a spatial output, in forward order (:func:`deepinside.layers.
    spatial_layers`). The last one is Grad-CAM's default layer."""
    return spatial_layers(net, x)


def gradcam(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, *, layer: str | None = None,
            signed: bool = False) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eqs. 1-2) at the module named ``layer``.

    :math:`\\alpha^c_k = \\frac1Z \\sum_{i,j} \\partial y^c / \\partial A^k_{ij}` (eq. 1, :math:`y^c`
    the class score before the softmax), :math:`L^c = \\mathrm{ReLU}(\\sum_k \\alpha^c_k A^k)`
    (eq. 2; no ReLU when ``signed``), resized bilinearly to the input grid. ``layer`` None: the
    last module with a spatial output (:func:`conv_layers`); at the features of a global-average-
    pooling network it equals CAM divided by :math:`Z = h w`. ``(B, H, W)``.
    """
    m, _ = _gradcam_pass(clf, x, targets, layer, "gradcam", input_grad=False)
    return _upsample(m, x, signed)


def _gradcam_pass(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, layer: str | None,
                  who: str, input_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward and one backward pass of the class scores ``targets`` ``(B,)``: the Grad-CAM
    sum :math:`\\sum_k \\alpha^c_k A^k` at ``layer`` ``(B, h, w)`` (before ReLU and resizing) and,
    when ``input_grad``, :math:`\\partial S_c / \\partial I` ``(B, C, H, W)`` from the same pass.
    ``who`` names the caller in errors."""
    p = _shared_pass(clf, x, targets, who, layer=layer, input_grad=input_grad)
    return p["gradcam"], p.get("input_grad")


def _grad_layer(clf: Classifier, x: torch.Tensor, layer: str | None, who: str) -> str:
    """Grad-CAM's layer: ``layer`` checked, or the last module with a spatial output."""
    names = dict(clf.net.named_modules())
    if layer is None:
        spatial = conv_layers(clf.net, x)
        if not spatial:
            raise ValueError(f"no module of the network has a spatial output larger than 1x1 on "
                             f"this {x.shape[2]}x{x.shape[3]} input: it is too small for Grad-CAM "
                             f"(give a larger input or layer=)")
        layer = spatial[-1]
    if not isinstance(layer, str) or layer not in names or not layer:
        convs = conv_layers(clf.net, x)
        raise ValueError(f"{who}: unknown layer {layer!r}; layers with spatial outputs: "
                         f"{', '.join(convs[-8:])} (last 8 of {len(convs)})")
    return layer


def _shared_pass(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, who: str, *,
                 layer: str | None = None, input_grad: bool = False, pool: str | None = None,
                 gradcam: bool = True) -> dict[str, torch.Tensor]:
    """One forward and one backward pass of :math:`\\sum_n S_{c_n}(x_n)` that serves several maps.

    Returns a dict with ``"gradcam"`` (when ``gradcam``): the Grad-CAM sum :math:`\\sum_k
    \\alpha^c_k A^k` at ``layer`` ``(B, h, w)`` (eqs. 1-2 before ReLU and resizing);
    ``"input_grad"`` (when ``input_grad``): eq. 4's :math:`\\partial S_c / \\partial I`
    ``(B, C, H, W)``; ``"features"`` and ``"scores"`` (when ``pool`` names the global-average-pooling
    module): the pooled module's input ``(B, K, h, w)`` and the scores ``(B, C)``, for CAM. The
    hooks are removed in ``finally`` (context managers); the model is frozen for the pass. On the
    CPU the input goes channels-last, as in :func:`deepinside.backprop.score_gradient`.
    """
    store: dict[str, torch.Tensor] = {}
    hooks = []
    if gradcam:
        layer = _grad_layer(clf, x, layer, who)

        def hook(_m: nn.Module, _a: tuple, out: Any) -> torch.Tensor:
            if not isinstance(out, torch.Tensor) or out.ndim != 4:
                raise ValueError(f"{who}: layer {layer!r} outputs {getattr(out, 'shape', type(out))}, "
                                 f"not a (B, K, h, w) map")
            store["a"] = out
            return out.clone()  # later in-place operations change the copy, not A

        hooks.append(forward_hook(clf.net.get_submodule(layer), hook))
    if pool is not None:
        def pre(_m: nn.Module, args: tuple) -> None:
            store["f"] = args[0]

        hooks.append(forward_hook(clf.net.get_submodule(pool), pre, pre=True))
    xg = x.detach().clone()
    if xg.device.type == "cpu" and xg.ndim == 4:
        xg = xg.contiguous(memory_format=torch.channels_last)   # 1.3x faster on CPU, same math
    with frozen(clf.net), torch.enable_grad():
        with contextlib.ExitStack() as stack:
            for h in hooks:
                stack.enter_context(h)
            xg.requires_grad_(input_grad or gradcam)
            scores = clf.net(xg)
        wrt = ([xg] if input_grad else []) + ([store["a"]] if gradcam else [])
        grads = torch.autograd.grad(scores.gather(1, targets[:, None]).sum(), wrt) if wrt else ()
    out: dict[str, torch.Tensor] = {}
    if input_grad:
        out["input_grad"] = grads[0].detach()
    if gradcam:
        g = grads[-1]
        out["gradcam"] = torch.einsum("bkhw,bk->bhw", store["a"].detach(), g.mean((2, 3)))
    if pool is not None:
        if "f" not in store or store["f"].ndim != 4:
            raise ValueError(f"CAM: the pooling module {pool!r} did not receive (B, K, h, w) features")
        out["features"], out["scores"] = store["f"].detach(), scores.detach()
    return out


def gradient_gradcam(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, *,
                     layer: str | None = None) -> torch.Tensor:
    """The eq. 4 gradient map gated by Grad-CAM: :math:`M_{ij} \\cdot L^c_{ij}`, ``(B, H, W)``.

    :math:`M = \\max_c |\\partial S_c / \\partial I|` (Simonyan et al. 2014, Sect. 3.1) says
    which pixels change the score, at pixel resolution but everywhere the image has edges;
    :math:`L^c` (:func:`gradcam`, at ``layer``; for a global-average-pooling network the CAM of
    Zhou et al. 2016 up to a constant) says where the class's evidence is, at the resolution of
    the last feature map. Their product keeps the fine map inside the evidence region, as Guided
    Grad-CAM (Selvaraju et al. 2017, Sect. 3) does with guided backpropagation. Both factors
    come from one forward and one backward pass. The localisation seeds of chapter 3 are taken
    on this map.
    """
    m, w = _gradcam_pass(clf, x, targets, layer, "gradient_gradcam", input_grad=True)
    return _reduce(w, False) * _upsample(m, x, False)


#: Methods that one forward and one backward pass serve together (:func:`compute_map_set`): eq. 4's
#: gradient (Sect. 3.1), CAM, Grad-CAM at the last spatial layer and the gated gradient.
JOINT_MAPS = ("gradient", "cam", "gradcam", "gradient_gradcam")


def joint_maps(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, methods: Sequence[str]
               ) -> dict[str, torch.Tensor]:
    """Several maps of :data:`JOINT_MAPS` (default options) from one forward and one backward pass.

    Eq. 4 needs :math:`\\partial S_c / \\partial I`; Grad-CAM (eq. 1) needs
    :math:`\\partial S_c / \\partial A` at the last spatial layer, which the same backward pass
    goes through; CAM needs the features entering the global average pooling, which the same
    forward pass computes. Each map equals that of its own method (:func:`rule_map` ``"gradient"``,
    :func:`cam`, :func:`gradcam`, :func:`gradient_gradcam`) up to float rounding.

    Args:
        x: ``(B, 3, H, W)`` normalised input on ``clf.device``; targets ``(B,)`` long.
        methods: names among :data:`JOINT_MAPS`.

    Returns:
        name -> ``(B, H, W)`` map (``>= 0``), detached.
    """
    want = list(dict.fromkeys(methods))
    bad = [m for m in want if m not in JOINT_MAPS]
    if bad or not want:
        raise ValueError(f"joint_maps: {bad or 'no methods'}: the methods must be among {JOINT_MAPS}")
    pool = linear = None
    if "cam" in want:
        pool, linear = cam_layers(clf.net)
    p = _shared_pass(clf, x, targets, "joint_maps", pool=pool,
                     input_grad=bool({"gradient", "gradient_gradcam"} & set(want)),
                     gradcam=bool({"gradcam", "gradient_gradcam"} & set(want)))
    out: dict[str, torch.Tensor] = {}
    for m in want:
        if m == "gradient":
            out[m] = _reduce(p["input_grad"], False)
        elif m == "gradcam":
            out[m] = _upsample(p["gradcam"], x, False)
        elif m == "gradient_gradcam":
            out[m] = _reduce(p["input_grad"], False) * _upsample(p["gradcam"], x, False)
        else:
            out[m] = _upsample(_cam_sum(p["features"], p["scores"], linear, targets), x, False)
    return out


def compute_map_set(
    clf: Classifier,
    images: Image.Image | Sequence[Image.Image] | torch.Tensor,
    targets: int | str | Sequence[int | str] | torch.Tensor | None,
    methods: Sequence[str],
    *,
    batch_size: int = BATCH_SIZE,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`compute_maps` of several methods on the same images and classes (centre crop or a
    normalised tensor), sharing passes where the methods can: the methods of :data:`JOINT_MAPS`
    without options (and not replaced in the registry) come from one forward and one backward
    pass per chunk (:func:`joint_maps`); every other method is computed on its own.

    Args:
        images, targets, batch_size: as :func:`compute_maps` (``crops="center"``).
        methods: registered names; ``options``: method -> its options.

    Returns:
        method -> ``(N, H, W)`` float map on ``clf.device``, in the order of ``methods``.
    """
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if not isinstance(m, str) or m not in _REGISTRY:
            raise _unknown(m)
    options = {m: dict(o) for m, o in (options or {}).items()}
    joint = [m for m in methods if m in JOINT_MAPS and not options.get(m)
             and _REGISTRY[m] is _BUILTIN.get(m)]
    joint = joint if len(joint) > 1 else []
    out = {m: compute_maps(clf, images, targets, m, batch_size=batch_size, **options.get(m, {}))
           for m in methods if m not in joint}
    if joint:
        batch_size = check_int("batch_size", batch_size)
        ims = as_images(images, "compute_map_set")
        if ims is None:
            if not isinstance(images, torch.Tensor):
                raise TypeError("compute_map_set() expects a PIL image, a list of PIL images or a "
                                f"normalised (N, 3, H, W) tensor, got {type(images).__name__}")
            ims = as_input(clf, images, "compute_map_set")
        tgt = as_targets(clf, targets, len(ims), "targets")
        parts: dict[str, list[torch.Tensor]] = {m: [] for m in joint}
        with frozen(clf.net):
            for i in range(0, len(ims), batch_size):
                part = ims[i:i + batch_size]
                x = part if isinstance(part, torch.Tensor) else clf.preprocess(part)
                t = tgt[i:i + batch_size] if tgt is not None else \
                    clf.scores(x, batch_size=batch_size).argmax(1).to(clf.device)
                for m, v in joint_maps(clf, x, t, joint).items():
                    parts[m].append(v.detach())
        out |= {m: torch.cat(v).float() for m, v in parts.items()}
    return {m: out[m] for m in methods}


# -- occlusion (Zeiler & Fergus 2014, Sect. 4.2) ---------------------------------------------------


def _occlusion_function() -> Callable[..., Any] | None:
    """:func:`deepinside.occlusion.occlusion` (imported on first use: occlusion is a method of
    its own module; tests replace this function to register a stand-in)."""
    from .occlusion import occlusion

    return occlusion


def _coverage(n_pos: int, size: int, window: int, stride: int, device: torch.device) -> torch.Tensor:
    """``(n_pos, size)`` indicator: does the window at position ``k`` (start ``k * stride``, clipped
    to the image as Captum does) cover pixel ``i``?"""
    i = torch.arange(size, device=device)
    start = torch.arange(n_pos, device=device)[:, None] * stride
    return ((i >= start) & (i < start + window)).float()


def occlusion_map(clf: Classifier, x: torch.Tensor, targets: torch.Tensor, *, window: int | None = None,
                  stride: int | None = None, signed: bool = False,
                  **occlusion_options: Any) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014, Sect. 4.2, Fig. 7) as a per-pixel map.

    :func:`deepinside.occlusion` gives the class score :math:`S_c` with the grey square at each
    of ``(Py, Px)`` positions (top-left corners ``k * stride``, clipped at the border as Captum's
    ``Occlusion``); the map at a pixel is the score drop :math:`S_c(x) - S_c(x_{occ})` averaged
    over the square positions that cover it (Captum's ``Occlusion`` attribution), rectified
    unless ``signed``. ``window``/``stride`` in input pixels (None: that function's defaults);
    other options (``fill``, ...) are passed on. ``(B, H, W)``.
    """
    occlusion = _occlusion_function()
    if occlusion is None:
        raise ValueError("map method 'occlusion' needs deepinside.occlusion (the Zeiler & Fergus "
                         "occlusion experiment), which this installation does not have")
    kw = {k: v for k, v in (("window", window), ("stride", stride)) if v is not None}
    if "show_progress" in inspect.signature(occlusion).parameters:
        kw["show_progress"] = False
    res = occlusion(clf, x, targets, **kw, **occlusion_options)
    occ = torch.as_tensor(res.score, dtype=torch.float32).to(x.device)
    if occ.ndim != 3 or occ.shape[0] != len(x):
        raise ValueError(f"occlusion returned scores of shape {tuple(occ.shape)}, expected (B, Py, Px)")
    win = tuple(getattr(res, "window", None) or (window, window))
    step = tuple(getattr(res, "stride", None) or (stride, stride))
    base = getattr(res, "base_score", None)
    if base is None:
        base = clf.scores(x).gather(1, targets[:, None])[:, 0]
    drop = torch.as_tensor(base, dtype=torch.float32).to(x.device)[:, None, None] - occ
    h, w = x.shape[2:]
    cy = _coverage(occ.shape[1], h, int(win[0]), int(step[0]), x.device)
    cx = _coverage(occ.shape[2], w, int(win[1]), int(step[1]), x.device)
    total = torch.einsum("pi,bpq,qj->bij", cy, drop, cx)
    count = torch.einsum("pi,qj->ij", cy, cx)
    m = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    return m if signed else m.relu()


for _rule in RULES:
    register_map(_rule, rule_map(_rule))
register_map("smoothgrad", smoothgrad)
register_map("cam", cam)
register_map("gradcam", gradcam)
register_map("gradient_gradcam", gradient_gradcam)
register_map("occlusion", occlusion_map, available=lambda: _occlusion_function() is not None)
del _rule
_BUILTIN: dict[str, MapFunction] = dict(_REGISTRY)   # what JOINT_MAPS means (a replaced one is not joint)


def _options_of(method: str) -> list[str]:
    """Keyword options a registered method accepts (for error messages and the explorer)."""
    sig = inspect.signature(_REGISTRY[method])
    return [p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY]
