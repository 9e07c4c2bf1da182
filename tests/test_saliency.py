"""Tests of deepinside.saliency (Sect. 3.1, eq. 4): tiny models with answers known by hand,
properties (batching, symmetry), bad input, model state; the pretrained model only where needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from state_helpers import C, assert_same_state, conv_clf, linear_clf, model_state, rand_pil, tiny_clf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import deepinside as di
from deepinside.core.models import Classifier


def direct(clf: Classifier, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    """eq. 4 one image at a time, straight autograd, then max over channels.

    ``x[i:i + 1]`` keeps the input's memory layout: with a different layout (NCHW vs. channels
    last) the convolution kernels round differently and, through the ReLU6 kinks, the pretrained
    model's gradient moves by ~1e-2 of its maximum, which would hide what is tested here."""
    out = []
    for i, c in enumerate(target):
        xi = x[i:i + 1].clone().requires_grad_(True)
        clf.net(xi)[0, c].backward()
        out.append(xi.grad[0].abs().amax(0))
    return torch.stack(out)


# -- the linear model (eqs. 2-4) -------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5), k=st.integers(1, 6))
def test_linear_model_saliency_is_max_abs_weight(seed, n, k):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, 3, C, C, generator=g)
    clf = linear_clf(w)
    x = torch.randn(n, 3, C, C, generator=g)
    tgt = torch.randint(0, k, (n,), generator=g)
    m = di.saliency(clf, x, target=tgt)
    assert m.shape == (n, C, C)
    torch.testing.assert_close(m, w[tgt].abs().amax(1), rtol=1e-6, atol=1e-6)


def test_max_over_channels_not_sum_or_mean():
    # channel weights +1, -3, +2 everywhere: max|w| = 3, sum|w| = 6, mean|w| = 2, |sum w| = 0
    w = torch.stack([torch.full((C, C), 1.0), torch.full((C, C), -3.0), torch.full((C, C), 2.0)])[None]
    m = di.saliency(linear_clf(w), torch.zeros(2, 3, C, C), target=0)
    assert torch.equal(m, torch.full((2, C, C), 3.0))


def test_linear_model_from_pil_images_and_top1():
    w = torch.randn(3, 3, C, C, generator=torch.Generator().manual_seed(1))
    clf = linear_clf(w)
    ims = [rand_pil(13, 9, s) for s in range(3)]
    top1 = clf.scores(clf.preprocess(ims)).argmax(1)
    m = di.saliency(clf, ims)  # target None = top-1
    torch.testing.assert_close(m, w[top1].abs().amax(1))


def test_ten_crops_of_linear_model_by_hand():
    """Each crop's map is A = max_c|W| (A flipped back for a flipped crop); placed and averaged."""
    w = torch.randn(1, 3, C, C, generator=torch.Generator().manual_seed(2))
    clf = linear_clf(w)
    a = w[0].abs().amax(0).numpy()
    s = clf.resize_size
    acc, cnt = np.zeros((s, s)), np.zeros((s, s))
    for x0, y0, x1, y1 in [(0, 0, C, C), (s - C, 0, s, C), (0, s - C, C, s), (s - C, s - C, s, s), (1, 1, C + 1, C + 1)]:
        acc[y0:y1, x0:x1] += a + a[:, ::-1]
        cnt[y0:y1, x0:x1] += 2
    m = di.saliency(clf, rand_pil(17, 12), crops="ten")
    assert m.shape == (1, s, s)
    np.testing.assert_allclose(m[0].numpy(), acc / cnt, rtol=1e-6)


# -- exactness and batching ----------------------------------------------------------------------


def test_matches_direct_autograd_tiny():
    clf = conv_clf()
    x = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    tgt = [0, 3, 1, 1, 2]
    torch.testing.assert_close(di.saliency(clf, x, target=tgt), direct(clf, x, tgt), rtol=1e-5, atol=1e-7)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 7), batch=st.integers(1, 8), seed=st.integers(0, 1000))
