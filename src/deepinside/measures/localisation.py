r"""Weakly supervised object localisation from a class saliency map (paper Sect. 3.2, Fig. 3).

Simonyan et al. (2014), Sect. 3.2: "Given an image and the corresponding class saliency map, we
compute the object segmentation mask using the GraphCut colour segmentation [3]. [...] Foreground
and background colour models were set to be the Gaussian Mixture Models. The foreground model was
estimated from the pixels with the saliency higher than a threshold, set to the 95 % quantile of
the saliency distribution in the image; the background model was estimated from the pixels with
the saliency smaller than the 30 % quantile (Fig. 3, right-middle). [...] Once the image pixel
labelling into foreground and background is computed, the object segmentation mask is set to the
largest connected component of the foreground pixels (Fig. 3, right)." The boxes reported to
ILSVRC were "the bounding boxes of the object segmentation masks", for each of the top-5 classes.

The GraphCut is Boykov & Jolly's (2001) interactive segmentation with GrabCut's colour GMMs and
contrast-sensitive smoothness (Rother et al. 2004): a labelling :math:`\alpha \in \{0,1\}^P`
minimises

.. math::

    E(\alpha) = \sum_p -\log p(I_p \mid \theta_{\alpha_p})
               + \gamma \sum_{(p,q) \in \mathcal N} \frac{[\alpha_p \ne \alpha_q]}{\operatorname{dist}(p,q)}
                 \exp(-\beta \lVert I_p - I_q \rVert^2),
    \qquad \beta = \left(2 \langle \lVert I_p - I_q \rVert^2 \rangle\right)^{-1},

where :math:`\theta_1, \theta_0` are the foreground / background colour GMMs. It is solved
exactly by one s-t min cut (PyMaxflow). The paper leaves open the mixture size, the pairwise
weight and neighbourhood, whether seeds are hard constraints, re-estimation iterations, any
smoothing of the map and the working resolution: each is a parameter of :func:`segment`, with the
default chosen by measurement on 200 ILSVRC-2012 validation images (chapter 3 shows the ablation).
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields, replace
from typing import Literal, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.models import BATCH_SIZE
from ..core.data import to_rgb
from ..core.smoothing import smooth_saliency
from ..core.frames import Crops, check_crops, full_image_size, map_to_image, working_copy
from ..methods.saliency_maps import saliency as _saliency

__all__ = ["segment", "segment_details", "SegmentParams", "bounding_box", "localise", "localise_details", "saliency_seeds", "smooth_saliency",
           "saliency_in_image", "full_image_input", "Segmentation", "Detection", "LocalisationDetails"]

#: Smallest image side :func:`localise` accepts (pixels): below it the crops and the GraphCut's
#: working grid hold too few pixels to say where anything is.
MIN_SIDE = 8
#: Unary cost standing for "infinite" on hard seeds (larger than any sum of pairwise weights).
_HARD = 1e9
#: Variance (in squared 0..255 grey levels) added to every GMM covariance: keeps flat JPEG
#: regions (a single colour) from giving singular covariances.
_COV_REG = 4.0


class Segmentation(NamedTuple):
    """Everything :func:`segment` computed, at the input image's resolution ``(H, W)``.

    Attributes:
        mask: bool ``(H, W)``: the largest connected foreground component (what :func:`segment`
            returns).
        foreground: bool ``(H, W)``: the GraphCut's foreground labelling (all components).
        fg_seeds: bool ``(H, W)``: pixels whose (smoothed) saliency is above the foreground
            quantile, used for the foreground colour model (Fig. 3, right-middle, blue).
        bg_seeds: bool ``(H, W)``: pixels below the background quantile (cyan).
        saliency: float ``(H, W)``: the smoothed map the quantiles were taken on.
    """

    mask: np.ndarray
    foreground: np.ndarray
    fg_seeds: np.ndarray
    bg_seeds: np.ndarray
    saliency: np.ndarray


class Detection(NamedTuple):
    """One (class, box) guess of :func:`localise`.

    Attributes:
        class_index: predicted class (0..999).
        score: its softmax probability on the classifier's centre crop.
        box: ``(x0, y0, x1, y1)`` half-open, in original image pixels, or ``None`` when the
            segmentation is empty.
        mask: bool ``(H, W)`` segmentation mask in original image pixels.
    """

    class_index: int
    score: float
    box: tuple[int, int, int, int] | None
    mask: np.ndarray


# -- input checking ------------------------------------------------------------------------------


def _image_array(image: Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
    """PIL / ``(H,W,3)`` / ``(H,W)`` array or tensor -> ``(H, W, 3)`` float64 in 0..255."""
    if isinstance(image, Image.Image):
        arr = np.asarray(to_rgb(image), dtype=np.float64)
    else:
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a PIL image or an (H, W, 3) array, not {type(image).__name__}")
        arr = image
        if arr.ndim == 2:  # grayscale: the colour models become intensity models
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"image must have shape (H, W, 3) or (H, W), got {arr.shape}")
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"image array must hold numbers (uint8 0..255 or float 0..1), not {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise ValueError("image contains NaN or infinite values")
            if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
                raise ValueError("a float image must hold values in [0, 1] (pass uint8 for 0..255)")
            arr = arr.astype(np.float64) * 255.0
        else:
            arr = arr.astype(np.float64)
    if min(arr.shape[:2]) < 2:
        raise ValueError(f"image of {arr.shape[1]}x{arr.shape[0]} pixels is too small to segment (need 2x2)")
    return arr


def _map_array(saliency: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Saliency (array or tensor) -> float64 ``(H, W)``, checked against the image's shape."""
    if isinstance(saliency, torch.Tensor):
        saliency = saliency.detach().float().cpu().numpy()
    if not isinstance(saliency, np.ndarray):
        raise TypeError(f"saliency must be an (H, W) array or tensor, not {type(saliency).__name__}")
    if saliency.ndim != 2:
        raise ValueError(f"saliency must be a 2-D (H, W) map, got shape {saliency.shape}")
    if saliency.shape != tuple(shape):
        raise ValueError(f"saliency map {saliency.shape} and image {tuple(shape)} are not on the same pixel "
                         f"grid; map it onto the image first (deepinside.saliency_to_image)")
    s = saliency.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("saliency map contains NaN or infinite values")
    return s


