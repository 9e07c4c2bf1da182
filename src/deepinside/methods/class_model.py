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

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..core._progress import progress
from ..core.batchnorm import gradient_net
from ..core.cache import cached, default_cache_dir
from ..core.inputs import check_bool as _check_bool, check_int as _check_int, check_real as _check_real
from ..core.models import BATCH_SIZE, Classifier, frozen

__all__ = ["class_model", "ClassModelResult", "FourierParam", "OBJECTIVES", "OPTIMIZERS", "PARAMS",
           "PARAM_DEFAULTS", "GALLERY", "cached_class_model", "default_cache_dir", "recognised",
           "sweep"]

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
        param: ``"pixel"`` or ``"fourier"``; ``settings["fourier"]`` holds the
            :class:`FourierParam` used.
        snapshots: step ``t`` -> ``(K, 3, H, W)`` images in [0, 1] after ``t`` updates (CPU), for
            the steps asked for with ``snapshots=``.
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
    param: str = "pixel"
    snapshots: dict = field(default_factory=dict, repr=False)

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


def concat_class_models(*results: ClassModelResult) -> ClassModelResult:
    """Several :class:`ClassModelResult` of the same settings as one, classes in the given order.

    Lets a long optimisation run as several calls (e.g. one per notebook cell, each under a time
    limit); the classes of different calls are optimised independently anyway (each image has its
    own loss term), but the random transforms of ``param="fourier"`` are drawn per call.

    Returns:
        ``images``/``inputs``: ``(K1 + K2 + ..., 3, H, W)``; ``scores`` etc.: ``(steps + 1, K1 +
        K2 + ...)``; snapshots concatenated per step.

    Raises:
        ValueError: no result, or results whose settings (steps, lr, objective, optimiser, param,
            size, snapshot steps) differ.
    """
    if not results:
        raise ValueError("concat_class_models() needs at least one result")
    first = results[0]
    same = ("steps", "lr", "objective", "optimizer", "momentum", "clip", "init", "seed", "param")
    for r in results[1:]:
        diff = [f for f in same if getattr(r, f) != getattr(first, f)]
        if r.settings != first.settings or set(r.snapshots) != set(first.snapshots):
            diff.append("settings/snapshots")
        if diff:
            raise ValueError(f"cannot concatenate class models whose settings differ: {diff}")
    cat = lambda name, dim: torch.cat([getattr(r, name) for r in results], dim)  # noqa: E731
    return dataclasses.replace(
        first, images=cat("images", 0), inputs=cat("inputs", 0), l2=cat("l2", 0),
        **{n: cat(n, 1) for n in ("scores", "posteriors", "others_mean", "others_max", "norms")},
        classes=[c for r in results for c in r.classes],
        class_names=[c for r in results for c in r.class_names],
        snapshots={t: torch.cat([r.snapshots[t] for r in results]) for t in first.snapshots})


#: Upper bounds of ``steps`` and ``size`` (far beyond any use; a typo like ``steps=10**12``
#: fails here with a clear message instead of in the memory allocator).
MAX_STEPS = 1_000_000
MAX_SIZE = 4096
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


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
    if isinstance(l2, (bool, np.bool_, str, bytes)):
        raise TypeError(f"l2 must be a number or one number per class, got {type(l2).__name__} {l2!r}")
    try:
        lam = torch.as_tensor(l2, dtype=torch.float32).reshape(-1).cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"l2 must be a number or one number per class, got {l2!r} ({e})") from None
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


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory layout on the CPU (same values): one forward+backward pass
    of EfficientNet-Lite0 on 12 images took 0.74-0.77 of the time of the usual layout there
    (``benchmarks/bench_class_model.py``, 1 and 2 threads); unchanged on other devices."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def _spectral_filter(g: torch.Tensor, alpha: float) -> torch.Tensor:
    """Filter ``(K, 3, H, W)`` by the frequency response ``1 / max(|f|, 1)^alpha`` (f in cycles per image)."""
    h, w = g.shape[-2:]
    fy = torch.fft.fftfreq(h, device=g.device).abs()[:, None] * h
    fx = torch.fft.rfftfreq(w, device=g.device)[None, :] * w
    resp = (fx.pow(2) + fy.pow(2)).sqrt().clamp(min=1.0).pow(-alpha)
    return torch.fft.irfft2(torch.fft.rfft2(g) * resp, s=(h, w))


