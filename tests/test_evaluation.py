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
from deepinside.figures import localisation_tables as lt
from deepinside.measures import evaluation as ev
from deepinside.measures.evaluation import (SaliencyCache, centered_box, localisation_correct, precompute_saliency,
                                   threshold_box)
from deepinside.measures.localisation import SegmentParams


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
    r = di.evaluate_localisation(clf, ds, boxes="full_image")
    assert r == {"top1_loc_err": 0.0, "top5_loc_err": 0.0, "top1_cls_err": 0.0, "top5_cls_err": 0.0, "n": 2}
    # a tiny GT box in a corner: the whole image box misses it
    corner = [(0, 0, 10, 10)] * 2
    r = di.evaluate_localisation(clf, TinyDataset(ims, top, corner), boxes="full_image")
    assert r["top5_loc_err"] == 1.0 and r["top5_cls_err"] == 0.0
    # wrong labels: classification and localisation both fail
    wrong = [(t + 500) % 1000 for t in top]
    r = di.evaluate_localisation(clf, TinyDataset(ims, wrong, whole), boxes="centered_box", topk=1)
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
    found = [di.bounding_box(di.segment(im, cache.in_image(i, 0), ev.DEFAULT_SEGMENT))
             for i, im in enumerate(ims)]
    assert di.evaluate_localisation(clf, TinyDataset(ims, top, found), cache=cache)["top1_loc_err"] == 0.0
    off = [(0, 0, 5, 5)] * 2
    r = di.evaluate_localisation(clf, TinyDataset(ims, top, off), cache=cache)
    assert r["top1_loc_err"] == r["top5_loc_err"] == 1.0 and r["top1_cls_err"] == 0.0
    r = di.evaluate_localisation(clf, TinyDataset(ims, top, found), cache=cache, boxes="threshold",
                                 threshold=0.15, threshold_smooth=0.02)
    assert set(r) == {"top1_loc_err", "top5_loc_err", "top1_cls_err", "top5_cls_err", "n"}


@pytest.mark.slow
def test_evaluation_bad_inputs(clf, tiny):
    ims, top, whole = tiny
    ds = TinyDataset(ims, top, whole)
    with pytest.raises(ValueError, match="boxes must be one of"):
        di.evaluate_localisation(clf, ds, boxes="oracle")
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
    whole = di.evaluate_localisation(clf, ds, cache=cache, boxes="full_image")
    assert ours["n"] == whole["n"] == 6
    assert ours["top5_cls_err"] == whole["top5_cls_err"]  # same classes, only the boxes differ
    assert ours["top1_loc_err"] >= ours["top1_cls_err"] and ours["top5_loc_err"] >= ours["top5_cls_err"]
    assert isinstance(ilsvrc_root, Path)


@pytest.mark.slow
def test_compare_methods_and_table(clf, tiny):
    from deepinside.figures.localisation_tables import results_markdown
    from deepinside.measures.evaluation import compare_methods

    ims, top, whole = tiny
    ds = TinyDataset(ims, top, whole)
    res = compare_methods(clf, ds, {"whole": dict(boxes="full_image"), "centre": dict(boxes="centered_box")})
    assert list(res) == ["whole", "centre"] and res["whole"]["top5_loc_err"] == 0.0
    assert res["centre"]["top5_loc_err"] == 0.0  # 64 % of the area: IoU 0.64 >= 0.5
    small = compare_methods(clf, ds, {"small centre": dict(boxes="centered_box", center_fraction=0.6)})
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
    assert whole == di.evaluate_localisation(clf, ds, topk=2, boxes="full_image")


def test_box_methods_by_name_keyword_and_object_agree():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 30, 30)] * len(ims))
    cache = precompute_saliency(clf, ds, topk=2)
    a = di.evaluate_localisation(clf, ds, topk=2, cache=cache, boxes="threshold", threshold=0.3)
    b = di.evaluate_localisation(clf, ds, topk=2, cache=cache, boxes=ev.threshold(0.3))
    assert a == b
    c = di.evaluate_localisation(clf, ds, topk=2, cache=cache, boxes="graphcut", pairwise=0.0)
    d = di.evaluate_localisation(clf, ds, topk=2, cache=cache,
                                 boxes=ev.graphcut(replace(ev.DEFAULT_SEGMENT, pairwise=0.0)))
    assert c == d
    assert ev.box_method("centered_box", center_fraction=0.5) == ev.centred_box(0.5)
    with pytest.raises(ValueError, match="boxes must be one of"):
        ev.box_method("oracle")
    with pytest.raises(TypeError, match="graphcut"):
        ev.box_method(boxes="threshold", pairwise=0)
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
        di.evaluate_localisation(clf, ds, topk=2, cache=cache, boxes=method)
    assert sum(calls) == len(ims)                     # the methods reuse the cache's top-k


