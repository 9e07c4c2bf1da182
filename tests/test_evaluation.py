"""Tests of deepinside.evaluation: IoU, the ILSVRC localisation rule, baselines, the evaluation loop."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state_helpers import assert_same_state, conv_clf, model_state, rand_pil

import deepinside as di
from deepinside import evaluation as ev
from deepinside.evaluation import (SaliencyCache, centered_box, localisation_correct, precompute_saliency,
                                   threshold_box)
from deepinside.localisation import SegmentParams


# -- IoU ------------------------------------------------------------------------------------------


def test_iou_by_hand():
    assert di.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert di.iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert di.iou((0, 0, 10, 10), (0, 0, 5, 10)) == pytest.approx(0.5)
    assert di.iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching, half-open: no overlap
    assert di.iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert di.iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty boxes


@pytest.mark.parametrize("bad", [(0, 0, 10), (5, 0, 0, 10), (0, 0, float("nan"), 1), "abcd", None])
def test_iou_bad_boxes(bad):
    with pytest.raises(ValueError, match="box"):
        di.iou(bad, (0, 0, 1, 1))


boxes = st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 50), st.integers(1, 50)).map(
    lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3]))


@settings(max_examples=60, deadline=None)
@given(boxes, boxes)
def test_iou_properties(a, b):
    v = di.iou(a, b)
    assert 0.0 <= v <= 1.0
    assert v == pytest.approx(di.iou(b, a))
    assert di.iou(a, a) == 1.0
    # against counting pixels
    m1, m2 = np.zeros((101, 101), bool), np.zeros((101, 101), bool)
    m1[a[1]:a[3], a[0]:a[2]] = True
    m2[b[1]:b[3], b[0]:b[2]] = True
    assert v == pytest.approx((m1 & m2).sum() / (m1 | m2).sum())


# -- the ILSVRC rule --------------------------------------------------------------------------------

GT = [(0, 0, 100, 100), (200, 200, 300, 300)]  # two instances of class 7


def test_rule_by_hand():
    good, shifted = (10, 10, 100, 100), (50, 0, 150, 100)  # IoU 0.81 / 1/3
    assert localisation_correct([(7, good)], GT, [7, 7])
    assert not localisation_correct([(7, shifted)], GT, [7, 7])  # right class, box off
    assert not localisation_correct([(3, good)], GT, [7, 7])  # right box, wrong class
    assert localisation_correct([(7, (200, 200, 290, 300))], GT, [7, 7])  # the second instance
    # IoU exactly 0.5 counts
    assert localisation_correct([(7, (0, 0, 50, 100))], GT, [7, 7])
    assert not localisation_correct([(7, (0, 0, 49, 100))], GT, [7, 7])
    # top-k: the right guess is second
    guesses = [(3, good), (7, good), (5, None)]
    assert not localisation_correct(guesses, GT, [7, 7], k=1)
    assert localisation_correct(guesses, GT, [7, 7], k=2)
    assert localisation_correct(guesses, GT, [7, 7])  # all guesses
    assert not localisation_correct([(7, None)], GT, [7, 7])  # empty segmentation
    # boxes of different classes: the class must match the box's own class
    assert not localisation_correct([(7, (200, 200, 300, 300))], GT, [7, 9])
    with pytest.raises(ValueError, match="ground-truth"):
        localisation_correct([(7, good)], GT, [7])


def test_baseline_boxes():
    assert centered_box(500, 375) == (50, 37, 450, 337)  # 400 x 300: 80 % of each side
    assert centered_box(10, 10, 1.0) == (0, 0, 10, 10)
    with pytest.raises(ValueError, match="fraction"):
        centered_box(10, 10, 0)
    s = np.zeros((40, 60))
    s[5:10, 5:10] = 1.0  # a small blob at the maximum ...
    s[20:35, 20:50] = 0.5  # ... and a large one at half of it
    assert threshold_box(s, 0.2) == (20, 20, 50, 35)  # largest component above 20 % of the max
    assert threshold_box(s, 0.6) == (5, 5, 10, 10)
    assert threshold_box(np.zeros((5, 5)), 0.2) is None


# -- the evaluation loop on a tiny dataset -----------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    label: int
    boxes: tuple
    box_wnids: tuple = ()


class TinyDataset:
    """Sample photographs labelled with the classifier's own top-1 class, GT box = a given box."""

    def __init__(self, images, labels, boxes):
        self.items = [(im, Rec(lab, (b,))) for im, lab, b in zip(images, labels, boxes)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def tiny(clf, photos):
    ims = [photos["chelsea"], photos["coffee"]]
    top = [p[0][0] for p in clf.predict(ims, topk=1)]
    whole = [(0, 0, *im.size) for im in ims]
    return ims, top, whole


@pytest.mark.slow
def test_full_image_baseline_and_classification(clf, tiny):
    ims, top, whole = tiny
    ds = TinyDataset(ims, top, whole)
    r = di.evaluate_localisation(clf, ds, method="full_image")
    assert r == {"top1_loc_err": 0.0, "top5_loc_err": 0.0, "top1_cls_err": 0.0, "top5_cls_err": 0.0, "n": 2}
    # a tiny GT box in a corner: the whole image box misses it
    corner = [(0, 0, 10, 10)] * 2
    r = di.evaluate_localisation(clf, TinyDataset(ims, top, corner), method="full_image")
    assert r["top5_loc_err"] == 1.0 and r["top5_cls_err"] == 0.0
    # wrong labels: classification and localisation both fail
    wrong = [(t + 500) % 1000 for t in top]
    r = di.evaluate_localisation(clf, TinyDataset(ims, wrong, whole), method="centered_box", topk=1)
    assert r["top1_loc_err"] == 1.0 and r["top1_cls_err"] == 1.0 and "top1_loc_err" in r
    assert di.evaluate_classification(clf, ds) == {"top1_cls_err": 0.0, "top5_cls_err": 0.0, "n": 2}


@pytest.mark.slow
def test_graphcut_on_photos_uses_the_cache(clf, tiny):
    ims, top, whole = tiny
    before = model_state(clf.net)
    cache = precompute_saliency(clf, TinyDataset(ims, top, whole), topk=5, crops="center")
    assert_same_state(before, model_state(clf.net))
    assert isinstance(cache, SaliencyCache) and cache.classes.shape == (2, 5)
    assert sorted(cache.maps) == [(0, 0), (1, 0)]  # only the guesses that can be right
    # the cache holds maps scaled to max 1 in their crop frame, put back on the original pixels
    m = cache.in_image(0, 0)
    assert m.shape == (ims[0].size[1], ims[0].size[0]) and 0.5 < m.max() <= 1.0
    assert m[:, :10].max() == 0.0  # outside the centre crop
    assert cache.in_image(0, 1) is None
    # GT = the boxes the method finds: localisation must then be right; a far-off GT: wrong
    found = [di.bounding_box(di.segment(im, cache.in_image(i, 0))) for i, im in enumerate(ims)]
    assert di.evaluate_localisation(clf, TinyDataset(ims, top, found), cache=cache)["top1_loc_err"] == 0.0
    off = [(0, 0, 5, 5)] * 2
    r = di.evaluate_localisation(clf, TinyDataset(ims, top, off), cache=cache)
    assert r["top1_loc_err"] == r["top5_loc_err"] == 1.0 and r["top1_cls_err"] == 0.0
    r = di.evaluate_localisation(clf, TinyDataset(ims, top, found), cache=cache, method="threshold",
                                 threshold=0.15, threshold_smooth=0.02)
    assert set(r) == {"top1_loc_err", "top5_loc_err", "top1_cls_err", "top5_cls_err", "n"}


@pytest.mark.slow
def test_evaluation_bad_inputs(clf, tiny):
    ims, top, whole = tiny
    ds = TinyDataset(ims, top, whole)
    with pytest.raises(ValueError, match="method"):
        di.evaluate_localisation(clf, ds, method="oracle")
    cache = SaliencyCache("center", np.zeros((1, 5), int), np.zeros((1, 5)), [(10, 10)])
    with pytest.raises(ValueError, match="cache holds 1 images"):
        di.evaluate_localisation(clf, ds, cache=cache)
    with pytest.raises(ValueError, match="crops"):
        precompute_saliency(clf, ds, crops="five")
    with pytest.raises(ValueError, match="empty"):
        di.evaluate_classification(clf, TinyDataset([], [], []))


@pytest.mark.slow
def test_on_ilsvrc_sample(clf, ilsvrc_root):
    ds = di.IlsvrcDataset(ilsvrc_root, limit=6)
    cache = precompute_saliency(clf, ds, crops="center")
    ours = di.evaluate_localisation(clf, ds, cache=cache)
    whole = di.evaluate_localisation(clf, ds, cache=cache, method="full_image")
    assert ours["n"] == whole["n"] == 6
    assert ours["top5_cls_err"] == whole["top5_cls_err"]  # same classes, only the boxes differ
    assert ours["top1_loc_err"] >= ours["top1_cls_err"] and ours["top5_loc_err"] >= ours["top5_cls_err"]
    assert isinstance(ilsvrc_root, Path)


@pytest.mark.slow
def test_compare_methods_and_table(clf, tiny):
    from deepinside.evaluation import compare_methods, results_markdown

    ims, top, whole = tiny
    ds = TinyDataset(ims, top, whole)
    res = compare_methods(clf, ds, {"whole": dict(method="full_image"), "centre": dict(method="centered_box")})
    assert list(res) == ["whole", "centre"] and res["whole"]["top5_loc_err"] == 0.0
    assert res["centre"]["top5_loc_err"] == 0.0  # 64 % of the area: IoU 0.64 >= 0.5
    small = compare_methods(clf, ds, {"small centre": dict(method="centered_box", center_fraction=0.6)})
    assert small["small centre"]["top1_loc_err"] == 1.0  # IoU 0.36 < 0.5
    table = results_markdown({**res, **small}, reference={"paper": (None, 0.464)})
    lines = table.splitlines()
    assert lines[0] == "| method | top-1 loc. error | top-5 loc. error |" and len(lines) == 6
    assert lines[4] == "| small centre | 100.0 % | 100.0 % |" and lines[5] == "| paper | - | 46.4 % |"


# -- box methods as callables, on a tiny classifier (fast) ------------------------------------------


def _tiny_setup():
    clf = conv_clf(seed=4)
    ims = [rand_pil(40, 30, seed=s) for s in range(4)]
    top = [p[0][0] for p in clf.predict(ims, topk=1)]
    return clf, ims, top


def test_a_new_box_method_is_one_function():
    clf, ims, top = _tiny_setup()
    gt = [(3, 4, 20, 25)] * len(ims)
    ds = TinyDataset(ims, top, gt)

    def oracle(guess):                        # knows the answer: every top-1 guess is right
        assert guess.size == (40, 30)
        return (3, 4, 20, 25)

    oracle.needs_saliency = False
    r = di.evaluate_localisation(clf, ds, topk=2, boxes=oracle)
    assert r["top1_loc_err"] == 0.0 and r["top1_cls_err"] == 0.0 and r["n"] == 4
    assert di.evaluate_localisation(clf, ds, topk=2, boxes=lambda g: None)["top2_loc_err"] == 1.0
    whole = di.evaluate_localisation(clf, ds, topk=2, boxes=ev.full_image())
    assert whole == di.evaluate_localisation(clf, ds, topk=2, method="full_image")


def test_box_methods_by_name_keyword_and_object_agree():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 30, 30)] * len(ims))
    cache = precompute_saliency(clf, ds, topk=2)
    a = di.evaluate_localisation(clf, ds, topk=2, cache=cache, method="threshold", threshold=0.3)
    b = di.evaluate_localisation(clf, ds, topk=2, cache=cache, boxes=ev.threshold(0.3))
    assert a == b
    c = di.evaluate_localisation(clf, ds, topk=2, cache=cache, method="graphcut", pairwise=0.0)
    d = di.evaluate_localisation(clf, ds, topk=2, cache=cache,
                                 boxes=ev.graphcut(replace(SegmentParams(), pairwise=0.0)))
    assert c == d
    assert ev.box_method("centered_box", center_fraction=0.5) == ev.centred_box(0.5)
    with pytest.raises(ValueError, match="method must be one of"):
        ev.box_method("oracle")
    with pytest.raises(TypeError, match="graphcut"):
        ev.box_method(method="threshold", pairwise=0)
    with pytest.raises(ValueError, match="fraction"):
        ev.centred_box(1.5)


