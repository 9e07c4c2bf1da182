"""The paper's figure layouts (matplotlib).

Generic helpers first; then one section per figure of the paper. Each function returns the
``matplotlib.figure.Figure`` so a notebook can caption it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["as_image_array", "image_grid", "draw_box", "predictions_figure"]


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


# --- Fig. 2: saliency maps (saliency chapter) --------------------------------------------------


# --- Fig. 3: localisation (localisation chapter) -----------------------------------------------


# --- Sect. 4: backward rules (DeconvNet chapter) -----------------------------------------------
