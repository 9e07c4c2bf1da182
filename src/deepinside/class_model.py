"""Class model visualisation (Simonyan et al. 2014, Sect. 2, eq. 1, Fig. 1).

    "let S_c(I) be the score of the class c, computed by the classification layer of the ConvNet
    for an image I. We would like to find an L2-regularised image, such that the score S_c is high:

        arg max_I  S_c(I) - lambda ||I||_2^2,                                        (1)

    where lambda is the regularisation parameter. A locally-optimal I can be found by the
    back-propagation method. [...] We initialised the optimisation with the zero image (in our
    case, the ConvNet was trained on the zero-centred image data), and then added the training set
    mean image to the result."

:func:`class_model` solves eq. 1 for K classes at once: the K images form one batch and each
ascends its own class score, so one forward and one backward pass of
``sum_k S_{c_k}(I_k) - lambda_k ||I_k||^2`` update all of them (the images do not interact: the
network is in eval mode, so batch normalisation uses its running statistics).

The paper does not name its optimiser. We use gradient ascent with heavy-ball momentum (the
update rule the same authors trained their ConvNet with), on the network's own input space (zero
mean), and by default keep every pixel inside the range a real image can take (projected gradient
ascent, ``clip=True``); both choices are measured in the book's chapter 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ._progress import progress
from .models import Classifier, frozen

__all__ = ["class_model", "ClassModelResult", "OBJECTIVES", "OPTIMIZERS", "recognised", "sweep"]

#: What is maximised: the unnormalised class score S_c (the paper) or the log-posterior log P_c.
OBJECTIVES = ("score", "posterior")
#: Update rules: gradient ascent with heavy-ball momentum, or Adam (Kingma & Ba 2015).
OPTIMIZERS = ("momentum", "adam")


@dataclass
class ClassModelResult:
    """The class models of :func:`class_model` and how they were obtained.

    Attributes:
        images: ``(K, 3, H, W)`` RGB in [0, 1]: the optimised inputs with the mean added back
            (``clf.denormalize``), what Fig. 1 shows.
        inputs: ``(K, 3, H, W)``: the optimised network inputs ``I`` of eq. 1 (zero-centred space).
        scores: ``(steps + 1, K)``: ``S_{c_k}(I_k)`` after ``t = 0 .. steps`` updates (row 0 is the
            initial image, the last row the result).
        posteriors: ``(steps + 1, K)``: the soft-max posterior ``P_{c_k}(I_k)`` likewise.
        others_mean, others_max: ``(steps + 1, K)``: mean and maximum of the other 999 class scores
            ``S_{c'}(I_k)``, ``c' != c_k`` (how the objective treats the competing classes).
        norms: ``(steps + 1, K)``: ``||I_k||_2`` in the network input space.
        classes: the K class indices; ``class_names`` their names.
        steps, lr, l2, objective, optimizer, momentum, clip, init, seed: the settings used
            (``l2`` is a ``(K,)`` tensor: one lambda per image).
    """

    images: torch.Tensor
    inputs: torch.Tensor
    scores: torch.Tensor
    posteriors: torch.Tensor
    others_mean: torch.Tensor
    others_max: torch.Tensor
    norms: torch.Tensor
    classes: list[int]
    class_names: list[str]
    steps: int
    lr: float
    l2: torch.Tensor
    objective: str
    optimizer: str
    momentum: float
    clip: bool
    init: str
    seed: int
    settings: dict = field(default_factory=dict, repr=False)

    @property
    def final_scores(self) -> torch.Tensor:
        """``(K,)`` class scores ``S_{c_k}`` of the result ``inputs``."""
        return self.scores[-1]

    @property
    def final_posteriors(self) -> torch.Tensor:
        """``(K,)`` posteriors ``P_{c_k}`` of the result ``inputs``."""
        return self.posteriors[-1]

    def __len__(self) -> int:
        return len(self.classes)


def _resolve_classes(clf: Classifier, classes: int | str | Sequence[int | str]) -> list[int]:
    if isinstance(classes, (str, int, np.integer)) and not isinstance(classes, (bool, np.bool_)):
        classes = [classes]
    if isinstance(classes, torch.Tensor):
        if classes.ndim > 1 or classes.is_floating_point():
            raise ValueError(f"classes as a tensor must be 1-D integer, got {classes.dtype} of shape {tuple(classes.shape)}")
        classes = classes.reshape(-1).tolist()
    try:
        classes = list(classes)
    except TypeError:
        raise TypeError(f"classes must be a class (index, WordNet id or name) or a list of them, "
                        f"not {type(classes).__name__}") from None
    if not classes:
        raise ValueError("class_model() got an empty list of classes")
    out = []
    for c in classes:
        try:
            out.append(clf.class_index(c))
        except (ValueError, TypeError) as e:
            raise type(e)(f"class_model(): bad class {c!r}: {e}") from None
    return out


def _l2_vector(l2: float | Sequence[float] | torch.Tensor, k: int, device: torch.device) -> torch.Tensor:
    lam = torch.as_tensor(l2, dtype=torch.float32).reshape(-1).cpu()
    if lam.numel() == 1:
        lam = lam.expand(k).clone()
    if lam.numel() != k:
        raise ValueError(f"l2 has {lam.numel()} values but there are {k} classes: give one lambda or one per class")
    if not torch.isfinite(lam).all() or (lam < 0).any():
        raise ValueError(f"l2 (lambda of eq. 1) must be finite and >= 0, got {lam.tolist()}")
    return lam.to(device)


def _initial_inputs(clf: Classifier, init: str | Image.Image | torch.Tensor, k: int, size: int,
                    seed: int) -> tuple[torch.Tensor, str]:
    """``(K, 3, size, size)`` network inputs to start from, and a short description of them."""
    shape = (k, 3, size, size)
    if isinstance(init, str):
        if init == "zero":
            return torch.zeros(shape, device=clf.device), "zero"
        if init == "random":
            g = torch.Generator().manual_seed(int(seed))
            return clf.normalize(torch.rand(shape, generator=g)), f"random(seed={seed})"
        raise ValueError(f"init must be 'zero', 'random', a PIL image or an image tensor in [0, 1], got {init!r}")
    if isinstance(init, Image.Image):
        x = clf.preprocess([init]).expand(shape).clone()
        return x, "image"
    if isinstance(init, torch.Tensor):
        x = init.detach().float()
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] not in (1, k) or tuple(x.shape[2:]) != (size, size):
            raise ValueError(f"init tensor must be an RGB image in [0, 1] of shape (3, {size}, {size}), "
                             f"(1, 3, {size}, {size}) or ({k}, 3, {size}, {size}); got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("init tensor has NaN or infinite values")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"init tensor must be an RGB image in [0, 1] (it is normalised with clf.normalize); "
                             f"got values in [{x.min().item():.3g}, {x.max().item():.3g}]")
        return clf.normalize(x.to(clf.device)).expand(shape).clone(), "image"
    raise TypeError(f"init must be 'zero', 'random', a PIL image or a tensor, not {type(init).__name__}")


def _spectral_filter(g: torch.Tensor, alpha: float) -> torch.Tensor:
    """Filter ``(K, 3, H, W)`` by the frequency response ``1 / max(|f|, 1)^alpha`` (f in cycles per image)."""
    h, w = g.shape[-2:]
    fy = torch.fft.fftfreq(h, device=g.device).abs()[:, None] * h
    fx = torch.fft.rfftfreq(w, device=g.device)[None, :] * w
    resp = (fx.pow(2) + fy.pow(2)).sqrt().clamp(min=1.0).pow(-alpha)
    return torch.fft.irfft2(torch.fft.rfft2(g) * resp, s=(h, w))


def class_model(
    clf: Classifier,
    classes: int | str | Sequence[int | str],
    steps: int = 100,
    lr: float = 1.0,
    l2: float | Sequence[float] | torch.Tensor = 1e-3,
    objective: str = "score",
    init: str | Image.Image | torch.Tensor = "zero",
    seed: int = 0,
    optimizer: str = "momentum",
    momentum: float = 0.9,
    clip: bool = True,
    size: int | None = None,
    precondition: float = 0.0,
    show_progress: bool = True,
) -> ClassModelResult:
    """Class model visualisation, eq. 1 of Simonyan et al. (2014), for K classes in one batch.

    Solves ``arg max_I  S_c(I) - lambda ||I||_2^2`` (eq. 1, Sect. 2) by back-propagation to the
    input with the weights fixed, in the network's zero-centred input space, "initialised with
    the zero image", and then adds the mean back ("added the training set mean image to the
    result"): ``images = clf.denormalize(inputs)``. Image ``k`` ascends its own class ``c_k``;
    one forward/backward pass of ``sum_k J_k(I_k)`` gives every image its own gradient.

    The update (the paper does not give its optimiser), with ``g_t = dJ/dI`` at ``I_t``:

    - ``optimizer="momentum"`` (default): heavy-ball gradient ascent,
      ``v_{t+1} = momentum * v_t + g_t``, ``I_{t+1} = I_t + lr * v_{t+1}``;
    - ``optimizer="adam"``: Adam on ``-J`` (per-pixel step sizes; same ``lr`` meaning a step of
      about ``lr`` per pixel in input units).

    With ``clip=True`` every step is followed by a projection onto the valid input range (the
    pixel values ``0..1`` of a real image, i.e. ``[-mean/std, (1-mean)/std]``), so that ``images``
    is exactly what the network scored; the paper does not say it clipped (``clip=False``).

    Args:
        clf: the classifier (its ``net`` maps ``(N, 3, H, W)`` normalised inputs to scores).
        classes: K classes, each an index, a WordNet id or a class name (``clf.class_index``).
        steps: number of gradient steps.
        lr: step size.
        l2: lambda of eq. 1: one value, or K values (one per image, e.g. for a sweep).
        objective: ``"score"``: ``J = S_c(I) - lambda ||I||^2`` (eq. 1, the paper);
            ``"posterior"``: ``J = log P_c(I) - lambda ||I||^2`` with the soft-max posterior
            ``P_c = exp S_c / sum_c' exp S_c'``. We take the log so that the gradient does not
            vanish where ``P_c`` is tiny (at the start, ``P_c ~ 1e-3``); both have the same maximisers.
        init: ``"zero"`` (the paper), ``"random"`` (a uniformly random valid image, seeded by
            ``seed``), a PIL image (centre-cropped like any input) or an RGB tensor in [0, 1] of
            shape ``(3, H, W)``, ``(1, 3, H, W)`` or ``(K, 3, H, W)``.
        seed: seed of the random initialisation (results are deterministic for a given seed).
        optimizer: ``"momentum"`` or ``"adam"`` (see above).
        momentum: heavy-ball coefficient (0 gives plain gradient ascent).
        clip: project onto the valid pixel range after each step.
        size: side of the images (default ``clf.input_size``).
        show_progress: progress bar over the steps.

    Returns:
        :class:`ClassModelResult` with ``images`` ``(K, 3, H, W)`` in [0, 1], ``inputs``, and the
        ``(steps + 1, K)`` histories of scores, posteriors, other classes' scores and norms.

    Raises:
        ValueError / TypeError: unknown class, bad ``steps``/``lr``/``l2``/``objective``/``init``.
    """
    ks = _resolve_classes(clf, classes)
    k = len(ks)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not (0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    size = int(size or clf.input_size)
    dev = clf.device
    lam = _l2_vector(l2, k, dev)
    x0, init_name = _initial_inputs(clf, init, k, size, seed)
    lo = ((0.0 - clf._mean_t) / clf._std_t).to(dev)
    hi = ((1.0 - clf._mean_t) / clf._std_t).to(dev)
    if clip:
        x0 = torch.maximum(torch.minimum(x0, hi), lo)
    target = torch.tensor(ks, device=dev)
    rows = torch.arange(k, device=dev)
    hist = {n: torch.empty(steps + 1, k) for n in ("scores", "posteriors", "others_mean", "others_max", "norms")}

    def record(t: int, x: torch.Tensor, logits: torch.Tensor) -> None:
        logits = logits.detach().float()
        s = logits[rows, target]
        others = logits.clone()
        others[rows, target] = float("-inf")
        hist["scores"][t] = s.cpu()
        hist["posteriors"][t] = logits.softmax(1)[rows, target].cpu()
        hist["others_max"][t] = others.max(1).values.cpu()
        hist["others_mean"][t] = ((logits.sum(1) - s) / (logits.shape[1] - 1)).cpu()
        hist["norms"][t] = x.detach().flatten(1).norm(dim=1).cpu()

    x = x0.clone().requires_grad_(True)
    if optimizer == "momentum":
        opt = torch.optim.SGD([x], lr=lr, momentum=momentum, maximize=True)
    else:
        opt = torch.optim.Adam([x], lr=lr, maximize=True)
    with frozen(clf.net) as net:
        for t in progress(range(steps), desc="class model", total=steps, disable=not show_progress):
            opt.zero_grad(set_to_none=True)
            logits = net(x)
            if logits.ndim != 2 or logits.shape[0] != k:
                raise ValueError(f"the network returned scores of shape {tuple(logits.shape)}, expected ({k}, n_classes)")
            record(t, x, logits)
            fit = logits.log_softmax(1)[rows, target] if objective == "posterior" else logits[rows, target]
            J = (fit - lam * x.pow(2).flatten(1).sum(1)).sum()
            J.backward()
            if precondition:
                x.grad = _spectral_filter(x.grad, precondition)
            opt.step()
            if clip:
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        with torch.no_grad():
            xf = x.detach().clone()
            record(steps, xf, net(xf))
    if not torch.isfinite(xf).all():
        raise FloatingPointError("class model optimisation diverged (NaN/inf); lower lr or raise l2")
    return ClassModelResult(
        images=clf.denormalize(xf), inputs=xf, classes=ks, class_names=[clf.class_names[c] for c in ks],
        steps=int(steps), lr=float(lr), l2=lam.cpu(), objective=objective, optimizer=optimizer,
        momentum=float(momentum), clip=bool(clip), init=init_name, seed=int(seed),
        settings=dict(size=size, model=getattr(clf, "name", "")), **hist,
    )


def recognised(clf: Classifier, result: ClassModelResult, topk: int = 1) -> torch.Tensor:
    """``(K,)`` bool: is each class model image (as displayed, ``result.images`` in [0, 1]) among
    the top-``topk`` classes of ``clf``? Images of another size are resized bicubically first,
    so class models made on one network can be tested on another (transfer)."""
    import torch.nn.functional as F

    imgs = result.images.to(clf.device)
    if imgs.shape[-1] != clf.input_size or imgs.shape[-2] != clf.input_size:
        imgs = F.interpolate(imgs, size=(clf.input_size, clf.input_size), mode="bicubic",
                             align_corners=False).clamp(0, 1)
    top = clf.scores(clf.normalize(imgs)).topk(topk, dim=1).indices.cpu()
    return (top == torch.tensor(result.classes)[:, None]).any(1)


def sweep(
    clf: Classifier,
    cls: int | str,
    l2_values: Sequence[float],
    inits: Sequence[str] = ("zero", "random"),
    clips: Sequence[bool] = (True, False),
    steps: int = 30,
    lr: float = 1.0,
    seed: int = 0,
    **kwargs,
) -> tuple[list[dict], list[ClassModelResult]]:
    """Eq. 1 for one class over a grid of lambda x initialisation (x clipping), batched.

    For each ``clip`` setting one :func:`class_model` call optimises all ``len(l2_values) *
    len(inits)`` images at once (a per-image lambda and a per-image initial image). Returns one
    row per image ``{"l2", "init", "clip", "score", "posterior", "norm", "recognised"}`` (final
    class score, posterior, input norm, and whether the displayed image is top-1 its class) and
    the :class:`ClassModelResult` of each call.
    """
    k = clf.class_index(cls)
    size = clf.input_size
    grid = [(lam, ini) for ini in inits for lam in l2_values]
    g = torch.Generator().manual_seed(int(seed))
    starts = []
    for _, ini in grid:
        if ini == "zero":  # the zero network input, i.e. the mean image, in [0, 1]
            starts.append(clf.denormalize(torch.zeros(1, 3, size, size, device=clf.device))[0].cpu())
        elif ini == "random":
            starts.append(torch.rand(3, size, size, generator=g))
        else:
            raise ValueError(f"sweep() inits must be 'zero' or 'random', got {ini!r}")
    init = torch.stack(starts)
    rows, results = [], []
    for clip in clips:
        r = class_model(clf, [k] * len(grid), steps=steps, lr=lr, l2=[lam for lam, _ in grid], init=init,
                        seed=seed, clip=clip, **kwargs)
        ok = recognised(clf, r)
        for i, (lam, ini) in enumerate(grid):
            rows.append({"l2": lam, "init": ini, "clip": clip, "score": r.final_scores[i].item(),
                         "posterior": r.final_posteriors[i].item(), "norm": r.norms[-1, i].item(),
                         "recognised": bool(ok[i])})
        results.append(r)
    return rows, results