def test_any_registered_map_by_name():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 30, 30)] * len(ims))
    grad = precompute_saliency(clf, ds, topk=2, maps="gradient")
    rule = precompute_saliency(clf, ds, topk=2, maps="gradient", crops="full")
    default = precompute_saliency(clf, ds, topk=2)       # the default map: gradient x Grad-CAM
    gated = precompute_saliency(clf, ds, topk=2, maps="gradient_gradcam", crops="full")
    assert grad.maps.keys() == default.maps.keys() == gated.maps.keys()
    for key, m in default.maps.items():
        assert np.array_equal(m, gated.maps[key])
    guided = precompute_saliency(clf, ds, topk=2, rule="guided")   # a rule alone: its map
    assert np.array_equal(guided.maps[(0, 0)],
                          precompute_saliency(clf, ds, topk=2, maps="guided").maps[(0, 0)])
    assert not np.array_equal(rule.maps[(0, 0)], default.maps[(0, 0)])
    r = di.evaluate_localisation(clf, ds, topk=2, maps="gradcam", boxes="threshold")
    assert set(r) == {"top1_loc_err", "top2_loc_err", "top1_cls_err", "top2_cls_err", "n"}
    ten = precompute_saliency(clf, ds, topk=2, maps="gradcam", crops="ten")   # any map, 10 crops
    assert ten.maps.keys() == grad.maps.keys() and ten.crops == "ten"


def test_whole_images_of_one_shape_share_passes_across_chunks():
    """crops="full": the inputs of one shape wait across chunks until they fill a pass of
    batch_size, so a folder of mixed shapes is not mapped one or two images per pass; the maps
    are those of one pass per image."""
    clf = conv_clf(seed=4)
    sizes = [(40, 30), (30, 40), (40, 30), (50, 30), (40, 30), (30, 40), (40, 30), (40, 30)]
    ims = [rand_pil(w, h, seed=s) for s, (w, h) in enumerate(sizes)]
    top = [p[0][0] for p in clf.predict(ims, topk=1)]
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * len(ims))
    rows = []
    handle = clf.net.register_forward_pre_hook(lambda m, a: rows.append(tuple(a[0].shape)))
    try:
        cache = precompute_saliency(clf, ds, topk=1, maps="gradient", crops="full", chunk=2,
                                    batch_size=2)
    finally:
        handle.remove()
    assert set(cache.maps) == {(i, 0) for i in range(len(ims))}
    passes = [r for r in rows if r[2:] != (clf.input_size, clf.input_size)]  # not classification
    # 5 images of one shape: 2 + 2 + 1; 2 of another: 2; the odd one: 1 (chunks of 2 images)
    assert sorted(r[0] for r in passes) == [1, 1, 2, 2, 2], passes
    for i, im in enumerate(ims):   # each map as one image alone in its own pass gives it
        alone = precompute_saliency(clf, TinyDataset([im], [top[i]], [(0, 0, 20, 20)]), topk=1,
                                    maps="gradient", crops="full")
        np.testing.assert_allclose(cache.maps[(i, 0)], alone.maps[(0, 0)], rtol=1e-4, atol=1e-6)


def test_method_keyword_is_a_deprecated_alias_of_boxes():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 30, 30)] * len(ims))
    cache = precompute_saliency(clf, ds, topk=2)
    for name in ("graphcut", "threshold", "full_image", "centered_box"):
        with pytest.warns(DeprecationWarning, match="boxes="):
            old = di.evaluate_localisation(clf, ds, topk=2, cache=cache, method=name)
        assert old == di.evaluate_localisation(clf, ds, topk=2, cache=cache, boxes=name)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="not both"):
        ev.box_method("graphcut", method="threshold")
    with pytest.raises(TypeError, match="callable"):
        ev.box_method(3)