def test_batched_equals_one_by_one(n, batch, seed):
    clf = conv_clf(bn=True)
    clf.net.train()  # batch statistics would mix images: saliency must evaluate in eval mode
    x = torch.randn(n, 3, C, C, generator=torch.Generator().manual_seed(seed))
    together = di.saliency(clf, x, batch_size=batch)
    alone = torch.cat([di.saliency(clf, x[i:i + 1]) for i in range(n)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-7)
    assert clf.net.training


@pytest.mark.parametrize("batch", [1, 7, 10, 25, 64])
def test_ten_crop_batching_does_not_change_result(batch):
    clf = conv_clf()
    ims = [rand_pil(15 + i, 11, i) for i in range(3)]
    ref = torch.cat([di.saliency(clf, im, crops="ten", batch_size=10) for im in ims])
    torch.testing.assert_close(di.saliency(clf, ims, crops="ten", batch_size=batch), ref, rtol=1e-5, atol=1e-7)


def test_ten_crop_target_is_top1_of_averaged_scores():
    clf = conv_clf(k=6)
    im = rand_pil(14, 10, 5)
    sq = im.crop((2, 0, 12, 10)).resize((10, 10), clf.interpolation)  # central square, resized
    x = clf.normalize(clf.to_tensor01([sq]))[0]
    crops = torch.stack([(x[:, y0:y1, x0:x1].flip(-1) if fl else x[:, y0:y1, x0:x1])
                         for x0, y0, x1, y1, fl in di.ten_crop_boxes(clf)])
    top = int(clf.scores(crops).mean(0).argmax())
    for bs in (4, 32):
        torch.testing.assert_close(di.saliency(clf, im, crops="ten", batch_size=bs),
                                   di.saliency(clf, im, target=top, crops="ten"))


def test_symmetric_image_gives_symmetric_ten_crop_map():
    clf = conv_clf()
    rng = np.random.default_rng(0)
    half = rng.integers(0, 256, (10, 5, 3), dtype=np.uint8)
    im = Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))  # 10 x 10: no resampling
    m = di.saliency(clf, im, crops="ten")[0]
    torch.testing.assert_close(m, m.flip(-1), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(m[:, :5], m[:, 5:])  # not trivially constant


def test_ten_crop_boxes_cover_square():
    clf = conv_clf()
    boxes = di.ten_crop_boxes(clf)
    assert len(boxes) == 10 and sum(b[4] for b in boxes) == 5
    cover = np.zeros((10, 10), int)
    for x0, y0, x1, y1, _ in boxes:
        assert (x1 - x0, y1 - y0) == (C, C) and 0 <= x0 and x1 <= 10 and 0 <= y0 and y1 <= 10
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1 and cover.max() == 10


def test_deterministic_and_detached_nonnegative():
    clf = conv_clf()
    x = torch.randn(3, 3, C, C, generator=torch.Generator().manual_seed(0))
    a, b = di.saliency(clf, x), di.saliency(clf, x)
    assert torch.equal(a, b) and not a.requires_grad and (a >= 0).all()


# -- backward rules (Sect. 4) --------------------------------------------------------------------


def test_rules_on_a_one_hidden_layer_net_by_hand():
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(3 * 4 * 4, 6), nn.Linear(6, 2)
    clf = tiny_clf(nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2), 2, size=4)
    x = torch.randn(2, 3, 4, 4)
    u, v = lin1.weight.detach(), lin2.weight.detach()[1]  # class 1
    on = (x.flatten(1) @ u.T + lin1.bias.detach()) > 0  # (2, 6) forward gate 1(X > 0)
    expect = {"gradient": (on * v) @ u, "deconvnet": (v.clamp(min=0)).expand(2, 6) @ u,
              "guided": (on * v.clamp(min=0)) @ u}
    for rule, r in expect.items():
        want = r.view(2, 3, 4, 4).abs().amax(1)
        torch.testing.assert_close(di.saliency(clf, x, target=1, rule=rule), want, rtol=1e-5, atol=1e-7)


# -- saliency_to_image ---------------------------------------------------------------------------


def test_saliency_to_image_frames():
    clf = conv_clf()
    w, h = 30, 20
    full = di.saliency_to_image(torch.full((C, C), 2.0), (w, h), clf, "center")
    x0, y0, x1, y1 = clf.center_crop_box(w, h)
    assert full.shape == (h, w) and (full[y0:y1, x0:x1] == 2).all() and full.sum() == 2 * (x1 - x0) * (y1 - y0)
    sq = di.saliency_to_image(np.ones((2, 10, 10)), rand_pil(w, h), clf, "ten")
    assert isinstance(sq, np.ndarray) and sq.shape == (2, h, w)
    assert (sq[:, :, 5:25] == 1).all() and sq[:, :, :5].sum() == 0 and sq[:, :, 25:].sum() == 0


def test_saliency_to_image_keeps_left_right_order():
    clf = conv_clf()
    m = torch.zeros(10, 10)
    m[:, :5] = 1.0  # left half salient
    full = di.saliency_to_image(m, (20, 20), clf, "ten")
    assert full[:, :9].min() == 1 and full[:, 11:].max() == 0


