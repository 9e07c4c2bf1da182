"""A decorrelated image parameterisation for class models: 1/f spectrum x photo colour basis.

Eq. 1 of Simonyan et al. (2014) is an optimisation over the image ``I``; *how* ``I`` is written
down does not change the maximisers but changes the path a gradient method takes to them. Olah,
Mordvintsev & Schubert (2017, "Feature Visualization", section "The Enemy of Feature
Visualization" / "Preconditioning and Parameterization") write the image as

    I = normalise( sigmoid( C · F^{-1}( w ⊙ P ) + logit(m) ) ),

with ``P`` the free parameters (the Fourier coefficients of a decorrelated image), ``w`` a
``1 / |f|^alpha`` weighting of spatial frequency ``f`` (natural images have roughly a ``1/f``
amplitude spectrum, Field 1987), ``F^{-1}`` the inverse real FFT, ``C`` a 3x3 colour matrix that
gives white parameter noise the colour covariance of real photographs, ``m`` the mean image and
``sigmoid`` the map onto valid pixel values ``(0, 1)``. For a linear model ``I = A P`` a gradient
step ``dP = g_P = A^T g_I`` moves the image by ``dI = A A^T g_I``: plain gradient ascent
preconditioned by ``A A^T`` (low frequencies and the photo-typical colour directions get larger
steps). ``P = 0`` is the mean image, i.e. the zero network input the paper starts from.

This module holds the parts, written for this package (ideas from Lucid's ``param.fft`` and
colour decorrelation, Olah et al. 2017):

- :func:`colour_statistics` / :func:`colour_basis`: the colour matrix ``C`` estimated from real
  photographs (the ILSVRC-2012 validation images of ``../shared/data``), and
  :func:`default_colour_basis`, the one shipped in ``_colour_stats.py``, which
  ``python -m deepinside.param`` regenerates from those images;
- :func:`frequency_weights` (``w``) and :class:`FourierImage` (``P -> image in [0, 1]``);
- :func:`random_transform`: small random translations, scalings and rotations per step
  ("transformation robustness", Olah et al. 2017; Mordvintsev et al. 2015).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["ColourStatistics", "colour_statistics", "colour_basis", "default_colour_basis",
           "photo_paths", "frequency_weights", "FourierImage", "random_transform",
           "high_frequency_share", "write_colour_stats"]


# --- colour -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColourStatistics:
    """RGB statistics of photographs, pixel values in [0, 1].

    Attributes:
        mean: ``(3,)`` mean RGB.
        cov: ``(3, 3)`` covariance of the RGB values of one pixel.
        n_images, n_pixels: how many images and pixels were used.
        source: where the images came from (folders, for the record).
    """

    mean: np.ndarray
    cov: np.ndarray
    n_images: int
    n_pixels: int
    source: str


def photo_paths(roots: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """JPEG photographs under ``root/images`` for each root, sorted.

    Default roots: both ILSVRC-2012 validation samples of the shared data folder
    (``ilsvrc2012-val-201`` at full resolution and ``ilsvrc2012-val-650-227px``), found next to
    the one :func:`deepinside.data.default_ilsvrc_root` finds. Returns ``[]`` when none exist.
    """
    if roots is None:
        from ..core.data import default_ilsvrc_root

        first = default_ilsvrc_root()
        if first is None:
            return []
        first = Path(first)
        roots = [first, first.parent / "ilsvrc2012-val-650-227px"]
    out: list[Path] = []
    for r in roots:
        d = Path(r) / "images"
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    return out


def colour_statistics(
    images: Iterable[str | os.PathLike | Image.Image],
    pixels_per_image: int = 4096,
    seed: int = 0,
    source: str = "",
) -> ColourStatistics:
    """Mean and covariance of the RGB values of photographs (each image weighted equally).

    ``pixels_per_image`` pixels are drawn uniformly (seeded) from each image, after converting to
    RGB in [0, 1]; the covariance is the pooled sample covariance of all drawn pixels.

    Args:
        images: paths or PIL images.
        pixels_per_image: pixels sampled from each image (all pixels if the image has fewer).
        seed: seed of the pixel sampling (same images and seed, same result).
        source: a description kept in the result.

    Raises:
        ValueError: no images, or fewer than 2 pixels in all.
    """
    rng = np.random.default_rng(seed)
    chunks, n_images = [], 0
    for im in images:
        if not isinstance(im, Image.Image):
            with Image.open(im) as f:
                im = f.convert("RGB")
        a = np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
        if len(a) > pixels_per_image:
            a = a[rng.choice(len(a), pixels_per_image, replace=False)]
        chunks.append(a)
        n_images += 1
    if not chunks:
        raise ValueError("colour_statistics() got no images")
    px = np.concatenate(chunks)
    if len(px) < 2:
        raise ValueError("colour_statistics() needs at least 2 pixels")
    return ColourStatistics(mean=px.mean(0), cov=np.cov(px, rowvar=False), n_images=n_images,
                            n_pixels=len(px), source=source)


def colour_basis(cov: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The ``(3, 3)`` colour matrix ``C`` with ``C C^T`` proportional to the colour covariance.

    ``C = U diag(sqrt(s)) / sqrt(s_max)`` from the eigendecomposition ``cov = U diag(s) U^T``:
    its columns are the principal colour directions of photographs (roughly luminance, then two
    opponent-colour axes), scaled by their standard deviations relative to the largest. White
    (uncorrelated, unit-variance) parameters ``y`` give colours ``C y`` with the covariance of
    photographs up to one scale factor; the largest column has unit norm.
    """
    c = torch.as_tensor(np.asarray(cov, dtype=np.float64))
    if c.shape != (3, 3) or not torch.isfinite(c).all() or not torch.allclose(c, c.T, atol=1e-10):
        raise ValueError(f"cov must be a finite symmetric 3x3 matrix, got shape {tuple(c.shape)}")
    s, u = torch.linalg.eigh(c)
    if s.min() <= 0:
        raise ValueError(f"cov must be positive definite, eigenvalues {s.tolist()}")
    s, u = s.flip(0), u.flip(1)                       # largest first
    u = u * torch.sign(u.sum(0, keepdim=True))        # deterministic signs: luminance positive
    return (u * s.sqrt()[None, :] / s.max().sqrt()).float()