def test_outcomes_by_hand():
    """Per-image outcomes of two hand-made box rules on 4 images with known answers."""
    clf, ims, top = _tiny_setup()
    gt = (0, 0, 20, 20)
    ds = TinyDataset(ims, top, [gt] * 4)
    cache = precompute_saliency(clf, ds, topk=2)
    half = ev.localisation_outcomes(clf, ds, cache, lambda g: (0, 0, 20, 10), topk=2)  # IoU 1/2
    assert half.lock.all() and half.loc1.all() and np.allclose(half.best_iou, 0.5)
    quarter = ev.localisation_outcomes(clf, ds, cache, lambda g: (0, 0, 10, 10), topk=2)
    assert not quarter.lock.any() and np.allclose(quarter.best_iou, 0.25)
    assert quarter.summary() == {"top1_loc_err": 1.0, "top2_loc_err": 1.0, "top1_cls_err": 0.0,
                                 "top2_cls_err": 0.0, "n": 4}
    c = ev.paired_comparison(quarter, half)
    assert c.diff == 1.0 and c.se == 0.0 and c.n == 4 and c.significant
    both = ev.concat_outcomes(half, quarter)
    assert both.lock.tolist() == [True] * 4 + [False] * 4 and both.topk == 2
    wrong = TinyDataset(ims, [(t + 1) % 4 for t in top], [gt] * 4)  # top-1 never the class
    none = ev.localisation_outcomes(clf, wrong, cache, "full_image", topk=1)
    assert np.isnan(none.best_iou).all() and not none.lock.any() and not none.cls1.any()


def test_bootstrap_se_by_hand():
    assert ev.bootstrap_se(np.ones(10)) == 0.0  # no spread, no error
    x = np.r_[np.zeros(500), np.ones(500)]  # p = 1/2: s.e. sqrt(p (1 - p) / N) = 0.0158
    assert abs(ev.bootstrap_se(x, n_boot=4000) - np.sqrt(0.25 / 1000)) < 0.0015
    assert ev.bootstrap_se(x, seed=1) == ev.bootstrap_se(x, seed=1)
    c = ev.paired_comparison(np.r_[np.ones(3), np.zeros(1)], np.zeros(4))
    assert c.diff == 0.75 and 0 < c.se < 0.3 and "points" in str(c)
    with pytest.raises(ValueError, match="same images"):
        ev.paired_comparison(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="at least one"):
        ev.bootstrap_se([])
    with pytest.raises(ValueError, match="NaN"):
        ev.bootstrap_se([0.0, np.nan])


def test_gradient_gradcam_is_the_product_of_its_factors():
    """One pass gives what the two registered maps give separately, multiplied."""
    from deepinside.methods.maps import compute_maps

    clf, ims, top = _tiny_setup()
    before = model_state(clf.net)
    x = clf.preprocess(ims)
    got = compute_maps(clf, x, top, method="gradient_gradcam")
    want = compute_maps(clf, x, top, method="gradient") * compute_maps(clf, x, top, method="gradcam")
    assert got.shape == (len(ims), *x.shape[2:])
    assert np.allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-7 * float(want.max()))
    assert_same_state(before, model_state(clf.net))
    with pytest.raises(ValueError, match="unknown layer"):
        compute_maps(clf, x, top, method="gradient_gradcam", layer="nope")


def test_typical_images_by_hand():
    o = ev.Outcomes(*(np.zeros(6, bool) for _ in range(4)),
                    np.array([0.9, np.nan, 0.1, 0.5, 0.3, 0.7]), topk=5)
    # IoUs of the images with the class: 0.1 0.3 0.5 0.7 0.9 -> 10th/50th/90th: 0.1, 0.5, 0.9
    assert ev.typical_images(o) == [2, 3, 0]
    assert ev.typical_images(o, (0, 100)) == [2, 0]
    with pytest.raises(ValueError, match="percentiles"):
        ev.typical_images(o, (50, 101))
    none = ev.Outcomes(*(np.zeros(2, bool) for _ in range(4)), np.full(2, np.nan), topk=5)
    with pytest.raises(ValueError, match="no image"):
        ev.typical_images(none)


def test_guess_details_is_what_the_box_rule_found():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 30, 30)] * len(ims))
    cache = precompute_saliency(clf, ds, topk=2)
    for i in range(len(ims)):
        d = ev.guess_details(clf, ds, cache, i)
        assert d.detection.class_index == top[i] and d.saliency.shape == (30, 40)
        g = ev.Guess((40, 30), cache.frames[i], lambda i=i: cache.in_image(i, 0), lambda i=i: ims[i])
        assert d.detection.box == ev.graphcut()(g)


