"""Occlusion sensitivity (Zeiler & Fergus Fig. 7) on tiny models whose answers are known by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import deepinside as di
from deepinside.methods.occlusion import (box_to_input, inside_box_share, occlusion, occlusion_grid, resolve_layer,
                                  window_boxes)
from state_helpers import assert_same_state, model_state

pytestmark = pytest.mark.usefixtures("one_thread")


class Linear2(nn.Module):
    """Scores ``S_0 = sum(W * x)``, ``S_1 = 0.5 - S_0 / 2`` through a 1x1 conv 'layer' with two maps:
    map 0 = x (all channels summed), map 1 = 2 x."""

    def __init__(self, c: int = 2, h: int = 7, w: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.feat = nn.Conv2d(c, 2, 1, bias=False)
        with torch.no_grad():
            self.feat.weight[:] = torch.tensor([1.0, 2.0])[:, None, None, None].expand(2, c, 1, 1)
        self.W = nn.Parameter(torch.randn(c, h, w, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.feat(x)                                   # the layer whose activity is followed
        s0 = (x * self.W).sum((1, 2, 3))
        return torch.stack([s0, 0.5 - s0 / 2], 1)


def brute(net: Linear2, x: torch.Tensor, window, stride, fill: float, target: int):
    """Each position's occluded image built and scored one at a time (no batching)."""
    wh, ww = window
    sh, sw = stride
    h, w = x.shape[-2:]
    py, px = math.ceil((h - wh) / sh) + 1, math.ceil((w - ww) / sw) + 1
    score, prob, top, act = (torch.zeros(py, px) for _ in range(4))
    for i in range(py):
        for j in range(px):
            xo = x.clone()
            xo[:, :, i * sh:i * sh + wh, j * sw:j * sw + ww] = fill
            s = net(xo)[0]
            score[i, j], prob[i, j], top[i, j] = s[target], s.softmax(0)[target], s.argmax()
            act[i, j] = xo.sum()                        # map 0 = channel sum, summed over space
    return score, prob, top, act


def test_grid_and_boxes_follow_captum():
    assert occlusion_grid((7, 8), 3, 2) == (3, 4)      # ceil(4/2)+1, ceil(5/2)+1
    assert occlusion_grid((224, 224), 48, 16) == (12, 12)
    b = window_boxes((7, 8), 3, 2)
    assert b.shape == (3, 4, 4)
    assert b[0, 0].tolist() == [0, 0, 3, 3]
    assert b[-1, -1].tolist() == [6, 4, 8, 7]          # last window clipped at the border


@pytest.mark.parametrize("window,stride", [((3, 3), (2, 2)), ((2, 4), (1, 3)), ((7, 8), (1, 1))])
def test_maps_equal_brute_force(window, stride):
    torch.manual_seed(0)
    net = Linear2().eval()
    x = torch.randn(3, 2, 7, 8)
    res = occlusion(net, x, target=0, window=window, stride=stride, fill=0.25, layer="feat", unit=0,
                    batch_size=5, show_progress=False)
    for n in range(3):
        s, p, t, a = brute(net, x[n:n + 1], window, stride, 0.25, 0)
        assert torch.allclose(res.score[n], s, atol=1e-5)
        assert torch.allclose(res.prob[n], p, atol=1e-6)
        assert torch.equal(res.top_class[n], t.long())
        assert torch.allclose(res.activity[n], a, atol=1e-4)
    assert torch.allclose(res.base_score, (x * net.W).sum((1, 2, 3)), atol=1e-5)


def test_score_drop_is_the_window_sum_by_hand():
    # S_0 is linear: occluding window B with fill f lowers it by sum_B W (x - f), exactly
    net = Linear2(c=1, h=4, w=4).eval()
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    with torch.no_grad():
        net.W[:] = 1.0
    res = occlusion(net, x, target=0, window=2, stride=2, fill=0.0, show_progress=False)
    expect = torch.tensor([[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]], dtype=torch.float)
    assert torch.equal(res.base_score - res.score[0], expect)
    # Captum's convention: each pixel gets the mean drop of the windows covering it (here one)
    attr = res.attribution()
    assert attr.shape == (1, 1, 4, 4)
    assert attr[0, 0, 0, 0] == 10 and attr[0, 0, 3, 3] == 50


