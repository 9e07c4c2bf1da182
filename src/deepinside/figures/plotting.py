"""The paper's figure layouts (matplotlib).

Generic helpers first; then one section per figure of the paper. Each function returns the
``matplotlib.figure.Figure`` so a notebook can caption it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..core.frames import MAP_CROPS, central_square, check_crops
from ..methods.saliency_maps import saliency

__all__ = [
    "as_image_array", "image_grid", "draw_box", "predictions_figure",
    "stretch", "class_models_figure", "objective_curves_figure",                      # Fig. 1
    "saliency_frame", "saliency_figure", "saliency_panel",        # Fig. 2
    "seed_overlay", "localisation_row", "localisation_figure",                         # Fig. 3
    "backward_rules_figure", "class_sensitivity_figure",                               # Sect. 4
]


def as_image_array(x: Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
    """PIL image, ``(3,H,W)``/``(H,W,3)``/``(H,W)`` tensor or array -> numpy array for ``imshow``.

    Colour images come back ``(H, W, 3)``; single-channel maps ``(H, W)`` float.
    """
    if isinstance(x, Image.Image):
        return np.asarray(x.convert("RGB"))
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.moveaxis(x, 0, -1)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    return x


def image_grid(
    rows: Sequence[Sequence[object]],
    titles: Sequence[Sequence[str]] | None = None,
    row_labels: Sequence[str] | None = None,
    cmaps: Sequence[str | None] | None = None,
    size: float = 2.0,
):
    """A grid of images: ``rows[r][c]`` is shown in row r, column c (``None`` leaves it blank).

    Args:
        rows: images (PIL, arrays or tensors; 2-D maps use the row's colormap).
        titles: optional per-cell titles, same shape as ``rows``.
        row_labels: optional label written left of each row.
        cmaps: colormap per row for 2-D maps (default ``"gray"``).
        size: inches per cell.
    """
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        cmap = (cmaps[r] if cmaps else None) or "gray"
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c >= len(row) or row[c] is None:
                continue
            img = as_image_array(row[c])
            ax.imshow(img, cmap=cmap if img.ndim == 2 else None, interpolation="nearest")
            if titles and titles[r] and c < len(titles[r]) and titles[r][c]:
                ax.set_title(titles[r][c], fontsize=8)
        if row_labels:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    fig.tight_layout()
    return fig


def draw_box(ax, box: Sequence[float], color: str = "lime", label: str | None = None, lw: float = 2.0) -> None:
    """Draw a box ``(x0, y0, x1, y1)`` (pixels, half-open) on a matplotlib axis."""
    import matplotlib.patches as patches

    x0, y0, x1, y1 = box
    ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=lw))
    if label:
        ax.text(x0, y0, label, color="black", fontsize=7, va="bottom",
                bbox=dict(facecolor=color, alpha=0.8, pad=1, edgecolor="none"))


def predictions_figure(images: dict, predictions: list, cols: int = 4, size: float = 2.6):
    """Each image above a horizontal bar chart of its top-k classes and probabilities.

    Args:
        images: name -> PIL image (``len(predictions)`` of them, same order).
        predictions: per image a list of ``(class_index, class_name, probability)``.
    """
    import matplotlib.pyplot as plt

    n = len(images)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(2 * rows, cols, figsize=(size * cols, size * 1.45 * rows),
                             gridspec_kw={"height_ratios": [1.0, 0.6] * rows}, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ((name, img), pred) in enumerate(zip(images.items(), predictions)):
        r, c = 2 * (i // cols), i % cols
        axes[r, c].imshow(as_image_array(img))
        axes[r, c].set_title(name, fontsize=9)
        bar = axes[r + 1, c]
        bar.axis("on")
        labels = [nm for _, nm, _ in pred][::-1]
        probs = [p for _, _, p in pred][::-1]
        bar.barh(range(len(pred)), probs, color="tab:blue")
        bar.set_yticks(range(len(pred)), labels, fontsize=7)
        bar.set_xlim(0, 1)
        bar.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


# --- Fig. 1: class models (class_model chapter) -----------------------------------------------


def stretch(image: torch.Tensor, q: float = 0.005) -> torch.Tensor:
    """Contrast-stretch a ``(3, H, W)`` image in [0, 1] to its ``q``/``1-q`` quantiles (display only)."""
    lo, hi = torch.quantile(image.flatten(), torch.tensor([q, 1 - q], dtype=image.dtype))
    return ((image - lo) / (hi - lo).clamp(min=1e-8)).clamp(0, 1)


def class_models_figure(images: torch.Tensor, names: Sequence[str], cols: int = 6, size: float = 2.0,
                        contrast: bool = True):
    """Fig. 1 layout: class model images in a grid, the class name under each.

    Args:
        images: ``(K, 3, H, W)`` in [0, 1] (``ClassModelResult.images``).
        names: K captions.
        contrast: stretch each image to its 0.5 %/99.5 % quantiles for display (say so in captions).
    """
    import matplotlib.pyplot as plt

    k = len(images)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * 1.12 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(k):
        img = stretch(images[i].detach().cpu()) if contrast else images[i].detach().cpu()
        ax = axes[i // cols, i % cols]
        ax.imshow(as_image_array(img))
        ax.set_title(names[i], fontsize=9, y=-0.14)
    fig.tight_layout()
    return fig


def objective_curves_figure(results: dict, names: Sequence[str]):
    """Score vs. posterior objective: S_c, the other classes' mean and max score, and P_c over steps.

    Args:
        results: objective name -> ``ClassModelResult`` (same classes, same settings otherwise).
        names: class names, one column each.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 5.2), squeeze=False, sharex=True)
    styles = {"score": "-", "posterior": "--"}
    for j, nm in enumerate(names):
        for obj, r in results.items():
            ls = styles.get(obj, ":")
            axes[0, j].plot(r.scores[:, j], "tab:blue", ls=ls, label=f"$S_c$ ({obj})")
            axes[0, j].plot(r.others_max[:, j], "tab:red", ls=ls, label=f"max other ({obj})")
            axes[0, j].plot(r.others_mean[:, j], "tab:gray", ls=ls, label=f"mean other ({obj})")
            axes[1, j].plot(r.posteriors[:, j], "tab:green", ls=ls, label=f"$P_c$ ({obj})")
        axes[0, j].set_title(nm, fontsize=10)
        axes[1, j].set_xlabel("step")
        axes[1, j].set_ylim(-0.02, 1.02)
    axes[0, 0].set_ylabel("class score")
    axes[1, 0].set_ylabel("posterior")
    axes[0, -1].legend(fontsize=7, loc="best")
    axes[1, -1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


# --- Fig. 2: saliency maps (saliency chapter) --------------------------------------------------


def saliency_frame(clf, image: Image.Image, crops: str = "center") -> Image.Image:
    """The part of ``image`` a saliency map of ``crops`` covers, at the map's resolution.

    ``"center"``: the network's centre crop resized to ``clf.input_size`` (what
    ``clf.preprocess`` feeds the network); ``"ten"``: the central square resized to
    ``clf.resize_size``, the frame of the 10-crop map (:func:`deepinside.ten_crop_boxes`).
    """
    check_crops(crops, MAP_CROPS)
    if crops == "center":
        return clf.crop_and_resize(image)
    return central_square(clf, image, clf.interpolation)


def saliency_figure(
    images: Sequence[object],
    maps: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    boxes: Sequence[Sequence[Sequence[float]]] | None = None,
    ncols: int = 8,
    size: float = 1.45,
    clip: float | None = 99.0,
):
    """Fig. 2 of the paper: a row of images over the row of their saliency maps.

    Args:
        images: N images (PIL, ``(3,H,W)`` tensors, arrays), each in its map's frame.
        maps: ``(N, H, W)`` maps, or a list of K such stacks (K map rows under each image row,
            e.g. centre crop and 10 crops).
        titles: N titles over the images (e.g. the top-1 class names).
        row_labels: labels of the 1 + K rows of a block (default ``image`` / ``saliency``).
        boxes: optional boxes per image ``(x0, y0, x1, y1)`` in the frame's pixels, drawn on the
            image and its maps.
        ncols: images per block; N > ncols wraps into further blocks of 1 + K rows.
        clip: maps are shown in grey from 0 (black) to this percentile of their own values (white;
            ``None``: their maximum). Gradient maps are heavy-tailed: scaled to the maximum, a few
            pixels would be white and the rest black.
    """
    import matplotlib.pyplot as plt

    stacks = [maps] if isinstance(maps, (torch.Tensor, np.ndarray)) else list(maps)
    n, k = len(images), len(stacks)
    if any(len(s) != n for s in stacks):
        raise ValueError(f"{n} images but map stacks of lengths {[len(s) for s in stacks]}")
    labels = list(row_labels) if row_labels else ["image"] + (["saliency"] if k == 1 else [f"map {j + 1}" for j in range(k)])
    cols = min(ncols, n)
    blocks = -(-n // cols)
    fig, axes = plt.subplots(blocks * (1 + k), cols, figsize=(size * cols, size * blocks * (1 + k)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    for i in range(n):
        b, c = divmod(i, cols)
        panels = [as_image_array(images[i])] + [as_image_array(s[i]) for s in stacks]
        for r, img in enumerate(panels):
            ax = axes[b * (1 + k) + r, c]
            grey = img.ndim == 2
            vmax = float(np.percentile(img, clip)) if grey and clip is not None else None
            ax.imshow(img, cmap="gray" if grey else None, interpolation="antialiased",
                      vmin=0 if grey else None, vmax=vmax or None)
            for box in (boxes[i] if boxes else ()):
                draw_box(ax, box, lw=1.0)
            if r == 0 and titles:
                ax.set_title(titles[i], fontsize=8)
            if c == 0:
                ax.set_ylabel(labels[r], fontsize=8)
    fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.2)
    return fig


def saliency_panel(clf, image: Image.Image, target=None, crops: str = "center", name: str | None = None):
    """One image and the saliency map of one class (default: its top-1 class), side by side."""
    maps, cls = saliency(clf, image, target=target, crops=crops, return_target=True)
    c = int(cls[0])
    label = f"{clf.class_names[c]} ({c})"
    fig = saliency_figure([saliency_frame(clf, image, crops)], maps, size=2.6,
                          titles=[f"{name + ': ' if name else ''}{label}"])
    return fig


# --- Fig. 3: localisation (localisation chapter) -----------------------------------------------


def seed_overlay(fg_seeds: np.ndarray, bg_seeds: np.ndarray) -> np.ndarray:
    """Fig. 3, right-middle: ``(H, W, 3)`` float RGB with the pixels used for the foreground colour
    model blue, for the background model cyan, unused pixels red."""
    fg, bg = np.asarray(fg_seeds, bool), np.asarray(bg_seeds, bool)
    if fg.shape != bg.shape or fg.ndim != 2:
        raise ValueError(f"seed masks must be two (H, W) arrays of one shape, got {fg.shape} and {bg.shape}")
    out = np.zeros(fg.shape + (3,))
    out[...] = (1.0, 0.0, 0.0)
    out[bg] = (0.0, 1.0, 1.0)
    out[fg] = (0.0, 0.0, 1.0)
    return out


def localisation_row(image, details, gt_boxes: Sequence[Sequence[float]] | None = None,
                     class_names: Sequence[str] | None = None) -> dict:
    """One row of :func:`localisation_figure` from a
    :class:`~deepinside.localisation.LocalisationDetails` (what ``localise_details`` returns)."""
    seg, det = details.segmentation, details.detection
    title = class_names[det.class_index] if class_names is not None else f"class {det.class_index}"
    box = det.box
    sx, sy = getattr(details, "scale", (1.0, 1.0))
    if (sx, sy) != (1.0, 1.0):     # a large photo: draw on the working copy the maps are on
        image = details.image

        def down(b):
            return None if b is None else (b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy)

        box = down(box)
        gt_boxes = None if gt_boxes is None else [down(b) for b in gt_boxes]
    return {"image": image, "saliency": details.saliency, "fg_seeds": seg.fg_seeds, "bg_seeds": seg.bg_seeds,
            "mask": seg.mask, "box": box, "gt_boxes": gt_boxes, "title": title}


def localisation_figure(
    rows: Sequence[dict],
    size: float = 2.2,
):
    """Fig. 3 of Simonyan et al. (2014): one row per image, four panels.

    Each ``rows[r]`` is a dict with ``image`` (PIL or array), ``saliency`` ``(H, W)`` (the map of
    the top-1 class on the image's pixels), ``fg_seeds`` / ``bg_seeds`` bool ``(H, W)`` (the
    thresholded map), ``mask`` bool ``(H, W)``, optional ``box`` (ours, drawn lime), ``gt_boxes``
    (ground truth, drawn dashed yellow) and ``title`` (e.g. the class name). Panels: the image;
    the saliency map; the seeds (blue: foreground model, cyan: background model, red: unused);
    the segmentation mask with its box.
    """
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("localisation_figure() needs at least one row")
    fig, axes = plt.subplots(len(rows), 4, figsize=(4 * size, size * len(rows)), squeeze=False)
    heads = ["image", "saliency (top-1 class)", "thresholded map", "mask and box"]
    for r, row in enumerate(rows):
        sal = as_image_array(row["saliency"]).astype(float)
        top = np.quantile(sal, 0.995) if sal.size else 1.0
        panels = [as_image_array(row["image"]), np.clip(sal / (top if top > 0 else 1.0), 0, 1),
                  seed_overlay(row["fg_seeds"], row["bg_seeds"]), np.asarray(row["mask"], float)]
        for c, (ax, img) in enumerate(zip(axes[r], panels)):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1 if img.ndim == 2 else None,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=9)
        ax = axes[r, 3]
        for g in row.get("gt_boxes") or ():
            x0, y0, x1, y1 = g
            ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow",
                                           linewidth=1.5, linestyle="--"))
        if row.get("box") is not None:
            draw_box(ax, row["box"], color="lime")
        if row.get("title"):
            axes[r, 0].set_ylabel(row["title"], fontsize=8)
    fig.tight_layout()
    return fig