@dataclass(frozen=True)
class FourierParam:
    """Settings of the decorrelated parameterisation ``param="fourier"`` (Olah et al. 2017).

    The image is ``sigmoid(C · irfft2(w ⊙ P) + logit(mean))``
    (:class:`deepinside.param.FourierImage`) and each step scores a randomly transformed copy of
    it (transformation robustness, :func:`deepinside.param.random_transform`).

    How the defaults were chosen: the paper's twelve Fig. 1 classes on EfficientNet-Lite0, Adam,
    lambda 1e-3, 200 steps, the images reclassified by Lite0, EfficientNet-Lite1 and Lite2
    (``python benchmarks/bench_class_model.py --choices``; counts out of 12, Lite0 top-1 /
    Lite1 top-1 / Lite1 top-5 / Lite2 top-1 / Lite2 top-5; 1 thread, seed 0 unless said):

    - **jitter 24 px, zoom 0.7-1.3, rotation 20 degrees, lr 0.05 constant (these defaults)**:
      12 / 11 / 11 / 11 / 11; seed 1: 12 / 11 / 12 / 11 / 12; 2 threads: 12 / 11 / 12 / 10 / 12;
      after 100 and 150 of the 200 steps Lite2 top-1 was 10 and 11 (seed 0), 8 and 8 (seed 1),
      9 and 10 (2 threads): hence 200 steps;
    - jitter 16, zoom 0.8-1.2, rotation 15 (the previous defaults): 12 / 11 / 12 / 9 / 12
      (Lite2 top-1 7 to 9 of 12 over earlier runs and thread counts);
    - the same with a cosine-decaying lr from 0.1: 12 / 11 / 11 / 7 / 8;
    - the same without rotation (the cheap shift-and-zoom path): 12 / 8 / 11 / 8 / 10;
    - Lucid-like transforms (jitter 12, zoom 0.9-1.1, rotation 10), lr 0.05: 12 / 9 / 11 / 5 /
      10, and with lr 0.1: 12 / 9 / 12 / 6 / 9 (an earlier session).

    Stronger moves make what the image gains survive more, and transfer more: Lite2 top-1 went
    from 5 (Lucid-like) to 9 (16 px) to 11 (24 px). ``alpha = 1`` (the 1/f spectrum of
    photographs) and the photo colour matrix were not swept.

    Attributes:
        alpha: exponent of the ``1/|f|^alpha`` frequency weighting (0: white, no preconditioning
            in space; 1: the ``1/f`` spectrum of natural images).
        colour: ``"photo"`` (the colour matrix estimated from ILSVRC photographs,
            :func:`deepinside.param.default_colour_basis`), ``"none"`` (identity: RGB channels
            optimised independently) or an explicit ``(3, 3)`` matrix.
        jitter: maximum random shift per step, pixels (each axis, uniform).
        scale: range of the random zoom per step.
        rotate: maximum random rotation per step, degrees (0: the cheaper shift-and-zoom
            transform, one zoom per batch and whole-pixel shifts).
        schedule: step size over the steps: ``"constant"`` or ``"cosine"`` (decays to 0).
    """

    alpha: float = 1.0
    colour: str | tuple = "photo"
    jitter: float = 24.0
    scale: tuple[float, float] = (0.7, 1.3)
    rotate: float = 20.0
    schedule: str = "constant"

    def colour_matrix(self) -> torch.Tensor:
        """The ``(3, 3)`` colour matrix ``C``."""
        from .param import default_colour_basis

        if isinstance(self.colour, str):
            if self.colour == "photo":
                return default_colour_basis()
            if self.colour == "none":
                return torch.eye(3)
            raise ValueError(f"colour must be 'photo', 'none' or a 3x3 matrix, got {self.colour!r}")
        c = torch.as_tensor(np.asarray(self.colour, dtype=np.float32))
        if c.shape != (3, 3):
            raise ValueError(f"colour matrix must be 3x3, got shape {tuple(c.shape)}")
        return c


#: Step-size schedules of ``param="fourier"``: constant, or cosine decay to 0 over the steps.
SCHEDULES = ("constant", "cosine")


def _lr_factors(schedule: str, steps: int) -> list[float]:
    """Factor of ``lr`` at each step ``t = 0 .. steps-1``: 1, or ``(1 + cos(pi t / steps)) / 2``."""
    if schedule == "constant":
        return [1.0] * steps
    if schedule == "cosine":
        return [0.5 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)]
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


#: Parameterisations of the image: the paper's pixels, or the decorrelated Fourier basis.
PARAMS = ("pixel", "fourier")
#: Defaults that depend on the parameterisation: (steps, lr, optimizer).
PARAM_DEFAULTS = {"pixel": (100, 1.0, "momentum"), "fourier": (200, 0.05, "adam")}  # see FourierParam


