"""Figure layouts of the class-model chapter beyond the paper's Fig. 1 (arrays in, figure out).

- :func:`fig1_pair_figure`: the paper's Fig. 1 layout twice, side by side (two parameterisations);
- :func:`snapshots_figure`: class models along the optimisation (rows: classes, columns: steps);
- :func:`gallery_figure`: many classes in groups, each name marked by what recognised it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .plotting import as_image_array, stretch

__all__ = ["fig1_pair_figure", "snapshots_figure", "gallery_figure"]


def _show(ax, image: torch.Tensor, contrast: bool) -> None:
    img = image.detach().float().cpu()
    ax.imshow(as_image_array(stretch(img) if contrast else img))
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def fig1_pair_figure(panels: Mapping[str, torch.Tensor], names: Sequence[str], cols: int = 4,
                     size: float = 1.55, contrast: bool = True):
    """Fig. 1's layout once per entry of ``panels``, side by side, the class name under each image.

    Args:
        panels: title -> ``(K, 3, H, W)`` images in [0, 1] (e.g. ``ClassModelResult.images``);
            every entry must hold the same K classes, in the order of ``names``.
        names: the K class names.
        cols: images per row within one panel.
        contrast: stretch each image to its 0.5 %/99.5 % quantiles (display only; say so).
    """
    import matplotlib.pyplot as plt

    k = len(names)
    if any(len(v) != k for v in panels.values()):
        raise ValueError(f"every panel must hold {k} images, one per name")
    rows = (k + cols - 1) // cols
    fig = plt.figure(figsize=(size * cols * len(panels) + 0.3, size * 1.2 * rows + 0.35))
    subs = fig.subfigures(1, len(panels), wspace=0.04, squeeze=False)[0]
    for sub, (title, images) in zip(subs, panels.items()):
        axes = sub.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for i in range(k):
            ax = axes[i // cols, i % cols]
            ax.axis("on")
            _show(ax, images[i], contrast)
            ax.set_xlabel(names[i], fontsize=8, labelpad=2)
        sub.suptitle(title, fontsize=10)
        sub.subplots_adjust(left=0.02, right=0.98, bottom=0.06, top=0.88, wspace=0.06, hspace=0.28)
    return fig


def snapshots_figure(snapshots: Mapping[int, torch.Tensor], names: Sequence[str],
                     rows: Sequence[int] | None = None, size: float = 1.5, contrast: bool = False):
    """Class models along the optimisation: one row per class, one column per kept step.

    Args:
        snapshots: step -> ``(K, 3, H, W)`` images (``ClassModelResult.snapshots``).
        names: the K class names.
        rows: which of the K classes to show (default all).
    """
    import matplotlib.pyplot as plt

    steps = sorted(snapshots)
    rows = list(range(len(names))) if rows is None else list(rows)
    fig, axes = plt.subplots(len(rows), len(steps), figsize=(size * len(steps) + 0.8, size * len(rows)),
                             squeeze=False)
    for i, r in enumerate(rows):
        for j, t in enumerate(steps):
            _show(axes[i, j], snapshots[t][r], contrast)
            if i == 0:
                axes[i, j].set_title(f"step {t}", fontsize=9)
        axes[i, 0].set_ylabel(names[r], fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def gallery_figure(images: torch.Tensor, names: Sequence[str], groups: Mapping[str, Sequence[str]],
                   marks: Sequence[str] | None = None, size: float = 1.2, contrast: bool = False):
    """Class models of many classes, one row per group, the class name (and a mark) under each.

    Args:
        images: ``(N, 3, H, W)`` in [0, 1], in the order of ``names``.
        names: the N displayed names; ``groups``: group title -> its names (in order; one row each,
            so every group has the same number of classes).
        marks: N short strings appended to the names (e.g. which networks recognise the image).
    """
    import matplotlib.pyplot as plt

    cols = max(len(v) for v in groups.values())
    fig, axes = plt.subplots(len(groups), cols, figsize=(size * cols, size * 1.28 * len(groups)),
                             squeeze=False)
    i = 0
    for g, (title, members) in enumerate(groups.items()):
        for j in range(cols):
            ax = axes[g, j]
            if j >= len(members):
                ax.axis("off")
                continue
            _show(ax, images[i], contrast)
            label = names[i] + (f"\n{marks[i]}" if marks is not None and marks[i] else "")
            ax.set_xlabel(label, fontsize=6.5, labelpad=1.5)
            i += 1
        axes[g, 0].set_ylabel(title, fontsize=7.5)
    if i != len(images):
        raise ValueError(f"groups name {i} classes but there are {len(images)} images")
    fig.tight_layout(pad=0.25, h_pad=0.4, w_pad=0.2)
    return fig
