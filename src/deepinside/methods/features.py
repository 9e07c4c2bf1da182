"""What the features are: top activations over a dataset, receptive fields, projections to pixels.

Zeiler & Fergus (2014), Sect. 4 ("Convnet Visualization") and their Fig. 2: "for a given feature
map, we show the top 9 activations, each projected separately down to pixel space, revealing the
different structures that excite that map", "alongside ... the corresponding image patches".
Their Fig. 6 shows the first-layer filters, "without feature scale clipping" one "dominates".

- :func:`top_activations`: one streaming pass over a dataset, a running top-k per unit (each
  image counted once per unit, at its spatial maximum, as Zeiler & Fergus and the DeepVis
  toolbox do); memory bounded by one batch whatever the dataset size.
- :func:`receptive_field` (from :mod:`deepinside.receptive`): the input box a unit sees, computed
  from the network itself.
- :func:`project`: one activation back-propagated to pixel space with a backward rule of
  :mod:`deepinside.backprop` (``"deconvnet"``: Zeiler & Fergus's DeconvNet; ``"guided"``).
- :func:`first_layer_filters`, :func:`filter_stats`: the data of their Fig. 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core.models import BATCH_SIZE
from ..core._progress import progress
from ..core.cache import cached, default_cache_dir, register_cacheable
from ..core.inputs import as_batch, check_bool, check_int
from ..core.layers import device_of, forward_to, net_of, resolve_layer
from .receptive import receptive_field  # noqa: F401 (public here too: di.receptive_field)

__all__ = ["TopActivations", "top_activations", "receptive_field", "project", "aligned_projections",
           "mean_pairwise_correlation", "first_layer_filters", "filter_stats", "ilsvrc_roots",
           "ImageList", "Top9Panels", "top9_panels", "cached_top_activations",
           "default_cache_dir", "book_images", "layer_table"]


# -- data -----------------------------------------------------------------------------------------


class ImageList:
    """Several image collections as one indexable sequence (e.g. the two ILSVRC folders).

    Each part is indexable (``len``, ``[i]``); an item is a PIL image or a tuple whose first
    element is one (``IlsvrcDataset`` gives ``(image, record)``). Index ``i`` runs over the parts
    in order.
    """

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self._ends = np.cumsum([len(p) for p in self.parts]).tolist()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        k = int(np.searchsorted(self._ends, i, side="right"))
        return self.parts[k][i - (self._ends[k - 1] if k else 0)]

    def image(self, i: int) -> Image.Image:
        """The PIL image of item ``i``."""
        return _pil(self[i])

    @property
    def records(self) -> list[Any]:
        """The annotation records of all parts (parts without ``records`` raise)."""
        out: list[Any] = []
        for p in self.parts:
            if not hasattr(p, "records"):
                raise AttributeError(f"{type(p).__name__} has no annotation records")
            out.extend(p.records)
        return out

    def key(self) -> str:
        """A string identifying the data (roots and sizes), for caching results computed on it."""
        return ";".join(f"{getattr(p, 'root', type(p).__name__)}:{len(p)}" for p in self.parts)


def ilsvrc_roots() -> list[Path]:
    """The ILSVRC validation folders present: ``default_ilsvrc_root()`` and, next to it,
    ``ilsvrc2012-val-650-227px`` (the book's two sample folders); empty when there are none."""
    from ..core.data import default_ilsvrc_root

    root = default_ilsvrc_root()
    if root is None or not (root / "images").is_dir():
        return []
    roots = [root]
    other = root.parent / "ilsvrc2012-val-650-227px"
    if other != root and (other / "images").is_dir():
        roots.append(other)
    return roots


def _pil(item: Any) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], Image.Image):
        return item[0]
    raise TypeError(f"dataset items must be PIL images or (image, ...) tuples, got {type(item).__name__}")


