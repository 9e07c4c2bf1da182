"""Issue 24, items 2-3: hooking calls that share one model across threads, on a model in train
mode, give their single-thread answers and leave the model exactly as it was (mode, BatchNorm
running statistics, requires_grad, hooks)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import deepinside as di
from deepinside.core import models
from state_helpers import assert_same_state, model_state, tiny_clf

S = 16


def _bn_net(seed: int = 0) -> nn.Module:
    """Conv-BN-ReLU x2, global average pooling, linear: CAM, Grad-CAM and the rules all apply;
    left in train mode with trainable parameters, as a user's half-trained model would be."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():   # non-trivial running statistics, so that an update would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.train()


def _stress(jobs, calls: int) -> list[list]:
    barrier = threading.Barrier(len(jobs))
    out: list[list] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def run(j: int) -> None:
        try:
            barrier.wait()
            for _ in range(calls):
                out[j].append(jobs[j]())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


def _inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, S, S, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def clf():
    c = tiny_clf(_bn_net(), 5, size=S)
    yield c
    assert not models._FROZEN, "a frozen block was left open"


def _jobs(clf):
    x1, x2, x3 = _inputs(3, 1), _inputs(2, 2), _inputs(4, 3)
    return {
        "gradcam": lambda: di.compute_maps(clf, x1, None, "gradcam", layer="3"),
        "cam": lambda: di.compute_maps(clf, x3, None, "cam"),
        "saliency guided": lambda: di.saliency(clf, x2, target=[1, 2], rule="guided"),
        "saliency": lambda: di.saliency(clf, x2, target=None),
        "top activations": lambda: di.top_activations(clf, x3, "4", k=2, show_progress=False).values,
        "occlusion at a layer": lambda: di.occlusion(clf, x1, 1, window=8, stride=4, layer="3",
                                                     show_progress=False).activity,
    }


def test_each_hooking_call_leaves_a_train_mode_model_as_it_was(clf):
    for name, job in _jobs(clf).items():
        before = model_state(clf.net)
        job()
        assert_same_state(before, model_state(clf.net))
        assert clf.net.training, name


@pytest.mark.parametrize("pair", [("gradcam", "saliency"), ("top activations", "saliency guided"),
                                  ("cam", "occlusion at a layer"), ("gradcam", "top activations"),
                                  ("saliency", "saliency guided")])
def test_mixed_hooking_calls_in_two_threads_give_their_single_thread_answers(clf, pair):
    """Before: Grad-CAM beside saliency gave maps off by up to 10.6, and the private "stop the
    forward pass" of top_activations escaped into the other thread."""
    jobs = _jobs(clf)
    ref = {k: jobs[k]() for k in pair}
    before = model_state(clf.net)
    out = _stress([jobs[k] for k in pair], calls=12)
    for k, got in zip(pair, out):
        for y in got:
            assert torch.allclose(y, ref[k], atol=1e-5, rtol=1e-5), k
    assert_same_state(before, model_state(clf.net))
    assert clf.net.training


def test_frozen_blocks_overlapping_in_threads_restore_once_the_last_closes():
    net = _bn_net()
    p0 = next(net.parameters())
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with di.frozen(net):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        with di.frozen(net):                  # opened second, closed first
            assert not net.training and not p0.requires_grad
        assert not net.training and not p0.requires_grad, "the first block's freeze was undone"
    finally:
        release.set()
        t.join()
    assert net.training and p0.requires_grad


def test_hooks_do_not_fire_in_other_threads():
    from deepinside.core.hooks import StopForward, forward_hook

    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    x = torch.randn(1, 3, 4, 4)
    inside, release = threading.Event(), threading.Event()

    def stop(m, a, out):
        raise StopForward

    def hold() -> None:
        with forward_hook(net[0], stop):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        assert net(x).shape == (1, 2, 4, 4)     # this thread runs as if unhooked
    finally:
        release.set()
        t.join()
    assert not net[0]._forward_hooks
