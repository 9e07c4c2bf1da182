"""MaxBoxAccV2 (Choe et al. 2020, wsolevaluation's protocol): known answers on synthetic maps,
the V1 / V2 difference, the threshold helpers, the bootstrap, and one end-to-end run on a tiny
model and a hand-made ILSVRC folder."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image
from state_helpers import assert_same_state, conv_clf, gap_clf, model_state, tiny_clf

import deepinside.methods.maps as dm
from deepinside.core.data import IlsvrcDataset
from deepinside.measures.maxboxacc import (DEFAULT_IOUS, accuracy_at, bootstrap_se_maxboxacc, box_hits, box_iou,
                                  default_thresholds, max_box_accuracy, max_box_accuracy_from_hits,
                                  maxboxacc_table)

H = W = 64


def box_map(*boxes, value=1.0, shape=(H, W)) -> np.ndarray:
    """A map that is ``value`` on the inclusive boxes ``(x0, y0, x1, y1)``, 0 elsewhere."""
    m = np.zeros(shape)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1 + 1, x0:x1 + 1] = value
    return m


# -- IoU -----------------------------------------------------------------------------------------


def test_box_iou_inclusive_areas_by_hand():
    a = np.array([[0, 0, 9, 9], [0, 0, 0, 0]])
    b = np.array([[5, 5, 14, 14], [0, 0, 9, 9], [20, 20, 30, 30]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    # 10x10 boxes overlapping on 5x5: 25 / (100 + 100 - 25)
    np.testing.assert_allclose(iou[0], [25 / 175, 1.0, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 1 / 100, 0.0])


# -- known answers of box_hits ---------------------------------------------------------------------


@pytest.mark.parametrize("multi_contour", [True, False])
def test_map_equal_to_the_box_is_correct_at_every_delta(multi_contour):
    gt = (10, 12, 40, 50)
    hits = box_hits(box_map(gt)[None], [[gt]], multi_contour=multi_contour)
    assert hits.shape == (1, 100, 3) and hits.dtype == bool
    assert hits.all()   # a 0/1 map gives the same mask at every tau
    r = max_box_accuracy_from_hits(hits)
    assert r["maxboxacc_v2"] == 1.0 and r["per_iou"] == {0.3: 1.0, 0.5: 1.0, 0.7: 1.0} and r["n"] == 1


def test_predicted_box_is_one_past_the_last_pixel_as_in_wsolevaluation():
    # boundingRect's (x, y, x + w, y + h) against an inclusive gt box: IoU = wh / ((w+1)(h+1))
    w, h = 4, 4                                   # 16 / 25 = 0.64: hit at 0.3, 0.5, miss at 0.7
    gt = (20, 20, 20 + w - 1, 20 + h - 1)
    hits = box_hits(box_map(gt)[None], [[gt]], thresholds=[0.5])
    assert hits[0, 0].tolist() == [True, True, False]
    # clipped at W - 1: a full-frame map is exactly the full-frame inclusive box
    full = (0, 0, W - 1, H - 1)
    assert box_hits(np.ones((1, H, W)), [[full]], ious=(1.0,)).all()


def test_blob_far_from_the_object_gives_zero():
    m = np.zeros((H, W))
    yy, xx = np.mgrid[:H, :W]
    m = np.exp(-((xx - 52) ** 2 + (yy - 52) ** 2) / (2 * 4.0 ** 2))
    m = (m - m.min()) / (m.max() - m.min())
    hits = box_hits(m[None], [[(0, 0, 20, 20)]])
    assert not hits.any()
    assert max_box_accuracy_from_hits(hits)["maxboxacc_v2"] == 0.0


def test_empty_mask_gives_the_zero_box():
    # an all-zero map has no contour at any tau: the box [0, 0, 0, 0], which matches only itself
    z = np.zeros((2, H, W))
    hits = box_hits(z, [[(0, 0, 0, 0)], [(0, 0, 10, 10)]])
    assert hits[0].all() and not hits[1].any()


def test_all_contours_v2_versus_largest_contour_v1():
    big, small = (4, 4, 35, 35), (48, 48, 57, 57)
    m = box_map(big, small)[None]
    v2 = box_hits(m, [[small]], multi_contour=True)
    v1 = box_hits(m, [[small]], multi_contour=False)
    assert v2.all()          # the small blob's box is among the predicted boxes
    assert not v1.any()      # V1 keeps the larger blob's box, far from the small object
    # with both objects annotated, both versions hit (the big box matches the big object)
    assert box_hits(m, [[big, small]], multi_contour=False).all()
    # a box over both blobs: V2's best match is the better of the two single boxes, not a union
    both = (4, 4, 57, 57)
    iou_big = box_iou([[4, 4, 36, 36]], [both])[0, 0]
    assert np.array_equal(box_hits(m, [[both]], thresholds=[0.0])[0, 0], iou_big >= np.array(DEFAULT_IOUS))


def test_graded_map_best_threshold_lies_where_it_succeeds():
    # a pyramid: the mask at tau shrinks; the gt box is the mask at tau = 0.5 (about)
    yy, xx = np.mgrid[:H, :W]
    m = 1 - np.maximum(np.abs(xx - 31.5), np.abs(yy - 31.5)) / 32
    m = (m - m.min()) / (m.max() - m.min())
    gt = (16, 16, 47, 47)
    hits = box_hits(m[None], [[gt]])
    r = max_box_accuracy_from_hits(hits)
    t = default_thresholds()
    for k, d in enumerate(DEFAULT_IOUS):
        ok = t[hits[0, :, k]]
        assert ok.size and ok.min() <= r["best_threshold"][d] <= ok.max()
        assert r["best_threshold"][d] == ok.min()   # the smallest successful tau
    # a stricter delta succeeds on fewer thresholds (nested sets)
    assert hits[0, :, 0].sum() >= hits[0, :, 1].sum() >= hits[0, :, 2].sum() > 0
    assert not hits[0, 0, 2] and not hits[0, -1, 2]


def test_per_iou_is_non_increasing_in_delta():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 1, (6, 32, 32)).cumsum(1).cumsum(2)
    maps = (maps - maps.min((1, 2), keepdims=True)) / np.ptp(maps, axis=(1, 2), keepdims=True)
    gts = [[(int(x), int(y), int(x) + 12, int(y) + 9)] for x, y in rng.integers(0, 18, (6, 2))]
    ious = (0.1, 0.3, 0.5, 0.7, 0.9)
    r = max_box_accuracy_from_hits(box_hits(maps, gts, ious=ious), ious)
    acc = [r["per_iou"][d] for d in ious]
    assert all(a >= b for a, b in itertools.pairwise(acc))
    assert r["maxboxacc_v2"] == pytest.approx(np.mean(acc))


def test_box_hits_refuses_bad_arguments():
    m = box_map((1, 1, 5, 5))[None]
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        box_hits(m, [[(1, 1, 5, 5)]], ious=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        box_hits(m * 2, [[(1, 1, 5, 5)]])
    with pytest.raises(ValueError, match="one list of boxes per map"):
        box_hits(m, [[(1, 1, 5, 5)], [(1, 1, 5, 5)]])
    with pytest.raises(ValueError, match="no ground-truth box"):
        box_hits(m, [[]])
    with pytest.raises(ValueError, match="x1 >= x0"):
        box_hits(m, [[(5, 1, 1, 5)]])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        box_hits(m, [[(1, 1, 5, 5)]], thresholds=[0.5, 1.0])


# -- thresholds chosen elsewhere, bootstrap ----------------------------------------------------------


def test_accuracy_at_thresholds_chosen_on_another_set():
    t = default_thresholds()
    hits_a = np.zeros((4, 100, 3), dtype=bool)
    hits_a[:, 30:40] = True                      # set A: every image correct for tau in [0.30, 0.40)
    hits_b = np.zeros((4, 100, 3), dtype=bool)
    hits_b[:2, 35:60] = True                     # set B: half the images, for tau in [0.35, 0.60)
    hits_b[2:, 50:60] = True                     # the other half only for tau in [0.50, 0.60)
    chosen = max_box_accuracy_from_hits(hits_a)["best_threshold"]
    assert chosen == {0.3: 0.3, 0.5: 0.3, 0.7: 0.3}
    assert accuracy_at(hits_b, chosen) == {0.3: 0.0, 0.5: 0.0, 0.7: 0.0}
    # B's own optimum is higher than A's threshold transferred to it
    assert max_box_accuracy_from_hits(hits_b)["per_iou"][0.5] == 1.0
    assert accuracy_at(hits_b, {0.5: 0.37}) == {0.5: 0.5}
    assert accuracy_at(hits_b, {0.7: float(t[55])}) == {0.7: 1.0}
    with pytest.raises(ValueError, match="not one of the 100 score-map thresholds"):
        accuracy_at(hits_b, {0.5: 0.375})
    with pytest.raises(ValueError, match="not one of ious"):
        accuracy_at(hits_b, {0.6: 0.37})


def test_bootstrap_se_zero_for_constant_hits_positive_otherwise_and_seeded():
    ones = np.ones((20, 100, 3), dtype=bool)
    se = bootstrap_se_maxboxacc(ones, n_boot=200)
    assert se["maxboxacc_v2"] == 0.0 and set(se["per_iou"].values()) == {0.0}
    assert bootstrap_se_maxboxacc(~ones, n_boot=200)["maxboxacc_v2"] == 0.0
    rng = np.random.default_rng(3)
    hits = np.sort(rng.uniform(size=(40, 100, 1)) < rng.uniform(0.2, 0.8, (1, 100, 1)), axis=2)
    hits = np.repeat(hits, 3, axis=2)
    a = bootstrap_se_maxboxacc(hits, n_boot=300, seed=7)
    b = bootstrap_se_maxboxacc(hits, n_boot=300, seed=7)
    c = bootstrap_se_maxboxacc(hits, n_boot=300, seed=8)
    assert a == b and a != c and a["maxboxacc_v2"] > 0
    # about the binomial s.e. sqrt(p (1 - p) / N) of the best column (re-maximising adds a bit)
    p = max_box_accuracy_from_hits(hits)["per_iou"][0.5]
    assert 0.5 * np.sqrt(p * (1 - p) / 40) < a["per_iou"][0.5] < 2 * np.sqrt(p * (1 - p) / 40)
    with pytest.raises(ValueError, match="boolean"):
        bootstrap_se_maxboxacc(hits.astype(int))


# -- end to end ------------------------------------------------------------------------------------

WNIDS = ("n01440764", "n01443537")   # ImageNet classes 0 and 1


def _white_box_folder(root, items):
    """ILSVRC layout: images black with white XML boxes (inclusive corners), one XML each."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i, (size, wnid, boxes) in enumerate(items):
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        a = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        objs = ""
        for x0, y0, x1, y1 in boxes:
            a[y0:y1 + 1, x0:x1 + 1] = 255
            objs += (f"<object><name>{wnid}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
        Image.fromarray(a).save(root / "images" / f"{stem}.png")
        (root / "annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth>"
            f"</size>{objs}</annotation>")
    return root


def _toy_box(clf, x, targets, **_):
    """The map is the white part of the input image: exactly the boxes drawn in it."""
    return (clf.denormalize(x).mean(1) > 0.5).float()


@pytest.fixture
def toy_map():
    dm.register_map("toy_box", _toy_box, replace=True)
    yield "toy_box"
    dm._REGISTRY.pop("toy_box", None)
    dm._REQUIRES.pop("toy_box", None)


def test_max_box_accuracy_end_to_end_on_a_tiny_model(tmp_path, toy_map):
    items = [((32, 32), WNIDS[0], [(4, 6, 20, 25)]),
             ((64, 64), WNIDS[1], [(10, 10, 41, 41)]),             # resized by 1/2 to the input
             ((32, 32), WNIDS[0], [(2, 2, 12, 12), (20, 18, 29, 29)]),
             ((32, 32), WNIDS[1], [(22, 22, 29, 29)])]
    ds = IlsvrcDataset(_white_box_folder(tmp_path / "val", items))
    assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 0, 1]
    clf = tiny_clf(conv_clf(seed=0).net, 4, size=32)
    before = model_state(clf.net)
    r = max_box_accuracy(clf, ds, toy_map, batch_size=3, return_hits=True)
    assert r["maxboxacc_v2"] == 1.0 and r["per_iou"] == {0.3: 1.0, 0.5: 1.0, 0.7: 1.0} and r["n"] == 4
    assert r["hits"].shape == (4, 100, 3) and r["hits"].all() and r["thresholds"].shape == (100,)
    assert_same_state(before, model_state(clf.net))
    # V1 on the two-object image still hits: its larger blob is one of the two gt boxes
    assert max_box_accuracy(clf, ds, toy_map, multi_contour=False)["maxboxacc_v2"] == 1.0
    # a real map method runs through the same path (gradients of the tiny ConvNet)
    g = max_box_accuracy(clf, ds, "gradient", ious=(0.5,), batch_size=4)
    assert set(g["per_iou"]) == {0.5} and 0.0 <= g["maxboxacc_v2"] <= 1.0 and g["n"] == 4