def test_localisation_table_by_hand():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * 4)
    half, quarter = (lambda g: (0, 0, 20, 10)), (lambda g: (0, 0, 10, 10))   # IoU 1/2, 1/4
    caches: dict = {}
    rows = {"half": dict(boxes=half, maps="gradient"), "quarter": dict(boxes=quarter, maps="gradient"),
            "whole": dict(boxes="full_image")}
    t = ev.localisation_table(clf, {"a": ds, "b": ds}, rows, topk=2, caches=caches)
    assert list(caches) == [("a", "gradient", "full"), ("b", "gradient", "full")]  # once each
    assert list(t) == ["half", "quarter", "whole"] and list(t["half"]) == ["a", "b"]
    assert t["half"]["a"].lock.all() and not t["quarter"]["b"].lock.any()
    md = lt.table_markdown(t)
    assert md.splitlines()[0] == ("| method | a: top-2 loc. error | b: top-2 loc. error | "
                                  "together: top-2 loc. error |")
    assert "| half | 0.0 ± 0.0 % | 0.0 ± 0.0 % | 0.0 ± 0.0 % |" in md
    assert "| quarter | 100.0 ± 0.0 % |" in md
    c = ev.compare_rows(t, "quarter", "half")
    assert (c.diff, c.se, c.n) == (1.0, 0.0, 8) and ev.compare_rows(t, "half", "quarter", "a").n == 4
    cmp = lt.comparisons_markdown(t, [("quarter", "half")])
    assert "| quarter − half | **+100.0 ± 0.0** |" in cmp
    with pytest.raises(KeyError, match="no row"):
        ev.compare_rows(t, "half", "oracle")


def test_grid_of_maps_and_box_rules_by_hand():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * 4)
    half, quarter = (lambda g: (0, 0, 20, 10)), (lambda g: (0, 0, 10, 10))   # IoU 1/2, 1/4
    rows = ev.grid_rows(["gradient", "guided"], {"half": dict(boxes=half), "quarter": dict(boxes=quarter)})
    assert list(rows) == ["gradient / half", "gradient / quarter", "guided / half", "guided / quarter"]
    assert rows["guided / quarter"] == {"maps": "guided", "crops": "full", "boxes": quarter}
    caches: dict = {}
    t = ev.localisation_table(clf, {"a": ds, "b": ds}, rows, topk=2, caches=caches)
    assert sorted(k[1] for k in caches) == ["gradient", "gradient", "guided", "guided"]
    md = lt.grid_markdown(t, ["gradient", "guided"], ["half", "quarter"]).splitlines()
    assert md[0] == ("| map (top-2 loc. error, %) | half: a | half: b | half: together | quarter: a | "
                     "quarter: b | quarter: together |")
    assert md[1] == "|---|" + "---:|" * 6
    # every image localised by the half box, none by the quarter: both maps tie, both bold
    assert md[2] == "| gradient | " + " | ".join(["**0.0 ± 0.0**"] * 3 + ["**100.0 ± 0.0**"] * 3) + " |"
    only = lt.grid_markdown(t, ["gradient", "guided"], ["half", "quarter"], folders=[None]).splitlines()
    assert only[0] == "| map (top-2 loc. error, %) | half: together | quarter: together |"
    with pytest.raises(ValueError, match="not in the table"):
        lt.grid_markdown(t, ["gradient"], ["half"], folders=["c"])
    with pytest.raises(KeyError, match="grid_rows"):
        lt.grid_markdown(t, ["gradient", "cam"], ["half"])
    with pytest.raises(ValueError, match="empty"):
        lt.grid_markdown({}, ["gradient"], ["half"])


def test_map_options_reach_the_map_method():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * 4)
    grad = ev.precompute_saliency(clf, ds, topk=2, maps="gradient", classes="all")
    # SmoothGrad with one sample and no noise is the gradient map (Smilkov et al., eq. 3)
    sg = ev.precompute_saliency(clf, ds, topk=2, maps="smoothgrad", classes="all",
                                map_options={"n": 1, "sigma": 0.0})
    assert grad.maps.keys() == sg.maps.keys()
    for k in grad.maps:
        np.testing.assert_allclose(sg.maps[k], grad.maps[k], rtol=1e-5, atol=1e-6)
    noisy = ev.precompute_saliency(clf, ds, topk=2, maps="smoothgrad", classes="all",
                                   map_options={"n": 2, "sigma": 0.3})
    assert any(not np.allclose(noisy.maps[k], grad.maps[k]) for k in grad.maps)
    with pytest.raises(ValueError, match="no option"):
        ev.precompute_saliency(clf, ds, topk=2, maps="cam", map_options={"n": 2})
    caches: dict = {}
    rows = {"sg": dict(maps="smoothgrad", map_options={"n": 1, "sigma": 0.0}), "g": dict(maps="gradient")}
    t = ev.localisation_table(clf, {"a": ds}, rows, topk=2, caches=caches)
    assert ("a", "smoothgrad", "full", (("n", 1), ("sigma", 0.0))) in caches
    assert (t["sg"]["a"].lock == t["g"]["a"].lock).all()


