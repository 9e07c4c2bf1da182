"""deepinside: an executable reproduction of Simonyan, Vedaldi & Zisserman (2014).

"Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps",
with the Zeiler & Fergus (2014) experiments it builds on. One module per idea of the paper:

- :mod:`deepinside.models`: ``load_classifier`` (network + its exact preprocessing, offline)
- :mod:`deepinside.data`: ``load_image``, ``sample_images``, ``IlsvrcDataset``
- :mod:`deepinside.saliency`: ``saliency`` (Sect. 3.1, eq. 4, batched, 10-crop)
- :mod:`deepinside.backprop`: ``backward_rule`` (Sect. 4: gradient / deconvnet / guided)
- :mod:`deepinside.deconvnet`: an explicit Zeiler & Fergus DeconvNet and the paper's ConvNet
- :mod:`deepinside.class_model`: ``class_model`` (Sect. 2, eq. 1)
- :mod:`deepinside.localisation`: ``segment``, ``bounding_box``, ``localise`` (Sect. 3.2)
- :mod:`deepinside.evaluation`: IoU, the ILSVRC localisation error, baselines
- :mod:`deepinside.plotting`: the paper's figure layouts

Importing the package downloads nothing, needs no GPU and loads the heavier modules lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from .data import IlsvrcDataset, IlsvrcRecord, default_ilsvrc_root, load_image, sample_images, to_rgb
from .models import (Classifier, WeightsUnavailableError, frozen, imagenet_labels, load_classifier,
                     resolve_device, seed_everything)
# Eager where a function shares its module's name: importing the submodule first (e.g.
# ``from deepinside.saliency import ...``) would otherwise leave ``di.saliency`` bound to the module.
from .class_model import class_model
from .saliency import saliency

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY = {
    "saliency": "saliency",
    "ten_crop_boxes": "saliency",
    "saliency_to_image": "saliency",
    "saliency_box_share": "saliency",
    "saliency_cost": "saliency",
    "backward_rule": "backprop",
    "RULES": "backprop",
    "PaperConvNet": "deconvnet",
    "paper_convnet": "deconvnet",
    "deconvnet_reconstruct": "deconvnet",
    "class_model": "class_model",
    "ClassModelResult": "class_model",
    "segment": "localisation",
    "bounding_box": "localisation",
    "localise": "localisation",
    "iou": "evaluation",
    "evaluate_localisation": "evaluation",
    "evaluate_classification": "evaluation",
}

__all__ = [
    "Classifier", "WeightsUnavailableError", "frozen", "imagenet_labels", "load_classifier",
    "resolve_device", "seed_everything",
    "IlsvrcDataset", "IlsvrcRecord", "default_ilsvrc_root", "load_image", "sample_images", "to_rgb",
    *_LAZY,
]


_SUBMODULES = {"plotting", "saliency", "backprop", "deconvnet", "class_model", "localisation", "evaluation", "cli"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES and name not in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepinside' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