# -- bad input -----------------------------------------------------------------------------------


def test_bad_targets_raise_clear_errors():
    clf = conv_clf(k=4)
    x = torch.zeros(3, 3, C, C)
    with pytest.raises(ValueError, match="3 images"):
        di.saliency(clf, x, target=[0, 1])
    with pytest.raises(ValueError, match="out of range"):
        di.saliency(clf, x, target=4)
    with pytest.raises(ValueError, match="out of range"):
        di.saliency(clf, x, target=[0, 1, -1])
    with pytest.raises(ValueError, match="unknown class"):
        di.saliency(clf, x, target="no such class")
    with pytest.raises(ValueError, match="1-D"):
        di.saliency(clf, x, target=torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="2 images"):
        di.saliency(clf, [rand_pil(12, 12), rand_pil(12, 12)], target=[0, 1, 2], crops="ten")


def test_bad_inputs_raise_clear_errors():
    clf = conv_clf()
    x = torch.zeros(2, 3, C, C)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        di.saliency(clf, x)
    x[1, 0, 2, 2] = float("-inf")
    with pytest.raises(ValueError, match="infinite"):
        di.saliency(clf, x)
    huge = torch.full((1, 3, C, C), 3e38)  # finite, although its sum overflows: accepted
    assert di.saliency(clf, huge).shape == (1, C, C)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        di.saliency(clf, torch.zeros(3, C, C))
    with pytest.raises(ValueError, match="crops"):
        di.saliency(clf, torch.zeros(1, 3, C, C), crops="ten")
    with pytest.raises(ValueError, match="crops must be"):
        di.saliency(clf, torch.zeros(1, 3, C, C), crops="five")
    with pytest.raises(ValueError, match="rule must be"):
        di.saliency(clf, torch.zeros(1, 3, C, C), rule="lrp")
    with pytest.raises(ValueError, match="empty"):
        di.saliency(clf, [])
    with pytest.raises(TypeError, match="PIL"):
        di.saliency(clf, ["cat.jpg"])
    with pytest.raises(ValueError, match="batch_size"):
        di.saliency(clf, x[:1], batch_size=0)
    with pytest.raises(ValueError, match="image_size"):
        di.saliency_to_image(torch.zeros(C, C), "big", clf)


# -- model state ---------------------------------------------------------------------------------


def test_model_state_and_input_unchanged_also_on_error():
    clf = conv_clf(bn=True)
    clf.net.train()
    for p in clf.net.parameters():
        p.requires_grad_(True)
    before = model_state(clf.net)
    x = torch.randn(2, 3, C, C)
    x0 = x.clone()
    di.saliency(clf, x)
    di.saliency(clf, [rand_pil(12, 12)], crops="ten")
    assert_same_state(before, model_state(clf.net))
    assert torch.equal(x, x0) and not x.requires_grad and x.grad is None
    bad = tiny_clf(nn.Sequential(*clf.net, nn.Unflatten(1, (2, 2))), 4)  # wrong output shape
    with pytest.raises(ValueError, match="scores of shape"):
        di.saliency(bad, x)
    assert_same_state(before, model_state(clf.net))


# -- the pretrained model (kept short) -----------------------------------------------------------


@pytest.mark.slow
def test_pretrained_matches_direct_autograd_and_state(clf, photos):
    ims = [photos["chelsea"], photos["coffee"]]
    before = model_state(clf.net)
    m = di.saliency(clf, ims, target=None)
    assert_same_state(before, model_state(clf.net))
    x = clf.preprocess(ims)
    top1 = clf.scores(x).argmax(1).tolist()
    ref = direct(clf, x, top1)
    assert m.shape == (2, 224, 224) and m.device == clf.device
    assert float((m - ref).abs().max() / ref.abs().max()) < 1e-4
    # the same map with respect to [0, 1] pixels is the constant multiple 1/std = 255/128
    x01 = clf.denormalize(x[:1]).requires_grad_(True)
    clf.net(clf.normalize(x01))[0, top1[0]].backward()
    torch.testing.assert_close(x01.grad[0].abs().amax(0), m[0] * 255 / 128, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_pretrained_symmetric_image_ten_crop(clf, photos):
    arr = np.asarray(photos["chelsea"].crop((100, 0, 400, 300)).resize((256, 256)))
    half = arr[:, :128]
    im = Image.fromarray(np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1)))
    m = di.saliency(clf, im, crops="ten", batch_size=10)[0]
    assert m.shape == (256, 256)
    assert float((m - m.flip(-1)).abs().max() / m.max()) < 1e-4