def test_fused_boxes_are_the_mean_of_two_rules():
    g = ev.Guess((40, 30), (0, 0, 40, 30), lambda: np.ones((30, 40), np.float32), lambda: None)
    a, b = (lambda g: (0, 0, 20, 10)), (lambda g: (10, 4, 30, 30))
    assert ev.fused(a, b)(g) == (5.0, 2.0, 25.0, 20.0)
    assert ev.fused(a, b, weight=1.0)(g) == (0.0, 0.0, 20.0, 10.0)
    assert ev.fused(a, lambda g: None)(g) == (0, 0, 20, 10)          # one missing: the other
    assert ev.fused(lambda g: None, b)(g) == (10, 4, 30, 30)
    assert ev.fused(lambda g: None, lambda g: None)(g) is None
    with pytest.raises(ValueError, match="weight"):
        ev.fused(a, b, weight=1.5)
    named = ev.box_method("fused")
    assert named == ev.fused() and named.first == ev.graphcut() and named.second == ev.threshold(0.1, 0.03)
    assert ev.box_method("fused", pairwise=0).first == ev.graphcut(replace(ev.DEFAULT_SEGMENT, pairwise=0))
    assert "fused" in ev.METHODS


def test_fused_on_a_map_averages_its_graphcut_and_threshold_boxes():
    clf, ims, top = _tiny_setup()
    cache = ev.precompute_saliency(clf, TinyDataset(ims, top, [(0, 0, 20, 20)] * 4), topk=1,
                                   maps="gradient")
    g = ev.Guess((40, 30), cache.frames[0], lambda: cache.in_image(0, 0), lambda: ims[0])
    gc, thr = ev.graphcut()(g), ev.threshold(0.1, 0.03)(g)
    assert ev.fused()(g) == tuple((u + v) / 2 for u, v in zip(gc, thr))


def test_a_table_segments_each_map_once(monkeypatch):
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * 4)
    calls = []
    real = ev.segment
    monkeypatch.setattr(ev, "segment", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = {"gc": dict(maps="gradient"), "fused": dict(maps="gradient", boxes="fused"),
            "gc95": dict(maps="gradient", boxes=ev.graphcut(di.localisation.SegmentParams()))}
    t = ev.localisation_table(clf, {"a": ds}, rows, topk=1)
    assert len(calls) == 2 * 4              # two GraphCut settings, four images, each once
    ref = ev.localisation_outcomes(clf, ds, ev.precompute_saliency(clf, ds, topk=1, maps="gradient"),
                                   "fused", topk=1)
    assert np.array_equal(ref.best_iou, t["fused"]["a"].best_iou, equal_nan=True)  # same boxes


def test_a_table_smooths_each_map_once_for_threshold_and_fused_rows(monkeypatch):
    """Issue 21: the fused row reuses the threshold row's box of the same map (the Gaussian
    smoothing at full resolution was a sixth of chapter 3's grid cell); same boxes as alone."""
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * 4)
    calls = []
    real = ev.threshold_box
    monkeypatch.setattr(ev, "threshold_box", lambda *a, **k: calls.append(1) or real(*a, **k))
    thr = ev.threshold(0.10, 0.03)
    rows = {"thr": dict(maps="gradient", boxes=thr),
            "fused": dict(maps="gradient", boxes="fused"),
            "thr20": dict(maps="gradient", boxes=ev.threshold(0.20, 0.03))}
    t = ev.localisation_table(clf, {"a": ds}, rows, topk=1)
    assert len(calls) == 2 * 4              # two threshold settings, four images, each once
    cache = ev.precompute_saliency(clf, ds, topk=1, maps="gradient")
    for name, rule in (("thr", thr), ("fused", "fused")):
        ref = ev.localisation_outcomes(clf, ds, cache, rule, topk=1)
        assert np.array_equal(ref.best_iou, t[name]["a"].best_iou, equal_nan=True), name


def test_slow_maps_take_their_localisation_options_unless_given(monkeypatch):
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * 4)
    seen = []
    real = ev.compute_maps
    monkeypatch.setattr(ev, "compute_maps", lambda *a, **k: seen.append(k) or real(*a, **k))
    monkeypatch.setitem(ev.LOCALISATION_MAP_OPTIONS, "smoothgrad", {"n": 2})
    ev.precompute_saliency(clf, ds, topk=1, maps="smoothgrad")
    assert seen[-1]["n"] == 2
    ev.precompute_saliency(clf, ds, topk=1, maps="smoothgrad", map_options={"n": 3})
    assert seen[-1]["n"] == 3
    ev.precompute_saliency(clf, ds, topk=1, maps="smoothgrad", map_options={})   # its own default
    assert "n" not in seen[-1]
    assert ev.LOCALISATION_MAP_OPTIONS["occlusion"] == {"stride": 48}


