"""The figures and tables of chapter 6 (computed by :mod:`deepinside.measures.metrics`): deletion/insertion curves, the randomisation figures, the summary and pointing-game tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.models import Classifier
from ..measures.metrics import BASELINES, RandomisationResult, _unit_range, sem

__all__ = ["summary_markdown", "curves_figure", "randomisation_figure", "similarity_figure",
           "pointing_table", "pointing_markdown"]


def summary_markdown(results: dict[str, dict[str, Any]],
                     randomisation: dict[str, RandomisationResult] | None = None,
                     names: dict[str, str] | None = None) -> str:
    """A Markdown table, methods x tests, ``mean ± standard error`` over images: pointing accuracy
    (%), deletion AUC (lower is better), insertion AUC (higher is better), and, when given, the
    Spearman (absolute values) similarity after randomising every block (lower = the map depends
    on the model more)."""
    head = "| method | pointing game (%) | deletion AUC ↓ | insertion AUC ↑ |"
    rule = "|---|---:|---:|---:|"
    if randomisation:
        head += " rank corr. after full randomisation ↓ |"
        rule += "---:|"
    lines = [head, rule]
    for m, r in results.items():
        pg, de = r.get("pointing"), r.get("deletion")
        cells = [(names or {}).get(m, m)]
        cells.append(f"{100 * pg['accuracy']:.1f} ± {100 * pg['accuracy_sem']:.1f}" if pg else "–")
        for k in ("deletion", "insertion"):
            cells.append(f"{de[k]:.3f} ± {de[k + '_sem']:.3f}" if de else "–")
        if randomisation:
            rr = randomisation.get(m)
            cells.append(f"{rr['spearman_abs'][-1][1]:.2f} ± {rr.sem('spearman_abs')[-1]:.2f}" if rr else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves_figure(results: dict[str, dict[str, Any]], names: dict[str, str] | None = None):
    """Mean deletion and insertion curves of each method (Petsiuk et al. 2018, Fig. 4 layout):
    probability of the class against the fraction of pixels removed / inserted; AUC in the
    legend. Baselines dashed."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for m, r in results.items():
        d = r.get("deletion")
        if d is None:
            continue
        for ax, k in zip(axes, ("deletion", "insertion")):
            ax.plot(d["fraction"], d[k + "_curve"].mean(0), ls="--" if m in BASELINES else "-",
                    label=f"{(names or {}).get(m, m)} ({d[k]:.3f})")
    for ax, k in zip(axes, ("deletion", "insertion")):
        ax.set_title(f"{k} (AUC in brackets)")
        ax.set_xlabel(f"fraction of pixels {'removed' if k == 'deletion' else 'inserted'}")
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("probability of the class")
    fig.tight_layout()
    return fig


def _display_map(m: torch.Tensor) -> np.ndarray:
    return _unit_range(m.float().cpu().numpy())