# --- Sect. 4: backward rules (DeconvNet chapter) -----------------------------------------------


def _rule_map_display(m: torch.Tensor | np.ndarray, q: float = 0.99) -> np.ndarray:
    """A non-negative map scaled to [0, 1] by its own ``q``-quantile (clipped above)."""
    a = np.asarray(as_image_array(m), dtype=np.float64)
    top = np.quantile(a, q)
    return np.clip(a / top, 0.0, 1.0) if top > 0 else np.zeros_like(a)


def backward_rules_figure(
    images: Sequence[object],
    maps: dict[str, torch.Tensor | np.ndarray],
    row_labels: Sequence[str] | None = None,
    size: float = 1.9,
):
    """Sect. 4 side by side: each image (row) with its map under every backward rule (columns).

    Args:
        images: N images in the maps' frame (PIL, ``(3,H,W)`` tensors or arrays).
        maps: rule name -> ``(N, H, W)`` non-negative maps (e.g. ``deepinside.saliency(...,
            rule=rule)``), shown in grey, each scaled to its own 99th percentile.
        row_labels: N labels (e.g. the class the maps are computed for).
    """
    rules = list(maps)
    rows = [[images[i]] + [_rule_map_display(maps[r][i]) for r in rules] for i in range(len(images))]
    titles = [["image"] + rules] + [[""] * (1 + len(rules))] * (len(images) - 1)
    return image_grid(rows, titles=titles, row_labels=row_labels, size=size)