def default_colour_basis() -> torch.Tensor:
    """The shipped ``(3, 3)`` colour matrix: :func:`colour_basis` of the covariance stored in
    ``deepinside/_colour_stats.py``, which ``python -m deepinside.param`` computed from the
    ILSVRC-2012 validation photographs (see that file for the images and their count)."""
    from ._colour_stats import COV

    return colour_basis(np.asarray(COV))


def write_colour_stats(path: str | os.PathLike | None = None,
                       roots: Sequence[str | os.PathLike] | None = None,
                       pixels_per_image: int = 4096, seed: int = 0) -> ColourStatistics:
    """Estimate :func:`colour_statistics` from :func:`photo_paths` and write them as a Python
    module (default: ``deepinside/_colour_stats.py``, the shipped copy). Needs the photographs."""
    paths = photo_paths(roots)
    if not paths:
        raise FileNotFoundError("no photographs found: give roots=[folder with images/*.JPEG, ...] "
                                "or set DEEPINSIDE_ILSVRC")
    folders = sorted({p.parent.parent.name for p in paths})
    st = colour_statistics(paths, pixels_per_image, seed, source=", ".join(folders))
    path = Path(path) if path else Path(__file__).with_name("_colour_stats.py")
    fmt = lambda v: "[" + ", ".join(f"{x:.10g}" for x in v) + "]"  # noqa: E731
    path.write_text(
        '"""RGB statistics of real photographs, written by ``python -m deepinside.param``\n'
        "(deepinside.param.write_colour_stats); do not edit by hand.\n\n"
        f"Images: {st.n_images} ILSVRC-2012 validation photographs ({st.source}),\n"
        f"{pixels_per_image} random pixels each (seed {seed}), {st.n_pixels} pixels, RGB in [0, 1].\n"
        '"""\n\n'
        f"MEAN = {fmt(st.mean)}\n"
        f"COV = [{fmt(st.cov[0])},\n       {fmt(st.cov[1])},\n       {fmt(st.cov[2])}]\n"
        f"N_IMAGES = {st.n_images}\nN_PIXELS = {st.n_pixels}\nSOURCE = {st.source!r}\n")
    return st


# --- space ------------------------------------------------------------------------------------