def test_top_class_flips_where_the_evidence_is_covered():
    net = Linear2(c=1, h=4, w=4).eval()
    with torch.no_grad():
        net.W[:] = 0.0
        net.W[0, 0, 0] = 10.0                         # all evidence for class 0 sits in pixel (0, 0)
    x = torch.ones(1, 1, 4, 4)
    res = occlusion(net, x, window=2, stride=2, fill=0.0, show_progress=False)
    assert res.target.tolist() == [0]                  # top-1 of the unoccluded image
    assert res.top_class[0].tolist() == [[1, 0], [0, 0]]


def test_default_unit_is_the_strongest_map_and_activity_drops():
    net = Linear2().eval()
    x = torch.rand(2, 2, 7, 8) + 0.1                   # positive: map 1 (= 2 x) is the strongest
    res = occlusion(net, x, window=3, stride=2, fill=0.0, layer="feat", show_progress=False)
    assert res.unit.tolist() == [1, 1]
    assert torch.allclose(res.base_activity, 2 * x.sum((1, 2, 3)), rtol=1e-5)
    assert (res.activity < res.base_activity[:, None, None]).all()


def test_attribution_equals_captum():
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 5)).eval()
    x = torch.randn(2, 3, 11, 9)
    res = occlusion(net, x, target=[3, 1], window=(4, 3), stride=(3, 2), fill=0.5, show_progress=False)
    ref = captum.Occlusion(net).attribute(x, sliding_window_shapes=(3, 4, 3), strides=(3, 3, 2),
                                          baselines=0.5, target=[3, 1], perturbations_per_eval=4)
    assert res.attribution().shape == ref.shape
    assert torch.allclose(res.attribution(), ref, rtol=1e-4, atol=1e-6)


def test_batching_does_not_change_the_answer():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(6))
    net(torch.zeros(1, 3, 9, 9))
    net.eval()
    x = torch.randn(3, 3, 9, 9)
    a = occlusion(net, x, window=3, stride=2, batch_size=1, show_progress=False)
    b = occlusion(net, x, window=3, stride=2, batch_size=50, show_progress=False)
    assert torch.allclose(a.score, b.score, atol=1e-5) and torch.equal(a.top_class, b.top_class)


def test_model_state_unchanged_also_after_an_error():
    net = Linear2()
    net.train()
    net.W.requires_grad_(True)
    before = model_state(net)
    occlusion(net, torch.randn(1, 2, 7, 8), window=3, stride=2, layer="feat", show_progress=False)
    assert_same_state(before, model_state(net))
    with pytest.raises(ValueError, match="out of range"):
        occlusion(net, torch.randn(1, 2, 7, 8), window=3, stride=2, layer="feat", unit=5, show_progress=False)
    assert_same_state(before, model_state(net))


def test_clear_errors():
    net = Linear2().eval()
    x = torch.randn(1, 2, 7, 8)
    with pytest.raises(ValueError, match="unknown layer 'feet'.*feat"):
        occlusion(net, x, layer="feet")
    with pytest.raises(ValueError, match="larger than the 7x8 image"):
        occlusion(net, x, window=9)
    with pytest.raises(ValueError, match="larger than the window"):
        occlusion(net, x, window=2, stride=3)
    with pytest.raises(ValueError, match="NaN"):
        occlusion(net, torch.full((1, 2, 7, 8), float("nan")), window=2)
    with pytest.raises(ValueError, match="out of range"):
        occlusion(net, x, window=2, stride=1, target=7)
    with pytest.raises(ValueError, match="2 classes for 1 images"):
        occlusion(net, x, window=2, stride=1, target=[0, 1])
    with pytest.raises(TypeError):
        occlusion(net, "not an image")
    with pytest.raises(ValueError, match="module name"):
        resolve_layer(net, "")


