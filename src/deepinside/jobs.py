"""The dataset-wide jobs of the command line, each as shards that merge exactly.

Every job is a ``compute(start, stop)`` over a slice of its items (images or classes) that
returns a JSON-able partial result, and a merge that turns the partial results, in shard order,
into the result one process would have computed. :func:`deepinside.distributed.run_sharded`
runs them alone or under torchrun, with resumable per-shard files.

- :func:`top_activations_job`: Zeiler & Fergus's top-k scan (Fig. 2) over one or more image
  folders. A shard's top-k lists carry global image indices; the merge concatenates them in
  shard order (earlier images first) and keeps the k best with a stable sort, which is what the
  streaming scan of :func:`deepinside.top_activations` computes over all images in order.
- :func:`class_models_job`: class models (Sect. 2, eq. 1) for many classes, batched per shard;
  a shard's images travel as PNG (lossless 8-bit) with their final scores.

The localisation error of ``deepinside evaluate`` is counted the same way in
:mod:`deepinside.cli` (integer counts add).
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .core.models import BATCH_SIZE
from .core.distributed import ShardStore, Subset, distributed, run_sharded
from .methods.features import TopActivations, top_activations

__all__ = ["merge_top_activations", "top_activations_job", "class_models_job", "ClassModelEntry"]


def _shard_top(res: TopActivations, offset: int) -> dict[str, Any]:
    return {"units": res.units.tolist(), "values": res.values.tolist(),
            "image_index": (res.image_index + offset).tolist(), "position": res.position.tolist(),
            "map_size": list(res.map_size), "n_images": res.n_images}


def merge_top_activations(layer: str, parts: Sequence[dict[str, Any]], k: int) -> TopActivations:
    """One layer's top-k from shard results (in shard order): stable sort of the candidates.

    Args:
        parts: per shard ``{"units", "values" (U, k_s), "image_index" (U, k_s) global,
            "position" (U, k_s, 2), "map_size", "n_images"}``.
    """
    if not parts:
        raise ValueError("no shard results to merge")
    units = parts[0]["units"]
    if any(p["units"] != units for p in parts):
        raise ValueError("shards scanned different units")
    v = torch.cat([torch.tensor(p["values"], dtype=torch.float32) for p in parts], 1)
    idx = torch.cat([torch.tensor(p["image_index"], dtype=torch.int64) for p in parts], 1)
    pos = torch.cat([torch.tensor(p["position"], dtype=torch.int64).reshape(len(units), -1, 2)
                     for p in parts], 1)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
    return TopActivations(layer=layer, units=torch.tensor(units, dtype=torch.int64),
                          values=v.gather(1, order), image_index=idx.gather(1, order),
                          position=pos.gather(1, order[..., None].expand(-1, -1, 2)),
                          map_size=tuple(parts[0]["map_size"]),
                          n_images=sum(p["n_images"] for p in parts))


def top_activations_job(load_clf, data: Any, layers: Sequence[str],
                        units: dict[str, list[int] | None], k: int = 9, *, batch_size: int = BATCH_SIZE,
                        shard_size: int = 256, device: Any = "cpu", threads: int | None = None,
                        store: ShardStore | None = None) -> dict[str, TopActivations] | None:
    """The top-``k`` scan of ``layers`` over ``data``, sharded; the merged result on rank 0.

    ``shard_size`` should be a multiple of ``batch_size``, so that every image goes through the
    network in the same batch whatever the number of processes (bitwise identical results).
    """
    if shard_size % batch_size:
        raise ValueError(f"shard_size ({shard_size}) must be a multiple of batch_size ({batch_size})")
    with distributed(device, threads=threads) as ctx:
        clf = None

        def compute(a: int, b: int) -> dict[str, Any]:
            nonlocal clf
            if clf is None:
                clf = load_clf()
            res = top_activations(clf, Subset(data, range(a, b)), list(layers), units=units,
                                  k=k, batch_size=batch_size, show_progress=False)
            return {name: _shard_top(r, a) for name, r in res.items()}

        shards = run_sharded(len(data), compute, shard_size=shard_size, ctx=ctx, store=store,
                             desc="top activations")
    if shards is None:
        return None
    return {name: merge_top_activations(name, [s[name] for s in shards], k) for name in layers}


@dataclass(frozen=True)
class ClassModelEntry:
    """One class model of a gallery: the image (``(H, W, 3)`` uint8) and its final score."""

    class_index: int
    class_name: str
    score: float
    image: np.ndarray


def _png(a: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _unpng(text: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def class_models_job(load_clf, classes: Sequence[int], *, shard_size: int = 8,
                     device: Any = "cpu", threads: int | None = None,
                     store: ShardStore | None = None, **options: Any
                     ) -> list[ClassModelEntry] | None:
    """Class models of ``classes`` (indices), ``shard_size`` classes per batched
    :func:`deepinside.class_model` call (``options`` pass through); merged on rank 0."""
    from .methods.class_model import class_model

    with distributed(device, threads=threads) as ctx:
        clf = None

        def compute(a: int, b: int) -> list[dict[str, Any]]:
            nonlocal clf
            if clf is None:
                clf = load_clf()
            res = class_model(clf, list(classes[a:b]), show_progress=False, **options)
            imgs = (res.images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            return [{"class_index": int(c), "class_name": clf.class_names[int(c)],
                     "score": float(res.scores[-1, j]), "png": _png(imgs[j])}
                    for j, c in enumerate(res.classes)]

        shards = run_sharded(len(classes), compute, shard_size=shard_size, ctx=ctx, store=store,
                             desc="class models")
    if shards is None:
        return None
    return [ClassModelEntry(e["class_index"], e["class_name"], e["score"], _unpng(e["png"]))
            for s in shards for e in s]


def save_top_activations(path: Path, result: dict[str, TopActivations]) -> None:
    """Write the merged scan as JSON (layer -> units, values, image_index, position)."""
    path.write_text(json.dumps({name: _shard_top(r, 0) for name, r in result.items()}))