# -- return_target, box shares, figure ---------------------------------------------------------


def test_return_target_gives_the_classes_used():
    clf = conv_clf(k=5)
    x = torch.randn(4, 3, C, C, generator=torch.Generator().manual_seed(4))
    m, cls = di.saliency(clf, x, return_target=True)
    assert torch.equal(cls, clf.scores(x).argmax(1)) and torch.equal(m, di.saliency(clf, x, target=cls))
    ims = [rand_pil(12, 16, s) for s in range(3)]
    m10, c10 = di.saliency(clf, ims, crops="ten", return_target=True, batch_size=20)
    assert c10.shape == (3,) and torch.equal(m10, di.saliency(clf, ims, target=c10, crops="ten"))
    # the same classes as a list of 0-d tensors, numpy ints, names
    same = [c10[0], np.int64(c10[1]), f"class{int(c10[2])}"]
    assert torch.equal(m10, di.saliency(clf, ims, target=same, crops="ten"))


def test_box_share_by_hand():
    from deepinside.methods.saliency_maps import box_share

    m = np.zeros((4, 6))
    m[1, 1], m[3, 5] = 3.0, 1.0
    assert box_share(m, [(0, 0, 2, 2)]) == 0.75
    assert box_share(m, [(0, 0, 2, 2), (5, 3, 6, 4)]) == 1.0  # union of boxes
    assert box_share(m, [(0, 0, 2, 2), (0, 0, 2, 2)]) == 0.75  # overlap counted once
    with pytest.raises(ValueError, match="non-negative"):
        box_share(-m, [(0, 0, 1, 1)])


def test_saliency_box_share_uniform_baseline_and_lengths():
    clf = conv_clf()
    ims = [rand_pil(20, 10, 0), rand_pil(10, 10, 1)]
    boxes = [[(5, 0, 15, 10)], [(0, 0, 10, 10)]]
    r = di.saliency_box_share(clf, ims, boxes, crops="ten")
    np.testing.assert_allclose(r["uniform"], [1.0, 1.0])  # the boxes are the square frames
    np.testing.assert_allclose(r["share"], [1.0, 1.0], rtol=1e-6)
    assert (r["outside_center"] > 0).all() and (r["outside_center"] < 1).all()
    c = di.saliency_box_share(clf, ims, [[(0, 0, 1, 1)], [(1, 1, 2, 2)]], crops="center")
    np.testing.assert_allclose(c["outside_center"], 0.0, atol=1e-6)
    np.testing.assert_array_equal(c["share"], c["share_center"])
    np.testing.assert_allclose(c["uniform"], [0.0, 1 / 64])  # crops at (6, 1) and (1, 1): 0 or 1 of 64 pixels
    with pytest.raises(ValueError, match="one list of boxes per image"):
        di.saliency_box_share(clf, ims, boxes[:1])