def test_failure_kinds_by_hand():
    """Issue 23: why an image fails, from its best guess's box and the ground-truth box."""
    nan = np.full(4, np.nan)
    box = np.array([[0, 0, 10, 10],      # correct
                    nan,                 # class not in the top k
                    nan,                 # no box
                    [0, 0, 100, 100],    # two objects, a box over both
                    [0, 0, 40, 40],      # covers the object (10x10) and much more
                    [2, 2, 4, 4],        # inside the object, far smaller
                    [50, 50, 60, 60]])   # elsewhere
    gt = np.array([[0, 0, 10, 10], nan, nan, [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10],
                   [0, 0, 10, 10]], dtype=float)
    o = ev.Outcomes(loc1=np.zeros(7, bool), lock=np.array([1, 0, 0, 0, 0, 0, 0], bool),
                    cls1=np.ones(7, bool), clsk=np.array([1, 0, 1, 1, 1, 1, 1], bool),
                    best_iou=np.zeros(7), topk=5, box=box.astype(float), gt_box=gt,
                    n_gt=np.array([1, 0, 1, 2, 1, 1, 1]))
    assert list(ev.failure_kinds(o)) == list(ev.FAILURES)
    counts = ev.failure_counts({"row": {"f": o, "g": ev.concat_outcomes(o, o)}}, "row")
    assert counts["f"] == dict.fromkeys(ev.FAILURES, 1) and counts["g"]["wrong place"] == 2
    with pytest.raises(ValueError, match="do not record"):
        ev.failure_kinds(ev.Outcomes(*(np.zeros(2, bool) for _ in range(4)), np.zeros(2), topk=5))


def test_outcomes_record_the_best_guess_box():
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 30, 30)] * len(ims))
    cache = precompute_saliency(clf, ds, topk=2, maps="gradient")
    o = ev.localisation_outcomes(clf, ds, cache, "centered_box", topk=2)
    has = ~np.isnan(o.best_iou)
    assert np.isfinite(o.box[has]).all() and np.isfinite(o.gt_box[has]).all()
    assert (o.n_gt[has] == 1).all() and np.isnan(o.box[~has]).all()
    assert set(ev.failure_kinds(o)) <= set(ev.FAILURES)


def test_a_table_classifies_each_folder_once(monkeypatch):
    """Issue 21: the top-k guesses are the centre crop's whatever the map, so a table of three
    maps over two folders runs one classification pass per folder, and every cache holds the
    same guesses as a cache made alone."""
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * 4)
    alone = precompute_saliency(clf, ds, topk=2, maps="gradient")
    calls = []
    real = ev.classify_topk
    monkeypatch.setattr(ev, "classify_topk", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = ev.grid_rows(["gradient", "guided", "deconvnet"], {"t": dict(boxes="threshold")})
    caches: dict = {}
    ev.localisation_table(clf, {"a": ds, "b": ds}, rows, topk=2, caches=caches)
    assert len(calls) == 2 and len(caches) == 6
    for c in caches.values():
        assert np.array_equal(c.classes, alone.classes) and np.array_equal(c.probs, alone.probs)
    with pytest.raises(ValueError, match="guesses must be"):
        precompute_saliency(clf, ds, topk=2, guesses=(alone.classes[:2], alone.probs))


def test_rows_at_another_scale_get_their_own_maps():
    """Issue 23: a row with ``full_side`` computes its maps on the whole image at that shorter
    side, in a cache of its own; at the network's own size it is the plain row's cache."""
    clf, ims, top = _tiny_setup()
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * 4)
    seen = []
    rows = {"plain": dict(maps="gradient", boxes=lambda g: seen.append(g.saliency.shape) or (0, 0, 20, 20)),
            "own size": dict(maps="gradient", full_side=int(clf.input_size), boxes="full_image"),
            "larger": dict(maps="gradient", full_side=2 * int(clf.input_size), boxes="threshold")}
    caches: dict = {}
    ev.localisation_table(clf, {"a": ds}, rows, topk=2, caches=caches)
    assert ("a", "gradient", "full") in caches and ("a", "gradient", "full", ("full_side", 2 * int(clf.input_size))) in caches
    assert len(caches) == 2   # "own size" used the plain row's maps
    big = caches[("a", "gradient", "full", ("full_side", 2 * int(clf.input_size)))]
    small = caches[("a", "gradient", "full")]
    k = next(iter(small.maps))
    # maps on the network's input grid (shorter side full_side), on the original pixels either way
    assert min(big.maps[k].shape[-2:]) == 2 * min(small.maps[k].shape[-2:]) == 2 * int(clf.input_size)
    assert big.in_image(*k).shape == small.in_image(*k).shape == (30, 40) == seen[0]
    for bad, match in ((0, "whole number"), (1.5, "whole number"), (True, "whole number")):
        with pytest.raises(ValueError, match=match):
            ev.localisation_table(clf, {"a": ds}, {"r": dict(full_side=bad)}, topk=2)
    with pytest.raises(ValueError, match="crops='full' only"):
        ev.localisation_table(clf, {"a": ds}, {"r": dict(crops="center", full_side=64)}, topk=2)
    # the same checks when the maps are asked for directly: refused, never silently ignored
    for crops, side, match in (("center", 64, "crops='full' only"), ("ten", 64, "crops='full' only"),
                               ("full", 0, "whole number"), ("full", "64", "whole number")):
        with pytest.raises(ValueError, match=match):
            precompute_saliency(clf, ds, topk=2, crops=crops, maps="gradient", full_side=side)
    assert ev.needs_saliency(dict(maps="cam", full_side=288, boxes="threshold"))
    assert not ev.needs_saliency(dict(maps="cam", full_side=288, map_options={}, boxes="full_image"))


