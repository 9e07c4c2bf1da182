"""The registry of saliency methods (deepinside.maps): answers known by hand on tiny networks."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import deepinside as di
from deepinside.methods import maps as dm
from state_helpers import assert_same_state, gap_clf, model_state


def tiny_classifier(gap: bool = True, classes: int = 3, seed: int = 0) -> di.Classifier:
    """conv(3->4, 3x3, pad 1) + ReLU [+ GAP] + linear: the CAM of a class is known by hand."""
    torch.manual_seed(seed)
    if gap:
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(4, classes))
    else:
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(4 * 16 * 16, classes))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    names = [f"class{i}" for i in range(classes)]
    return di.Classifier(net=net, device=torch.device("cpu"), input_size=16, crop_fraction=1.0,
                         mean=(0.5,) * 3, std=(0.5,) * 3, interpolation=Image.BICUBIC,
                         class_names=names, wnids=[f"n{i:08d}" for i in range(classes)], name="tiny")


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture
def tiny() -> di.Classifier:
    return tiny_classifier()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_cam_equals_features_times_weights(tiny, x):
    t = torch.tensor([0, 1, 2, 1])
    f = tiny.net[1](tiny.net[0](x))                      # (4, 4, 16, 16): f_k(x, y)
    w = tiny.net[4].weight                               # (3, 4): w^c_k
    by_hand = torch.stack([(w[c][:, None, None] * f[i]).sum(0) for i, c in enumerate(t)]).relu()
    got = di.compute_maps(tiny, x, t, method="cam")
    assert got.shape == (4, 16, 16)
    assert torch.allclose(got, by_hand, atol=1e-6)
    # and S_c = mean M_c + b_c (Zhou et al. 2016): the signed map keeps the score
    signed = di.compute_maps(tiny, x, t, method="cam", signed=True)
    s = tiny.net(x).gather(1, t[:, None])[:, 0]
    assert torch.allclose(signed.mean((1, 2)) + tiny.net[4].bias[t], s, atol=1e-5)


def test_gradcam_last_layer_is_cam_up_to_positive_scale(tiny, x):
    t = torch.tensor([2, 0, 1, 0])
    c = di.compute_maps(tiny, x, t, method="cam")
    g = di.compute_maps(tiny, x, t, method="gradcam", layer="1")
    assert g.abs().sum() > 0
    assert torch.allclose(g * 16 * 16, c, rtol=1e-4, atol=1e-6)   # alpha = w / Z, Z = h w
    assert dm.conv_layers(tiny.net, x)[-1] == "1"                    # the default layer
    assert torch.allclose(di.compute_maps(tiny, x, t, method="gradcam"), g)


def test_cam_refused_without_global_average_pooling(x):
    flat = tiny_classifier(gap=False)
    with pytest.raises(ValueError, match="global average pooling"):
        di.compute_maps(flat, x, 0, method="cam")
    # GAP present but followed by two linear layers: not exact, refused by the numeric check
    mlp = tiny_classifier()
    mlp.net = nn.Sequential(*mlp.net, nn.ReLU(), nn.Linear(3, 3)).eval()
    with pytest.raises(ValueError, match="global average pooling"):
        di.compute_maps(mlp, x, 0, method="cam")


def test_unknown_method_lists_known_ones(tiny, x):
    with pytest.raises(ValueError, match=r"unknown map method 'saliency'.*gradient.*gradcam.*occlusion"):
        di.compute_maps(tiny, x, 0, method="saliency")
    with pytest.raises(ValueError, match="no option"):
        di.compute_maps(tiny, x, 0, method="gradient", sigma=0.1)
    with pytest.raises(ValueError, match="unknown layer"):
        di.compute_maps(tiny, x, 0, method="gradcam", layer="nope")


def test_gradient_is_eq4_and_signed_keeps_the_magnitude(tiny, x):
    t = torch.tensor([0, 1, 2, 0])
    xg = x.clone().requires_grad_(True)
    (w,) = torch.autograd.grad(tiny.net(xg).gather(1, t[:, None]).sum(), xg)
    got = di.compute_maps(tiny, x, t)
    assert torch.allclose(got, w.abs().amax(1), atol=1e-7)
    assert torch.allclose(got, di.saliency(tiny, x, target=t))
    for rule in ("gradient", "deconvnet", "guided"):
        m = di.compute_maps(tiny, x, t, method=rule)
        s = di.compute_maps(tiny, x, t, method=rule, signed=True)
        assert torch.allclose(s.abs(), m, atol=1e-7), rule


def test_smoothgrad_noise_free_is_the_gradient_and_seeded(tiny, x):
    t = torch.tensor([1, 1, 0, 2])
    assert torch.allclose(di.compute_maps(tiny, x, t, "smoothgrad", n=3, sigma=0.0),
                          di.compute_maps(tiny, x, t), atol=1e-7)
    a = di.compute_maps(tiny, x, t, "smoothgrad", n=4, sigma=0.2, seed=3)
    b = di.compute_maps(tiny, x, t, "smoothgrad", n=4, sigma=0.2, seed=3)
    c = di.compute_maps(tiny, x, t, "smoothgrad", n=4, sigma=0.2, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batching_and_targets(tiny, x):
    top1 = tiny.net(x).argmax(1)
    a = di.compute_maps(tiny, x, None, batch_size=1)
    assert torch.allclose(a, di.compute_maps(tiny, x, top1, batch_size=4), atol=1e-7)
    assert torch.allclose(di.compute_maps(tiny, x, "class1"), di.compute_maps(tiny, x, [1] * 4))
    with pytest.raises(ValueError, match="3 classes for 4 images"):
        di.compute_maps(tiny, x, [0, 1, 2])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        di.compute_maps(tiny, x[0])


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided", "smoothgrad", "cam", "gradcam"])
def test_model_state_unchanged(method, x):
    tiny = tiny_classifier()
    tiny.net.train()
    tiny.net[0].weight.requires_grad_(True)
    before = model_state(tiny.net)
    opts = {"n": 2} if method == "smoothgrad" else {}
    m = di.compute_maps(tiny, x, 0, method=method, **opts)
    assert m.shape == (4, 16, 16) and (m >= 0).all()
    assert_same_state(before, model_state(tiny.net))


def test_register_map_is_one_function(tiny, x):
    def brightness(clf, xb, targets):
        return (xb.mean(1) - xb.mean(1).amin()).abs()

    di.register_map("test_brightness", brightness)
    try:
        assert "test_brightness" in di.map_names()
        got = di.compute_maps(tiny, x, 0, method="test_brightness", batch_size=3)
        assert got.shape == (4, 16, 16)
        with pytest.raises(ValueError, match="already registered"):
            di.register_map("test_brightness", brightness)
    finally:
        dm._REGISTRY.pop("test_brightness")


def test_ten_crops_for_any_method(tiny):
    """crops="ten" (Sect. 3.1): each crop's map un-flipped, put back where the crop came from and
    averaged over the crops covering each pixel, for any registered method."""
    import dataclasses

    import numpy as np

    clf = dataclasses.replace(tiny, crop_fraction=0.75)      # 16-px crops of a 21-px square
    s, c = clf.resize_size, clf.input_size
    assert s > c

    def ones(clf_, xb, t):
        return torch.ones(len(xb), *xb.shape[2:])

    def column(clf_, xb, t):   # the column index in the crop's own frame
        return torch.arange(xb.shape[3], dtype=torch.float).expand(len(xb), xb.shape[2], -1).clone()

    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 30, 3), dtype=np.uint8))
    di.register_map("test_ones", ones)
    di.register_map("test_column", column)
    try:
        m = di.compute_maps(clf, [im, im], 0, method="test_ones", crops="ten")
        assert m.shape == (2, s, s) and torch.allclose(m, torch.ones_like(m))
        got = di.compute_maps(clf, im, 0, method="test_column", crops="ten", batch_size=4)[0]
        total, count = torch.zeros(s, s), torch.zeros(s, s)
        for x0, y0, x1, y1, flipped in di.ten_crop_boxes(clf):
            cols = torch.arange(c, dtype=torch.float)
            total[y0:y1, x0:x1] += (cols.flip(0) if flipped else cols).expand(c, -1)
            count[y0:y1, x0:x1] += 1
        assert torch.allclose(got, total / count)
        with pytest.raises(ValueError, match="crops='center' with tensor input"):
            di.compute_maps(clf, torch.zeros(1, 3, 16, 16), 0, method="test_ones", crops="ten")
    finally:
        dm._REGISTRY.pop("test_ones")
        dm._REGISTRY.pop("test_column")
    # the registered eq. 4 map is the paper's 10-crop saliency; the top-1 of the averaged crops
    a, ta = di.compute_maps(clf, [im, im], None, method="gradient", crops="ten", return_targets=True)
    b, tb = di.saliency(clf, [im, im], None, crops="ten", return_target=True)
    assert torch.equal(ta, tb) and torch.allclose(a, b)
    scores = clf.scores(frames_ten(clf, im)).mean(0)
    assert int(ta[0]) == int(scores.argmax())
    g = di.compute_maps(clf, [im, im], None, method="gradcam", crops="ten", return_targets=True)[1]
    assert torch.equal(g, ta)          # a method without its own pass: the same top-1 classes


def frames_ten(clf, im):
    from deepinside.core.frames import ten_crop_batch

    return ten_crop_batch(clf, [im])


class _FakeOcclusion:
    """A stand-in for deepinside.occlusion: the class score with a zero square at each position."""

    @staticmethod
    def occlusion(clf, x, target, window, stride):
        h, w = x.shape[2:]
        ys, xs = range(0, h - window + 1, stride), range(0, w - window + 1, stride)
        out = torch.zeros(len(x), len(ys), len(xs))
        for a, y0 in enumerate(ys):
            for b, x0 in enumerate(xs):
                xo = x.clone()
                xo[:, :, y0:y0 + window, x0:x0 + window] = 0
                out[:, a, b] = clf.scores(xo).gather(1, target[:, None])[:, 0]

        class R:
            score = out
        return R()


def test_occlusion_map_equals_captum(tiny, x, monkeypatch):
    from captum.attr import Occlusion

    t = torch.tensor([0, 1, 2, 1])
    ref = Occlusion(tiny.net).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2),
                                        target=t, baselines=0.0)
    assert torch.allclose(ref[:, 0], ref[:, 2], atol=1e-6)
    if dm._occlusion_function() is not None:  # the package's own occlusion, when installed
        real = di.compute_maps(tiny, x, t, "occlusion", window=4, stride=2, signed=True)
        assert torch.allclose(real, ref[:, 0], atol=1e-5)
    monkeypatch.setattr(dm, "_occlusion_function", lambda: _FakeOcclusion.occlusion)
    ours = di.compute_maps(tiny, x, t, "occlusion", window=4, stride=2, signed=True)
    assert torch.allclose(ours, ref[:, 0], atol=1e-5)
    assert torch.allclose(di.compute_maps(tiny, x, t, "occlusion", window=4, stride=2),
                          ref[:, 0].relu(), atol=1e-5)


def test_occlusion_absent_is_a_clear_error(tiny, x, monkeypatch):
    monkeypatch.setattr(dm, "_occlusion_function", lambda: None)
    assert "occlusion" in di.map_names() and "occlusion" not in di.available_maps()
    with pytest.raises(ValueError, match="needs deepinside.occlusion"):
        di.compute_maps(tiny, x, 0, method="occlusion")


@pytest.mark.slow
def test_cam_is_exact_on_efficientnet_lite0(clf, photos):
    imgs = [photos["chelsea"], photos["coffee"]]
    before = model_state(clf.net)
    c = di.compute_maps(clf, imgs, method="cam")
    g = di.compute_maps(clf, imgs, method="gradcam")
    assert c.shape == (2, 224, 224) and c.amax() > 0
    assert torch.allclose(g * 49, c, rtol=1e-3, atol=1e-4 * float(c.amax()))
    assert_same_state(before, model_state(clf.net))


def _anything():
    from hypothesis import strategies as st

    return st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True),
                     st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2))


def test_compute_maps_options_property():
    """Issue 24: random option values (of every registered method, plus ``batch_size`` and
    ``targets``) either give finite maps of the right shape or raise ValueError/TypeError whose
    message names the option; never another exception, never NaN."""
    from hypothesis import given, settings, strategies as st

    tiny = tiny_classifier()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))  # > occlusion's window
    any_ = _anything()
    values = {"signed": st.one_of(st.booleans(), any_),
              "n": st.one_of(st.integers(-1, 6), any_),
              "sigma": st.one_of(st.floats(0, 0.5), any_),
              "seed": st.one_of(st.integers(-2, 2 ** 64), any_),
              "rule": st.one_of(st.sampled_from(["gradient", "guided", "deconvnet", "relu"]), any_),
              "layer": st.one_of(st.sampled_from(["0", "1", "2", "nosuch", ""]), any_),
              "window": st.one_of(st.integers(-1, 70), any_),
              "stride": st.one_of(st.integers(-1, 20), any_)}

    @st.composite
    def case(draw):
        method = draw(st.sampled_from(di.map_names()))
        names = dm._options_of(method) + ["batch_size", "targets"]
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
        opts = {}
        for k in chosen:
            if k == "batch_size":
                opts[k] = draw(st.one_of(st.integers(-1, 4), any_))
            elif k == "targets":
                opts[k] = draw(st.one_of(st.integers(-1, 4), st.sampled_from(["class1", "n00000002",
                                                                              "nosuch"]), any_))
            else:
                opts[k] = draw(values[k])
        return method, opts

    @settings(max_examples=150, deadline=None, database=None)
    @given(case())
    def check(c):
        method, opts = c
        try:
            m = di.compute_maps(tiny, x, method=method, **opts)
        except (ValueError, TypeError) as e:
            assert any(k in str(e) for k in opts) or "target" in str(e) or "class" in str(e), (method, opts, e)
            return
        assert m.shape == (2, 64, 64) and torch.isfinite(m).all(), (method, opts)

    check()


def test_a_registered_method_is_everywhere(tiny, monkeypatch):
    """Issue 22: a new map is one function and one register_map line; it is then in
    compute_maps, the explorer's menu, the CLI's --maps choices and the evaluation."""
    from deepinside.figures import widgets
    from deepinside.measures import localisation
    from deepinside.cli import _parser

    def toy(clf, x, targets, *, signed=False):
        """A toy: the input's red channel, shifted to be >= 0."""
        r = x[:, 0]
        return r - r.amin((1, 2), keepdim=True)

    monkeypatch.setattr(dm, "_REGISTRY", dict(dm._REGISTRY))      # registry restored afterwards
    monkeypatch.setattr(dm, "_REQUIRES", dict(dm._REQUIRES))
    di.register_map("toy", toy)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(di.compute_maps(tiny, x, method="toy"), toy(tiny, x, None))
    assert "toy" in widgets.METHODS and widgets.METHODS["toy"] == "map: toy"
    r = widgets.explore(tiny, Image.new("RGB", (20, 16), (200, 10, 10)), method="toy", target=1)
    assert r.method == "toy" and r.crops == "center" and r.saliency.shape == (16, 20)
    args = _parser().parse_args(["evaluate", "ROOT", "--maps", "toy"])
    assert args.maps == "toy"
    img = Image.new("RGB", (20, 16), (90, 120, 30))
    m = localisation.saliency_in_image(tiny, img, [0], crops="full", maps="toy")  # what evaluation boxes
    assert m.shape == (1, 16, 20)