def test_max_box_accuracy_refuses_bad_arguments(tmp_path):
    ds = IlsvrcDataset(_white_box_folder(tmp_path / "val", [((32, 32), WNIDS[0], [(4, 6, 20, 25)])]))
    clf = tiny_clf(conv_clf(seed=0).net, 4, size=32)
    with pytest.raises(ValueError, match=r"unknown map method 'nope'.*gradient.*cam"):
        max_box_accuracy(clf, ds, "nope")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        max_box_accuracy(clf, ds, "gradient", ious=(0.0, 0.5))
    with pytest.raises(ValueError, match="empty"):
        max_box_accuracy(clf, [], "gradient")
    assert "toy_box" not in dm.map_names()


def test_box_hits_takes_float32_maps():
    gt = (3, 3, 20, 20)
    assert box_hits(box_map(gt).astype(np.float32)[None], [[gt]]).all()


@pytest.mark.slow
def test_cli_prints_the_numbers_of_the_function_sharded_or_not(capsys, ilsvrc_root, tmp_path):
    """`deepinside evaluate --metric maxboxacc` prints max_box_accuracy's numbers on the same
    images, alone and merged from shards of 3 (counts add up; issue 23)."""
    import deepinside as di
    from deepinside.cli import main

    def run(*extra):
        code = main([
            "evaluate", str(ilsvrc_root), "--limit", "7", "--device", "cpu", "--metric", "maxboxacc",
            "--maps", "cam", *extra])
        out = capsys.readouterr().out
        assert code == 0
        return [ln for ln in out.splitlines() if ln.startswith("cam ")][0]

    alone = run()
    sharded = run("--out", str(tmp_path / "run"), "--shard-size", "3")
    assert alone == sharded
    clf = di.load_classifier(device="cpu")
    r = di.max_box_accuracy(clf, di.IlsvrcDataset(ilsvrc_root, limit=7), maps="cam")
    vals = [float(v.rstrip("%")) for v in alone.split()[1:5]]
    assert vals == pytest.approx([round(100 * r["maxboxacc_v2"], 1)]
                                 + [round(100 * r["per_iou"][d], 1) for d in (0.3, 0.5, 0.7)])