def test_table_rows_of_joint_maps_share_one_sweep():
    """Rows whose maps one pass serves (the gradient and the default gated gradient on the whole
    image) are computed in one sweep: each image's pass serves both caches, equal to those that
    precompute_saliency gives each method alone."""
    clf = conv_clf(seed=5)
    sizes = [(40, 30), (40, 30), (30, 40), (40, 30)]
    ims = [rand_pil(w, h, seed=10 + s) for s, (w, h) in enumerate(sizes)]
    top = [p[0][0] for p in clf.predict(ims, topk=1)]
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * len(ims))
    rows = {"gradient": dict(maps="gradient", boxes="threshold"),
            "default": dict(boxes="threshold"), "centre": dict(boxes="centered_box")}
    caches: dict = {}
    shapes = []
    handle = clf.net.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    try:
        table = ev.localisation_table(clf, {"f": ds}, rows, topk=1, caches=caches)
    finally:
        handle.remove()
    passes = [r for r in shapes if r[2:] != (clf.input_size, clf.input_size)]
    # per shape, Grad-CAM's probe of the layers (one image), then one pass for both maps (each
    # map alone: 2 passes per shape more)
    assert passes == [(1, 3, 8, 11), (3, 3, 8, 11), (1, 3, 11, 8), (1, 3, 11, 8)], passes
    assert set(caches) == {("f", "gradient", "full"), ("f", ev.DEFAULT_MAPS, "full")}
    for m in ("gradient", ev.DEFAULT_MAPS):
        alone = precompute_saliency(clf, ds, topk=1, maps=m, crops="full")
        got = caches[("f", m, "full")]
        assert set(got.maps) == set(alone.maps) == {(i, 0) for i in range(4)}
        np.testing.assert_array_equal(got.classes, alone.classes)
        assert got.sizes == alone.sizes and got.frames == alone.frames
        for k in alone.maps:
            np.testing.assert_allclose(got.maps[k], alone.maps[k], rtol=1e-5, atol=1e-6)
    assert caches[("f", "gradient", "full")].classes is not caches[("f", ev.DEFAULT_MAPS, "full")].classes
    assert list(table) == list(rows) and all(len(o["f"].lock) == 4 for o in table.values())
    with pytest.raises(ValueError, match="sequence of map names"):
        ev.precompute_saliency_set(clf, ds, "gradient")


def test_boxes_come_from_several_threads_and_do_not_depend_on_them():
    import threading
    import time

    clf, ims, top = _tiny_setup()
    ims = ims * 3
    ds = TinyDataset(ims, top * 3, [(0, 0, 20, 20)] * len(ims))
    cache = ev.precompute_saliency(clf, ds, topk=2, maps="gradient")
    threads = set()

    def slow_graphcut(g):                     # a rule that reads the map, and says from where
        threads.add(threading.get_ident())
        time.sleep(0.02)
        return ev.graphcut()(g)

    slow_graphcut.needs_saliency = True
    one = ev.localisation_outcomes(clf, ds, cache, "fused", topk=2, workers=1)
    many = ev.localisation_outcomes(clf, ds, ev.precompute_saliency(clf, ds, topk=2, maps="gradient"),
                                    "fused", topk=2, workers=3)
    for a, b in [(one.best_iou, many.best_iou), (one.box, many.box), (one.lock, many.lock)]:
        assert np.array_equal(a, b, equal_nan=True)
    ev.localisation_outcomes(clf, ds, cache, slow_graphcut, topk=2, workers=3)
    assert len(threads) > 1
    threads.clear()
    ev.localisation_outcomes(clf, ds, cache, slow_graphcut, topk=2, workers=1)
    assert threads == {threading.get_ident()}  # one worker: the calling thread
    with pytest.raises(TypeError, match="workers"):
        ev.localisation_outcomes(clf, ds, cache, "graphcut", topk=2, workers=1.5)
    with pytest.raises(ValueError, match="workers"):
        ev.localisation_outcomes(clf, ds, cache, "graphcut", topk=2, workers=0)