def test_spatial_layers_are_remembered_per_structure_and_shape():
    """Grad-CAM's default layer is looked up once per network structure and input shape; a
    replaced module or another input size asks the network again."""
    from deepinside.core import layers

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    calls = []
    original = layers._spatial_layers
    try:
        layers._spatial_layers = lambda n, x: calls.append(tuple(x.shape)) or original(n, x)
        a = layers.spatial_layers(net, torch.zeros(2, 3, 8, 8))
        assert layers.spatial_layers(net, torch.zeros(5, 3, 8, 8)) == a == ["0", "1", "2"]
        assert len(calls) == 1
        assert layers.spatial_layers(net, torch.zeros(1, 3, 4, 4)) == ["0", "1"]  # 1x1 after conv 2
        net[2] = nn.Conv2d(4, 2, 1)                                                # replaced
        assert layers.spatial_layers(net, torch.zeros(1, 3, 8, 8)) == ["0", "1", "2"]
        assert len(calls) == 3
    finally:
        layers._spatial_layers = original


# -- several methods from shared passes (compute_map_set) --------------------------------------------


def _count_passes(net: nn.Module) -> tuple[list, object]:
    calls: list = []
    return calls, net.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))


def test_map_set_serves_the_joint_methods_from_one_pass_each_chunk():
    """gradient, CAM, Grad-CAM and the gated gradient: one forward (and one backward) pass per
    chunk for the four, each map equal to its own method's; other methods on their own."""
    clf = gap_clf(seed=3, size=16)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 1, 2, 3, 1])
    alone = {m: dm.compute_maps(clf, x, t, m, batch_size=2) for m in (*dm.JOINT_MAPS, "guided")}
    calls, handle = _count_passes(clf.net)
    before = model_state(clf.net)
    try:
        got = dm.compute_map_set(clf, x, t, ["guided", *dm.JOINT_MAPS], batch_size=2)
    finally:
        after = model_state(clf.net)
        handle.remove()
    assert_same_state(before, after)
    assert list(got) == ["guided", *dm.JOINT_MAPS]
    assert calls == [2, 2, 1] * 2          # guided's own passes, then one per chunk for the four
    for m, a in alone.items():
        assert got[m].shape == (5, 16, 16) and (got[m] >= 0).all()
        assert torch.allclose(got[m], a, rtol=1e-5, atol=1e-6), m
    # Grad-CAM at the pooled layer of a GAP network is CAM / (h w), here 16 * 16
    assert torch.allclose(got["gradcam"] * 256, got["cam"], rtol=1e-4, atol=1e-5)


