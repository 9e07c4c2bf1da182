"""deepinside: an executable reproduction of Simonyan, Vedaldi & Zisserman (2014).

"Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps",
with the Zeiler & Fergus (2014) experiments it builds on. Four sub-packages, one module per idea;
each imports only from those above it (core <- methods <- measures <- figures <- cli, jobs):

``core/`` (infrastructure)
    ``models`` (``load_classifier``: network + exact preprocessing, offline), ``data``
    (``load_image``, ``IlsvrcDataset``), ``fetch`` (the book's ILSVRC sample, on pooch),
    ``cache`` (the one disk cache of what the book computes),
    ``frames`` (where a crop / the 10-crop square lies in the image), ``inputs`` (one validation
    of images, targets, numbers), ``layers`` and ``hooks`` (layers by name, hooks removed in
    ``finally``), ``distributed`` (sharded, resumable runs under torchrun)
``methods/`` (what makes a picture of the network)
    ``maps`` (``compute_maps``, the one map pipeline: any registered method, centre crop or the
    paper's 10-crop average; ``register_map``; gradient, DeconvNet, guided, SmoothGrad, CAM,
    Grad-CAM, occlusion), ``saliency_maps`` (``saliency``, Sect. 3.1 eq. 4, a thin wrapper of the
    pipeline), ``backprop`` (``backward_rule``, Sect. 4), ``deconvnet`` (Zeiler & Fergus's
    DeconvNet and the paper's ConvNet), ``class_model`` and ``param`` (Sect. 2, eq. 1),
    ``occlusion``, ``features``, ``receptive`` (Zeiler & Fergus 2014)
``measures/`` (what the pictures are worth)
    ``localisation`` (``segment``, ``bounding_box``, ``localise``: Sect. 3.2), ``evaluation``
    (IoU, the ILSVRC localisation error, box rules, tables), ``maxboxacc`` (MaxBoxAccV2, Choe et
    al. 2020), ``metrics`` (pointing game, deletion/insertion, randomisation: chapter 6),
    ``transfer`` (class models shown to other networks: chapter 1)
``figures/`` (the book's figures, tables and widgets; no computation of their own)
    ``plotting`` (the paper's layouts), ``plotting_class_model``, ``plotting_features``,
    ``plotting_metrics`` (chapter 6), ``localisation_tables`` (chapter 3's Markdown tables),
    ``widgets`` (the explorer)
``cli``, ``jobs``: the ``deepinside`` command and its sharded jobs.

Importing the package imports nothing heavy: each public name (``di.saliency``,
``di.load_classifier``, ...) loads its module on first use (PEP 562), so ``deepinside --help``
answers without torch. Importing downloads nothing and needs no GPU. Modules are reachable by
their short names too (``di.localisation``, ``from deepinside import evaluation``); ``di.saliency``,
``di.occlusion`` and ``di.class_model`` are always the functions.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

#: public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    **dict.fromkeys(["Classifier", "WeightsUnavailableError", "frozen", "imagenet_labels",
                     "load_classifier", "resolve_device", "seed_everything"], "core.models"),
    **dict.fromkeys(["IlsvrcDataset", "IlsvrcRecord", "default_ilsvrc_root", "load_image",
                     "sample_images", "to_rgb"], "core.data"),
    **dict.fromkeys(["fetch_ilsvrc_sample", "FetchError"], "core.fetch"),
    "ten_crop_boxes": "core.frames",
    **dict.fromkeys(["release_memory", "release_memory_after_each_cell"], "core.memory"),
    **dict.fromkeys(["compute_maps", "compute_map_set", "register_map", "map_names", "available_maps"],
                    "methods.maps"),
    **dict.fromkeys(["saliency", "saliency_to_image", "saliency_box_share", "saliency_cost"],
                    "methods.saliency_maps"),
    **dict.fromkeys(["backward_rule", "RULES", "RuleStats"], "methods.backprop"),
    **dict.fromkeys(["PaperConvNet", "paper_convnet", "deconvnet_reconstruct"], "methods.deconvnet"),
    **dict.fromkeys(["class_model", "ClassModelResult"], "methods.class_model"),
    **dict.fromkeys(["occlusion", "OcclusionResult"], "methods.occlusion"),
    **dict.fromkeys(["top_activations", "TopActivations", "receptive_field", "project"],
                    "methods.features"),
    **dict.fromkeys(["segment", "bounding_box", "localise"], "measures.localisation"),
    **dict.fromkeys(["iou", "evaluate_localisation", "evaluate_classification"], "measures.evaluation"),
    **dict.fromkeys(["pointing_game", "deletion_insertion", "randomisation_test"], "measures.metrics"),
    "max_box_accuracy": "measures.maxboxacc",
}

#: modules by their short names (``di.localisation.segment_details``, ``from deepinside import
#: evaluation``). ``di.saliency``, ``di.occlusion``, ``di.class_model`` are the functions; their
#: modules are ``deepinside.methods.saliency_maps``, ``.occlusion``, ``.class_model``.
_MODULES: dict[str, str] = {
    **{m: f"core.{m}" for m in ("models", "data", "fetch", "frames", "inputs", "layers", "hooks",
                                "distributed")},
    **{m: f"methods.{m}" for m in ("maps", "saliency_maps", "backprop", "deconvnet", "param",
                                   "features", "receptive")},
    **{m: f"measures.{m}" for m in ("localisation", "evaluation", "metrics", "transfer",
                                    "maxboxacc")},
    **{m: f"figures.{m}" for m in ("plotting", "plotting_class_model", "plotting_features",
                                   "plotting_metrics", "localisation_tables", "widgets")},
    "cache": "core.cache",
    **{m: m for m in ("core", "methods", "measures", "figures", "cli", "jobs")},
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """PEP 562: a public name or module is imported on first use, then kept."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{_MODULES[name]}", __name__)
    else:
        raise AttributeError(f"module 'deepinside' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_MODULES})