def test_box_helpers():
    boxes = window_boxes((4, 4), 2, 2)
    share = inside_box_share(boxes, [(0, 0, 2, 4)])           # left half of the image
    assert share.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    share = inside_box_share(boxes, [(1, 1, 3, 3)])
    assert torch.allclose(share, torch.full((2, 2), 0.25))


@pytest.mark.slow
def test_pretrained_matches_captum_and_boxes_map(clf, photos):
    captum = pytest.importorskip("captum.attr")
    x = clf.preprocess([photos["chelsea"]])
    res = occlusion(clf, x, window=112, stride=56, layer="bn2", show_progress=False)
    assert res.grid == (3, 3) and res.unit is not None
    ref = captum.Occlusion(clf.net).attribute(x, sliding_window_shapes=(3, 112, 112), strides=(3, 56, 56),
                                              baselines=0.0, target=res.target.tolist(),
                                              perturbations_per_eval=16)
    assert float((res.attribution() - ref).abs().max() / ref.abs().max()) < 1e-4
    # the same image as PIL and as a tensor; fill "grey" is input 0 for the (x - 127) / 128 model
    res2 = occlusion(clf, photos["chelsea"], window=112, stride=56, fill="grey", show_progress=False)
    assert torch.allclose(res2.score, res.score, atol=1e-3)
    w, h = photos["chelsea"].size
    assert box_to_input(clf, clf.center_crop_box(w, h), (w, h)) == pytest.approx((0, 0, 224, 224))


def test_local_fast_path_equals_the_full_network():
    # a chain of stages with strides: early layers computed on crops around the occluder,
    # pasted into the unoccluded activation; must equal running the whole network
    from deepinside.methods.occlusion import _VERIFIED

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU6(), nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(),
                        nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, 8, 3, 1, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(2, 3, 64, 64)
    kw = dict(window=8, stride=4, layer="6", batch_size=9, show_progress=False)
    fast = occlusion(net, x, **kw)
    assert any(_VERIFIED.get(net, {}).values()), "the local path was not used"
    full = occlusion(net, x, local=False, **kw)
    assert torch.allclose(fast.score, full.score, atol=1e-5)
    assert torch.allclose(fast.activity, full.activity, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.top_class, full.top_class)


def test_object_vs_background_and_own_field_by_hand():
    from deepinside.methods.occlusion import object_vs_background, own_field_effect

    net = Linear2(c=1, h=8, w=8).eval()
    with torch.no_grad():
        net.W[:] = 0.0
        net.W[0, :4, :4] = 1.0                         # the "object" is the top-left 4x4 box
    x = torch.rand(1, 1, 8, 8) + 0.5
    res = occlusion(net, x, target=0, window=4, stride=4, fill=0.0, layer="feat", unit=0,
                    show_progress=False)
    d = object_vs_background(res, [[(0, 0, 4, 4)]], of="score")
    assert d.tolist() == pytest.approx([float(x[0, 0, :4, :4].sum())])   # object drop - 0
    # map 0 of 'feat' is x itself: the relative activity drop IS the share of x under the square
    r = own_field_effect(res, x[:, 0])
    assert r.tolist() == pytest.approx([1.0])


# -- issue 24: a followed layer that is a container, the check's cache, clear errors, model state --