def test_one_classification_pass_per_image():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 30, 30)] * len(ims))
    calls = []
    scores = clf.scores
    clf.scores = lambda x, batch_size=64: calls.append(len(x)) or scores(x, batch_size)
    cache = precompute_saliency(clf, ds, topk=2)
    assert sum(calls) == len(ims)
    for method in ("graphcut", "threshold", "full_image", "centered_box"):
        di.evaluate_localisation(clf, ds, topk=2, cache=cache, method=method)
    assert sum(calls) == len(ims)                     # the methods reuse the cache's top-k


def test_any_registered_map_by_name():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 30, 30)] * len(ims))
    grad = precompute_saliency(clf, ds, topk=2, maps="gradient")
    assert grad.maps.keys() == precompute_saliency(clf, ds, topk=2).maps.keys()
    for key, m in grad.maps.items():
        assert np.array_equal(m, precompute_saliency(clf, ds, topk=2).maps[key])
    r = di.evaluate_localisation(clf, ds, topk=2, maps="gradcam", boxes="threshold")
    assert set(r) == {"top1_loc_err", "top2_loc_err", "top1_cls_err", "top2_cls_err", "n"}
    with pytest.raises(ValueError, match="crops='center'"):
        precompute_saliency(clf, ds, topk=2, maps="gradcam", crops="ten")
