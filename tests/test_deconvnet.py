"""Tests of deepinside.deconvnet: the paper's ConvNet, the explicit DeconvNet, Sect. 4's identities."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import deepinside as di
from deepinside.methods import deconvnet
from deepinside.methods.deconvnet import (flipped_kernel_conv, layer_activity, record_forward,
                                  unpool_with_switches)

from state_helpers import assert_same_state, model_state


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def small():
    """The paper's architecture at 1/16 width on 64 x 64 inputs, with and without RELUs."""
    kw = dict(seed=3, width=1 / 16, input_size=64, num_classes=10)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return di.paper_convnet(**kw), di.paper_convnet(**kw, rectify=False), x


def autograd_map(net, x, layer, unit, rule="gradient", position=None):
    xx = x.clone().requires_grad_()
    with di.backward_rule(net, rule):
        (g,) = torch.autograd.grad(layer_activity(net, xx, layer, unit, position).sum(), xx)
    return g


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


# --- architecture ----------------------------------------------------------------------------------


def test_paper_architecture_sizes():
    net = di.paper_convnet(width=1 / 16)                     # 224 input, like the paper
    h, sizes = torch.zeros(1, 3, 224, 224), {}
    for name, m in net.named_children():
        h = m(h)
        sizes[name] = tuple(h.shape[1:])
    assert sizes["conv1"] == (4, 110, 110) and sizes["pool1"] == (4, 55, 55)
    assert sizes["conv2"] == (16, 26, 26) and sizes["pool2"] == (16, 13, 13)
    assert sizes["conv5"] == (16, 13, 13) and sizes["pool5"] == (16, 6, 6)
    assert sizes["fc6"] == (256,) and sizes["fc7"] == (256,) and sizes["fc8"] == (1000,)
    convs = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    assert convs == [4, 16, 16, 16, 16] and fcs == [256, 256, 1000]   # conv64-conv256x4-full4096x2-full1000 / 16


def test_seeded_weights_shared_between_rectified_and_not(small):
    a, b, _ = small
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = di.paper_convnet(seed=4, width=1 / 16, input_size=64, num_classes=10)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not any(isinstance(m, nn.ReLU) for m in b.modules()) and not a.training


def test_bad_construction():
    with pytest.raises(ValueError, match="width"):
        di.paper_convnet(width=0)
    with pytest.raises(ValueError, match="input_size"):
        di.paper_convnet(input_size=32)


# --- statement 1: convolution backward = convolution with the flipped kernel -----------------------


def test_flipped_kernel_by_hand():
    """1 channel, K = [[1, 2], [3, 4]], R = [[1]] at output (0, 0) -> R * K spread on the input."""
    k = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    r = torch.zeros(1, 1, 2, 2)
    r[0, 0, 0, 0] = 1.0
    out = flipped_kernel_conv(r, k, input_hw=(3, 3))
    expected = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.equal(out[0, 0], expected)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 3), h=st.integers(5, 14), w=st.integers(5, 14),
       cin=st.integers(1, 3), cout=st.integers(1, 3), seed=st.integers(0, 999))
def test_conv_backward_is_flipped_kernel_conv(k, s, p, h, w, cin, cout, seed):
    if h + 2 * p < k or w + 2 * p < k:
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cin, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64)
    y = F.conv2d(x, weight, stride=s, padding=p)
    r = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((y * r).sum(), x)
    ours = flipped_kernel_conv(r, weight, s, p, (h, w))
    torch.testing.assert_close(ours, grad, rtol=1e-10, atol=1e-10)
    extra = (h + 2 * p - k) % s, (w + 2 * p - k) % s
    torch.testing.assert_close(ours, F.conv_transpose2d(r, weight, stride=s, padding=p, output_padding=extra),
                               rtol=1e-10, atol=1e-10)


def test_flipped_kernel_conv_bad_input():
    with pytest.raises(ValueError, match="matching C_out"):
        flipped_kernel_conv(torch.zeros(1, 2, 3, 3), torch.zeros(3, 1, 2, 2))
    with pytest.raises(ValueError, match="inconsistent"):
        flipped_kernel_conv(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 2, 2), stride=2, input_hw=(10, 10))