def nested_chain(seed: int = 4) -> nn.Sequential:
    """A chain of stages whose middle stages sit in nested ``nn.Sequential`` containers, as
    EfficientNet's ``blocks.6``: the local path runs those child by child."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU6(),
                         nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU()),
                                       nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU())),
                         nn.Sequential(nn.Conv2d(6, 8, 3, 1, 1), nn.ReLU()),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def brute_layer(net: nn.Module, x: torch.Tensor, layer: str, window: int, stride: int, target: int):
    """Score and total activation of every map of ``layer`` (a hook on the module itself), one
    occluded copy (fill 0) at a time."""
    module = dict(net.named_modules())[layer]
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o.sum((2, 3))[0]))
    h, w = x.shape[-2:]
    py, px = math.ceil((h - window) / stride) + 1, math.ceil((w - window) / stride) + 1
    score, act = torch.zeros(py, px), []
    try:
        with torch.no_grad():
            for i in range(py):
                for j in range(px):
                    xo = x.clone()
                    xo[:, :, i * stride:i * stride + window, j * stride:j * stride + window] = 0.0
                    score[i, j] = net(xo)[0, target]
                    act.append(seen.pop())
    finally:
        handle.remove()
    act = torch.stack(act).reshape(py, px, -1)                # (Py, Px, C_layer)
    return score, act


@pytest.mark.parametrize("order", [("", "2.1", "2.1"), ("2.1", "", "2.1"), ("2.1", "2.1", "3")])
def test_container_layer_in_any_order_equals_direct(order, monkeypatch):
    # issue 24: layer="blocks.6" (an nn.Sequential container) crashed with an IndexError on a
    # first call (its hook never ran on the local path), and with "index [32, 1] ... self
    # [1, 320]" after a call without layer on the same geometry (the check was cached by geometry
    # only, so the activity was never checked, and a stale capture was read)
    from deepinside.methods import occlusion as occ_mod
    from deepinside.methods.occlusion import _VERIFIED

    monkeypatch.setattr(occ_mod, "LOCAL_MIN_COPIES", 1)   # 64 copies: the local path all the same
    net = nested_chain()
    x = torch.randn(1, 3, 64, 64)
    kw = dict(target=2, window=8, stride=8, batch_size=7, show_progress=False)
    for layer in order:
        res = occlusion(net, x, layer=layer or None, **kw)
        s, a = brute_layer(net, x, layer or "3", 8, 8, 2)
        assert torch.allclose(res.score[0], s, atol=1e-5)
        if layer:
            assert torch.allclose(res.activity[0], a[..., int(res.unit[0])], rtol=1e-5, atol=1e-5)
            with torch.no_grad():
                seen = []
                hd = dict(net.named_modules())[layer].register_forward_hook(
                    lambda m, i, o: seen.append(o.sum((2, 3))[0]))
                net(x)
                hd.remove()
            assert int(res.unit[0]) == int(seen[0].argmax())      # the strongest map, unoccluded
            assert torch.allclose(res.base_activity[0], seen[0].max(), rtol=1e-6)
        else:
            assert res.activity is None
    assert any(_VERIFIED.get(net, {}).values()), "the local path was not used"


def test_container_layer_local_equals_full():
    net = nested_chain(5)
    x = torch.randn(2, 3, 64, 64)
    kw = dict(window=8, stride=4, layer="2", batch_size=9, show_progress=False)
    fast, full = occlusion(net, x, **kw), occlusion(net, x, local=False, **kw)
    assert torch.allclose(fast.score, full.score, atol=1e-5)
    assert torch.allclose(fast.activity, full.activity, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.unit, full.unit) and torch.equal(fast.top_class, full.top_class)


@pytest.mark.parametrize("kw,err,match", [
    (dict(window="3"), TypeError, "window"), (dict(window=3.0), TypeError, "window"),
    (dict(window=None), TypeError, "window"), (dict(window=(3, 3, 3)), ValueError, "window"),
    (dict(window=0), ValueError, "window"), (dict(window=2, stride="1"), TypeError, "stride"),
    (dict(window=2, stride=1.5), TypeError, "stride"), (dict(window=2, stride=-1), ValueError, "stride"),
    (dict(window=2, stride=1, batch_size=0), ValueError, "batch_size"),
    (dict(window=2, stride=1, batch_size=2.5), TypeError, "batch_size"),
    (dict(window=2, stride=1, batch_size="8"), TypeError, "batch_size"),
])
def test_clear_option_errors(kw, err, match):
    net = Linear2().eval()
    with pytest.raises(err, match=match):
        occlusion(net, torch.randn(1, 2, 7, 8), show_progress=False, **kw)


def test_input_dtype_channels_and_nan():
    net = Linear2().eval()
    x = torch.randn(2, 2, 7, 8)
    ref = occlusion(net, x, window=3, stride=2, layer="feat", show_progress=False)
    for dtype, tol in ((torch.float64, 1e-5), (torch.float16, 2e-2)):
        res = occlusion(net, x.to(dtype), window=3, stride=2, layer="feat", show_progress=False)
        assert res.score.dtype == torch.float32
        assert torch.allclose(res.score, ref.score, atol=tol * (1 + float(ref.score.abs().max())))
    for c in (1, 4):
        with pytest.raises(ValueError, match=f"expects 2 channels.*got {c} channels"):
            occlusion(net, torch.randn(1, c, 7, 8), window=3, stride=2, show_progress=False)
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[0, 1, 3, 3] = bad
        with pytest.raises(ValueError, match="NaN"):
            occlusion(net, xb, window=3, stride=2, show_progress=False)
    with pytest.raises(ValueError, match="overflow"):
        occlusion(net, torch.full((1, 2, 7, 8), 1e300, dtype=torch.float64), window=3, stride=2,
                  show_progress=False)


@pytest.mark.parametrize("layer", [None, "1", "3"])
def test_train_mode_model_left_bitwise_unchanged(layer):
    # BatchNorm in train mode would update its running stats on every occluded batch
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, 2, 1),
                        nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 3, 32, 32) * 2 + 1)       # running stats away from their init
    net[1].eval()                                        # a mixed-mode model stays mixed
    net[8].weight.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    before_sd = {k: v.clone() for k, v in net.state_dict().items()}
    before = model_state(net)
    res = occlusion(net, x, window=8, stride=4, layer=layer, show_progress=False)
    after_sd = net.state_dict()
    assert before_sd.keys() == after_sd.keys()
    assert all(torch.equal(before_sd[k], after_sd[k]) for k in before_sd), "state_dict changed"
    assert_same_state(before, model_state(net))
    assert net.training and not net[1].training and net[4].training
    # and the scores are the eval-mode network's (running stats), not the batch statistics'
    ev = net.eval()
    with torch.no_grad():
        base = ev(x).gather(1, res.target[:, None])[:, 0]
    net.train()
    net[1].eval()
    assert torch.allclose(res.base_score, base, atol=1e-5)


_option_value = st.one_of(st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                          st.text(max_size=3), st.none(),
                          st.tuples(st.integers(-2, 9), st.integers(-2, 9)),
                          st.lists(st.integers(1, 4), max_size=3), st.tuples(st.floats(1, 4), st.integers(1, 4)))


@settings(max_examples=30, deadline=None)
@given(option=st.sampled_from(["window", "stride", "batch_size"]), value=_option_value)
def test_options_work_or_name_themselves(option, value):
    net = Linear2().eval()
    x = torch.randn(1, 2, 7, 8, generator=torch.Generator().manual_seed(0))
    kw = {"window": 3, "stride": 2, "batch_size": 8, option: value}
    try:
        res = occlusion(net, x, layer="feat", show_progress=False, **kw)
    except (ValueError, TypeError) as e:
        assert option in str(e), f"{type(e).__name__} for {option}={value!r} does not name it: {e}"
    else:
        assert res.score.shape[1:] == occlusion_grid((7, 8), kw["window"], kw["stride"])
        assert torch.isfinite(res.score).all()


@pytest.mark.parametrize("size", [(125, 142), (128, 134), (131, 128)])
def test_local_path_on_sizes_not_a_multiple_of_the_stride(size, monkeypatch):
    # issue 21: the local path was refused unless both sides were multiples of the split's stride
    # (most whole ILSVRC images at shorter side 224, e.g. 224 x 299, ran the full network)
    from deepinside.methods import occlusion as occ_mod
    from deepinside.methods.occlusion import _VERIFIED

    monkeypatch.setattr(occ_mod, "LOCAL_MIN_COPIES", 1)
    net = nested_chain(seed=5)
    x = torch.randn(2, 3, *size)
    kw = dict(target=1, window=12, stride=12, batch_size=5, show_progress=False)
    fast = occlusion(net, x, **kw)
    assert [v for k, v in _VERIFIED.get(net, {}).items() if k[0] == (3, *size)] == [True]
    full = occlusion(net, x, local=False, **kw)
    assert torch.allclose(fast.score, full.score, atol=1e-5)
    assert torch.equal(fast.top_class, full.top_class)
    s, _ = brute_layer(net, x[1:], "3", 12, 12, 1)
    assert torch.allclose(fast.score[1], s, atol=1e-5)


def test_few_copies_take_the_plain_path(monkeypatch):
    from deepinside.methods import occlusion as occ_mod
    from deepinside.methods.occlusion import LOCAL_MIN_COPIES, _VERIFIED

    net = nested_chain(seed=6)
    x = torch.randn(1, 3, 64, 64)
    kw = dict(window=8, stride=8, show_progress=False)        # 8 x 8 = 64 copies
    assert 64 < LOCAL_MIN_COPIES
    few = occlusion(net, x, **kw)
    assert not _VERIFIED.get(net)                             # no plan made, nothing checked
    monkeypatch.setattr(occ_mod, "LOCAL_MIN_COPIES", 64)
    local = occlusion(net, x, **kw)
    assert any(_VERIFIED[net].values())
    assert torch.allclose(few.score, local.score, atol=1e-5)


def test_a_geometry_met_again_takes_the_local_path_traced_once(monkeypatch):
    """One image per call (chapter 3's whole images): the first call runs plain, the second
    traces the geometry and checks it, later calls reuse it; all equal the plain path."""
    from deepinside.methods import occlusion as occ_mod

    traced = []
    real = occ_mod._geometry
    monkeypatch.setattr(occ_mod, "_geometry", lambda *a: traced.append(1) or real(*a))
    net = nested_chain(seed=7)
    kw = dict(target=2, window=8, stride=8, show_progress=False)     # 64 copies < 128
    xs = [torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    out = [occlusion(net, x, **kw) for x in xs]
    assert len(traced) == 1                                   # at the second call, once
    key = next(iter(occ_mod._VERIFIED[net]))
    assert occ_mod._VERIFIED[net][key] is True and occ_mod._SEEN[net][key] == 4
    for x, r in zip(xs, out):
        plain = occlusion(net, x, local=False, **kw)
        torch.testing.assert_close(r.score, plain.score, rtol=0, atol=1e-5)
        assert torch.equal(r.top_class, plain.top_class)
    other = occlusion(net, torch.randn(1, 3, 64, 72), **kw)    # another size: its own count
    assert len(traced) == 1 and other.score.shape == (1, 8, 9)


def test_a_replaced_module_makes_the_geometry_traced_again(monkeypatch):
    from deepinside.methods import occlusion as occ_mod

    traced = []
    real = occ_mod._geometry
    monkeypatch.setattr(occ_mod, "_geometry", lambda *a: traced.append(1) or real(*a))
    net = nested_chain(seed=8)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    kw = dict(target=0, window=8, stride=8, show_progress=False)
    for _ in range(3):
        occlusion(net, x, **kw)
    assert len(traced) == 1
    name, child = next(iter(net.named_children()))
    setattr(net, name, copy.deepcopy(child))                 # same weights, a new module
    occlusion(net, x, **kw)                                  # a new geometry: met once ...
    assert len(traced) == 1
    again = occlusion(net, x, **kw)                          # ... then traced for the new tree
    assert len(traced) == 2 and sum(v is True for v in occ_mod._VERIFIED[net].values()) == 2
    torch.testing.assert_close(again.score, occlusion(net, x, local=False, **kw).score,
                               rtol=0, atol=1e-5)