def _batches(clf: Any, data: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Network-input batches ``(B, C, H, W)`` from a tensor, a sequence of PIL images / items, or
    any iterable of them. The next batch is decoded in a thread while the network runs."""
    if isinstance(data, torch.Tensor):
        x = as_batch(clf, data, "top_activations")
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size]
        return
    if isinstance(data, Image.Image):
        data = [data]
    if not hasattr(clf, "preprocess"):
        raise TypeError("PIL images need a Classifier (with its preprocessing), not a bare network")

    def chunks() -> Iterator[list]:
        if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
            for i in range(0, len(data), batch_size):
                yield [data[j] for j in range(i, min(i + batch_size, len(data)))]
        else:
            buf: list = []
            for item in data:
                buf.append(item)
                if len(buf) == batch_size:
                    yield buf
                    buf = []
            if buf:
                yield buf

    def load(items: list) -> torch.Tensor:
        return clf.preprocess([_pil(it) for it in items])

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        it = chunks()
        nxt = next(it, None)
        fut = pool.submit(load, nxt) if nxt is not None else None
        while fut is not None:
            nxt = next(it, None)
            x = fut.result()
            fut = pool.submit(load, nxt) if nxt is not None else None
            if not torch.isfinite(x).all():
                raise ValueError("the input contains NaN or infinite values")
            yield x


# -- top activations --------------------------------------------------------------------------


@dataclass
class TopActivations:
    """The k strongest images of each unit of one layer, best first.

    Attributes:
        layer: the module name.
        units: ``(U,)`` the feature maps (channels) scanned.
        values: ``(U, k)`` the unit's spatial maximum in each of its top images.
        image_index: ``(U, k)`` int64, index of the image in the scanned data.
        position: ``(U, k, 2)`` int64, ``(y, x)`` of the maximum in the layer's ``(h, w)`` map.
        map_size: ``(h, w)`` of the layer's feature maps.
        n_images: images scanned.
    """

    layer: str
    units: torch.Tensor
    values: torch.Tensor
    image_index: torch.Tensor
    position: torch.Tensor
    map_size: tuple[int, int]
    n_images: int

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def row(self, unit: int) -> int:
        """Row of ``unit`` (a channel index) in the tensors."""
        hits = (self.units == unit).nonzero()
        if len(hits) == 0:
            raise ValueError(f"unit {unit} was not scanned in layer {self.layer!r}")
        return int(hits[0, 0])


def top_activations(clf: Any, images_or_dataset: Any, layer: str | Sequence[str],
                    units: Sequence[int] | dict[str, Sequence[int] | None] | None = None, k: int = 9,
                    batch_size: int = BATCH_SIZE, show_progress: bool = True
                    ) -> TopActivations | dict[str, TopActivations]:
    """The top-``k`` images of every unit of ``layer`` over a dataset, in one streaming pass.

    Zeiler & Fergus (2014), Fig. 2: "the top 9 activations in a random subset of feature maps
    across the validation data". Each image counts once per unit, with its spatial maximum
    (the DeepVis toolbox's "max" statistic); ties keep the earlier image (and, within an image,
    the first position in row-major order), so the result equals a brute-force per-image maximum
    followed by a stable sort.

    The network runs only up to the deepest requested layer (a forward hook ends the pass), the
    data are decoded one batch ahead in a thread, and the running state is ``(U, k)`` per layer:
    memory does not grow with the dataset.

    Args:
        clf: a :class:`~deepinside.Classifier` (or a bare network, for tensors).
        images_or_dataset: a ``(N, C, H, W)`` network-input tensor, a list of PIL images, an
            :class:`~deepinside.IlsvrcDataset` / :class:`ImageList` (items ``(image, ...)``), or any
            iterable of PIL images.
        layer: a module name of ``clf.net``, or several (one pass serves them all).
        units: channels to scan (None: all); for several layers a dict ``{layer: units}``.
        k: images kept per unit (fewer when the data hold fewer images).
        batch_size: images per forward pass.

    Returns:
        :class:`TopActivations` (a dict ``{layer: TopActivations}`` when ``layer`` is a list).

    Raises:
        ValueError: unknown layer, ``k < 1``, units out of range, empty data, NaN input, a layer
            whose output is not ``(N, C, h, w)``.
        TypeError: an option of the wrong type (``k="9"``, ``units=[1.5]``), named in the message.
    """
    net = net_of(clf)
    if isinstance(layer, str):
        names = [layer]
    elif isinstance(layer, (list, tuple)):
        names = list(layer)
    else:
        raise TypeError(f"layer must be a module name or a list of them, got {type(layer).__name__} {layer!r}")
    if not names:
        raise ValueError("no layer given")
    modules = {n: resolve_layer(net, n) for n in names}
    k = check_int("k", k)
    batch_size = check_int("batch_size", batch_size)
    show_progress = check_bool("show_progress", show_progress)
    if isinstance(units, dict):
        unknown = sorted(set(units) - set(names), key=str)
        if unknown:
            raise ValueError(f"units given for {unknown}, which are not among the layers {names}")
        want = {n: _units_list(units.get(n), n) for n in names}
    else:
        want = {n: _units_list(units, n) for n in names}
    dev = device_of(clf)
    state: dict[str, dict[str, torch.Tensor]] = {}
    sel: dict[str, torch.Tensor | None] = {}
    n_seen = 0
    total = len(images_or_dataset) if hasattr(images_or_dataset, "__len__") else None
    bar = progress(total=total, desc="top activations", unit="img", disable=not show_progress)
    from ..core.models import frozen

    try:
        with frozen(net), torch.inference_mode():
            for x in _batches(clf, images_or_dataset, batch_size):
                x = x.to(dev).contiguous(memory_format=torch.channels_last)   # faster convs on CPU
                outs = forward_to(net, x, modules)
                b = len(x)
                for name, out in outs.items():
                    if name not in sel:
                        sel[name] = _check_units(want.get(name), out.shape[1], name, dev)
                        state[name] = {"map_size": torch.tensor(out.shape[2:])}
                    u = sel[name]
                    a = out if u is None else out.index_select(1, u)
                    flat = a.flatten(2)                                     # (B, U, h*w)
                    v, arg = flat.max(2)                                    # first maximum
                    _merge(state[name], v.T.float(), n_seen + torch.arange(b, device=dev),
                           arg.T, k)
                n_seen += b
                bar.update(b)
    finally:
        bar.close()
    if n_seen == 0:
        raise ValueError("no images to scan")
    results = {}
    for name in names:
        st = state[name]
        h, w = st["map_size"].tolist()
        c = st["values"].shape[0]
        u = sel[name] if sel[name] is not None else torch.arange(c, device=dev)
        pos = st["pos"]
        results[name] = TopActivations(   # clones: ordinary tensors, not inference-mode ones
            layer=name, units=u.cpu().clone(), values=st["values"].cpu().clone(),
            image_index=st["index"].cpu().clone(),
            position=torch.stack([pos // w, pos % w], -1).cpu().clone(), map_size=(h, w), n_images=n_seen)
    return results[names[0]] if isinstance(layer, str) else results


def _units_list(units: Any, layer: str) -> list[int] | None:
    """``units`` of ``layer`` as a list of ints (None: all), checked before any forward pass."""
    if units is None:
        return None
    if isinstance(units, torch.Tensor):
        if units.is_floating_point() or units.is_complex() or units.dtype == torch.bool:
            raise TypeError(f"units of layer {layer!r} must be integers, got a {units.dtype} tensor")
        units = units.reshape(-1).tolist()
    if isinstance(units, (str, bytes)) or not isinstance(units, Iterable):
        raise TypeError(f"units of layer {layer!r} must be a sequence of channel indices, "
                        f"got {type(units).__name__} {units!r}")
    out = [check_int(f"units of layer {layer!r}: unit", u, 0) for u in units]
    if not out:
        raise ValueError(f"units of layer {layer!r} is empty (give None for all channels)")
    return out


def _check_units(units: Sequence[int] | None, c: int, name: str, dev: torch.device) -> torch.Tensor | None:
    if units is None:
        return None
    u = torch.as_tensor(list(units), dtype=torch.long, device=dev).reshape(-1)
    if u.numel() == 0 or int(u.min()) < 0 or int(u.max()) >= c:
        raise ValueError(f"units {u.tolist()} out of range: layer {name!r} has {c} feature maps")
    return u


def _merge(st: dict[str, torch.Tensor], v: torch.Tensor, idx: torch.Tensor, pos: torch.Tensor, k: int) -> None:
    """Merge a batch (``v``, ``pos``: ``(U, B)``; ``idx``: ``(B,)``) into the running top-k.

    Candidates are the running top-k (earlier images, already in order) followed by the batch
    (in image order); a stable descending sort keeps the earlier image first among equals."""
    u = v.shape[0]
    idx = idx[None].expand(u, -1)
    if "values" in st:
        v = torch.cat([st["values"], v], 1)
        idx = torch.cat([st["index"], idx], 1)
        pos = torch.cat([st["pos"], pos], 1)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
    st["values"], st["index"], st["pos"] = v.gather(1, order), idx.gather(1, order), pos.gather(1, order)


# -- projections ---------------------------------------------------------------------------------


def project(clf: Any, image: Any, layer: str, unit: int | Sequence[int],
            position: Sequence[int] | Sequence[Sequence[int]] | None = None, rule: str = "deconvnet",
            batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Project one activation per image down to pixel space: ``(N, C, H, W)``, signed.

    Zeiler & Fergus (2014), Sect. 2.1: "to examine a given convnet activation, we set all other
    activations in the layer to zero and pass the feature maps as input to the attached deconvnet
    layer". Here the seed is the activation's own value at ``(unit, y, x)`` (zero elsewhere), sent
    back with :func:`deepinside.backward_rule`: ``"deconvnet"`` (rectifiers pass the positive part
    of the signal; where the network max-pools, autograd routes the signal to the arg-max, i.e.
    Zeiler & Fergus's "switches"), ``"guided"`` (also gated by the forward pass) or
    ``"gradient"``. The network runs only up to ``layer``.

    Args:
        clf: a Classifier (or a bare network, for tensors).
        image: a PIL image, a list of them, or network input ``(N, C, H, W)``.
        layer: a module name of the network.
        unit: the channel, one for all images or one per image.
        position: ``(y, x)`` in the layer's map, one for all or one per image; None: the unit's
            spatial maximum in each image.
        rule: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        batch_size: images per backward pass.

    Raises:
        ValueError: unknown layer or rule, unit or position out of range, NaN input, a layer
            before any rectifier with a rule other than ``"gradient"``.
    """
    from .backprop import RULES, backward_rule
    from ..core.models import frozen

    if rule not in RULES:
        raise ValueError(f"unknown backward rule {rule!r}; choose one of {RULES}")
    net = net_of(clf)
    module = resolve_layer(net, layer)
    x = as_batch(clf, image, "project").to(device_of(clf))
    n = len(x)
    uu = torch.as_tensor(unit, dtype=torch.long).reshape(-1).clone()
    uu = uu.expand(n) if len(uu) == 1 else uu
    if len(uu) != n:
        raise ValueError(f"unit has {len(uu)} entries for {n} images")
    pp = None
    if position is not None:
        pp = torch.as_tensor(position, dtype=torch.long).reshape(-1, 2).clone()
        pp = pp.expand(n, 2) if len(pp) == 1 else pp
        if len(pp) != n:
            raise ValueError(f"position has {len(pp)} entries for {n} images")
    outs = []
    with frozen(net):
        for s in range(0, n, batch_size):
            xb = x[s:s + batch_size].detach().clone().requires_grad_(True)
            with torch.enable_grad(), backward_rule(net, rule):
                a = forward_to(net, xb, {layer: module})[layer]
                b, c, h, w = a.shape
                u = uu[s:s + b].to(a.device)
                if int(u.min()) < 0 or int(u.max()) >= c:
                    raise ValueError(f"unit {uu.tolist()} out of range: layer {layer!r} has {c} feature maps")
                rows = torch.arange(b, device=a.device)
                if pp is None:
                    flat = a.detach()[rows, u].flatten(1).argmax(1)
                    yx = torch.stack([flat // w, flat % w], 1)
                else:
                    yx = pp[s:s + b].to(a.device)
                    if int(yx.min()) < 0 or int(yx[:, 0].max()) >= h or int(yx[:, 1].max()) >= w:
                        raise ValueError(f"position outside the {h}x{w} map of layer {layer!r}")
                act = a[rows, u, yx[:, 0], yx[:, 1]]                        # (B,) the activations
                (g,) = torch.autograd.grad(act, xb, grad_outputs=act.detach())
            outs.append(g.detach())
    return torch.cat(outs)


def aligned_projections(proj: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``size x size`` windows of projections ``(N, C, H, W)`` centred on ``centres``
    ``(N, 2)`` (``(y, x)`` input pixels), zero outside the image: the units' projections aligned
    on the unit, for comparing them across images. Returns ``(N, C, size, size)``."""
    n, c, h, w = proj.shape
    half = size // 2
    padded = torch.nn.functional.pad(proj, (half, size, half, size))
    out = torch.empty(n, c, size, size, dtype=proj.dtype, device=proj.device)
    for i, (cy, cx) in enumerate(centres.round().long().tolist()):
        out[i] = padded[i, :, cy:cy + size, cx:cx + size]
    return out


def mean_pairwise_correlation(maps: torch.Tensor) -> float:
    """Mean Pearson correlation over all pairs of ``maps`` ``(K, ...)`` (K >= 2)."""
    if len(maps) < 2:
        raise ValueError("need at least two maps")
    f = maps.flatten(1).double()
    f = f - f.mean(1, keepdim=True)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cc = f @ f.T
    k = len(f)
    return float((cc.sum() - cc.diagonal().sum()) / (k * (k - 1)))


# -- first-layer filters (Fig. 6) --------------------------------------------------------------


def first_layer_filters(clf: Any, fold_norm: bool = False) -> torch.Tensor:
    """The first convolution's filters ``(K, C, kh, kw)`` (Zeiler & Fergus Fig. 6).

    ``fold_norm=True`` multiplies each filter by the scale of the batch normalisation that
    follows it (``gamma / sqrt(var + eps)``), i.e. the filter as the next layer sees it.
    """
    net = net_of(clf)
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer")
    name, conv = convs[0]
    w = conv.weight.detach().float().cpu().clone()
    if fold_norm:
        mods = list(net.named_modules())
        after = [m for n, m in mods[[n for n, _ in mods].index(name) + 1:]
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not after or after[0].num_features != w.shape[0]:
            raise ValueError("no batch normalisation follows the first convolution")
        bn = after[0]
        scale = (bn.weight.detach().float().cpu() if bn.weight is not None else torch.ones(w.shape[0])) \
            / torch.sqrt(bn.running_var.detach().float().cpu() + bn.eps)
        w = w * scale[:, None, None, None]
    return w


def filter_stats(w: torch.Tensor, dead: float = 0.1) -> dict[str, Any]:
    """Statistics of filters ``(K, C, kh, kw)``: L2 norms, how much the largest dominates, and
    the share of "dead" filters (Zeiler & Fergus Fig. 6: norm below ``dead`` x the median).

    Returns ``{"norms" (K,), "max_over_median", "dead_share", "share_visible_global"}``, the last
    being the share of filters whose largest weight reaches 10 % of the largest weight of all
    (what stays visible when every filter is shown on one global scale).
    """
    if w.ndim != 4:
        raise ValueError(f"expected filters (K, C, kh, kw), got shape {tuple(w.shape)}")
    norms = w.flatten(1).norm(dim=1)
    med = norms.median()
    peak = w.flatten(1).abs().amax(1)
    return {"norms": norms, "max_over_median": float(norms.max() / med),
            "dead_share": float((norms < dead * med).float().mean()),
            "share_visible_global": float((peak >= 0.1 * peak.max()).float().mean())}


# -- helpers of the chapter's figures and measurements -------------------------------------------


def _image_of(data: Any, i: int) -> Image.Image:
    return _pil(data[i])


@dataclass
class Top9Panels:
    """Zeiler & Fergus Fig. 2 for some units of one layer.

    Attributes:
        layer: module name; units: the channels shown, in order.
        patches: ``(U, k, 3, s, s)`` in [0, 1]: each top image's receptive-field patch, resized
            to ``s x s``.
        projections: ``{rule: (U, k, 3, s, s)}`` the signed projections over the same boxes.
        correlation: ``{rule: (U,)}`` mean pairwise correlation of a unit's k projections, aligned
            on the unit's location (:func:`aligned_projections`): 1 = the same picture whatever
            the image.
        boxes: ``(U, k, 4)`` the receptive-field boxes (network-input pixels).
    """

    layer: str
    units: list[int]
    patches: torch.Tensor
    projections: dict[str, torch.Tensor]
    correlation: dict[str, torch.Tensor]
    boxes: torch.Tensor


def top9_panels(clf: Any, data: Any, top: TopActivations, units: Sequence[int],
                rules: Sequence[str] = ("deconvnet", "guided"), size: int = 48) -> Top9Panels:
    """Projections and image patches of the top images of ``units`` (Zeiler & Fergus Fig. 2).

    ``data`` is what ``top`` scanned (indexable: a tensor, a list of PIL images or a dataset).
    Each activation is projected with every rule of ``rules`` (:func:`project`); projection and
    patch are cut to the unit's receptive field (:func:`receptive_field`) and resized to ``size``.
    """
    import torch.nn.functional as F

    rows = [top.row(u) for u in units]
    idx = top.image_index[rows]                                # (U, k)
    pos = top.position[rows]                                   # (U, k, 2)
    u_n, k = idx.shape
    flat_idx = idx.flatten().tolist()
    if isinstance(data, torch.Tensor):
        x = data[flat_idx]
    else:
        x = clf.preprocess([_image_of(data, i) for i in flat_idx])
    unit_of = torch.tensor(units).repeat_interleave(k)
    yx = pos.reshape(-1, 2)
    boxes = receptive_field(clf, top.layer, yx[:, 0], yx[:, 1])
    h, w = top.map_size
    hh, ww = x.shape[-2:]
    centres = (yx.double() + 0.5) * torch.tensor([hh / h, ww / w], dtype=torch.float64)
    span = int(max((boxes[:, 2] - boxes[:, 0]).max(), (boxes[:, 3] - boxes[:, 1]).max()))

    def crops(t: torch.Tensor) -> torch.Tensor:
        out = [F.interpolate(t[i:i + 1, :, b[1]:b[3], b[0]:b[2]], size=(size, size), mode="bilinear",
                             align_corners=False) for i, b in enumerate(boxes.tolist())]
        return torch.cat(out).reshape(u_n, k, t.shape[1], size, size)

    images01 = clf.denormalize(x).cpu() if hasattr(clf, "denormalize") else x.cpu()
    projections, corr = {}, {}
    for rule in rules:
        p = project(clf, x, top.layer, unit_of, yx, rule=rule).cpu()
        projections[rule] = crops(p)
        al = aligned_projections(p, centres, min(span, max(hh, ww))).reshape(u_n, k, -1)
        corr[rule] = torch.tensor([mean_pairwise_correlation(al[j]) for j in range(u_n)])
    return Top9Panels(layer=top.layer, units=list(units), patches=crops(images01), projections=projections,
                      correlation=corr, boxes=boxes.reshape(u_n, k, 4))


def _model_key(clf: Any) -> str:
    net = net_of(clf)
    p = next(net.parameters(), None)
    check = f"{float(p.detach().double().sum()):.10e}" if p is not None else "none"
    return f"{getattr(clf, 'name', type(net).__name__)}:{getattr(clf, 'input_size', '')}:{check}"


def cached_top_activations(clf: Any, data: Any, layers: Sequence[str], data_key: str,
                           units: dict[str, Sequence[int] | None] | None = None, k: int = 9,
                           batch_size: int = BATCH_SIZE, cache_dir: str | Path | None = None,
                           show_progress: bool = True) -> dict[str, TopActivations]:
    """:func:`top_activations` over several layers, saved under ``cache_dir`` (default
    :func:`deepinside.core.cache.default_cache_dir`: the book's ``_build/cache``) keyed by the model (name, input size, a checksum of its first
    weights), the layers, units, ``k`` and ``data_key`` (e.g. :meth:`ImageList.key`); a second
    call with the same key loads the result instead of scanning again."""
    key = repr((_model_key(clf), list(layers), units, k, data_key))
    return cached("top_activations", key,
                  lambda: top_activations(clf, data, list(layers), units=units, k=k,
                                          batch_size=batch_size, show_progress=show_progress),
                  default_cache_dir() if cache_dir is None else cache_dir)


register_cacheable(TopActivations, lambda t: dict(vars(t)),
                   lambda d: TopActivations(**{**d, "map_size": tuple(d["map_size"])}))


def book_images(seed: int = 0) -> tuple[ImageList, str, bool]:
    """The images the chapter scans: both ILSVRC sample folders when present (with boxes), else
    the offline photographs and their mirror images. Returns ``(data, description, has_boxes)``."""
    from PIL import ImageOps

    from ..core.data import IlsvrcDataset, sample_images

    roots = ilsvrc_roots()
    if roots:
        parts = [IlsvrcDataset(r) for r in roots]
        n = sum(len(p) for p in parts)
        return ImageList(parts), f"{n} ILSVRC-2012 validation images ({', '.join(r.name for r in roots)})", True
    photos = list(sample_images().values())
    imgs = photos + [ImageOps.mirror(p) for p in photos]
    return ImageList([imgs]), f"the {len(photos)} offline photographs and their mirror images", False


def layer_table(clf: Any, layers: Sequence[str]) -> list[dict[str, Any]]:
    """Shape and receptive field of some layers: ``[{layer, channels, map, rf, stride}]``, the
    receptive field being that of the central unit (pixels, clipped to the input)."""
    from ..core.models import frozen

    net = net_of(clf)
    size = getattr(clf, "input_size", 224)
    x = torch.zeros(1, 3, size, size, device=device_of(clf))
    with frozen(net), torch.inference_mode():
        outs = forward_to(net, x, {n: resolve_layer(net, n) for n in layers})
    rows = []
    for name in layers:
        _, c, h, w = outs[name].shape
        x0, y0, x1, y1 = receptive_field(clf, name, h // 2, w // 2)
        rows.append({"layer": name, "channels": c, "map": f"{h}x{w}", "rf": f"{y1 - y0}x{x1 - x0}",
                     "stride": size // h})
    return rows
