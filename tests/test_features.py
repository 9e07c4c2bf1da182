"""Top activations, receptive fields and projections (Zeiler & Fergus Fig. 2, Fig. 6) with answers
known by hand or by brute force."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import deepinside as di
from deepinside.methods.features import (ImageList, aligned_projections, filter_stats, first_layer_filters,
                                 mean_pairwise_correlation, project, receptive_field, top_activations)
from state_helpers import assert_same_state, model_state

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(5, 4)).eval()


def brute_top(net: nn.Module, x: torch.Tensor, layer: int, k: int):
    """Every image's spatial maximum per unit, then a stable sort over images."""
    with torch.no_grad():
        a = net[: layer + 1](x)                                   # (N, C, h, w)
    v, arg = a.flatten(2).max(2)                                  # (N, C), first maximum
    order = torch.sort(v.T, dim=1, descending=True, stable=True).indices[:, :k]
    return v.T.gather(1, order), order, arg.T.gather(1, order), a.shape[-1]


def test_top_activations_equal_brute_force_on_64_images():
    net = tiny_net()
    x = torch.randn(64, 3, 12, 12)
    x[40] = x[3]                                                   # a tie: the earlier image wins
    for layer in (1, 4):
        top = top_activations(net, x, str(layer), k=9, batch_size=7, show_progress=False)
        v, idx, arg, w = brute_top(net, x, layer, 9)
        assert torch.allclose(top.values, v, atol=1e-6)
        assert torch.equal(top.image_index, idx)
        assert torch.equal(top.position[..., 0] * w + top.position[..., 1], arg)
        assert top.n_images == 64 and top.k == 9
    assert 40 not in top_activations(net, x, "1", k=64, show_progress=False).image_index[:, :4].tolist()


def test_several_layers_one_pass_units_subset_and_batch_size_independence():
    net = tiny_net(1)
    x = torch.randn(20, 3, 10, 10)
    both = top_activations(net, x, ["1", "4"], units={"1": [5, 0], "4": None}, k=3, batch_size=20,
                           show_progress=False)
    one = top_activations(net, x, "1", units=[5, 0], k=3, batch_size=3, show_progress=False)
    assert both["1"].units.tolist() == [5, 0] and both["4"].values.shape == (5, 3)
    assert torch.equal(both["1"].image_index, one.image_index)
    assert torch.allclose(both["1"].values, one.values)
    assert one.row(0) == 1


def test_streams_pil_images_from_any_iterable_and_k_larger_than_data():
    net = tiny_net(2)
    clf = di.Classifier(net=net, device=torch.device("cpu"), input_size=12, crop_fraction=1.0,
                        mean=(0.5,) * 3, std=(0.25,) * 3, interpolation=Image.BILINEAR,
                        class_names=[str(i) for i in range(4)], wnids=[str(i) for i in range(4)], name="tiny")
    g = torch.Generator().manual_seed(0)
    imgs = [Image.fromarray((torch.rand(12, 12, 3, generator=g) * 255).byte().numpy()) for _ in range(5)]
    gen = (im for im in imgs)                                      # no len(): streamed
    top = top_activations(clf, gen, "4", k=9, batch_size=2, show_progress=False)
    ref = top_activations(clf, clf.preprocess(imgs), "4", k=9, show_progress=False)
    assert top.k == 5 and torch.equal(top.image_index, ref.image_index)
    data = ImageList([[(im, i) for i, im in enumerate(imgs[:2])], imgs[2:]])
    assert len(data) == 5 and data.image(3) is imgs[3]
    top2 = top_activations(clf, data, "4", k=5, batch_size=4, show_progress=False)
    assert torch.equal(top2.image_index, ref.image_index)