def test_paired_difference_table_and_centre_baseline(tmp_path):
    """Paired bootstrap of a difference, the thresholds carried to another set, the centre
    baseline (no network), and the chapter's table renderer."""
    from deepinside.figures.localisation_tables import maxboxacc_markdown
    from deepinside.measures.maxboxacc import (CENTRE, centre_map, max_box_accuracy, paired_maxboxacc,
                                               transferred_thresholds)

    rng = np.random.default_rng(0)
    a = rng.random((40, 100, 3)) < 0.7
    b = a & (rng.random((40, 100, 3)) < 0.6)           # b hits a subset of a's hits
    p = paired_maxboxacc(a, b)
    assert p["diff"] > 0 and p["se"] > 0 and p["significant"]
    assert paired_maxboxacc(a, a)["diff"] == 0 and paired_maxboxacc(a, a)["se"] == 0
    ra = {"hits": a, **max_box_accuracy_from_hits(a)}
    rb = {"hits": b, **max_box_accuracy_from_hits(b)}
    assert transferred_thresholds(ra, ra) == pytest.approx(ra["maxboxacc_v2"])
    assert transferred_thresholds(rb, ra) <= ra["maxboxacc_v2"] + 1e-12
    md = maxboxacc_markdown({"a": {"x": ra, "y": rb}, "b": {"x": rb, "y": ra}}).splitlines()
    assert len(md) == 4 and "x, τ of y" in md[0] and md[2].startswith("| a | ")
    m = centre_map(32)
    assert m.shape == (32, 32) and m.max() <= 1 and np.unravel_index(m.argmax(), m.shape) in [(15, 15), (16, 16), (15, 16), (16, 15)]
    ds = IlsvrcDataset(_white_box_folder(tmp_path / "ds", [((32, 32), WNIDS[0], [(8, 8, 23, 23)])]))
    clf = tiny_clf(conv_clf(seed=0).net, 4, size=32)
    r = max_box_accuracy(clf, ds, maps=CENTRE)
    assert r["per_iou"][0.7] == 1.0          # a centred box: the centre baseline finds it
    with pytest.raises(ValueError, match="no options"):
        max_box_accuracy(clf, ds, maps=CENTRE, signed=True)


