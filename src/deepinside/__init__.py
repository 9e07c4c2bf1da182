"""deepinside: an executable reproduction of Simonyan, Vedaldi & Zisserman (2014).

"Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps",
with the Zeiler & Fergus (2014) experiments it builds on. One module per idea of the paper:

- :mod:`deepinside.models`: ``load_classifier`` (network + its exact preprocessing, offline)
- :mod:`deepinside.data`: ``load_image``, ``sample_images``, ``IlsvrcDataset``
- :mod:`deepinside.frames`: where a crop / the 10-crop square lies in the original image
- :mod:`deepinside.saliency_maps`: ``saliency`` (Sect. 3.1, eq. 4, batched, 10-crop)
- :mod:`deepinside.backprop`: ``backward_rule`` (Sect. 4: gradient / deconvnet / guided), eq. 4
- :mod:`deepinside.deconvnet`: an explicit Zeiler & Fergus DeconvNet and the paper's ConvNet
- :mod:`deepinside.class_model`: ``class_model`` (Sect. 2, eq. 1)
- :mod:`deepinside.localisation`: ``segment``, ``bounding_box``, ``localise`` (Sect. 3.2)
- :mod:`deepinside.evaluation`: IoU, the ILSVRC localisation error, baselines
- :mod:`deepinside.plotting`: the paper's figure layouts

Importing the package downloads nothing and needs no GPU; the heavy optional modules (cv2,
maxflow, matplotlib, ipywidgets) are imported only by the functions that use them. The module
of :func:`saliency` is ``saliency_maps``, so ``deepinside.saliency`` is always the function.
"""

from __future__ import annotations

from . import frames
from .backprop import RULES, RuleStats, backward_rule
from .class_model import ClassModelResult, class_model
from .data import IlsvrcDataset, IlsvrcRecord, default_ilsvrc_root, load_image, sample_images, to_rgb
from .deconvnet import PaperConvNet, deconvnet_reconstruct, paper_convnet
from .evaluation import evaluate_classification, evaluate_localisation, iou
from .frames import ten_crop_boxes
from .localisation import bounding_box, localise, segment
from .models import (Classifier, WeightsUnavailableError, frozen, imagenet_labels, load_classifier,
                     resolve_device, seed_everything)
from .saliency_maps import saliency, saliency_box_share, saliency_cost, saliency_to_image
from . import backprop, data, deconvnet, evaluation, localisation, models, plotting, saliency_maps  # noqa: E402,I001

from ._version import __version__  # noqa: E402

__all__ = [
    "Classifier", "WeightsUnavailableError", "frozen", "imagenet_labels", "load_classifier",
    "resolve_device", "seed_everything",
    "IlsvrcDataset", "IlsvrcRecord", "default_ilsvrc_root", "load_image", "sample_images", "to_rgb",
    "saliency", "ten_crop_boxes", "saliency_to_image", "saliency_box_share", "saliency_cost",
    "backward_rule", "RULES", "RuleStats",
    "PaperConvNet", "paper_convnet", "deconvnet_reconstruct",
    "class_model", "ClassModelResult",
    "segment", "bounding_box", "localise",
    "iou", "evaluate_localisation", "evaluate_classification",
]

# saliency methods by name (maps.py) and the metrics of chapter 6 (metrics.py)
from .maps import available_maps, compute_maps, map_names, register_map  # noqa: E402
from .metrics import deletion_insertion, pointing_game, randomisation_test  # noqa: E402
from . import maps, metrics  # noqa: E402,I001

__all__ += ["compute_maps", "register_map", "map_names", "available_maps",
            "pointing_game", "deletion_insertion", "randomisation_test"]

# Zeiler & Fergus (2014): occlusion sensitivity (their Fig. 7), top activations, receptive fields,
# projections to pixel space (their Fig. 2) — occlusion.py, features.py
from .occlusion import OcclusionResult, occlusion  # noqa: E402
from .features import TopActivations, project, receptive_field, top_activations  # noqa: E402

__all__ += ["occlusion", "OcclusionResult", "top_activations", "TopActivations", "receptive_field",
            "project"]

# the book's ILSVRC sample from its public sources (fetch.py, on pooch)
from .fetch import FetchError, fetch_ilsvrc_sample  # noqa: E402
from . import fetch  # noqa: E402,I001

__all__ += ["fetch_ilsvrc_sample", "FetchError"]