def randomisation_figure(clf: Classifier, x: torch.Tensor, results: dict[str, RandomisationResult],
                         image: int = 0, names: dict[str, str] | None = None, size: float = 1.05):
    """Adebayo et al. (2018), Fig. 2 layout: rows are methods, columns the original map and the
    maps after cascading randomisation down to each block (absolute values, each scaled by its
    99th percentile). The image is in the first column of the first row."""
    import matplotlib.pyplot as plt

    methods = list(results)
    blocks = ["original"] + list(results[methods[0]].blocks)
    fig, axes = plt.subplots(len(methods), len(blocks) + 1,
                             figsize=(size * (len(blocks) + 1), size * len(methods)), squeeze=False)
    img = clf.denormalize(x[image:image + 1])[0].permute(1, 2, 0).cpu().numpy()
    for r, m in enumerate(methods):
        axes[r, 0].imshow(img if r == 0 else np.ones_like(img))
        axes[r, 0].set_ylabel((names or {}).get(m, m), fontsize=7)
        for c in range(len(blocks)):
            axes[r, c + 1].imshow(_display_map(results[m].maps[c, image]), cmap="gray", vmin=0, vmax=1)
            if r == 0:
                axes[r, c + 1].set_title(blocks[c].replace("+", "+\n"), fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return fig


def similarity_figure(results: dict[str, RandomisationResult], names: dict[str, str] | None = None):
    """Adebayo et al. (2018), Fig. 4 layout: mean similarity to the original map (one panel per
    measure) against the blocks randomised so far, one line per method, error bars one
    standard error over images."""
    import matplotlib.pyplot as plt

    metrics_ = list(next(iter(results.values())))
    fig, axes = plt.subplots(1, len(metrics_), figsize=(3.2 * len(metrics_), 3.2), sharey=True)
    for ax, k in zip(np.atleast_1d(axes), metrics_):
        for m, r in results.items():
            ys = [1.0] + [v for _, v in r[k]]
            es = [0.0] + r.sem(k)
            ax.errorbar(range(len(ys)), ys, yerr=es, label=(names or {}).get(m, m), capsize=2)
        blocks = ["original"] + list(next(iter(results.values())).blocks)
        ax.set_xticks(range(len(blocks)), blocks, rotation=90, fontsize=6)
        ax.set_title(k)
        ax.axhline(0, color="k", lw=0.5)
    np.atleast_1d(axes)[0].set_ylabel("similarity to the original map")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def pointing_table(results: dict[str, dict[str, Any]], subsets: dict[str, Any],
                   names: dict[str, str] | None = None, baseline: str = "centre",
                   show: str = "both") -> str:
    """A Markdown table of pointing accuracy: one row per entry of ``results`` (pointing_game
    dicts on the same images), one column per subset of the images (``{label: index or boolean
    mask into the hits}``), in percent. ``show="accuracy"``: each cell ``accuracy ± s.e.``;
    ``"difference"``: the difference from the baseline on the same images ± its paired s.e.
    (the baseline's own row left out); ``"both"``: ``accuracy ± s.e. (difference ± s.e.)``
    (wide: two tables fit a book's column better)."""
    if show not in ("both", "accuracy", "difference"):
        raise ValueError(f"show must be 'both', 'accuracy' or 'difference', got {show!r}")
    base = np.asarray(results[baseline]["hits"], dtype=float)
    head = ["protocol / method"] + [f"{k} (n = {len(base[v])})" for k, v in subsets.items()]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(subsets)]
    for m, r in results.items():
        if show == "difference" and m == baseline:
            continue
        h = np.asarray(r["hits"], dtype=float)
        cells = [(names or {}).get(m, m)]
        for sel in subsets.values():
            a, d = h[sel], h[sel] - base[sel]
            acc = f"{100 * a.mean():.1f} ± {100 * sem(a):.1f}"
            gap = f"{100 * d.mean():+.1f} ± {100 * sem(d):.1f}"
            if show == "accuracy" or (show == "both" and m == baseline):
                cells.append(acc)
            elif show == "difference":
                cells.append(gap)
            else:
                cells.append(f"{acc} ({gap})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pointing_markdown(results: dict[str, dict[str, Any]], subsets: dict[str, Any],
                      names: dict[str, str] | None = None,
                      paired: tuple[str, str] = ("gradient", "centre")) -> str:
    """Pointing accuracy (%, ± standard error over images) of each method on subsets of the
    images (``{label: index or boolean mask into the hits}``), and the paired difference of two
    methods on the same images (± its standard error)."""
    methods = list(results)
    a, b = paired
    head = ["images", "n"] + [(names or {}).get(m, m) for m in methods] + [f"{a} − {b} (paired)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, sel in subsets.items():
        hits = {m: np.asarray(results[m]["hits"])[sel].astype(float) for m in methods}
        d = hits[a] - hits[b]
        cells = [label, str(len(d))] + [f"{100 * h.mean():.1f} ± {100 * sem(h):.1f}" for h in hits.values()]
        cells.append(f"{100 * d.mean():+.1f} ± {100 * sem(d):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