# -- the steps ----------------------------------------------------------------------------------


def saliency_seeds(saliency: np.ndarray, fg_quantile: float = 0.95, bg_quantile: float = 0.30
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The paper's seeds: ``(fg, bg)`` bool ``(H, W)`` masks from quantiles of the map (Sect. 3.2).

    Foreground: saliency >= the ``fg_quantile`` quantile; background: saliency <= the
    ``bg_quantile`` quantile. With ties (e.g. the zero border that the crop frames leave), the
    background takes all tied pixels and the foreground keeps only pixels strictly above the
    background threshold. A constant map gives two empty masks (no evidence of any foreground).
    """
    if not 0.0 <= bg_quantile < fg_quantile <= 1.0:
        raise ValueError(f"need 0 <= bg_quantile < fg_quantile <= 1, got bg={bg_quantile}, fg={fg_quantile}")
    s = np.asarray(saliency)
    lo, hi = np.quantile(s, [bg_quantile, fg_quantile])
    bg = s <= lo
    fg = (s >= hi) & ~bg
    if not fg.any():  # every pixel at or below the background threshold: a constant map
        return np.zeros_like(bg), np.zeros_like(bg)
    return fg, bg


class _Gmm(NamedTuple):
    log_weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, 3)
    precisions: np.ndarray  # (K, 3, 3): inverse covariances
    half_log_dets: np.ndarray  # (K,): log |Sigma_k| / 2


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances ``(n, K)`` between rows of ``x`` ``(n, 3)`` and centres ``c`` ``(K, 3)``."""
    return (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None]


def _fit_gmm(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 5) -> _Gmm:
    """Colour GMM of the rows of ``x`` ``(n, 3)``: k-means++ seeding, 5 Lloyd steps, then moments.

    As in GrabCut (Rother et al. 2004), each component is the mean / covariance / weight of one
    k-means cluster (hard-assignment EM); ``k`` shrinks to the number of distinct colours.
    """
    n = len(x)
    k = max(1, min(k, n, len(np.unique(x, axis=0)) if n <= 4 * k else k))
    # k-means++ seeding (deterministic given rng)
    centres = [x[rng.integers(n)]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        tot = d2.sum()
        if tot <= 0:
            break
        centres.append(x[rng.choice(n, p=d2 / tot)])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.array(centres)
    for _ in range(iters + 1):
        lab = _sq_dist(x, c).argmin(1)
        cnt = np.bincount(lab, minlength=len(c))
        sums = np.stack([np.bincount(lab, weights=x[:, i], minlength=len(c)) for i in range(3)], 1)
        c = np.where(cnt[:, None] > 0, sums / np.maximum(cnt, 1)[:, None], c)
    w, mu, prec, hld = [], [], [], []
    for j in np.flatnonzero(cnt):
        xj = x[lab == j]
        d = xj - c[j]
        cov = d.T @ d / len(xj) + _COV_REG * np.eye(3)
        L = np.linalg.cholesky(cov)
        Li = np.linalg.inv(L)
        w.append(len(xj) / n)
        mu.append(c[j])
        prec.append(Li.T @ Li)
        hld.append(np.log(np.diag(L)).sum())
    return _Gmm(np.log(np.array(w)), np.array(mu), np.array(prec), np.array(hld))


_PAIRS = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]


def _quad_features(x: np.ndarray) -> np.ndarray:
    """``(n, 3)`` colours -> ``(n, 10)`` features ``[x_i x_j (i <= j), x_i, 1]``: every Gaussian
    log-density is linear in them, so a whole mixture is one matrix product."""
    return np.concatenate([np.stack([x[:, i] * x[:, j] for i, j in _PAIRS], 1), x, np.ones((len(x), 1))], 1)


def _gmm_coefficients(g: _Gmm) -> np.ndarray:
    """``(10, K)``: ``log w_k + log N(x | mu_k, Sigma_k) = _quad_features(x) @ coefficients``."""
    cols = []
    for lw, m, P, hld in zip(g.log_weights, g.means, g.precisions, g.half_log_dets):
        quad = [-0.5 * P[i, j] * (1.0 if i == j else 2.0) for i, j in _PAIRS]
        lin = P @ m
        const = lw - hld - 0.5 * m @ P @ m - 1.5 * math.log(2 * math.pi)
        cols.append(np.r_[quad, lin, const])
    return np.array(cols).T


def _gmm_nll(features: np.ndarray, g: _Gmm) -> np.ndarray:
    """``-log p(x)`` under the mixture, from :func:`_quad_features` ``(n, 10)`` -> ``(n,)``."""
    logp = features @ _gmm_coefficients(g)
    m = logp.max(1)
    return -(m + np.log(np.exp(logp - m[:, None]).sum(1)))


_OFFSETS = {4: [(0, 1), (1, 0)], 8: [(0, 1), (1, 0), (1, 1), (1, -1)]}


def _graphcut(img: np.ndarray, u_fg: np.ndarray, u_bg: np.ndarray, gamma: float, neighbourhood: int
              ) -> np.ndarray:
    """Minimise eq. E above by one s-t min cut; returns the foreground bool ``(h, w)``."""
    import maxflow

    h, w = u_fg.shape
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes((h, w))
    if gamma > 0:
        diffs = []
        for dy, dx in _OFFSETS[neighbourhood]:
            # pairs p = (i, j), q = (i + dy, j + dx); d is indexed by p
            j0, j1 = max(0, -dx), w - max(0, dx)
            d = np.zeros((h, w))
            d[: h - dy, j0:j1] = ((img[: h - dy, j0:j1] - img[dy:, j0 + dx : j1 + dx]) ** 2).sum(2)
            diffs.append((dy, dx, d, (h - dy) * (j1 - j0)))
        mean_d = sum(d.sum() for *_, d, _ in diffs) / max(1, sum(n for *_, n in diffs))
        beta = 1.0 / (2.0 * mean_d) if mean_d > 0 else 0.0
        for dy, dx, d, _ in diffs:
            weights = gamma / math.hypot(dy, dx) * np.exp(-beta * d)
            structure = np.zeros((3, 3))
            structure[1 + dy, 1 + dx] = 1.0
            g.add_grid_edges(nodes, weights=weights, structure=structure, symmetric=True)
    # a node on the source side is foreground and pays its sink capacity, u_fg
    g.add_grid_tedges(nodes, u_bg, u_fg)
    g.maxflow()
    return ~g.get_grid_segments(nodes)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (empty stays empty); OpenCV."""
    import cv2

    if not mask.any():
        return mask
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return lab == best


def _ranks(s: np.ndarray) -> np.ndarray:
    """Empirical CDF of a map: each pixel's rank among all pixels, scaled to [0, 1]; ties share
    the mean of their ranks (a constant map is 0.5 everywhere)."""
    flat = s.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_vals = flat[order]
    # mean rank of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(flat)]
    mean_rank = (starts + ends - 1) / 2.0
    r = np.empty(len(flat))
    r[order] = np.repeat(mean_rank, ends - starts)
    return (r / max(1, len(flat) - 1)).reshape(s.shape)


@dataclass(frozen=True)
class SegmentParams:
    """Every choice of :func:`segment` (Sect. 3.2 fixes the two quantiles; the rest is ours).

    An ablation row is ``dataclasses.replace(SegmentParams(), pairwise=0)``.

    Attributes:
        fg_quantile, bg_quantile: the paper's seed quantiles (95 % and 30 %).
        smooth: Gaussian smoothing of the map, std as a fraction of the shorter side (0: off).
        n_components: Gaussians per colour model (GrabCut: 5).
        pairwise: weight gamma of the contrast-sensitive Potts term (GrabCut: 50).
        neighbourhood: 4 or 8 grid neighbours.
        seeds: ``"hard"`` (seed pixels clamped) or ``"soft"`` (colour models only).
        iterations: cuts (``> 1``: GrabCut re-estimation of the colour models).
        saliency_weight: lambda of the saliency-rank prior (0: the paper's energy).
        work_side: shorter side of the working resolution (None: full resolution).
        n_samples: seed pixels drawn per colour model fit.
        largest_component: keep the largest 8-connected foreground component (the paper).
        seed: random seed of the pixel sampling and k-means++.
    """

    fg_quantile: float = 0.95
    bg_quantile: float = 0.30
    smooth: float = 0.0
    n_components: int = 5
    pairwise: float = 50.0
    neighbourhood: Literal[4, 8] = 8
    seeds: Literal["hard", "soft"] = "hard"
    iterations: int = 1
    saliency_weight: float = 0.0
    work_side: int | None = 112
    n_samples: int = 2000
    largest_component: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.bg_quantile < self.fg_quantile <= 1.0:
            raise ValueError(f"need 0 <= bg_quantile < fg_quantile <= 1, got bg={self.bg_quantile}, "
                             f"fg={self.fg_quantile}")
        if self.smooth < 0:
            raise ValueError(f"smoothing sigma must be >= 0, got {self.smooth}")
        if self.neighbourhood not in (4, 8):
            raise ValueError(f"neighbourhood must be 4 or 8, got {self.neighbourhood!r}")
        if self.seeds not in ("hard", "soft"):
            raise ValueError(f"seeds must be 'hard' or 'soft', got {self.seeds!r}")
        if self.iterations < 1 or self.n_components < 1 or self.n_samples < 1:
            raise ValueError("iterations, n_components and n_samples must be >= 1")
        if self.pairwise < 0 or self.saliency_weight < 0:
            raise ValueError(f"pairwise and saliency_weight must be >= 0, got {self.pairwise}, "
                             f"{self.saliency_weight}")
        if self.work_side is not None and self.work_side < 2:
            raise ValueError(f"work_side must be >= 2 pixels or None, got {self.work_side}")


def _params(params: SegmentParams | None, overrides: dict) -> SegmentParams:
    """``params`` (default :class:`SegmentParams`) with keyword ``overrides`` replaced."""
    if params is not None and not isinstance(params, SegmentParams):
        raise TypeError(f"params must be a SegmentParams, not {type(params).__name__}")
    base = params or SegmentParams()
    if not overrides:
        return base
    known = {f.name for f in fields(SegmentParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown segment parameter(s) {unknown}; known: {sorted(known)}")
    return replace(base, **overrides)


def segment(
    image: Image.Image | np.ndarray,
    saliency: np.ndarray | torch.Tensor,
    params: SegmentParams | None = None,
    *,
    valid: np.ndarray | None = None,
    **overrides: object,
) -> np.ndarray:
    """Object mask from a class saliency map (Sect. 3.2): :func:`segment_details`' ``mask``.

    ``params`` (default :class:`SegmentParams`, the paper's quantiles) with any field given as a
    keyword replaced: ``segment(img, m, smooth=0.02)`` = ``segment(img, m,
    replace(SegmentParams(), smooth=0.02))``. Returns bool ``(H, W)``, empty for a constant map.
    """
    return segment_details(image, saliency, params, valid=valid, **overrides).mask


def segment_details(
    image: Image.Image | np.ndarray,
    saliency: np.ndarray | torch.Tensor,
    params: SegmentParams | None = None,
    *,
    valid: np.ndarray | None = None,
    **overrides: object,
) -> Segmentation:
    r"""Object mask from a class saliency map: quantile seeds, colour GMMs, GraphCut (Sect. 3.2).

    Steps (paper Sect. 3.2; every choice the paper leaves open is a parameter):

    1. Optionally smooth the map with a Gaussian of std ``smooth * min(H, W)``
       (:func:`smooth_saliency`; default 0: off).
    2. Seeds (:func:`saliency_seeds`): foreground = saliency above the ``fg_quantile`` (95 %)
       quantile, background = below the ``bg_quantile`` (30 %) quantile (the paper's values).
    3. Foreground / background colour GMMs (RGB) with ``n_components`` each, fitted as in GrabCut
       (k-means clusters) on at most ``n_samples`` seed pixels drawn with ``seed``.
    4. GraphCut of energy E (module docstring): unaries ``-log p(I_p | GMM)``, contrast-sensitive
       Potts terms of weight ``pairwise`` (GrabCut's gamma = 50) on the ``neighbourhood`` (4 or
       8) grid. ``seeds="hard"`` clamps the seed pixels to their label; ``"soft"`` uses them for
       the colour models only. ``saliency_weight`` = :math:`\lambda` (default 0, as in the
       paper) adds the unary :math:`\lambda (1 - r_p)` to the foreground and :math:`\lambda r_p`
       to the background label, :math:`r_p \in [0, 1]` being the rank of pixel p's (smoothed)
       saliency: a saliency prior for the pixels that are neither seed.
    5. ``iterations - 1`` re-estimations (GrabCut): refit both GMMs on the current labelling and
       cut again, seeds staying clamped (default: one cut, as in the paper).
    6. The largest 8-connected foreground component (OpenCV), upsampled to ``(H, W)``.

    Steps 1-6 run on the image and map resized (area interpolation) so that the shorter side is
    ``work_side`` pixels, never enlarged; ``None`` works at full resolution. The default, 112 (half
    the network input), was chosen by measurement on 200 ILSVRC-2012 validation images (chapter
    3): it is ~10x faster than full resolution and localises better, because area-averaging the
    speckled gradient map over ~3 x 3 pixel blocks lets the 95 % quantile pick regions rather than
    isolated pixels (more smoothing on top of it, ``smooth=0.02``, costs ~10 points).

    Args:
        image: PIL image, or ``(H, W, 3)`` uint8 array (float arrays in [0, 1]); a grayscale
            ``(H, W)`` array is accepted (intensity models).
        saliency: ``(H, W)`` map (array or tensor) on the image's pixel grid, finite.
        params: the :class:`SegmentParams` (default: the paper's quantiles and our measured
            defaults); ``overrides`` replace any of its fields by name.
        valid: optional bool ``(H, W)``: where the map is defined (e.g. the crop the network saw).
            The quantiles are then taken over these pixels only and pixels outside are never
            seeds. By default the whole map counts, so the zero margins that the crop frames leave
            become background seeds (a centre prior; chapter 3 measures both).

    Returns:
        :class:`Segmentation` at the image's resolution; its ``mask`` (bool ``(H, W)``) is empty
        (all False) when the map is constant over the valid pixels (e.g. all zero): a constant
        map carries no evidence of where the object is.

    Raises:
        ValueError: shape mismatch, NaN/inf values, a too small image or invalid parameters.
    """
    import cv2

    p = _params(params, overrides)
    (fg_quantile, bg_quantile, smooth, n_components, pairwise, neighbourhood, seeds, iterations,
     saliency_weight, work_side, n_samples, largest_component, seed) = astuple(p)
    arr = _image_array(image)
    H, W = arr.shape[:2]
    sal = _map_array(saliency, (H, W))
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != (H, W) or valid.dtype != bool:
            raise ValueError(f"valid must be a bool array of the image's shape {(H, W)}, "
                             f"got {valid.dtype} {valid.shape}")

    # A constant map (over the valid pixels) carries no evidence of where the object is: empty.
    # Checked here, on the map as given: resizing it below would turn float rounding into a
    # spread of values whose quantiles would seed a spurious object.
    region = sal if valid is None else sal[valid]
    if region.size == 0 or float(region.min()) == float(region.max()):
        empty = np.zeros((H, W), dtype=bool)
        return Segmentation(empty, empty.copy(), empty.copy(), empty.copy(),
                            smooth_saliency(sal, smooth))

    # working resolution
    scale = 1.0 if work_side is None else min(1.0, work_side / min(H, W))
    if scale < 1.0:
        w, h = max(2, round(W * scale)), max(2, round(H * scale))
        img = cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA)
        s = cv2.resize(sal, (w, h), interpolation=cv2.INTER_AREA)
        if valid is not None:
            valid = cv2.resize(valid.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        img, s, (h, w) = arr, sal, (H, W)

    s = smooth_saliency(s, smooth)
    if valid is None:
        fg_seed, bg_seed = saliency_seeds(s, fg_quantile, bg_quantile)
    else:
        fg_seed, bg_seed = np.zeros((h, w), bool), np.zeros((h, w), bool)
        if valid.any():
            fg_seed[valid], bg_seed[valid] = saliency_seeds(s[valid], fg_quantile, bg_quantile)
    fore = np.zeros((h, w), dtype=bool)
    if fg_seed.any():
        rng = np.random.default_rng(seed)
        pix = img.reshape(-1, 3) - 127.5  # centred colours: better conditioned quadratic features
        feats = _quad_features(pix)
        rank = _ranks(s) if saliency_weight else None

        def sample(m: np.ndarray) -> np.ndarray:
            idx = np.flatnonzero(m)
            if len(idx) > n_samples:
                idx = rng.choice(idx, n_samples, replace=False)
            return pix[idx]

        fg_model, bg_model = fg_seed, bg_seed
        for _ in range(iterations):
            if not fg_model.any() or not bg_model.any():
                break
            u_fg = _gmm_nll(feats, _fit_gmm(sample(fg_model), n_components, rng)).reshape(h, w)
            u_bg = _gmm_nll(feats, _fit_gmm(sample(bg_model), n_components, rng)).reshape(h, w)
            if rank is not None:
                u_fg += saliency_weight * (1.0 - rank)
                u_bg += saliency_weight * rank
            if seeds == "hard":
                u_fg[bg_seed], u_bg[bg_seed] = _HARD, 0.0
                u_fg[fg_seed], u_bg[fg_seed] = 0.0, _HARD
            fore = _graphcut(img, u_fg, u_bg, pairwise, neighbourhood)
            fg_model, bg_model = fore, ~fore
    mask = _largest_component(fore) if largest_component else fore

    if (h, w) != (H, W):
        def up(m: np.ndarray) -> np.ndarray:
            return cv2.resize(m.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)

        mask, fore, fg_seed, bg_seed = up(mask), up(fore), up(fg_seed), up(bg_seed)
        s = cv2.resize(s, (W, H), interpolation=cv2.INTER_LINEAR)
    return Segmentation(mask, fore, fg_seed, bg_seed, s)


def bounding_box(mask: np.ndarray | torch.Tensor, largest_component: bool = True
                 ) -> tuple[int, int, int, int] | None:
    """Box ``(x0, y0, x1, y1)`` (half-open pixels: ``x1 - x0`` is the width) around a bool mask.

    Sect. 3.2: "we computed them as the bounding boxes of the object segmentation masks". With
    ``largest_component`` (default) the box of the largest 8-connected component, else of all
    True pixels. Returns ``None`` for an empty mask.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    m = m.astype(bool)
    if largest_component:
        m = _largest_component(m)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# -- saliency on original pixels -----------------------------------------------------------------

def full_image_input(clf, image: Image.Image, side: int | None = None) -> torch.Tensor:
    """The whole image, resized (bicubic) so its shorter side is ``side`` (default
    ``clf.input_size``) keeping its aspect ratio, normalised: ``(1, 3, h, w)``.

    EfficientNet ends in global average pooling, so it classifies inputs of any size; the saliency
    of this input covers every pixel of the image, where the centre crop leaves the sides out.
    """
    size = full_image_size(*image.size, side or clf.input_size)
    return clf.normalize(clf.to_tensor01([image.resize(size, clf.interpolation)]))


def saliency_in_image(clf, image: Image.Image, classes: Sequence[int], crops: Crops = "ten",
                      batch_size: int = BATCH_SIZE, maps: str | None = None) -> np.ndarray:
    """Saliency maps of several classes of one image, in original pixels: ``(K, H, W)`` float32.

    The image is repeated once per class, each copy with its own target, and the copies go through
    :func:`deepinside.saliency` together (eq. 4): one backward pass per ``batch_size`` inputs
    (for ``crops="ten"`` each copy is 10 crops). ``crops="full"`` feeds the whole image
    (:func:`full_image_input`) and resizes the map back to the image; ``"center"`` / ``"ten"``
    maps are put back with :func:`deepinside.saliency_to_image` (0 outside their frame).
    ``maps`` names any registered method (:func:`deepinside.map_names`, e.g.
    ``"gradient_gradcam"``, the evaluation's default) instead of the paper's map, in any frame
    (:func:`deepinside.compute_maps`).
    """
    import cv2

    from ..methods.maps import compute_maps

    check_crops(crops)
    classes = [clf.class_index(c) for c in classes]
    if not classes:
        raise ValueError("saliency_in_image() needs at least one class")
    W, H = image.size
    if crops == "full":   # the whole image, seen as the network's one input
        inputs, frame = full_image_input(clf, image).repeat(len(classes), 1, 1, 1), "center"
    else:
        inputs, frame = [image] * len(classes), crops
    if maps is None:      # eq. 4 under the backward rule in force (Sect. 4)
        out = _saliency(clf, inputs, target=classes, crops=frame, batch_size=batch_size)
    else:
        out = compute_maps(clf, inputs, classes, method=maps, crops=frame, batch_size=batch_size)
    if crops == "full":
        out = out.detach().float().cpu().numpy()
        return np.stack([cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR) for m in out])
    return map_to_image(out, image_size=(W, H), clf=clf, crops=crops).float().cpu().numpy()


class LocalisationDetails(NamedTuple):
    """A :class:`Detection` with what produced it (for Fig. 3).

    Attributes:
        detection: class, score, box and mask in **original** pixels.
        saliency: ``(h, w)`` float32 map on the pixels of ``image``.
        segmentation: the :class:`Segmentation` (seeds, labelling, mask) on those pixels.
        image: the picture the map and segmentation are on: the original image, or for a
            photo larger than ``max_side`` its reduced working copy (:func:`frames.working_copy`).
        scale: ``(sx, sy)`` original pixels per pixel of ``image`` (``(1.0, 1.0)``: the original).
    """

    detection: Detection
    saliency: np.ndarray
    segmentation: Segmentation
    image: Image.Image | None = None
    scale: tuple[float, float] = (1.0, 1.0)


def _check_localise_args(clf, image: object, topk: object) -> None:
    if not isinstance(image, Image.Image):
        raise TypeError(f"localise() expects a PIL image, got {type(image).__name__}; "
                        f"load files with deepinside.load_image()")
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or not 1 <= topk <= len(clf.class_names):
        raise ValueError(f"topk must be an int in 1..{len(clf.class_names)}, got {topk!r}")
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"image of {image.size[0]}x{image.size[1]} pixels is too small to localise in: "
                         f"both sides must be at least {MIN_SIDE} pixels")


def _to_original(box: tuple[int, int, int, int] | None, scale: tuple[float, float],
                 size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """A half-open box on the working copy -> the smallest half-open box of original pixels
    covering it (``floor`` of the start, ``ceil`` of the end, clipped to the image)."""
    if box is None or scale == (1.0, 1.0):
        return box
    (sx, sy), (W, H) = scale, size
    x0, y0, x1, y1 = box
    return (max(0, math.floor(x0 * sx)), max(0, math.floor(y0 * sy)),
            min(W, math.ceil(x1 * sx)), min(H, math.ceil(y1 * sy)))


def _mask_to_original(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    W, H = size
    if mask.shape == (H, W):
        return mask
    import cv2

    return cv2.resize(mask.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)


def localise_details(
    clf,
    image: Image.Image,
    topk: int = 5,
    crops: Crops = "ten",
    batch_size: int = 5,
    max_side: int | None = None,
    maps: str | None = None,
    **segment_kwargs,
) -> list[LocalisationDetails]:
    """:func:`localise` keeping each class's saliency map and :class:`Segmentation` (Fig. 3 panels).

    Photos whose shorter side exceeds ``max_side`` (default ``2 * clf.resize_size``, 512 px for
    Lite0) are reduced to that once, first (:func:`frames.working_copy`): the network sees 224-256
    px and the GraphCut works at 112 px, so nothing is lost, and a 48 Mpx photo costs what a
    0.3 Mpx one does. Maps and segmentations stay on the working copy (``details.image``);
    boxes and masks are given in original pixels.
    """
    _check_localise_args(clf, image, topk)
    check_crops(crops)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    limit = 2 * clf.resize_size if max_side is None else int(max_side)
    if limit < clf.resize_size:
        raise ValueError(f"max_side must be at least the network's resize size {clf.resize_size}, got {limit}")
    work, scale = working_copy(image, limit, clf.interpolation)
    preds = clf.predict([work], topk=int(topk))[0]
    sal = saliency_in_image(clf, work, [c for c, _, _ in preds], crops=crops, batch_size=batch_size,
                            maps=maps)
    out = []
    for (c, _, p), m in zip(preds, sal):
        seg = segment_details(work, m, **segment_kwargs)
        det = Detection(int(c), float(p), _to_original(bounding_box(seg.mask), scale, image.size),
                        _mask_to_original(seg.mask, image.size))
        out.append(LocalisationDetails(det, m, seg, work, scale))
    return out


def localise(
    clf,
    image: Image.Image,
    topk: int = 5,
    crops: Crops = "ten",
    batch_size: int = 5,
    max_side: int | None = None,
    maps: str | None = None,
    **segment_kwargs,
) -> list[Detection]:
    """Boxes for the top-k classes of an image (Sect. 3.2: "repeated for each of the top-5 classes").

    For each of the ``topk`` classes predicted on the centre crop: its saliency map
    (:func:`saliency_in_image`; the image repeated k times with one target per copy, at most
    ``batch_size`` network inputs (crops) per forward/backward pass, which bounds the memory:
    with 5, ``localise`` of a photo peaks at 1.47 GB resident with EfficientNet-Lite0 on CPU, of
    which 1.16 GB is the interpreter and the loaded model; 5 is also faster per crop on CPU than
    30, measured),
    the segmentation mask (:func:`segment`, ``segment_kwargs`` pass through) and the mask's
    bounding box. A photo larger than ``max_side`` is reduced first (see :func:`localise_details`).

    Args:
        crops: ``"ten"`` (the paper's 10-crop average, default), ``"center"`` (one crop, 10x
            cheaper) or ``"full"`` (the whole image at shorter side ``clf.input_size``).
        maps: a registered map method instead of the paper's map (e.g. ``maps=
            "gradient_gradcam", crops="full", fg_quantile=0.9``: the evaluation's default,
            chapter 3).

    Returns:
        ``topk`` :class:`Detection` tuples ``(class_index, score, box, mask)``, best class first;
        ``box`` is ``(x0, y0, x1, y1)`` half-open in original pixels (None for an empty mask),
        ``mask`` bool ``(H, W)`` in original pixels. The model's state is unchanged.
    """
    return [d.detection for d in localise_details(clf, image, topk, crops, batch_size, max_side,
                                                  maps, **segment_kwargs)]