def test_box_hits_on_threads_equal_one_thread(monkeypatch):
    """Issue 21: the images' contours run on a thread pool when the process has several cores;
    the hits are those of the one-thread loop, image for image."""
    import os

    rng = np.random.default_rng(3)
    maps = rng.random((12, 32, 32)).astype(np.float32)
    maps = np.stack([cv2_blur(m) for m in maps])
    maps = (maps - maps.min((1, 2), keepdims=True)) / np.ptp(maps, (1, 2), keepdims=True)
    gts = [[(2, 3, 20, 25)], [(0, 0, 31, 31), (5, 5, 9, 9)]] * 6
    many = box_hits(maps, gts)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    one = box_hits(maps, gts)
    assert many.shape == (12, 100, 3) and np.array_equal(many, one) and 0 < many.mean() < 1


def cv2_blur(m):
    import cv2

    return cv2.GaussianBlur(m, (0, 0), 3)


# -- the boxes from connected components equal findContours' (the speed-up of _image_hits) ---------


def _random_maps(seed, n):
    """Varied uint8 maps: noise, smoothed noise, rings (holes), 1-pixel lines, structures on the
    frame, checkerboards, |smoothed Gaussian noise| (gradient-like), sizes from 1 x 1 up."""
    import cv2

    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = i % 8
        h, w = (int(rng.integers(1, 33)), int(rng.integers(1, 33))) if i % 3 else \
            (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        yy, xx = np.mgrid[:h, :w]
        if kind == 0:
            m = rng.random((h, w))
        elif kind == 1:
            m = cv2.GaussianBlur(rng.random((h, w)), (0, 0), float(rng.uniform(0.5, 3)))
        elif kind == 2:
            m = (rng.random((h, w)) < rng.uniform(0.2, 0.8)).astype(float)
        elif kind == 3:   # rings, some cut by the frame: holes and holes opened onto the frame
            m = np.zeros((h, w))
            for _ in range(int(rng.integers(1, 5))):
                d = np.hypot(xx - rng.uniform(-3, w + 3), yy - rng.uniform(-3, h + 3))
                m += (np.abs(d - rng.uniform(1, 12)) < rng.uniform(0.5, 2)) * rng.random()
        elif kind == 4:   # 1-pixel lines and specks
            m = (rng.random((h, w)) < 0.05) * rng.random((h, w))
            for _ in range(int(rng.integers(1, 6))):
                if rng.random() < 0.5:
                    m[int(rng.integers(0, h))] = rng.random()
                else:
                    m[:, int(rng.integers(0, w))] = rng.random()
        elif kind == 5:   # foreground along the frame
            m = (rng.random((h, w)) < 0.3).astype(float)
            m[0] = 1.0
            m[:, -1] = rng.random(h) < 0.9
        elif kind == 6:   # diagonal stripes and checkerboards (8- versus 4-connectivity)
            m = ((xx + yy) % int(rng.integers(2, 4)) == 0) + 0.1 * rng.random((h, w))
        else:
            m = np.abs(cv2.GaussianBlur(rng.standard_normal((h, w)), (0, 0), 1.0))
        m = m - m.min()
        yield (m / m.max() * 255 if m.max() > 0 else m).astype(np.uint8)


def _contour_box_set(img8, level):
    import cv2

    from deepinside.measures.maxboxacc import _contour_boxes

    _, binary = cv2.threshold(img8, level, 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    return set(map(tuple, _contour_boxes(contours, img8.shape[1], img8.shape[0], True).tolist()))


def test_component_boxes_are_the_boxes_of_all_contours():
    """Outer borders = 8-connected components, hole borders = 4-connected background components
    off the frame grown by one pixel, on the mask cropped to its foreground: the same set of boxes
    as findContours (RETR_TREE) at every level of every map."""
    from deepinside.measures.maxboxacc import _component_boxes

    masks = 0
    for img8 in _random_maps(0, 160):
        rows, cols = img8.max(axis=1), img8.max(axis=0)
        for level in np.unique(np.r_[0, img8.ravel(), 255]):   # every distinct mask, and empty ones
            got = set(map(tuple, _component_boxes(img8, int(level), rows, cols).tolist()))
            assert got == _contour_box_set(img8, int(level)), (img8.tolist(), int(level))
            masks += 1
    assert masks > 4000


def test_image_hits_components_equal_contours():
    """_image_hits gives the same hits with connected components, findContours, or the per-mask
    choice between them (box_hits' path), on small maps and on a noisy 224 x 224 one where the
    choice takes each about half the time."""
    import cv2

    from deepinside.measures.maxboxacc import _image_hits

    rng = np.random.default_rng(1)
    t, delta = default_thresholds(), np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    m = np.abs(cv2.GaussianBlur(rng.standard_normal((224, 224)), (0, 0), 1.0))
    m *= np.exp(-((np.arange(224) - rng.uniform(60, 160)) ** 2 / 3000))[:, None]
    for img8 in [*_random_maps(2, 40), (m / m.max() * 255).astype(np.uint8)]:
        s = img8 / 255.0
        img8 = (s * 255).astype(np.uint8)          # what box_hits scores
        h, w = img8.shape
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        gt = np.array([[x0, y0, int(rng.integers(x0, w)), int(rng.integers(y0, h))], [0, 0, w - 1, h - 1]],
                      dtype=np.float64)[:int(rng.integers(1, 3))]
        ref = _image_hits(img8, gt, t, delta, True, "contours")
        assert np.array_equal(_image_hits(img8, gt, t, delta, True, "components"), ref)
        assert np.array_equal(_image_hits(img8, gt, t, delta, True, "auto"), ref)
        assert np.array_equal(box_hits(s[None], [gt], ious=delta)[0], ref)


def test_table_computes_a_folders_maps_in_one_sweep_with_shared_passes(tmp_path):
    """maxboxacc_table: gradient, CAM, Grad-CAM and the gated gradient of a folder come from one
    pass per chunk; every result (hits included) equals max_box_accuracy of the map alone."""
    items = [((32, 32), WNIDS[i % 2], [(4 + i, 6, 20, 25)]) for i in range(5)]
    ds = IlsvrcDataset(_white_box_folder(tmp_path / "val", items))
    clf = gap_clf(seed=2, k=4, size=32)
    maps = ["gradient", "cam", "gradcam", "gradient_gradcam", "centre", "guided"]
    calls: list = []
    handle = clf.net.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    try:
        table = maxboxacc_table(clf, {"a": ds, "b": ds}, maps)
    finally:
        handle.remove()
    assert list(table) == maps and all(list(table[m]) == ["a", "b"] for m in maps)
    # per folder, one chunk of 5 images in passes of BATCH_SIZE = 4: guided's passes, then one
    # pass per 4 images for the four (and, first, Grad-CAM's probe of the layers on one image)
    assert calls == [4, 1] + [1] + [4, 1] + [4, 1] * 2, calls
    for m in maps:
        alone = max_box_accuracy(clf, ds, m, return_hits=True)
        for f in ("a", "b"):
            assert np.array_equal(table[m][f]["hits"], alone["hits"]), (m, f)
            assert table[m][f]["maxboxacc_v2"] == alone["maxboxacc_v2"]
    with pytest.raises(ValueError, match="name of a map method"):
        max_box_accuracy(clf, ds, ["gradient"])


def test_table_options_none_or_missing_mean_the_defaults(tmp_path):
    items = [((32, 32), WNIDS[i % 2], [(4 + i, 6, 20, 25)]) for i in range(3)]
    ds = IlsvrcDataset(_white_box_folder(tmp_path / "val", items))
    clf = gap_clf(seed=3, k=4, size=32)
    plain = maxboxacc_table(clf, {"a": ds}, ["gradient", "smoothgrad"], {"smoothgrad": {"n": 2}})
    none = maxboxacc_table(clf, {"a": ds}, ["gradient", "smoothgrad"],
                           {"gradient": None, "smoothgrad": {"n": 2}})
    for m in plain:
        assert np.array_equal(plain[m]["a"]["hits"], none[m]["a"]["hits"]), m
    with pytest.raises(ValueError, match="n"):
        maxboxacc_table(clf, {"a": ds}, ["smoothgrad"], {"smoothgrad": {"n": 0}})
