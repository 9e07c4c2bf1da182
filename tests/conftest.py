"""Shared fixtures: the pretrained classifier (loaded once), the ILSVRC sample when present,
and tiny models whose answers are known by hand."""

from __future__ import annotations

import os

import pytest
import torch

import deepinside as di

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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


def model_state(net: torch.nn.Module) -> dict:
    """Everything a call must leave unchanged: modes, requires_grad flags, hooks, parameters."""
    return {
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in net.modules()],
        "forward": [type(m).forward for m in net.modules()] + [m.__dict__.get("forward") for m in net.modules()],
        "inplace": [getattr(m, "inplace", None) for m in net.modules()],
        "params": [p.detach().clone() for p in net.parameters()],
        "grads": [p.grad for p in net.parameters()],
    }


def assert_same_state(before: dict, after: dict) -> None:
    for k in before:
        if k == "params":
            assert all(torch.equal(a, b) for a, b in zip(before[k], after[k])), "parameters changed"
        elif k == "grads":
            assert all((a is None) == (b is None) for a, b in zip(before[k], after[k])), "parameter .grad changed"
        else:
            assert before[k] == after[k], f"model state {k!r} changed"