def class_sensitivity_figure(
    images: Sequence[object],
    maps_a: dict[str, torch.Tensor | np.ndarray],
    maps_b: dict[str, torch.Tensor | np.ndarray],
    names_a: Sequence[str],
    names_b: Sequence[str],
    correlations: dict[str, torch.Tensor | np.ndarray] | None = None,
    labels: tuple[str, str] = ("top-1", "other"),
    size: float = 1.7,
):
    """Maps of the same image for two classes, per rule: two adjacent columns per rule.

    Row ``i``: the image (labelled with both class names), then for each rule the map for
    ``names_a[i]`` and for ``names_b[i]``; with ``correlations`` (rule -> ``(N,)``) the title of
    the second map gives the correlation ``r`` of the pair. Maps as in :func:`backward_rules_figure`.
    """
    rules = list(maps_a)
    rows, titles = [], []
    for i in range(len(images)):
        row, tit = [images[i]], ["image" if i == 0 else ""]
        for r in rules:
            row += [_rule_map_display(maps_a[r][i]), _rule_map_display(maps_b[r][i])]
            corr = f"r = {float(correlations[r][i]):.2f}" if correlations is not None else ""
            tit += [f"{r}, {labels[0]}" if i == 0 else "",
                    (f"{r}, {labels[1]}" + (f"\n{corr}" if corr else "")) if i == 0 else corr]
        rows.append(row)
        titles.append(tit)
    row_labels = [f"{labels[0]}: {a}\n{labels[1]}: {b}" for a, b in zip(names_a, names_b)]
    return image_grid(rows, titles=titles, row_labels=row_labels, size=size)