def test_receptive_field_by_hand():
    # conv3x3 (pad 1) -> maxpool 2 -> conv3x3 (pad 1): unit y of the last conv sees pool rows
    # y-1..y+1, i.e. input rows 2y-2..2y+3, widened by the first conv to 2y-3..2y+4 (half-open)
    net = tiny_net()
    for y, x in [(0, 0), (2, 3), (5, 5)]:
        box = receptive_field(net, "3", y, x, input_size=(3, 12, 12))
        assert box == (max(0, 2 * x - 3), max(0, 2 * y - 3), min(12, 2 * x + 5), min(12, 2 * y + 5))
    assert receptive_field(net, "0", 4, 7, input_size=(3, 12, 12)) == (6, 3, 9, 6)
    many = receptive_field(net, "3", torch.tensor([0, 2]), torch.tensor([0, 3]), input_size=(3, 12, 12))
    assert many.tolist() == [[0, 0, 5, 5], [3, 1, 11, 9]]
    # non-square input: rows and columns traced separately
    assert receptive_field(net, "3", 1, 4, input_size=(3, 8, 12)) == (5, 0, 12, 7)


def test_projection_by_hand_and_equal_to_the_explicit_deconvnet():
    # one conv, no rectifier: the projection of unit (y, x) is act * W placed on its window
    net = nn.Sequential(nn.Conv2d(1, 1, 2, bias=False)).eval()
    with torch.no_grad():
        net[0].weight[:] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    p = project(net, x, "0", 0, (1, 2), rule="gradient")
    act = 6 * 1 + 7 * 2 + 10 * 3 + 11 * 4
    expect = torch.zeros(1, 1, 4, 4)
    expect[0, 0, 1:3, 2:4] = act * net[0].weight[0, 0]
    assert torch.equal(p, expect)
    # the paper's ConvNet (max-pooling switches): ours through backward_rule == explicit DeconvNet
    pnet = di.paper_convnet(width=1 / 16, input_size=64, seed=0)
    xx = torch.randn(2, 3, 64, 64)
    for rule in ("deconvnet", "guided"):
        ours = project(pnet, xx, "conv5", [1, 2], rule=rule)
        a = pnet[: [n for n, _ in pnet.named_children()].index("conv5") + 1](xx)
        ref = []
        for i, u in enumerate([1, 2]):
            flat = a[i, u].flatten().argmax()
            pos = (int(flat // a.shape[-1]), int(flat % a.shape[-1]))
            r = di.deconvnet_reconstruct(pnet, xx[i:i + 1], "conv5", u, position=pos, relu_rule=rule)
            ref.append(r * a[i, u, pos[0], pos[1]])
        assert torch.allclose(ours, torch.cat(ref), rtol=1e-4, atol=1e-5)


def test_state_unchanged_and_clear_errors():
    net = tiny_net()
    net.train()
    before = model_state(net)
    x = torch.randn(2, 3, 12, 12)
    top_activations(net, x, "4", k=2, show_progress=False)
    project(net, x, "4", 1, rule="deconvnet")
    receptive_field(net, "4", 1, 1, input_size=(3, 12, 12))
    with pytest.raises(ValueError, match="out of range"):
        project(net, x, "4", 9)
    with pytest.raises(ValueError, match="outside the 6x6 map"):
        project(net, x, "4", 1, position=(6, 0))
    assert_same_state(before, model_state(net))
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        top_activations(net, x, "conv9")
    with pytest.raises(ValueError, match="NaN"):
        top_activations(net, torch.full((1, 3, 12, 12), float("nan")), "1", show_progress=False)
    with pytest.raises(ValueError, match="out of range"):
        top_activations(net, x, "1", units=[6], show_progress=False)
    with pytest.raises(ValueError, match="outside the 6x6 map"):
        receptive_field(net, "4", 6, 0, input_size=(3, 12, 12))
    with pytest.raises(ValueError, match="unknown backward rule"):
        project(net, x, "4", 1, rule="lrp")
    with pytest.raises(ValueError, match="\\(N, C, h, w\\)"):
        top_activations(net, x, "7", show_progress=False)


def test_filters_stats_and_alignment_by_hand():
    w = torch.zeros(4, 1, 1, 2)
    w[0, 0, 0] = torch.tensor([3.0, 4.0])                          # norm 5
    w[1, 0, 0, 0] = 1.0
    w[2, 0, 0, 0] = 1.0
    w[3, 0, 0, 0] = 0.01                                           # "dead": below 0.1 x median (1)
    st = filter_stats(w)
    assert st["norms"].tolist() == pytest.approx([5, 1, 1, 0.01])
    assert st["dead_share"] == 0.25 and st["max_over_median"] == pytest.approx(5.0)
    assert st["share_visible_global"] == 0.75                      # peaks 4, 1, 1 >= 0.4; 0.01 not
    net = tiny_net()
    assert torch.equal(first_layer_filters(net), net[0].weight)
    p = torch.zeros(2, 1, 6, 6)
    p[0, 0, 1, 1] = 1.0
    p[1, 0, 4, 3] = 1.0
    al = aligned_projections(p, torch.tensor([[1, 1], [4, 3]]), 3)
    assert al[:, 0, 1, 1].tolist() == [1.0, 1.0]
    assert mean_pairwise_correlation(al) == pytest.approx(1.0)


@pytest.mark.slow
def test_pretrained_receptive_field_and_rules(clf, photos):
    assert receptive_field(clf, "blocks.1", 3, 3) == (6, 6, 25, 25)      # 19 px in the interior
    assert receptive_field(clf, "bn2", 3, 3) == (0, 0, 224, 224)
    img = [photos["chelsea"]]
    d = project(clf, img, "blocks.3", 7, rule="deconvnet")
    g = project(clf, img, "blocks.3", 7, rule="guided")
    assert d.shape == (1, 3, 224, 224) and not torch.allclose(d, g)
    filt = first_layer_filters(clf, fold_norm=True)
    assert filt.shape == (32, 3, 3, 3)


def test_results_can_enter_autograd_afterwards():
    # outputs are ordinary tensors (not inference-mode ones): they can feed project()
    net = tiny_net()
    x = torch.randn(3, 3, 12, 12)
    occ = di.occlusion(net, x, window=4, stride=4, layer="3", show_progress=False)
    top = top_activations(net, x, "3", k=2, show_progress=False)
    p = project(net, x, "3", occ.unit, rule="guided")
    q = project(net, x[top.image_index[0]], "3", top.units[0], top.position[0], rule="guided")
    assert p.shape == x.shape and q.shape == (2, 3, 12, 12)


def test_top_activations_options_property():
    """Issue 24: random ``layer``/``units``/``k``/``batch_size`` values either give a result or
    raise ValueError/TypeError naming the option; never another exception."""
    from hypothesis import given, settings, strategies as st

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1)).eval()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    anything = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.floats(allow_nan=True),
                         st.text(max_size=3), st.lists(st.integers(-1, 6), max_size=3))
    options = st.fixed_dictionaries({"layer": st.one_of(st.sampled_from(["0", "2", ["0", "2"], "9", []]),
                                                        anything)},
                                    optional={"units": st.one_of(st.lists(st.integers(0, 3), max_size=3),
                                                                 st.dictionaries(st.sampled_from(["0", "2", "x"]),
                                                                                 st.lists(st.integers(0, 4), max_size=2)),
                                                                 anything),
                                              "k": st.one_of(st.integers(-1, 8), anything),
                                              "batch_size": st.one_of(st.integers(-1, 8), anything)})

    @settings(max_examples=200, deadline=None, database=None)
    @given(opts=options)
    def check(opts):
        try:
            res = di.top_activations(net, x, show_progress=False, **opts)
        except (ValueError, TypeError) as e:
            assert any(k in str(e) for k in ("layer", "units", "k ", "k must", "batch_size", "unit")), (opts, e)
            return
        for r in (res.values() if isinstance(res, dict) else [res]):
            assert torch.isfinite(r.values).all() and r.n_images == 5

    check()