def frequency_weights(height: int, width: int, alpha: float = 1.0,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """``(H, W//2 + 1)`` weights ``w(f) = 1 / max(|f|, 1)^alpha``, ``|f|`` in cycles per image,
    normalised so that white unit-variance coefficients give unit-variance pixels.

    The layout is that of ``torch.fft.rfft2`` of an ``(H, W)`` image. ``alpha = 0`` weights every
    frequency alike (a white, merely orthogonal, change of basis); ``alpha = 1`` matches the
    ``1/f`` amplitude spectrum of natural images.
    """
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha (spectral decay) must be a finite number >= 0, got {alpha!r}")
    fy = torch.fft.fftfreq(height, device=device).abs()[:, None] * height
    fx = torch.fft.rfftfreq(width, device=device)[None, :] * width
    w = (fx.pow(2) + fy.pow(2)).sqrt().clamp(min=1.0).pow(-float(alpha))
    # energy of the full (two-sided) spectrum: the rfft columns 1..W/2-1 stand for two columns
    mult = torch.full((width // 2 + 1,), 2.0, device=device)
    mult[0] = 1.0
    if width % 2 == 0:
        mult[-1] = 1.0
    return w / (w.pow(2) * mult[None, :]).sum().div(height * width).sqrt()


class FourierImage:
    """``P -> I``: images in [0, 1] from decorrelated spectral parameters (module docstring).

    ``image(P) = sigmoid( C · irfft2(w ⊙ P) + logit(m) )`` per pixel, with ``P`` a real tensor
    ``(K, 3, H, W//2 + 1, 2)`` (real and imaginary parts of the coefficients of 3 decorrelated
    colour planes), ``w`` :func:`frequency_weights`, ``C`` the colour matrix and ``m`` the
    ``(3,)`` mean image in [0, 1] (``P = 0`` gives the mean image exactly).

    Args:
        k, height, width: batch size and image size.
        mean: ``(3,)`` RGB mean in [0, 1] (e.g. ``clf.mean``), each in (0, 1).
        alpha: spectral decay exponent of :func:`frequency_weights`.
        colour: ``(3, 3)`` colour matrix (default :func:`default_colour_basis`); the identity
            disables colour decorrelation.
        device: where the tensors live.
    """

    def __init__(self, k: int, height: int, width: int, mean: Sequence[float], alpha: float = 1.0,
                 colour: torch.Tensor | np.ndarray | None = None, device: torch.device | str = "cpu"):
        if k < 1 or height < 2 or width < 2:
            raise ValueError(f"need k >= 1 and an image of at least 2x2, got k={k}, {height}x{width}")
        m = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(-1)
        if m.numel() != 3 or not ((m > 0) & (m < 1)).all():
            raise ValueError(f"mean must be 3 values in (0, 1), got {m.tolist()}")
        c = default_colour_basis() if colour is None else torch.as_tensor(colour, dtype=torch.float32)
        if c.shape != (3, 3) or not torch.isfinite(c).all():
            raise ValueError(f"colour must be a finite 3x3 matrix, got shape {tuple(c.shape)}")
        self.k, self.height, self.width = int(k), int(height), int(width)
        self.alpha = float(alpha)
        self.weights = frequency_weights(height, width, alpha, device)
        self.colour = c.to(device)
        self.offset = torch.logit(m).view(1, 3, 1, 1)
        self.device = torch.device(device)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """Shape of the parameter tensor ``P``."""
        return (self.k, 3, self.height, self.width // 2 + 1, 2)

    def zeros(self) -> torch.Tensor:
        """``P = 0`` (the mean image), ready to optimise."""
        return torch.zeros(self.shape, device=self.device)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """``(K, 3, H, W//2+1, 2)`` parameters -> ``(K, 3, H, W)`` image in (0, 1)."""
        if tuple(p.shape) != self.shape:
            raise ValueError(f"parameters must have shape {self.shape}, got {tuple(p.shape)}")
        spec = torch.view_as_complex(p.contiguous()) * self.weights
        y = torch.fft.irfft2(spec, s=(self.height, self.width), norm="ortho")
        y = torch.einsum("ij,kjhw->kihw", self.colour, y)
        return torch.sigmoid(y + self.offset)

    def inverse(self, images: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """The parameters ``P`` of ``(K, 3, H, W)`` images in [0, 1] (values clamped to
        ``[eps, 1 - eps]`` first, where the sigmoid is invertible): ``self(self.inverse(x)) ~ x``."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.height, self.width):
            raise ValueError(f"images must be (K, 3, {self.height}, {self.width}), got {tuple(images.shape)}")
        z = torch.logit(images.to(self.device).float().clamp(eps, 1 - eps)) - self.offset
        y = torch.einsum("ij,kjhw->kihw", torch.linalg.inv(self.colour), z)
        spec = torch.fft.rfft2(y, norm="ortho") / self.weights
        return torch.view_as_real(spec).expand(self.shape).contiguous()


# --- transformation robustness ----------------------------------------------------------------


def random_transform(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.0,
                     scale: tuple[float, float] = (1.0, 1.0), rotate: float = 0.0) -> torch.Tensor:
    """A random translation, scaling and (optionally) rotation of each image of ``(K, C, H, W)`` x.

    Two implementations, both differentiable, outside the image reading as 0 (in the network's
    zero-centred input space: the mean image), draws from ``generator`` (CPU, so a seeded
    generator gives the same transforms on every device), a no-op when all ranges are trivial:

    - ``rotate == 0`` (the cheap path): one zoom ``s ~ U(*scale)`` for the whole batch (one
      bilinear resize to ``round(s H) x round(s W)``), then for each image its own integer shift
      ``U{-jitter..jitter}`` pixels on each axis (a crop of the zero-padded, zoomed batch). Its
      cost, forward and backward, is a few percent of one forward+backward of EfficientNet-Lite0
      (``benchmarks/bench_class_model.py``);
    - ``rotate > 0``: image ``k`` is resampled (bilinear, ``grid_sample``) at ``A_k p + t_k``
      with ``A_k`` a rotation by ``U(-rotate, rotate)`` degrees times its own zoom ``U(*scale)``
      and ``t_k`` a shift of ``U(-jitter, jitter)`` pixels: about twice the cost of the cheap
      path.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (K, C, H, W), got shape {tuple(x.shape)}")
    lo, hi = scale
    if not (0 < lo <= hi) or jitter < 0 or rotate < 0:
        raise ValueError(f"need 0 < scale[0] <= scale[1], jitter >= 0, rotate >= 0; "
                         f"got {scale}, {jitter}, {rotate}")
    if jitter == 0 and lo == hi == 1 and rotate == 0:
        return x
    if rotate == 0:
        return _zoom_shift(x, generator, int(jitter), lo, hi)
    k, _, h, w = x.shape
    u = torch.rand(k, 4, generator=generator, dtype=torch.float64)
    s = lo + (hi - lo) * u[:, 0]
    a = torch.deg2rad(rotate * (2 * u[:, 1] - 1))
    tx = jitter * (2 * u[:, 2] - 1) * 2 / w    # pixels -> normalised [-1, 1] coordinates
    ty = jitter * (2 * u[:, 3] - 1) * 2 / h
    # output pixel p samples the input at (R(a) p) / s + t: content is zoomed by s
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin * h / w, tx], 1),
                         torch.stack([sin * w / h, cos, ty], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _zoom_shift(x: torch.Tensor, generator: torch.Generator, jitter: int, lo: float,
                hi: float) -> torch.Tensor:
    """The cheap path of :func:`random_transform`: one zoom for the batch, integer shifts each."""
    k, _, h, w = x.shape
    u = torch.rand(1, generator=generator, dtype=torch.float64).item()
    shifts = torch.randint(-jitter, jitter + 1, (k, 2), generator=generator).tolist()
    s = lo + (hi - lo) * u
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    pad = jitter + max(0, h - nh, w - nw)
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    top, left = pad + (nh - h) // 2, pad + (nw - w) // 2    # the centred window
    return torch.stack([xp[i, :, top + dy: top + dy + h, left + dx: left + dx + w]
                        for i, (dy, dx) in enumerate(shifts)])


# --- measurement ------------------------------------------------------------------------------


def high_frequency_share(images: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """``(K,)`` share of each image's spectral energy above ``cutoff`` (cycles per pixel).

    The energy of the mean-free image ``(K, 3, H, W)`` summed over channels, at frequencies with
    ``sqrt(fx^2 + fy^2) > cutoff`` (0.5 is the Nyquist limit), over all non-DC energy. White noise
    has about 0.80 above 0.25; photographs, with their ``1/f`` spectrum, a few percent.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (K, C, H, W), got shape {tuple(images.shape)}")
    x = images.detach().float()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    e = torch.fft.fft2(x).abs().pow(2).sum(1)
    h, w = x.shape[-2:]
    f = (torch.fft.fftfreq(h)[:, None].pow(2) + torch.fft.fftfreq(w)[None, :].pow(2)).sqrt()
    return e[:, f > cutoff].sum(1) / e.flatten(1).sum(1).clamp(min=1e-20)


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Estimate the colour statistics of photographs and "
                                 "write deepinside/_colour_stats.py")
    ap.add_argument("roots", nargs="*", help="folders holding images/*.JPEG (default: the shared "
                    "ILSVRC samples ilsvrc2012-val-201 and ilsvrc2012-val-650-227px)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--pixels-per-image", type=int, default=4096)
    args = ap.parse_args()
    st = write_colour_stats(args.out, args.roots or None, args.pixels_per_image)
    print(f"{st.n_images} images, {st.n_pixels} pixels from {st.source}\nmean {st.mean}\ncov\n{st.cov}")
    print("colour basis\n", colour_basis(st.cov))


if __name__ == "__main__":
    _main()
