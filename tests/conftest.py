"""Shared fixtures: the pretrained classifier (loaded once; every test using it is marked
``slow``), the ILSVRC sample when present, and tiny models whose answers are known by hand
(defined in ``state_helpers``, importable from any test module, and offered here as fixtures)."""

from __future__ import annotations

import os

import pytest
import torch

import deepinside as di

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny-tensor tests (on a loaded 2-core machine, two
    threads make each small op up to ~100x slower); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def clf() -> di.Classifier:
    return di.load_classifier("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def photos() -> dict:
    return di.sample_images()


@pytest.fixture(scope="session")
def ilsvrc_root():
    root = di.default_ilsvrc_root()
    if root is None or not (root / "images").is_dir():
        pytest.skip("no ILSVRC validation sample (set DEEPINSIDE_ILSVRC or put ../shared/data/ilsvrc2012-val-201)")
    return root


from state_helpers import (assert_same_state, conv_clf, model_state,  # noqa: E402,F401
                           rand_pil, tiny_clf)


@pytest.fixture
def tiny_conv_clf() -> di.Classifier:
    """A seeded 4-class ConvNet classifier (8 px input, 10 px resize) with plain ReLUs."""
    return conv_clf(seed=0)


@pytest.fixture
def tiny_relu6_clf() -> di.Classifier:
    """The same with in-place ``nn.ReLU6`` rectifiers, as EfficientNet-Lite uses."""
    return conv_clf(seed=0, relu6=True)
