"""class_model (eq. 1): the linear optimum, batching, monotone score, errors, state left alone."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import deepinside as di
from deepinside.class_model import class_model, recognised, sweep
from deepinside.models import Classifier
from state_helpers import assert_same_state, model_state


def linear_clf(n_classes: int = 3, size: int = 4, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, n_classes))
    for p in net.parameters():
        p.requires_grad_(False)
    return Classifier(net=net.eval(), device=torch.device("cpu"), input_size=size, crop_fraction=1.0,
                      mean=(0.5,) * 3, std=(0.5,) * 3, interpolation=Image.BICUBIC,
                      class_names=[f"class{i}" for i in range(n_classes)], wnids=[f"n{i:08d}" for i in range(n_classes)])


def test_linear_score_reaches_w_over_2_lambda():
    """For S(I) = w.I + b, eq. (1) is maximised by I* = w / (2 lambda)."""
    clf = linear_clf()
    lam = 0.5
    r = class_model(clf, [0, 2], steps=300, lr=0.1, l2=lam, clip=False, show_progress=False)
    w = clf.net[1].weight
    expected = torch.stack([w[0], w[2]]).reshape(2, 3, 4, 4) / (2 * lam)
    assert torch.allclose(r.inputs, expected, atol=1e-4)


def test_batched_equals_one_class_at_a_time():
    clf = linear_clf()
    both = class_model(clf, [0, 1], steps=20, lr=0.05, l2=0.1, show_progress=False)
    for i, c in enumerate([0, 1]):
        one = class_model(clf, [c], steps=20, lr=0.05, l2=0.1, show_progress=False)
        assert torch.allclose(both.inputs[i], one.inputs[0], atol=1e-6)


def test_score_increases_and_result_is_deterministic():
    clf = linear_clf()
    a = class_model(clf, ["class1"], steps=15, lr=0.05, l2=0.01, init="random", seed=3, show_progress=False)
    b = class_model(clf, ["class1"], steps=15, lr=0.05, l2=0.01, init="random", seed=3, show_progress=False)
    assert torch.equal(a.inputs, b.inputs)
    assert a.scores[-1, 0] > a.scores[0, 0]
    assert a.images.min() >= 0 and a.images.max() <= 1 and a.images.shape == (1, 3, 4, 4)


def test_posterior_objective_runs_and_raises_posterior():
    clf = linear_clf()
    r = class_model(clf, [2], steps=30, lr=0.05, l2=0.01, objective="posterior", show_progress=False)
    assert r.posteriors[-1, 0] > r.posteriors[0, 0]


@pytest.mark.parametrize("bad, err", [("no such class", ValueError), (7, ValueError), (-1, ValueError),
                                      ([], ValueError), (2.5, TypeError)])
def test_bad_classes_are_refused(bad, err):
    with pytest.raises(err):
        class_model(linear_clf(), bad, steps=1, show_progress=False)


@pytest.mark.parametrize("kw", [dict(objective="softmax"), dict(steps=-1), dict(lr=0.0), dict(l2=[0.1, 0.2, 0.3]),
                                dict(init="noise"), dict(l2=-1.0)])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        class_model(linear_clf(), [0, 1], show_progress=False, **{"steps": 1, **kw})


def test_model_state_unchanged():
    clf = linear_clf()
    clf.net.train()
    clf.net[1].weight.requires_grad_(True)
    before = model_state(clf.net)
    class_model(clf, [0], steps=3, show_progress=False)
    assert_same_state(before, model_state(clf.net))


def test_sweep_and_recognised_on_linear_model():
    clf = linear_clf()
    rows, results = sweep(clf, 1, l2_values=[0.0, 1.0], inits=("zero", "random"), clips=(False,), steps=30,
                          lr=0.05, show_progress=False)
    assert len(rows) == 4 and len(results) == 1
    by = {(r["init"], r["l2"]): r for r in rows}
    assert by[("zero", 1.0)]["norm"] < by[("zero", 0.0)]["norm"]
    assert recognised(clf, results[0]).shape == (4,)


@pytest.mark.slow
def test_pretrained_class_model_is_recognised(clf):
    r = class_model(clf, ["goose"], steps=15, lr=1.0, l2=1e-3, show_progress=False)
    assert bool(recognised(clf, r)[0]) and r.final_scores[0] > r.scores[0, 0]
