"""Shared fixtures: the pretrained classifier (loaded once), the ILSVRC sample when present,
and tiny models whose answers are known by hand."""

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


from state_helpers import assert_same_state, model_state  # noqa: E402,F401  (re-exported for tests)
