"""Pointing game, deletion/insertion and the randomisation test on cases whose answers are known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import deepinside as di
from deepinside.figures import plotting_metrics as pm
from deepinside.measures import metrics as dm
from deepinside.methods.maps import _REGISTRY
from state_helpers import assert_same_state, model_state
from test_maps import tiny_classifier


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _distance_hit(point, boxes, tol):
    """Independent: Euclidean distance from a pixel to the nearest pixel of a half-open box."""
    px, py = point
    best = np.inf
    for x0, y0, x1, y1 in boxes:
        dx = max(x0 - px, 0, px - (x1 - 1))
        dy = max(y0 - py, 0, py - (y1 - 1))
        best = min(best, np.hypot(dx, dy))
    return best <= tol


def test_pointing_hits_equal_point_to_box_distance():
    rng = np.random.default_rng(0)
    sizes, boxes, points = [], [], []
    for _ in range(300):
        w, h = rng.integers(40, 120, size=2)
        x0, y0 = rng.integers(0, w - 5), rng.integers(0, h - 5)
        b = [(x0, y0, rng.integers(x0 + 1, w + 1), rng.integers(y0 + 1, h + 1))]
        if rng.random() < 0.3:
            b.append((0, 0, 3, 3))
        sizes.append((w, h))
        boxes.append(b)
        points.append((rng.integers(0, w), rng.integers(0, h)))
    hits = dm.pointing_hits(np.array(points), boxes, sizes, tolerance=15)
    ref = [_distance_hit(p, b, 15) for p, b in zip(points, boxes)]
    assert hits.tolist() == ref
    assert 0.2 < hits.mean() < 0.9      # both outcomes are exercised


def _records(specs):
    """(image, record) pairs: 16x16 images, one box each, given label."""
    return [(Image.new("RGB", (16, 16)), SimpleNamespace(boxes=(box,), label=lab, wnid=f"n{lab}",
                                                         box_wnids=(f"n{lab}",)))
            for box, lab in specs]


def test_pointing_game_synthetic_maps_and_centre_baseline():
    tiny = tiny_classifier()
    far = (0, 0, 2, 2)          # more than 1 px away from the map's peak at (12, 12)
    near = (10, 10, 16, 16)
    items = _records([(far, 0), (far, 0), (near, 0), (near, 1)])
    maps = torch.zeros(4, 16, 16)
    maps[:, 12, 12] = 1.0
    res = dm.pointing_game(tiny, items, maps, tolerance=1)
    assert res["hits"].tolist() == [False, False, True, True]
    assert res["accuracy"] == pytest.approx(0.5)
    assert res["class_accuracy"] == pytest.approx((1 / 3 + 1) / 2)
    assert res["points"][0].tolist() == [12, 12]
    # the centre baseline: pixel (8, 8); a box 3 px from it hits only with tolerance >= 3
    items = _records([((11, 8, 14, 9), 0)])
    assert not dm.pointing_game(tiny, items, "centre", tolerance=2.9)["hits"][0]
    assert dm.pointing_game(tiny, items, "centre", tolerance=3)["hits"][0]
    with pytest.raises(ValueError, match="unknown map"):
        dm.pointing_game(tiny, items, "middle")


class Quadrant(nn.Module):
    """Two classes: S_0 = a * mean of channel 0 over the top-left quadrant, S_1 = 0."""

    def __init__(self, a: float = 4.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a), requires_grad=False)

    def forward(self, x):
        s = self.a * x[:, 0, :8, :8].mean((1, 2))
        return torch.stack([s, torch.zeros_like(s)], 1)


def _quadrant_clf():
    clf = tiny_classifier(classes=2)
    clf.net = Quadrant().eval()
    return clf


def test_deletion_curve_known_by_hand():
    clf = _quadrant_clf()
    x = torch.zeros(2, 3, 16, 16)
    x[:, 0, :8, :8] = 1.0
    perfect = torch.zeros(2, 16, 16)
    perfect[:, :8, :8] = 1.0
    res = dm.deletion_insertion(clf, x, perfect, targets=0, steps=4, blur_sigma=0.0, batch_size=3)
    s = torch.sigmoid(torch.tensor(4.0)).item()        # softmax of (4, 0)
    assert np.allclose(res["deletion_curve"], [[s, .5, .5, .5, .5]] * 2, atol=1e-6)
    assert np.allclose(res["fraction"], [0, .25, .5, .75, 1])
    assert res["deletion"] == pytest.approx((s + .5) / 2 * .25 + .5 * .75, abs=1e-6)
    assert np.allclose(res["insertion_curve"][:, 1:], s, atol=1e-6)   # quadrant back at step 1
    # the reverse order deletes the quadrant last; random order in between
    worst = dm.deletion_insertion(clf, x, 1 - perfect, targets=0, steps=4, modes=("deletion",))
    rand = dm.deletion_insertion(clf, x, "random", targets=0, steps=4, modes=("deletion",))
    assert res["deletion"] < rand["deletion"] < worst["deletion"]
    assert np.allclose(worst["deletion_curve"][:, :4], s, atol=1e-6)


def _deletion_by_hand(clf, x, maps, targets, steps, blurred, fill=0.0):
    """Every curve point from its own image, built pixel by pixel in the ranking order."""
    n, _, h, w = x.shape
    curves = {"deletion": np.zeros((n, steps + 1)), "insertion": np.zeros((n, steps + 1))}
    for i in range(n):
        order = torch.argsort(-maps[i].flatten(), stable=True)
        for s in range(steps + 1):
            first = torch.zeros(h * w, dtype=torch.bool)
            first[order[:min(h * w, -(-s * h * w // steps))]] = True
            first = first.view(1, 1, h, w)
            for mode, img in (("deletion", torch.where(first, torch.tensor(fill), x[i:i + 1])),
                              ("insertion", torch.where(first, x[i:i + 1], blurred[i:i + 1]))):
                with torch.no_grad():
                    curves[mode][i, s] = clf.net(img).softmax(1)[0, targets[i]].item()
    return curves


def test_deletion_insertion_ends_scored_once_match_every_point_by_hand():
    # the map-independent ends (the image, its blurred copy, all fill) are scored once per call;
    # every point must still be what its own perturbed image scores (issue 21)
    tiny = tiny_classifier()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 16, 16, generator=gen)
    maps = torch.rand(3, 16, 16, generator=gen)   # distinct values: one pixel order
    tgt = [1, 0, 2]
    blurred = dm.gaussian_blur(x, 5.0, 5, "reflect")
    rows = []
    hook = tiny.net.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    try:
        res = dm.deletion_insertion(tiny, x, maps, tgt, steps=4, batch_size=5, blur_size=11,
                                    blur_sigma=5.0)
    finally:
        hook.remove()
    assert sum(rows) == 2 * 3 + 1 + 2 * 3 * 3   # ends: 2N + 1; inner points: 2 modes x N x 3
    want = _deletion_by_hand(tiny, x, maps, tgt, 4, blurred)
    for mode in ("deletion", "insertion"):
        assert np.allclose(res[f"{mode}_curve"], want[mode], atol=1e-6), mode
    assert np.array_equal(res["deletion_curve"][:, 0], res["insertion_curve"][:, -1])
    one = dm.deletion_insertion(tiny, x, maps, tgt, steps=4, modes=("deletion",))
    assert np.allclose(one["deletion_curve"], want["deletion"], atol=1e-6)
    flat = dm.deletion_insertion(tiny, x, maps, tgt, steps=1, blur_size=11, blur_sigma=5.0)
    assert np.allclose(flat["insertion_curve"], want["insertion"][:, [0, -1]], atol=1e-6)


def test_deletion_batching_and_baselines():
    tiny = tiny_classifier()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = dm.deletion_insertion(tiny, x, "gradient", steps=5, batch_size=4)
    b = dm.deletion_insertion(tiny, x, "gradient", steps=5, batch_size=100)
    assert np.allclose(a["deletion_curve"], b["deletion_curve"], atol=1e-6)
    assert np.allclose(a["insertion_curve"], b["insertion_curve"], atol=1e-6)
    c = dm.baseline_maps("centre", 1, 16, 16)[0]
    assert int(c.argmax()) in {7 * 16 + 7, 7 * 16 + 8, 8 * 16 + 7, 8 * 16 + 8}
    with pytest.raises(ValueError, match="unknown map"):
        dm.deletion_insertion(tiny, x, "nope")


def test_map_similarity_known_values():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(32, 32))
    same = dm.map_similarity(a, a)
    assert all(v == pytest.approx(1.0) for v in same.values())
    neg = dm.map_similarity(a, -a, ("spearman", "spearman_abs"))
    assert neg["spearman"] == pytest.approx(-1.0) and neg["spearman_abs"] == pytest.approx(1.0)
    assert dm.map_similarity(a, np.zeros_like(a), ("spearman",))["spearman"] == 0.0


def test_randomisation_blocks_order_and_norm_grouping():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1)),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert dm.randomisation_blocks(net) == [("6", ["6"]), ("3.1", ["3.1"]), ("3.0", ["3.0"]),
                                           ("0+1", ["0", "1"])]


def test_randomisation_copies_the_model_and_modes_agree_on_the_first_block():
    tiny = tiny_classifier()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    before = model_state(tiny.net)
    cas = dm.randomisation_test(tiny, x, "gradient", "cascading", keep_maps=True)
    ind = dm.randomisation_test(tiny, x, "gradient", "independent")
    assert_same_state(before, model_state(tiny.net))
    assert list(cas) == list(dm.SIMILARITIES)
    assert [b for b, _ in cas["spearman"]] == ["4", "0"] == cas.blocks
    assert cas.maps.shape == (3, 3, 16, 16)
    assert torch.allclose(cas.maps[0], di.compute_maps(tiny, x, cas.targets.tolist()), atol=1e-6)
    for k in dm.SIMILARITIES:   # block 1 alone is randomised in both modes, with the same seed
        assert cas[k][0][1] == pytest.approx(ind[k][0][1])
    assert cas["spearman_abs"][-1][1] < 0.9    # a fully random net gives another gradient map


def test_randomisation_of_a_model_independent_map_is_one():
    """Adebayo et al.'s point: a map that ignores the weights (here, an edge detector of the
    input) passes through the randomisation unchanged: similarity 1 everywhere."""
    def edges(clf, x, targets):
        g = x.mean(1)
        return torch.nn.functional.pad((g[:, :, 1:] - g[:, :, :-1]).abs(), (0, 1))

    di.register_map("test_edges", edges)
    try:
        tiny = tiny_classifier()
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
        res = dm.randomisation_test(tiny, x, "test_edges")
        for k in dm.SIMILARITIES:
            assert all(v == pytest.approx(1.0) for _, v in res[k]), k
    finally:
        _REGISTRY.pop("test_edges")


def test_evaluate_maps_and_table():
    tiny = tiny_classifier()
    rng = np.random.default_rng(0)
    items = [(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)),
              SimpleNamespace(boxes=((4, 4, 12, 12),), label=i % 3, wnid=f"n{i % 3}", box_wnids=(f"n{i % 3}",)))
             for i in range(5)]
    res = dm.evaluate_maps(tiny, items, ["gradient", "centre", "random"], deletion_images=3, steps=4)
    assert res["gradient"]["pointing"]["n"] == 5 and res["gradient"]["deletion"]["n"] == 3
    assert res["random"]["pointing"] is None
    table = pm.summary_markdown(res)
    assert table.count("\n") == 4 and "| gradient |" in table
    md = pm.pointing_markdown({m: res[m]["pointing"] for m in ("gradient", "centre")},
                              {"all": slice(None), "first two": slice(0, 2)})
    assert "| all | 5 |" in md and "| first two | 2 |" in md
    # the pointing game in another frame, with per-method smoothing; no deletion images
    full = dm.evaluate_maps(tiny, items, ["gradient", "cam"], crops="full",
                            smooth={"gradient": 0.1}, deletion_images=0)
    for m, sm in (("gradient", 0.1), ("cam", 0.0)):
        one = dm.pointing_game(tiny, items, m, crops="full", smooth=sm)
        assert full[m]["pointing"]["points"].tolist() == one["points"].tolist()
        assert full[m]["deletion"] is None


@pytest.mark.slow
def test_randomisation_leaves_the_pretrained_model_unchanged(clf, photos):
    before = model_state(clf.net)
    x = clf.preprocess([photos["chelsea"]])
    blocks = dm.randomisation_blocks(clf.net)
    assert blocks[0][0] == "classifier" and blocks[-1][0] == "conv_stem+bn1" and len(blocks) == 10
    res = di.randomisation_test(clf, x, "gradient", blocks=blocks[:1])
    assert res["spearman_abs"][0][1] < 0.9          # a random classifier: another gradient map
    assert_same_state(before, model_state(clf.net))


def test_smooth_maps_of_a_delta_is_the_gaussian():
    m = torch.zeros(1, 41, 41)
    m[0, 20, 20] = 1.0
    assert torch.equal(dm.smooth_maps(m, 0.0), m)
    s = dm.smooth_maps(m, 2.0)[0]
    assert s.sum().item() == pytest.approx(1.0, abs=1e-5)      # nothing reaches the border
    assert divmod(int(s.argmax()), 41) == (20, 20)
    # separable Gaussian: value at (dy, dx) / value at the peak = exp(-(dy^2 + dx^2) / 2 sigma^2)
    assert (s[23, 21] / s[20, 20]).item() == pytest.approx(np.exp(-10 / 8), rel=1e-4)
    # zero padding: a peak in the corner keeps the kernel's quarter plus half its axes
    g = np.exp(-np.arange(-8, 9) ** 2 / 8)
    g /= g.sum()
    m[0] = 0
    m[0, 0, 0] = 1.0
    assert dm.smooth_maps(m, 2.0).sum().item() == pytest.approx(g[8:].sum() ** 2, rel=1e-4)


def test_pointing_in_the_full_frame_and_smoothing():
    tiny = tiny_classifier()           # input_size 16: a 32 x 48 image is fed at 16 x 24
    items = [(Image.new("RGB", (32, 48)), SimpleNamespace(boxes=((20, 36, 32, 48),), label=0))]
    m = torch.zeros(24, 16)            # (h, w) of the full frame
    m[20, 12] = 1.0                    # -> original pixels around (25, 41): in the box
    m[2, 2] = 0.9                      # a second, isolated peak far from it
    res = dm.pointing_game(tiny, items, [m.clone()], tolerance=0, crops="full")
    x, y = res["points"][0]
    assert 24 <= x <= 26 and 40 <= y <= 42 and res["hits"][0]
    # a broad bump outweighs the sharp peak once smoothed
    m = torch.zeros(24, 16)
    m[18:24, 10:16] = 0.5
    m[2, 2] = 1.0
    sharp = dm.pointing_game(tiny, items, [m], tolerance=0, crops="full")
    smooth = dm.pointing_game(tiny, items, [m], tolerance=0, crops="full", smooth=0.05)
    assert not sharp["hits"][0] and smooth["hits"][0]
    with pytest.raises(ValueError, match="crops"):
        dm.pointing_game(tiny, items, [m], crops="ten")
    with pytest.raises(ValueError, match="smooth"):
        dm.pointing_game(tiny, items, [m], smooth=-1)
    # maps computed in the full frame: one per image, the frame's shape
    got = dm.pointing_maps(tiny, [items[0][0]], [0], "gradient", "full")
    assert [tuple(g.shape) for g in got] == [(24, 16)]


def test_pointing_protocols_match_single_calls():
    tiny = tiny_classifier()
    items = _records([((0, 0, 8, 8), 0), ((8, 8, 16, 16), 1), ((4, 0, 16, 6), 2)])
    got = dm.pointing_protocols(tiny, items, "gradient", tolerance=2)
    assert list(got) == list(dm.PROTOCOLS)
    for (crops, sm), res in got.items():
        one = dm.pointing_game(tiny, items, "gradient", 2, crops=crops, smooth=sm)
        assert res["points"].tolist() == one["points"].tolist()


def test_pointing_whole_images_of_one_shape_share_passes():
    """crops="full": images of one shape go through the network together even when the dataset
    alternates shapes (the book's two folders alternate): 8 images of two shapes, batches of 4,
    make 2 passes of 4 per shape's images, not 4 of 2; the points are those of single calls."""
    tiny = tiny_classifier()           # input_size 16
    sizes = [(32, 48), (48, 32)] * 4
    rng = np.random.default_rng(0)
    items = [(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
              SimpleNamespace(boxes=((0, 0, 8, 8),), label=k % 3)) for k, (w, h) in enumerate(sizes)]
    rows = []
    handle = tiny.net.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    try:
        both = dm.pointing_protocols(tiny, items, "gradient", protocols=(("full", 0.0),),
                                     batch_size=4)[("full", 0.0)]
        game = dm.pointing_game(tiny, items, "gradient", crops="full", batch_size=4)
    finally:
        handle.remove()
    assert rows == [4, 4, 4, 4], rows       # 2 passes per call, each of one shape
    assert both["points"].tolist() == game["points"].tolist()
    for k, it in enumerate(items):
        one = dm.pointing_game(tiny, [it], "gradient", crops="full")
        assert one["points"].tolist() == [game["points"][k].tolist()]


def test_pointing_table_cells_are_paired_differences():
    res = {"centre": {"hits": np.array([1, 0, 1, 0], bool)},
           "map": {"hits": np.array([1, 1, 1, 0], bool)}}
    table = pm.pointing_table(res, {"all": slice(None), "odd": slice(1, None, 2)})
    lines = table.splitlines()
    assert lines[0] == "| protocol / method | all (n = 4) | odd (n = 2) |"
    assert lines[2] == "| centre | 50.0 ± 28.9 | 0.0 ± 0.0 |"
    assert lines[3] == "| map | 75.0 ± 25.0 (+25.0 ± 25.0) | 50.0 ± 50.0 (+50.0 ± 50.0) |"


def test_pointing_table_split_into_accuracy_and_difference():
    res = {"centre": {"hits": np.array([1, 0, 1, 0], bool)},
           "map": {"hits": np.array([1, 1, 1, 0], bool)}}
    sub = {"all": slice(None)}
    acc = pm.pointing_table(res, sub, show="accuracy").splitlines()
    assert acc[2:] == ["| centre | 50.0 ± 28.9 |", "| map | 75.0 ± 25.0 |"]
    diff = pm.pointing_table(res, sub, show="difference").splitlines()
    assert diff[2:] == ["| map | +25.0 ± 25.0 |"]
    with pytest.raises(ValueError, match="show must be"):
        pm.pointing_table(res, sub, show="wide")


# -- issue 24: no silent wrong answer ------------------------------------------------------------


class _Planted:
    """Unpickling this creates a marker file: what a planted cache file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cached_never_unpickles_a_planted_file(tmp_path):
    import pickle
    import warnings

    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3), ("center", 0.02): [1.5, float("nan"), None, True, "s"],
                "t": torch.ones(2, dtype=torch.float16), "x": (np.float64(2.5), np.int64(3))}

    value = dm.cached("quality", {"k": 1}, compute, tmp_path)
    (path,) = list(tmp_path.iterdir())
    again = dm.cached("quality", {"k": 1}, compute, tmp_path)
    assert len(calls) == 1 and list(again) == list(value)
    assert np.array_equal(again["a"], value["a"]) and again["a"].dtype == value["a"].dtype
    assert again[("center", 0.02)][0] == 1.5 and np.isnan(again[("center", 0.02)][1])
    assert again[("center", 0.02)][2:] == [None, True, "s"]
    assert torch.equal(again["t"], value["t"]) and again["t"].dtype == torch.float16
    assert again["x"] == (2.5, 3) and type(again["x"][1]) is np.int64
    # a malicious pickle planted at the cache path (and at the old .pkl name) is never run
    marker = tmp_path / "pwned"
    for p in (path, path.with_suffix(".pkl")):
        p.write_bytes(pickle.dumps(_Planted(marker)))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = dm.cached("quality", {"k": 1}, compute, tmp_path)
    assert not marker.exists()
    assert len(calls) == 2 and np.array_equal(got["a"], np.arange(3))
    assert len(w) == 1 and "recomputing" in str(w[0].message) and "\n" not in str(w[0].message)
    assert dm.cached("quality", {"k": 1}, compute, tmp_path)["x"] == (2.5, 3)   # rewritten
    assert len(calls) == 2
    # garbage is recomputed too
    path.write_bytes(b"not a cache file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        dm.cached("quality", {"k": 1}, compute, tmp_path)
    assert len(calls) == 3


def test_cached_randomisation_result_round_trip(tmp_path):
    tiny = tiny_classifier()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    res = dm.cached("rand", 1, lambda: dm.randomisation_test(tiny, x, "gradient", keep_maps=True,
                                                            metrics=("spearman",)), tmp_path)
    back = dm.cached("rand", 1, lambda: pytest.fail("recomputed"), tmp_path)
    assert isinstance(back, dm.RandomisationResult) and dict(back) == dict(res)
    assert back.blocks == res.blocks and back.method == "gradient" and back.mode == "cascading"
    assert torch.equal(back.maps, res.maps) and np.array_equal(back.targets, res.targets)
    assert np.array_equal(back.per_image["spearman"], res.per_image["spearman"])
    assert back.sem("spearman") == res.sem("spearman")


def test_pointing_game_refuses_non_finite_or_misshaped_maps_and_outside_boxes():
    tiny = tiny_classifier()
    items = _records([((0, 0, 8, 8), 0), ((8, 8, 16, 16), 1)])
    maps = torch.rand(2, 16, 16)
    maps[1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite map at index 1"):
        dm.pointing_game(tiny, items, maps)
    maps[1, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="non-finite map at index 1"):
        dm.pointing_game(tiny, items, maps)
    with pytest.raises(ValueError, match=r"shape mismatch.*index 0.*expected \(16, 16\).*got \(8, 8\)"):
        dm.pointing_game(tiny, items, torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match=r"expected \(16, 16\)"):
        dm.pointing_game(tiny, items, [torch.rand(16, 16), torch.rand(16, 12)])
    for box in ((10, 10, 30, 12), (-2, 0, 4, 4), (4, 4, 4, 8), (0, float("nan"), 4, 4)):
        bad = _records([((0, 0, 8, 8), 0), (box, 1)])
        with pytest.raises(ValueError, match=r"box .* of image 1"):
            dm.pointing_game(tiny, bad, "centre")
        with pytest.raises(ValueError, match=r"box .* of image 1"):
            dm.pointing_hits(np.array([[1, 1], [1, 1]]), [b.boxes for _, b in bad], [(16, 16)] * 2)
    # ILSVRC's inclusive xmax == width (half-open: width + 1) is inside
    ok = _records([((0, 0, 17, 17), 0)])
    assert dm.pointing_game(tiny, ok, "centre")["hits"][0]


def test_deletion_refuses_nan_maps_and_bad_options():
    tiny = tiny_classifier()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    maps = torch.rand(2, 16, 16)
    maps[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite map at index 1"):
        dm.deletion_insertion(tiny, x, maps, steps=2)
    for opts, err in (({"fill": float("nan")}, ValueError), ({"fill": "grey"}, TypeError),
                      ({"blur_size": 0}, ValueError), ({"blur_size": 4}, ValueError),
                      ({"blur_size": 2.5}, TypeError), ({"blur_size": 33}, ValueError),
                      ({"batch_size": 0}, ValueError), ({"steps": "4"}, TypeError),
                      ({"steps": 4.0}, TypeError), ({"steps": 0}, ValueError),
                      ({"blur_sigma": -1.0}, ValueError), ({"seed": -1}, ValueError)):
        with pytest.raises(err, match=next(iter(opts))):
            dm.deletion_insertion(tiny, x, "random", **{"steps": 2, **opts})


def test_deletion_leaves_a_train_mode_batchnorm_model_as_found():
    clf = tiny_classifier()
    torch.manual_seed(0)
    clf.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).train()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    state = {k: v.clone() for k, v in clf.net.state_dict().items()}
    before = model_state(clf.net)
    for maps in ("random", "gradient"):
        dm.deletion_insertion(clf, x, maps, steps=3)
        after = clf.net.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state), maps   # running stats too
        assert clf.net.training and all(m.training for m in clf.net.modules())
        assert_same_state(before, model_state(clf.net))
    dm.randomisation_test(clf, x, "gradient", metrics=("spearman",))
    assert all(torch.equal(state[k], v) for k, v in clf.net.state_dict().items())


def test_deletion_options_property():
    from hypothesis import example, given, settings, strategies as st

    tiny = tiny_classifier()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    anything = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True),
                         st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2))
    options = st.fixed_dictionaries({}, optional={
        "steps": st.one_of(st.integers(-2, 20), anything),
        "fill": st.one_of(st.floats(-3, 3), anything),
        "blur_size": st.one_of(st.integers(-1, 40), anything),
        "blur_sigma": st.one_of(st.floats(0, 10), anything),
        "batch_size": st.one_of(st.integers(-1, 64), anything),
        "seed": st.one_of(st.integers(-5, 2 ** 64), anything),
        "modes": st.one_of(st.sampled_from([("deletion",), ("insertion",), ("insertion", "deletion"),
                                            (), "deletion", ("blur",)]), anything)})

    @settings(max_examples=300, deadline=None, database=None)
    @given(opts=options)
    @example(opts={"blur_sigma": 1.3407807929942597e+154})   # overflowed the kernel once (CI)
    @example(opts={"fill": 7.221310135028185e+36})           # overflowed the network once
    @example(opts={"fill": 3.402823466385289e+38})           # beyond float32 (hypothesis seed 8)
    def check(opts):
        try:
            res = dm.deletion_insertion(tiny, x, "random", **opts)
        except (ValueError, TypeError) as e:
            assert any(k in str(e) for k in opts), (opts, e)
            return
        for mode in opts.get("modes", ("deletion", "insertion")):
            assert np.isfinite(res[f"{mode}_curve"]).all()

    check()


def test_map_similarity_from_features_equals_from_maps():
    """The features of a map, computed once (randomisation_test's originals), give the same
    similarities as the map itself; constant maps and mismatched shapes behave the same."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(28, 28)), rng.normal(size=(28, 28))
    b[:5] = 0.0                                   # ties
    fa = dm.map_features(a)
    assert dm.map_similarity(fa, b) == dm.map_similarity(a, b) == dm.map_similarity(a, dm.map_features(b))
    flat = np.zeros((28, 28))
    assert dm.map_similarity(dm.map_features(flat), a)["spearman"] == 0.0
    with pytest.raises(ValueError, match="one shape"):
        dm.map_similarity(fa, np.zeros((14, 28)))
    with pytest.raises(ValueError, match="unknown similarity"):
        dm.map_similarity(dm.map_features(a, ["spearman"]), b)


@pytest.mark.parametrize("shape,sigma,radius,border", [
    ((2, 1, 37, 50), 3.0, 12, "zeros"),     # a map, 4-sigma kernel
    ((1, 1, 7, 9), 3.0, 12, "zeros"),       # a kernel wider than the image
    ((3, 3, 24, 24), 5.0, 5, "reflect"),    # insertion's canvas: RISE's 11 taps
    ((2, 3, 30, 20), 2.0, 4, "reflect"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_blur_opencv_path_equals_torch_convolution(shape, sigma, radius, border, dtype):
    """Without autograd on CPU the blur runs through OpenCV (issue 21: 20x faster); with a
    gradient asked of the input, through torch's convolution. Both give the same planes."""
    from deepinside.core import smoothing

    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    assert smoothing._opencv_path(x, border, radius)
    fast = dm.gaussian_blur(x, sigma, radius, border)
    xg = x.clone().requires_grad_(True)
    assert not smoothing._opencv_path(xg, border, radius)
    slow = dm.gaussian_blur(xg, sigma, radius, border)
    assert fast.dtype == dtype and fast.shape == x.shape and not fast.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-6)
    slow.sum().backward()            # the torch path keeps its gradient
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_gaussian_blur_opencv_path_keeps_layout_and_input():
    x = torch.rand(2, 3, 16, 18).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    y = dm.gaussian_blur(x, 2.0, 4, "reflect")
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before)
    with torch.no_grad():   # a tensor that requires grad, under no_grad: OpenCV too
        z = dm.gaussian_blur(x.clone().requires_grad_(True), 2.0, 4, "reflect")
    torch.testing.assert_close(z, y, rtol=0, atol=0)
    with pytest.raises(ValueError, match="border"):
        dm.gaussian_blur(x, 2.0, 4, "wrap")


def test_evaluate_maps_computes_the_curves_of_one_pixel_order_once(monkeypatch):
    """Maps that order the pixels alike (CAM and Grad-CAM in chapter 6) share one computation of
    the deletion/insertion curves; a map with another order gets its own."""
    tiny = tiny_classifier()
    rng = np.random.default_rng(1)
    items = [(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)),
              SimpleNamespace(boxes=((4, 4, 12, 12),), label=i % 3)) for i in range(3)]
    base = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    fake = {"gradient": base, "deconvnet": 2 * base + 1, "guided": -base}   # same, same, reversed

    def maps(clf, images, labels, method, **kw):
        start = next(i for i, (im, _) in enumerate(items) if im is images[0])
        return fake[method][start:start + len(images)]

    calls = []
    real = dm.deletion_insertion
    monkeypatch.setattr(dm, "compute_maps", maps)
    monkeypatch.setattr(dm, "deletion_insertion", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = dm.evaluate_maps(tiny, items, ["gradient", "deconvnet", "guided"], steps=4)
    assert len(calls) == 2                                  # gradient (= deconvnet), guided
    x = tiny.preprocess([im for im, _ in items])
    for m in fake:
        one = real(tiny, x, fake[m], [r.label for _, r in items], steps=4)
        got = res[m]["deletion"]
        assert all(np.array_equal(got[k], one[k]) for k in one), m
    a, b = res["gradient"]["deletion"], res["deconvnet"]["deletion"]
    assert a is not b and a["deletion_curve"] is not b["deletion_curve"]   # copies
    assert not np.array_equal(a["deletion_curve"], res["guided"]["deletion"]["deletion_curve"])