# --- statement 2: unpooling with switches = max-pool sub-gradient ----------------------------------


def test_overlapping_windows_add_where_max_unpool_writes():
    """Windows [0,1,2] and [2,3,4] (3 wide, stride 2) both pick x[2] = 5: the gradient there is
    R0 + R1; F.max_unpool2d keeps only one of them."""
    x = torch.tensor([[[[0.0, 1.0, 5.0, 2.0, 0.0]]]], requires_grad=True)
    y, idx = F.max_pool2d(x, (1, 3), (1, 2), return_indices=True)
    r = torch.tensor([[[[10.0, 1.0]]]])
    (grad,) = torch.autograd.grad((y * r).sum(), x)
    ours = unpool_with_switches(r, idx, (1, 5))
    assert torch.equal(grad, torch.tensor([[[[0.0, 0.0, 11.0, 0.0, 0.0]]]]))
    assert torch.equal(ours, grad)
    assert F.max_unpool2d(r, idx, (1, 3), (1, 2), output_size=(1, 5))[0, 0, 0, 2] in (10.0, 1.0)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(2, 4), s=st.integers(1, 3), h=st.integers(4, 12), ceil=st.booleans(), seed=st.integers(0, 999))
def test_unpool_is_maxpool_subgradient(k, s, h, ceil, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, h, h + 1, generator=g, dtype=torch.float64).relu().requires_grad_()  # ties at 0
    y, idx = F.max_pool2d(x, k, s, ceil_mode=ceil, return_indices=True)
    r = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((y * r).sum(), x)
    torch.testing.assert_close(unpool_with_switches(r, idx, x.shape[-2:]), grad, rtol=1e-12, atol=1e-12)


def test_unpool_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        unpool_with_switches(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3, dtype=torch.long), (4, 4))


# --- statement 3: DeconvNet = backprop with the DeconvNet RELU rule --------------------------------


@pytest.mark.parametrize("layer,unit", [("conv1", 1), ("pool2", [2, 5]), ("conv5", 7), ("relu5", 3),
                                        ("fc6", 11), ("fc8", [4, 9])])
@pytest.mark.parametrize("rule", di.RULES)
def test_deconvnet_equals_autograd_under_the_rule(small, layer, unit, rule):
    net, _, x = small
    ours = di.deconvnet_reconstruct(net, x, layer, unit, relu_rule=rule)
    ref = autograd_map(net, x, layer, unit, rule)
    assert ref.abs().max() > 0
    assert rel(ours, ref) < 1e-5, (layer, rule)


def test_deconvnet_is_not_the_gradient_with_relus_but_is_without(small):
    net, bare, x = small
    d = di.deconvnet_reconstruct(net, x, "fc8", 3)
    assert rel(d, autograd_map(net, x, "fc8", 3)) > 0.1                    # the RELU rule differs
    assert rel(di.deconvnet_reconstruct(bare, x, "fc8", 3), autograd_map(bare, x, "fc8", 3)) < 1e-5


def test_position_argument(small):
    net, _, x = small
    ours = di.deconvnet_reconstruct(net, x, "conv2", 0, position=(2, 3))
    torch.testing.assert_close(ours, autograd_map(net, x, "conv2", 0, "deconvnet", (2, 3)), rtol=1e-5, atol=1e-7)
    # the reconstruction of one conv2 unit lives in its receptive field only
    nz = ours.abs().sum((0, 1)).nonzero()
    assert nz[:, 0].max() - nz[:, 0].min() < 7 + 2 * 2 * 2 + 4 * 2 * 2


def test_agrees_with_captum_on_the_paper_net(small):
    from captum.attr import Deconvolution, GuidedBackprop

    net, _, x = small
    for rule, peer in (("deconvnet", Deconvolution), ("guided", GuidedBackprop)):
        ours = di.deconvnet_reconstruct(net, x, "fc8", [1, 2], relu_rule=rule)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = peer(net).attribute(x.clone().requires_grad_(), target=[1, 2])
        assert rel(ours, theirs) < 1e-4, rule


