"""deepinside: an executable reproduction of Simonyan, Vedaldi & Zisserman (2014).

"Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps",
with the Zeiler & Fergus (2014) experiments it builds on. The package map, one module per idea:

**Methods** (what makes a picture of the network)

- :mod:`~deepinside.maps`: ``compute_maps``, the one map pipeline (any registered method, centre
  crop or the paper's 10-crop average), ``register_map``; gradient, DeconvNet, guided, SmoothGrad,
  CAM, Grad-CAM, occlusion as registered functions
- :mod:`~deepinside.saliency_maps`: ``saliency`` (Sect. 3.1, eq. 4), a thin wrapper of the pipeline
- :mod:`~deepinside.backprop`: ``backward_rule`` (Sect. 4: gradient / deconvnet / guided), eq. 4
- :mod:`~deepinside.deconvnet`: an explicit Zeiler & Fergus DeconvNet and the paper's ConvNet
- :mod:`~deepinside.class_model`, :mod:`~deepinside.param`: ``class_model`` (Sect. 2, eq. 1)
  and its image parameterisations
- :mod:`~deepinside.occlusion`, :mod:`~deepinside.features`, :mod:`~deepinside.receptive`:
  Zeiler & Fergus's occlusion, top activations, projections, receptive fields

**Measurements**

- :mod:`~deepinside.localisation`: ``segment``, ``bounding_box``, ``localise`` (Sect. 3.2)
- :mod:`~deepinside.evaluation`: IoU, the ILSVRC localisation error, box rules, the tables
- :mod:`~deepinside.metrics`: pointing game, deletion/insertion, randomisation (chapter 6)
- :mod:`~deepinside.transfer`: are class models recognised by other networks (chapter 1)

**The book's figures**: :mod:`~deepinside.plotting` (the paper's layouts),
:mod:`~deepinside.plotting_class_model`, :mod:`~deepinside.plotting_features`,
:mod:`~deepinside.widgets` (the explorer)

**Infrastructure**: :mod:`~deepinside.models` (``load_classifier``, offline), :mod:`~deepinside.data`
(``load_image``, ``IlsvrcDataset``), :mod:`~deepinside.fetch` (the book's ILSVRC sample, on pooch),
:mod:`~deepinside.frames` (crop geometry), :mod:`~deepinside.inputs` (input checks),
:mod:`~deepinside.layers` / :mod:`~deepinside.hooks` (layers by name, hooks removed in
``finally``), :mod:`~deepinside.distributed` / :mod:`~deepinside.jobs` (sharded runs),
:mod:`~deepinside.cli` (the ``deepinside`` command)

Importing the package imports nothing heavy: each public name (``di.saliency``,
``di.load_classifier``, ...) loads its module on first use (PEP 562), so ``deepinside --help``
answers without torch. Importing downloads nothing and needs no GPU. ``di.saliency``,
``di.occlusion`` and ``di.class_model`` are always the functions, never the modules of the same
name (``deepinside.saliency_maps``, ``import deepinside.occlusion`` gives the function too: use
``importlib.import_module("deepinside.occlusion")`` for the module).
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from ._version import __version__

#: public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    **dict.fromkeys(["Classifier", "WeightsUnavailableError", "frozen", "imagenet_labels",
                     "load_classifier", "resolve_device", "seed_everything"], "models"),
    **dict.fromkeys(["IlsvrcDataset", "IlsvrcRecord", "default_ilsvrc_root", "load_image",
                     "sample_images", "to_rgb"], "data"),
    **dict.fromkeys(["saliency", "saliency_to_image", "saliency_box_share", "saliency_cost"],
                    "saliency_maps"),
    "ten_crop_boxes": "frames",
    **dict.fromkeys(["backward_rule", "RULES", "RuleStats"], "backprop"),
    **dict.fromkeys(["PaperConvNet", "paper_convnet", "deconvnet_reconstruct"], "deconvnet"),
    **dict.fromkeys(["class_model", "ClassModelResult"], "class_model"),
    **dict.fromkeys(["segment", "bounding_box", "localise"], "localisation"),
    **dict.fromkeys(["iou", "evaluate_localisation", "evaluate_classification"], "evaluation"),
    **dict.fromkeys(["compute_maps", "register_map", "map_names", "available_maps"], "maps"),
    **dict.fromkeys(["pointing_game", "deletion_insertion", "randomisation_test"], "metrics"),
    **dict.fromkeys(["occlusion", "OcclusionResult"], "occlusion"),
    **dict.fromkeys(["top_activations", "TopActivations", "receptive_field", "project"], "features"),
    **dict.fromkeys(["fetch_ilsvrc_sample", "FetchError"], "fetch"),
}

#: the modules (``di.localisation.segment_details``, ``from deepinside import evaluation``)
_MODULES = ("backprop", "class_model", "cli", "data", "deconvnet", "distributed", "evaluation",
            "features", "fetch", "frames", "hooks", "inputs", "jobs", "layers", "localisation",
            "maps", "metrics", "models", "occlusion", "param", "plotting", "plotting_class_model",
            "plotting_features", "receptive", "saliency_maps", "transfer", "widgets")

#: modules whose name is also a public function: the function keeps the name
_SHADOWED = frozenset(n for n in _MODULES if _PUBLIC.get(n) == n)

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """PEP 562: a public name or module is imported on first use, then kept."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'deepinside' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_MODULES})


class _Package(types.ModuleType):
    """The package module: importing the submodule ``occlusion`` (or ``class_model``) does not
    rebind ``deepinside.occlusion`` from the function to the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _Package
del _sys