def test_map_set_top1_targets_options_and_refusals():
    clf = gap_clf(seed=1, size=16)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    got = dm.compute_map_set(clf, x, None, ["gradient", "cam"])
    for m in ("gradient", "cam"):   # None: each image's top-1 class, as compute_maps
        assert torch.allclose(got[m], dm.compute_maps(clf, x, None, m), rtol=1e-5, atol=1e-6)
    # a method with options is computed on its own, with them
    sg = dm.compute_map_set(clf, x, 0, ["gradient", "smoothgrad"], options={"smoothgrad": {"n": 2}})
    assert torch.equal(sg["smoothgrad"], dm.compute_maps(clf, x, 0, "smoothgrad", n=2))
    with pytest.raises(ValueError, match="unknown map method 'nope'"):
        dm.compute_map_set(clf, x, 0, ["gradient", "nope"])
    with pytest.raises(ValueError, match="among"):
        dm.joint_maps(clf, x, torch.zeros(3, dtype=torch.long), ["gradient", "guided"])


def test_a_replaced_method_is_not_served_by_the_shared_pass():
    clf = gap_clf(seed=0, size=16)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    builtin = dm._REGISTRY["cam"]
    dm.register_map("cam", lambda c, x, t, **_: torch.full((len(x), *x.shape[2:]), 7.0), replace=True)
    try:
        got = dm.compute_map_set(clf, x, 1, ["gradient", "cam"])
    finally:
        dm.register_map("cam", builtin, replace=True)
    assert (got["cam"] == 7.0).all()
    assert torch.allclose(got["gradient"], dm.compute_maps(clf, x, 1, "gradient"))