def test_outcomes_read_each_image_once_and_let_it_go():
    import gc
    import weakref

    clf, ims, top = _tiny_setup()
    reads, alive = [], []

    class Counting(TinyDataset):
        def __getitem__(self, i):
            im, rec = self.items[i]
            reads.append(i)
            im = im.copy()                    # a fresh image per read, as a folder gives
            alive.append(weakref.ref(im))
            return im, rec

    ds = Counting(ims, top, [(0, 0, 20, 20)] * len(ims))
    cache = ev.precompute_saliency(clf, ds, topk=1, maps="gradient")
    reads.clear(), alive.clear()
    ev.localisation_outcomes(clf, ds, cache, "graphcut", topk=1, workers=2)
    # one read for the record, one for the image whose guess is boxed: no more
    assert sorted(reads) == sorted(list(range(len(ims))) * 2)
    gc.collect()
    assert not any(r() is not None for r in alive)   # no image kept after the call


# -- the book's development folders ---------------------------------------------------------------


def test_development_folders_space_each_folder_and_keep_those_present(tmp_path):
    from test_data import _fake_ilsvrc

    first = _fake_ilsvrc(tmp_path / "ilsvrc2012-val-201", n=9)
    got = ev.development_folders(first, step=4)
    assert list(got) == ["201"]                         # the second folder is absent: left out
    assert [r.image_path.name for _, r in got["201"]] == [
        f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 5, 9)]
    _fake_ilsvrc(tmp_path / "ilsvrc2012-val-650-227px", n=10)
    got = ev.development_folders(first, step=2, most=2)   # 10 images, most 2: every 5th
    assert {k: len(v) for k, v in got.items()} == {"201": 3, "650-227px": 2}
    assert ev.development_folders(tmp_path / "nowhere" / "ilsvrc2012-val-201") == {}
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive int"):
            ev.development_folders(first, step=bad)


def test_development_folders_on_the_book_sample(ilsvrc_root):
    got = ev.development_folders(ilsvrc_root)
    assert {k: len(v) for k, v in got.items()} == {"201": 50, "650-227px": 163}


def test_whole_images_above_the_network_side_go_through_in_fewer_rows():
    """full_side above the network's side: the rows of a pass shrink with the square of the side
    (the pass's activations, not its maps, change: issue 21's peak memory)."""
    clf = conv_clf(seed=5)
    s = clf.input_size
    ims = [rand_pil(3 * s, 2 * s, seed=k) for k in range(6)]   # whole: (side, 1.5 side)
    top = [p[0][0] for p in clf.predict(ims, topk=1)]
    ds = TinyDataset(ims, top, [(0, 0, 20, 20)] * len(ims))
    got = {}
    for side in (s, 2 * s):
        rows = []
        handle = clf.net.register_forward_pre_hook(lambda m, a: rows.append(tuple(a[0].shape)))
        try:
            got[side] = precompute_saliency(clf, ds, topk=1, maps="gradient", crops="full",
                                            full_side=side, batch_size=4, chunk=8)
        finally:
            handle.remove()
        passes = sorted(r[0] for r in rows if r[2:] != (s, s))   # not classification
        assert passes == ([2, 4] if side == s else [1] * 6), (side, rows)
    assert ev.pass_rows(4, (2 * s, 3 * s), s) == 1 and ev.pass_rows(4, (s, 5 * s), s) == 4
    for side, c in got.items():   # one image alone gives the same map
        alone = precompute_saliency(clf, TinyDataset(ims[:1], top[:1], [(0, 0, 20, 20)]), topk=1,
                                    maps="gradient", crops="full", full_side=side)
        np.testing.assert_allclose(c.maps[(0, 0)], alone.maps[(0, 0)], rtol=1e-4, atol=1e-6)