def test_saliency_figure_layout():
    import matplotlib

    matplotlib.use("Agg")
    from deepinside.figures.plotting import saliency_figure

    ims = [np.zeros((C, C, 3))] * 5
    fig = saliency_figure(ims, [torch.rand(5, C, C), torch.rand(5, C, C)], titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 2 * 3 * 3  # 2 blocks of (image + 2 map rows) x 3 columns
    with pytest.raises(ValueError, match="5 images"):
        saliency_figure(ims, torch.rand(4, C, C))


def test_saliency_explorer_reacts_to_every_control():
    import datetime
    import io

    import matplotlib

    matplotlib.use("Agg")
    from deepinside.figures.widgets import saliency_explorer

    clf = conv_clf()
    ui = saliency_explorer(clf, {"a": rand_pil(12, 12), "b": rand_pil(14, 10, 1)}, initial=False)
    (pick, upload), (cls, which) = ui.children[0].children, ui.children[1].children
    pick.value, cls.value, which.value = "b", "class2", "ten"
    cls.value = "cla"  # incomplete name: ignored until complete
    cls.value = ""     # top-1
    buf = io.BytesIO()
    rand_pil(20, 16, 3).save(buf, format="PNG")
    when = datetime.datetime(2020, 1, 1)
    upload.value = ({"name": "x.png", "type": "image/png", "size": buf.tell(), "content": memoryview(buf.getvalue()),
                     "last_modified": when},)
    assert pick.value == "(uploaded file)"
    upload.value = ({"name": "bad.png", "type": "image/png", "size": 3, "content": memoryview(b"abc"),
                     "last_modified": when},)  # not an image: a message, no exception


def test_di_saliency_stays_the_function_whatever_is_imported_first():
    import subprocess
    import sys

    code = ("import deepinside as di\nfrom deepinside.methods.saliency_maps import box_share\ndi.ten_crop_boxes\n"
            "import deepinside.measures.localisation\nassert callable(di.saliency), type(di.saliency)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_saliency_cost_keys_and_threads_restored():
    clf = conv_clf()
    before = torch.get_num_threads()
    cost = di.saliency_cost(clf, [rand_pil(12, 12, s) for s in range(3)], repeats=1, threads=1)
    assert set(cost) == {"forward", "map", "map_pil", "map_ten"} and all(v > 0 for v in cost.values())
    assert torch.get_num_threads() == before


def test_float64_input_is_cast_to_the_network_dtype():
    # regression: saliency(clf, x.double()) failed deep inside the network (dtype mismatch)
    clf = conv_clf()
    x = clf.preprocess([rand_pil(12, 10, s) for s in range(2)])
    want = di.saliency(clf, x, target=[1, 2])
    got = di.saliency(clf, x.double(), target=[1, 2])
    assert got.dtype == torch.float32 and torch.equal(got, want)
    with pytest.raises(TypeError, match="floating-point tensor"):
        di.saliency(clf, (x * 10).long(), target=[1, 2])


def test_explicit_gradient_rule_wins_inside_another_rules_block():
    """Issue 24: inside ``backward_rule(net, "guided")``, ``saliency(rule="gradient")`` returned
    the guided map. The explicit rule wins; the outer block applies again after it."""
    clf = conv_clf(seed=0)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    plain = di.saliency(clf, x, target=[0, 1, 2])
    guided = di.saliency(clf, x, target=[0, 1, 2], rule="guided")
    assert not torch.equal(plain, guided)  # the test can fail: the two rules differ here
    with di.backward_rule(clf.net, "guided"):
        inner = di.saliency(clf, x, target=[0, 1, 2], rule="gradient")
        after = di.saliency(clf, x, target=[0, 1, 2])
    assert torch.equal(inner, plain) and torch.equal(after, guided)


def test_input_too_small_is_said():
    """Issue 24: a 1x1 tensor gave an all-zero map without a word (Lite0 at 8 px and less) and
    an IndexError from Grad-CAM; now a RuntimeWarning naming the image, and a ValueError."""
    import warnings

    torch.manual_seed(0)
    dead_net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        dead_net[0].bias.fill_(-1e3)                       # every rectifier closed: S(x) constant
    with pytest.warns(RuntimeWarning, match="map of image 0 of 8x8 pixels is exactly zero"):
        di.saliency(tiny_clf(dead_net, 2, 8), torch.randn(2, 3, 8, 8))
    live = conv_clf()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        di.saliency(live, torch.randn(2, 3, 16, 16))       # a live network: no warning
    gap = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(2, 2)).eval()       # runs on 1x1 inputs
    with pytest.raises(ValueError, match="too small for Grad-CAM"):
        di.compute_maps(tiny_clf(gap, 2, 8), torch.randn(1, 3, 1, 1), method="gradcam")


def test_saliency_cost_batch_size_splits_the_passes_and_is_checked():
    clf = conv_clf()
    ims = [rand_pil(12, 12, s) for s in range(4)]
    cost = di.saliency_cost(clf, ims, repeats=1, threads=None, batch_size=2)
    assert set(cost) == {"forward", "map", "map_pil", "map_ten"} and all(v > 0 for v in cost.values())
    with pytest.raises(ValueError, match="batch_size"):
        di.saliency_cost(clf, ims, repeats=1, batch_size=0)


def test_saliency_cost_times_ten_crops_as_ten_passes_whatever_the_batch():
    """The 10-crop timing gets its class once beforehand: with batches below 10 and no target,
    each timed call made an extra forward pass of the ten crops (chapter 2 printed 12-13x
    instead of about 10x). Rows the network sees, N images, ``repeats`` = 2 (plus the warm-up):
    per run N (forward) + N (map) + N (map from PIL) + 10 (ten crops); once 20 for the class."""
    clf = conv_clf()
    ims = [rand_pil(12, 12, s) for s in range(4)]
    rows = []
    handle = clf.net.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    try:
        di.saliency_cost(clf, ims, repeats=2, threads=None, batch_size=2)
    finally:
        handle.remove()
    assert sum(rows) == 3 * (3 * len(ims) + 10) + 20