def test_max_unpool_write_loses_signal(small):
    net, _, x = small
    add = di.deconvnet_reconstruct(net, x, "fc8", 1)
    write = di.deconvnet_reconstruct(net, x, "fc8", 1, unpool="write")
    assert rel(write, add) > 1e-3


def test_record_forward_switches(small):
    net, _, x = small
    recs = record_forward(net, x, "pool5")
    assert [r["name"] for r in recs][-1] == "pool5"
    assert all(("switches" in r) == r["name"].startswith("pool") for r in recs)
    torch.testing.assert_close(recs[-1]["output"], net[:13](x))


# --- bad input, state, determinism -----------------------------------------------------------------


def test_bad_input(small):
    net, _, x = small
    with pytest.raises(ValueError, match="unknown layer"):
        di.deconvnet_reconstruct(net, x, "conv9", 0)
    with pytest.raises(ValueError, match="out of range"):
        di.deconvnet_reconstruct(net, x, "fc8", 10)
    with pytest.raises(ValueError, match="one per image"):
        di.deconvnet_reconstruct(net, x, "fc8", [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        di.deconvnet_reconstruct(net, x * float("nan"), "fc8", 1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        di.deconvnet_reconstruct(net, x[0], "fc8", 1)
    with pytest.raises(ValueError, match="outside"):
        di.deconvnet_reconstruct(net, x, "conv5", 1, position=(50, 0))
    with pytest.raises(ValueError, match="position is only defined"):
        di.deconvnet_reconstruct(net, x, "fc8", 1, position=(0, 0))
    with pytest.raises(ValueError, match="relu_rule"):
        di.deconvnet_reconstruct(net, x, "fc8", 1, relu_rule="lrp")
    with pytest.raises(ValueError, match="unpool"):
        di.deconvnet_reconstruct(net, x, "fc8", 1, unpool="max")
    with pytest.raises(TypeError, match="sequential"):
        di.deconvnet_reconstruct(nn.Linear(3, 3), x, "fc8", 1)
    with pytest.raises(ValueError, match="not supported"):
        di.deconvnet_reconstruct(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh()), x, "1", 0)


def test_state_unchanged_and_deterministic(small):
    net, _, x = small
    before = model_state(net)
    a = di.deconvnet_reconstruct(net, x, "conv5", 2)
    b = di.deconvnet_reconstruct(net, x, "conv5", 2)
    assert_same_state(before, model_state(net))
    assert torch.equal(a, b)


# --- helpers the chapter uses --------------------------------------------------------------------------


def test_without_rectifiers_shares_weights(small):
    net, _, x = small
    bare = deconvnet.without_rectifiers(net)
    assert not any(isinstance(m, nn.ReLU) for m in bare.modules())
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 7       # the original is unchanged
    assert all(p is q for p, q in zip(net.parameters(), bare.parameters()))
    torch.testing.assert_close(bare(x), di.paper_convnet(seed=3, width=1 / 16, input_size=64, num_classes=10,
                                                         rectify=False)(x))


def test_identity_checks_on_small_net(small):
    net, _, x = small
    conv = deconvnet.check_conv_identity(net, x)
    assert [r["layer"] for r in conv] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert all(r["flipped_vs_autograd"] < 1e-5 * r["max_abs"] for r in conv)
    pool = deconvnet.check_unpool_identity(net, x)
    assert [r["layer"] for r in pool] == ["pool1", "pool2", "pool5"]
    assert all(r["add_vs_autograd"] <= 1e-6 * r["max_abs"] for r in pool)
    assert all(0 <= r["shared"] <= 1 for r in pool)
    ident = deconvnet.check_deconvnet_identity(net, x, "fc8", [1, 2])
    assert max(ident[r] for r in di.RULES) < 1e-5 * ident["max_abs"]
    assert ident["bare_deconvnet_vs_gradient"] < 1e-5 * ident["bare_max_abs"]
    assert 1e-5 * ident["max_abs"] < ident["deconvnet_vs_gradient"]
