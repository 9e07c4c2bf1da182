"""Figure layouts of the Zeiler & Fergus chapter (arrays in, ``matplotlib`` figure out).

- :func:`occlusion_figure`: their Fig. 7, five columns per image;
- :func:`top9_figure`: their Fig. 2, projections beside image patches, per unit and rule;
- :func:`filters_figure`: their Fig. 6, first-layer filters on one global or per-filter scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["projection_display", "occlusion_figure", "top9_figure", "filters_figure"]


def projection_display(p: torch.Tensor, q: float = 0.995) -> np.ndarray:
    """A signed projection ``(3, H, W)`` -> RGB in [0, 1] for display: grey 0.5 at zero, scaled
    so that the ``q`` quantile of ``|p|`` reaches the ends (Zeiler & Fergus show contrast-
    normalised reconstructions the same way)."""
    p = p.detach().float().cpu()
    s = float(torch.quantile(p.abs().flatten(), q)) if p.numel() else 0.0
    out = 0.5 + 0.5 * p / (s if s > 0 else 1.0)
    return out.clamp(0, 1).permute(1, 2, 0).numpy()


def occlusion_figure(clf: Any, images01: torch.Tensor, res: Any, projections: torch.Tensor | None,
                     true_names: Sequence[str], legend_classes: int = 5, size: float = 2.3):
    """Zeiler & Fergus Fig. 7: per image (a) the input with one grey square drawn, (b) total
    activity of the strongest map of ``res.layer``, (c) that map's projection to pixels, (d) the
    probability of the correct class, (e) the most probable class, all per occluder position.

    ``images01``: ``(N, 3, H, W)`` in [0, 1] (what the network sees); ``res``: an
    :class:`~deepinside.occlusion.OcclusionResult` with ``target`` the correct class.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    n = images01.shape[0]
    fig, axes = plt.subplots(n, 5, figsize=(5 * size + 2.2, n * size), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.2, 1, 1.2, 1]})
    titles = ["(a) input image", f"(b) {res.layer}, strongest map:\ntotal activity",
              "(c) that map's strongest\nunit, projected", "(d) probability of\nthe correct class",
              "(e) most probable class"]
    h, w = images01.shape[-2:]
    extent = (0, w, h, 0)
    boxes = res.boxes()
    for i in range(n):
        ax = axes[i]
        img = images01[i].permute(1, 2, 0).cpu().numpy()
        ax[0].imshow(img)
        j = int(res.prob[i].argmin())                         # the most harmful occluder
        x0, y0, x1, y1 = boxes.reshape(-1, 4)[j].tolist()
        ax[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=(0.5, 0.5, 0.5, 0.9),
                                  edgecolor="k"))
        ax[0].set_ylabel(f"class: {true_names[i]}", fontsize=8)
        if res.activity is not None:
            im = ax[1].imshow(res.activity[i].numpy(), cmap="jet", extent=extent)
            fig.colorbar(im, ax=ax[1], fraction=0.046, pad=0.03)
        if projections is not None:
            ax[2].imshow(projection_display(projections[i]))
        im = ax[3].imshow(res.prob[i].numpy(), cmap="jet", extent=extent)
        fig.colorbar(im, ax=ax[3], fraction=0.046, pad=0.03)
        top = res.top_class[i]
        classes, counts = torch.unique(top, return_counts=True)
        order = classes[counts.argsort(descending=True)].tolist()
        shown = order[:legend_classes]
        palette = plt.get_cmap("tab10").colors
        codes = torch.full_like(top, len(shown))
        for c_i, c in enumerate(shown):
            codes[top == c] = c_i
        cmap = ListedColormap([palette[c % 10] for c in range(len(shown))] + [(0.85, 0.85, 0.85)])
        ax[4].imshow(codes.numpy(), cmap=cmap, vmin=-0.5, vmax=len(shown) + 0.5, extent=extent,
                     interpolation="nearest")
        names = [clf.class_names[c] if hasattr(clf, "class_names") else str(c) for c in shown]
        handles = [Patch(color=palette[c_i % 10], label=nm) for c_i, nm in enumerate(names)]
        if len(order) > len(shown):
            handles.append(Patch(color=(0.85, 0.85, 0.85), label="other"))
        ax[4].legend(handles=handles, fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                     frameon=False)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
        if i == 0:
            for a, t in zip(ax, titles):
                a.set_title(t, fontsize=8)
    fig.tight_layout()
    return fig


def top9_figure(panels: Any, rules: Sequence[str] = ("deconvnet", "guided"), size: float = 0.62):
    """Zeiler & Fergus Fig. 2 for one layer: per unit, one row of its k projections per rule and
    one row of the k image patches (receptive fields of the top activations)."""
    import matplotlib.pyplot as plt

    u_n, k = panels.patches.shape[:2]
    rows = u_n * (len(rules) + 1)
    fig, axes = plt.subplots(rows, k, figsize=(k * size + 1.2, rows * size), squeeze=False)
    r = 0
    for u in range(u_n):
        for rule in rules:
            for j in range(k):
                axes[r, j].imshow(projection_display(panels.projections[rule][u, j]))
            corr = float(panels.correlation[rule][u])
            axes[r, 0].set_ylabel(f"unit {panels.units[u]}\n{rule}\nr={corr:.2f}", fontsize=6,
                                  rotation=0, ha="right", va="center")
            r += 1
        for j in range(k):
            axes[r, j].imshow(panels.patches[u, j].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r, 0].set_ylabel("patches", fontsize=6, rotation=0, ha="right", va="center")
        r += 1
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    fig.subplots_adjust(wspace=0.04, hspace=0.08, left=0.14)
    return fig


def filters_figure(filters: dict[str, torch.Tensor], size: float = 0.45, cols: int = 16):
    """Zeiler & Fergus Fig. 6: first-layer filters ``{title: (K, 3, kh, kw)}``, each block shown
    twice: on one global scale (every filter divided by the largest absolute weight of all: "one
    feature dominates") and with per-filter scaling (each filter stretched to its own range)."""
    import matplotlib.pyplot as plt

    blocks = []
    for title, w in filters.items():
        k = w.shape[0]
        n_rows = -(-k // cols)
        blocks.append((f"{title}: one global scale", w / w.abs().max().clamp_min(1e-12), n_rows))
        per = w / w.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None, None]
        blocks.append((f"{title}: per-filter scaling", per, n_rows))
    total_rows = sum(b[2] for b in blocks)
    fig, axes = plt.subplots(total_rows, cols, figsize=(cols * size, total_rows * size + 0.35 * len(blocks)),
                             squeeze=False)
    r = 0
    for title, w, n_rows in blocks:
        for i in range(n_rows * cols):
            a = axes[r + i // cols, i % cols]
            a.set_xticks([])
            a.set_yticks([])
            if i < w.shape[0]:
                a.imshow((0.5 + 0.5 * w[i]).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            else:
                a.axis("off")
        axes[r, 0].set_title(title, fontsize=8, loc="left", x=0.0)
        r += n_rows
    fig.subplots_adjust(wspace=0.08, hspace=0.55)
    return fig