def _resolve_param(param: str | FourierParam) -> tuple[str, FourierParam | None]:
    if isinstance(param, FourierParam):
        return "fourier", param
    if param == "fourier":
        return "fourier", FourierParam()
    if param == "pixel":
        return "pixel", None
    raise ValueError(f"param must be one of {PARAMS} or a FourierParam, got {param!r}")


def class_model(
    clf: Classifier,
    classes: int | str | Sequence[int | str],
    steps: int | None = None,
    lr: float | None = None,
    l2: float | Sequence[float] | torch.Tensor = 1e-3,
    objective: str = "score",
    init: str | Image.Image | torch.Tensor = "zero",
    seed: int = 0,
    optimizer: str | None = None,
    momentum: float = 0.9,
    clip: bool = True,
    size: int | None = None,
    precondition: float = 0.0,
    show_progress: bool = True,
    param: str | FourierParam = "pixel",
    snapshots: Sequence[int] = (),
    batch_size: int = BATCH_SIZE,
) -> ClassModelResult:
    """Class model visualisation, eq. 1 of Simonyan et al. (2014), for K classes in one batch.

    Solves ``arg max_I  S_c(I) - lambda ||I||_2^2`` (eq. 1, Sect. 2) by back-propagation to the
    input with the weights fixed, in the network's zero-centred input space, "initialised with
    the zero image", and then adds the mean back ("added the training set mean image to the
    result"): ``images = clf.denormalize(inputs)``. Image ``k`` ascends its own class ``c_k``;
    one forward/backward pass of ``sum_k J_k(I_k)`` gives every image its own gradient.

    Two parameterisations of ``I`` (``param``), same objective, same zero start:

    - ``"pixel"`` (default, the paper): the free variables are the pixels of ``I``;
    - ``"fourier"`` (or a :class:`FourierParam`): ``I = normalize(sigmoid(C · irfft2(w ⊙ P) +
      logit(mean)))`` with free variables ``P`` (:mod:`deepinside.param`), ``P = 0`` being the
      zero input. For the linear part ``I = A P`` a gradient step in ``P`` is the step
      ``A A^T dJ/dI`` in ``I``: a preconditioner that favours low spatial frequencies and the
      colour directions of photographs. The objective is then evaluated on a randomly shifted,
      zoomed and rotated copy ``T_t(I)`` of the image each step, ``S_c(T_t(I)) - lambda
      ||I||^2`` (transformation robustness), so what the image gains must survive small moves.

    The update (the paper does not give its optimiser), with ``g_t = dJ/d(variables)``:

    - ``optimizer="momentum"`` (pixel default): heavy-ball gradient ascent,
      ``v_{t+1} = momentum * v_t + g_t``, ``x_{t+1} = x_t + lr * v_{t+1}``;
    - ``optimizer="adam"`` (fourier default): Adam on ``-J`` (per-variable step sizes of about
      ``lr``).

    With ``clip=True`` (pixel only) every step is followed by a projection onto the valid input
    range (pixel values ``0..1``), so that ``images`` is exactly what the network scored; the
    paper does not say it clipped (``clip=False``). The Fourier images are in range by
    construction (the sigmoid).

    Args:
        clf: the classifier (its ``net`` maps ``(N, 3, H, W)`` normalised inputs to scores).
        classes: K classes, each an index, a WordNet id or a class name (``clf.class_index``).
        steps: number of gradient steps, an int in ``0..MAX_STEPS`` (default
            ``PARAM_DEFAULTS[param][0]``: 100 / 200).
        lr: step size (default ``PARAM_DEFAULTS[param][1]``: 1.0 / 0.05).
        l2: lambda of eq. 1: one value, or K values (one per image, e.g. for a sweep).
        objective: ``"score"``: ``J = S_c(I) - lambda ||I||^2`` (eq. 1, the paper);
            ``"posterior"``: ``J = log P_c(I) - lambda ||I||^2`` with the soft-max posterior
            ``P_c = exp S_c / sum_c' exp S_c'``. We take the log so that the gradient does not
            vanish where ``P_c`` is tiny (at the start, ``P_c ~ 1e-3``); both have the same maximisers.
        init: ``"zero"`` (the paper), ``"random"`` (a uniformly random valid image, seeded by
            ``seed``), a PIL image (centre-cropped like any input) or an RGB tensor in [0, 1] of
            shape ``(3, H, W)``, ``(1, 3, H, W)`` or ``(K, 3, H, W)`` (for ``"fourier"`` the
            parameters ``P`` that give that image, pixel values clamped to [0.001, 0.999]).
        seed: seed (an int) of the random initialisation and of the random transforms.
        optimizer: ``"momentum"`` or ``"adam"`` (default ``PARAM_DEFAULTS[param][2]``).
        momentum: heavy-ball coefficient (0 gives plain gradient ascent).
        clip: project onto the valid pixel range after each step (pixel parameterisation).
        size: side of the images, an int in ``1..MAX_SIZE`` (default ``clf.input_size``).
        precondition: pixel parameterisation only: filter each gradient by ``1/max(|f|,1)^p``
            (0: off), a spectral preconditioner without the reparameterisation.
        show_progress: progress bar over the steps.
        param: ``"pixel"``, ``"fourier"`` or a :class:`FourierParam` (see above).
        snapshots: steps ``t`` after which to keep a copy of the images (``result.snapshots``).
        batch_size: images per forward/backward pass of the network within one step (the K
            images still form one optimisation; only the memory changes, see :func:`_ascend`).

    Returns:
        :class:`ClassModelResult` with ``images`` ``(K, 3, H, W)`` in [0, 1], ``inputs``, and the
        ``(steps + 1, K)`` histories of scores, posteriors, other classes' scores and norms (for
        ``"fourier"`` rows ``0 .. steps-1`` are measured on the transformed copy that was scored,
        the last row on the final image itself).

    Raises:
        ValueError / TypeError: unknown class, bad ``steps``/``lr``/``l2``/``objective``/``init``/``param``
            or other option (the message names it): a value of the wrong type (``steps=2.5``,
            ``seed="3"``, ``clip="no"``) is a TypeError, one out of range (``size=0``,
            ``steps > MAX_STEPS``, a ``size`` the network cannot score) a ValueError.
    """
    kind, fp = _resolve_param(param)
    d_steps, d_lr, d_opt = PARAM_DEFAULTS[kind]
    steps = d_steps if steps is None else steps
    lr = d_lr if lr is None else lr
    optimizer = d_opt if optimizer is None else optimizer
    ks = _resolve_classes(clf, classes)
    k = len(ks)
    steps = _check_int("steps", steps, 0, MAX_STEPS)
    lr = _check_real("lr", lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    momentum = _check_real("momentum", momentum)
    if not (0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    precondition = _check_real("precondition", precondition)
    if not (math.isfinite(precondition) and precondition >= 0):
        raise ValueError(f"precondition must be a finite number >= 0, got {precondition!r}")
    clip = _check_bool("clip", clip)
    show_progress = _check_bool("show_progress", show_progress)
    seed = _check_int("seed", seed, -(2 ** 63), 2 ** 63 - 1)
    if isinstance(snapshots, (str, bytes)) or not hasattr(snapshots, "__iter__"):
        raise TypeError(f"snapshots must be a sequence of steps, not {type(snapshots).__name__}")
    snaps = sorted({_check_int("snapshots", t, 0, steps) for t in snapshots})
    batch_size = _check_int("batch_size", batch_size, 1, 2 ** 31)
    size = clf.input_size if size is None else _check_int("size", size, 1, MAX_SIZE)
    dev = clf.device
    lam = _l2_vector(l2, k, dev)
    x0, init_name = _initial_inputs(clf, init, k, size, seed)
    lo = clf.normalize(torch.zeros(1, 3, 1, 1, device=dev))   # the valid input range
    hi = clf.normalize(torch.ones(1, 3, 1, 1, device=dev))
    if clip or kind == "fourier":
        x0 = torch.maximum(torch.minimum(x0, hi), lo)
    target = torch.tensor(ks, device=dev)
    rows = torch.arange(k, device=dev)
    hist = {n: torch.empty(steps + 1, k) for n in ("scores", "posteriors", "others_mean", "others_max", "norms")}
    kept: dict[int, torch.Tensor] = {}

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

    if kind == "fourier":
        from .param import FourierImage, random_transform

        fimg = FourierImage(k, size, size, clf.mean, fp.alpha, fp.colour_matrix(), dev)
        var = fimg.inverse(clf.denormalize(x0)) if init_name != "zero" else fimg.zeros()
        render = lambda p: clf.normalize(fimg(p))  # noqa: E731
        gen = torch.Generator().manual_seed(int(seed))
        move = lambda x: random_transform(x, gen, fp.jitter, fp.scale, fp.rotate)  # noqa: E731
    else:
        var = x0.clone()
        render = move = lambda x: x  # noqa: E731
    var.requires_grad_(True)
    if optimizer == "momentum":
        opt = torch.optim.SGD([var], lr=lr, momentum=momentum, maximize=True)
    else:
        opt = torch.optim.Adam([var], lr=lr, maximize=True)
    decay = _lr_factors(fp.schedule if fp else "constant", steps)

    def forward(x: torch.Tensor) -> torch.Tensor:
        try:
            return net(_fast_layout(x))
        except RuntimeError as e:  # e.g. a Linear head that only takes clf.input_size
            if size == clf.input_size or isinstance(e, _OOM):
                raise
            raise ValueError(f"the network cannot score images of size {size} (its input size is "
                             f"{clf.input_size}): {e}") from e

    with frozen(clf.net) as net:
        # eq. 1's gradient through BatchNorm folded into the convolutions: the same function,
        # 0.8-0.9 of the time per step (deepinside.core.batchnorm.gradient_net; issue 21)
        net = gradient_net(net, _fast_layout(x0[:1].detach()))
        for t in progress(range(steps), desc="class model", total=steps, disable=not show_progress):
            if t in snaps:
                with torch.no_grad():
                    kept[t] = clf.denormalize(render(var)).cpu()
            opt.zero_grad(set_to_none=True)
            x = render(var)
            logits = _ascend(forward, move(x), x, target, lam, objective, batch_size)
            record(t, x, logits)
            if precondition and kind == "pixel":
                var.grad = _spectral_filter(var.grad, precondition)
            for group in opt.param_groups:
                group["lr"] = lr * decay[t]
            opt.step()
            if clip and kind == "pixel":
                with torch.no_grad():
                    var.copy_(torch.maximum(torch.minimum(var, hi), lo))
        with torch.no_grad():   # the final scores in chunks of batch_size, as the steps: one
            xf = render(var).detach().clone()   # pass over K = 48 images at 160 px held 0.6 GB
            record(steps, xf, torch.cat([forward(xf[i:i + batch_size]) for i in range(0, k, batch_size)]))
    if not torch.isfinite(xf).all():
        raise FloatingPointError("class model optimisation diverged (NaN/inf); lower lr or raise l2")
    images = clf.denormalize(xf)
    if steps in snaps:
        kept[steps] = images.cpu()
    return ClassModelResult(
        images=images, inputs=xf, classes=ks, class_names=[clf.class_names[c] for c in ks],
        steps=int(steps), lr=float(lr), l2=lam.cpu(), objective=objective, optimizer=optimizer,
        momentum=float(momentum), clip=bool(clip) if kind == "pixel" else False, init=init_name, seed=int(seed),
        settings=dict(size=size, model=getattr(clf, "name", ""), param=kind, fourier=fp),
        param=kind, snapshots=kept, **hist,
    )


def _ascend(forward: Callable[[torch.Tensor], torch.Tensor], moved: torch.Tensor, x: torch.Tensor,
            target: torch.Tensor, lam: torch.Tensor, objective: str, batch_size: int) -> torch.Tensor:
    """Back-propagate ``J = sum_k fit_k(moved_k) - lam_k ||x_k||^2`` (eq. 1) to the free variables
    behind ``x``; returns the ``(K, n_classes)`` scores of ``moved``.

    Each image's objective depends on its own row only (eval mode), so the network may see the
    rows in chunks of ``batch_size``: the scores' gradient with respect to ``moved`` is gathered
    chunk by chunk (one chunk's activations alive at a time, about 80 MB per image of
    EfficientNet-Lite0 at 224 px) and then sent back through the parameterisation and the random
    transform in one pass. The same gradient as one pass over all K rows, up to float rounding.
    """
    k = len(moved)
    rows = torch.arange(k, device=moved.device)

    def fit(logits: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[0] != len(r):
            raise ValueError(f"the network returned scores of shape {tuple(logits.shape)}, "
                             f"expected ({len(r)}, n_classes)")
        return logits.log_softmax(1)[r, c] if objective == "posterior" else logits[r, c]

    penalty = (lam * x.pow(2).flatten(1).sum(1)).sum()
    if k <= batch_size:   # one pass (the results of earlier versions, bit for bit)
        logits = forward(moved)
        (fit(logits, rows, target).sum() - penalty).backward()
        return logits
    leaf = moved.detach().requires_grad_(True)
    parts = []
    for i in range(0, k, batch_size):
        logits = forward(leaf[i:i + batch_size])
        r = torch.arange(len(logits), device=moved.device)
        fit(logits, r, target[i:i + batch_size]).sum().backward()
        parts.append(logits.detach())
    ((moved * leaf.grad).sum() - penalty).backward()
    return torch.cat(parts)


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


#: 48 classes for the gallery beyond the paper, spread over ImageNet's hierarchy: group -> names.
GALLERY: dict[str, list[str]] = {
    "mammals": ["tabby", "tiger", "lion", "giant panda", "zebra", "koala", "hippopotamus",
                "golden retriever"],
    "birds, reptiles, fish, insects": ["flamingo", "peacock", "bald eagle", "green lizard",
                                       "goldfish", "monarch", "ladybug", "tree frog"],
    "vehicles": ["school bus", "fire engine", "steam locomotive", "tractor", "airliner",
                 "canoe", "mountain bike", "police van"],
    "household objects": ["teapot", "grand piano", "wall clock", "umbrella", "acoustic guitar",
                          "banjo", "lampshade", "rocking chair"],
    "food and plants": ["pizza", "strawberry", "pineapple", "broccoli", "mushroom", "daisy",
                        "corn", "banana"],
    "scenes and structures": ["volcano", "alp", "coral reef", "lakeside", "castle",
                              "lighthouse", "church", "suspension bridge"],
}


def _fingerprint(clf: Classifier) -> str:
    """A short hash of the network's weights (so a cache never mixes two models of one name)."""
    import hashlib

    h = hashlib.sha1(clf.name.encode())
    for p in clf.net.state_dict().values():
        if p.is_floating_point():
            h.update(np.float64(p.double().sum().item()).tobytes())
    return h.hexdigest()[:12]


def _source_hash() -> str:
    """Hash of the code (not the docstrings or comments) of this module, :mod:`deepinside.param`
    and the shipped colour statistics: a change of the computation invalidates cached results,
    a change of the documentation does not."""
    import ast
    import hashlib
    from pathlib import Path

    h = hashlib.sha1()
    for f in ("class_model.py", "param.py", "_colour_stats.py"):
        tree = ast.parse((Path(__file__).parent / f).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(ast.dump(tree).encode())
    return h.hexdigest()[:12]


def cached_class_model(cache_dir: str | os.PathLike | None, clf: Classifier,
                       classes: int | str | Sequence[int | str], **kwargs) -> ClassModelResult:
    """:func:`class_model` with its result kept on disk, keyed by everything it depends on.

    The key hashes the model's name and weights, the resolved class indices, every keyword
    argument (a :class:`FourierParam` by its fields) and the source of this module and of
    :mod:`deepinside.param`: any change recomputes. ``cache_dir=None`` computes without caching
    (:func:`deepinside.core.cache.cached`: arrays and JSON, read without unpickling; the book's
    folder is :func:`deepinside.core.cache.default_cache_dir`). ``init`` must be a string
    (images are not hashed).
    """
    import json
    from dataclasses import asdict, is_dataclass

    if cache_dir is None:
        return class_model(clf, classes, **kwargs)
    if not isinstance(kwargs.get("init", "zero"), str):
        raise ValueError("cached_class_model() caches string inits only ('zero', 'random')")
    ks = _resolve_classes(clf, classes)
    key_kw = {n: (asdict(v) if is_dataclass(v) else v) for n, v in sorted(kwargs.items())
              if n not in ("show_progress", "batch_size")}
    key_kw = {n: (v.tolist() if isinstance(v, torch.Tensor) else list(v) if isinstance(v, range) else v)
              for n, v in key_kw.items()}
    blob = json.dumps([_fingerprint(clf), _source_hash(), ks, key_kw], sort_keys=True, default=str)

    def compute() -> dict:
        r = class_model(clf, ks, **kwargs)
        d = {f: getattr(r, f) for f in r.__dataclass_fields__}
        fourier = r.settings.get("fourier")
        d["settings"] = {**r.settings, "fourier": asdict(fourier) if fourier else None}
        return d

    d = dict(cached("class_model", blob, compute, cache_dir))
    fp = d["settings"].get("fourier")
    d["settings"] = {**d["settings"], "fourier": FourierParam(**{
        k: (tuple(v) if isinstance(v, list) else v) for k, v in fp.items()}) if fp else None}
    d["images"], d["inputs"] = d["images"].to(clf.device), d["inputs"].to(clf.device)
    return ClassModelResult(**d)
