"""Tests of deepinside.backprop: the three backward rules of Sect. 4 on every rectifier form."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import deepinside as di
from deepinside.core.batchnorm import is_lean
from deepinside.methods import backprop
from deepinside.methods.backprop import find_rectifiers
from state_helpers import assert_same_state, conv_clf, model_state, rand_pil


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


class Lambda(nn.Module):
    """A module whose forward is ``fn(1 * x)`` (the product makes the input a non-leaf)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x * 1.0)


# x and the upstream signal w (f = sum(w * rect(x))), chosen so the three gates differ.
X = torch.tensor([-1.0, 2.0, 3.0, -4.0, 7.0, 0.0, 5.0])
W = torch.tensor([1.0, -1.0, 2.0, 3.0, 4.0, 5.0, -2.0])


def rule_grad(module: nn.Module, rule: str, x=X, w=W, **kw) -> torch.Tensor:
    xx = x.clone().requires_grad_()
    with di.backward_rule(module, rule, **kw) as stats:
        (w * module(xx)).sum().backward()
    if rule != "gradient":
        assert stats.calls >= 1
    return xx.grad


def expected(rule: str, hi: float | None, upper_gate: bool = True) -> torch.Tensor:
    """Hand-written Sect. 4 rules: gradient 1(0<X<h), deconvnet 1(R>0), guided both."""
    pos = (X > 0).float()
    below = (X < hi).float() if hi is not None else torch.ones_like(X)
    r_pos = (W > 0).float()
    if rule == "gradient":
        return W * pos * below
    if rule == "deconvnet":
        return W * r_pos
    return W * r_pos * pos * (below if upper_gate else 1.0)


FORMS = {
    "nn.ReLU": (lambda: nn.Sequential(Lambda(lambda x: x), nn.ReLU()), None),
    "nn.ReLU(inplace)": (lambda: nn.Sequential(Lambda(lambda x: x), nn.ReLU(inplace=True)), None),
    "nn.ReLU6(inplace)": (lambda: nn.Sequential(Lambda(lambda x: x), nn.ReLU6(inplace=True)), 6.0),
    "nn.ReLU6": (lambda: nn.Sequential(Lambda(lambda x: x), nn.ReLU6()), 6.0),
    "nn.Hardtanh(0,5)": (lambda: nn.Sequential(Lambda(lambda x: x), nn.Hardtanh(0.0, 5.0)), 5.0),
    "F.relu": (lambda: Lambda(F.relu), None),
    "F.relu(inplace)": (lambda: Lambda(lambda x: F.relu(x, inplace=True)), None),
    "F.relu_": (lambda: Lambda(lambda x: F.relu_(x)), None),
    "torch.relu": (lambda: Lambda(lambda x: torch.relu(x)), None),
    "torch.relu_": (lambda: Lambda(lambda x: torch.relu_(x)), None),
    "Tensor.relu": (lambda: Lambda(lambda x: x.relu()), None),
    "Tensor.relu_": (lambda: Lambda(lambda x: x.relu_()), None),
    "F.relu6": (lambda: Lambda(F.relu6), 6.0),
    "F.relu6(inplace)": (lambda: Lambda(lambda x: F.relu6(x, inplace=True)), 6.0),
    "F.hardtanh(0,6)": (lambda: Lambda(lambda x: F.hardtanh(x, 0.0, 6.0)), 6.0),
    "torch.clamp(min=0)": (lambda: Lambda(lambda x: torch.clamp(x, min=0)), None),
    "torch.clamp(0,6)": (lambda: Lambda(lambda x: torch.clamp(x, 0, 6)), 6.0),
    "torch.clip(min=0)": (lambda: Lambda(lambda x: torch.clip(x, min=0)), None),
    "torch.clamp_min(0)": (lambda: Lambda(lambda x: torch.clamp_min(x, 0)), None),
    "Tensor.clamp(min=0)": (lambda: Lambda(lambda x: x.clamp(min=0)), None),
    "Tensor.clamp_(0,6)": (lambda: Lambda(lambda x: x.clamp_(0, 6)), 6.0),
    "Tensor.clamp_min_(0)": (lambda: Lambda(lambda x: x.clamp_min_(0)), None),
}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("rule", di.RULES)
def test_every_rectifier_form_follows_the_rule(form, rule):
    make, hi = FORMS[form]
    net = make()
    got = rule_grad(net, rule)
    want = expected(rule, hi)
    if rule == "gradient":
        # At x == 0 a rectifier has no derivative; the gradient rule is autograd's own choice
        # there, which differs between forms and torch releases (clamp: 1 on 2.9, 0 on 2.14).
        xx = X.clone().requires_grad_()
        (W * make()(xx)).sum().backward()
        want = torch.where(X == 0, xx.grad, want)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("form", list(FORMS))
def test_forward_values_and_inplace_semantics_unchanged(form):
    make, hi = FORMS[form]
    net = make()
    ref = net(X.clone())
    for rule in di.RULES:
        xx = X.clone().requires_grad_()
        with di.backward_rule(net, rule):
            y = net(xx)
        assert torch.equal(y, ref)
        assert y.requires_grad


def test_inplace_module_still_writes_its_input():
    relu = nn.ReLU(inplace=True)
    net = nn.Sequential(relu)
    x = X.clone().requires_grad_()
    h = x * 1.0
    with di.backward_rule(net, "guided"):
        y = net(h)
    assert y.data_ptr() == h.data_ptr()
    assert torch.equal(h, X.clamp(min=0))
    y.sum().backward()                                  # the in-place graph is valid
    torch.testing.assert_close(x.grad, (X > 0).float())


def test_upper_gate_choice_for_bounded_rectifiers():
    net = nn.Sequential(Lambda(lambda x: x), nn.ReLU6(inplace=True))
    got = rule_grad(net, "guided", upper_gate=False)
    torch.testing.assert_close(got, expected("guided", 6.0, upper_gate=False), rtol=0, atol=0)
    assert got[4] == W[4] and rule_grad(net, "guided")[4] == 0    # X = 7 > 6: the gate differs


def test_non_rectifier_clamps_and_hardtanh_are_left_alone():
    for fn in (lambda x: torch.clamp(x, min=-1), lambda x: F.hardtanh(x), lambda x: x.clamp(max=3)):
        net = nn.Sequential(nn.ReLU(), Lambda(fn))           # the ReLU makes the net acceptable
        x = X.clone().requires_grad_()
        with di.backward_rule(net, "guided") as stats:
            net(x).sum().backward()
        assert stats.calls == 1                              # only the nn.ReLU


def test_rule_is_fixed_when_the_forward_runs():
    net = nn.Sequential(Lambda(lambda x: x), nn.ReLU())
    xx = X.clone().requires_grad_()
    with di.backward_rule(net, "deconvnet"):
        y = net(xx)
    (W * y).sum().backward()                                  # after the block
    torch.testing.assert_close(xx.grad, expected("deconvnet", None))


# --- refusals and bad input ---------------------------------------------------------------------


def test_refuses_networks_without_rectifier():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    for rule in ("deconvnet", "guided"):
        with pytest.raises(ValueError, match="no rectifier"):
            with di.backward_rule(net, rule):
                pass
    with di.backward_rule(net, "gradient") as stats:       # the gradient is always defined
        net(torch.randn(1, 3, requires_grad=True)).sum().backward()
    assert stats.calls == 0


def test_refuses_on_exit_when_no_rectifier_was_met():
    net = Lambda(lambda x: torch.clamp(x, min=-1.0))        # its source mentions clamp
    x = torch.randn(5, requires_grad=True)
    with pytest.raises(ValueError, match="was not applied"):
        with di.backward_rule(net, "guided"):
            net(x).sum().backward()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backward rule"):
        with di.backward_rule(nn.ReLU(), "lrp"):
            pass
    with pytest.raises(TypeError, match="nn.Module"):
        with di.backward_rule(lambda x: x, "guided"):
            pass


def test_warns_about_non_rectifier_activations():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.SiLU())
    with pytest.warns(UserWarning, match="SiLU"):
        with di.backward_rule(net, "guided"):
            pass


# --- state restored --------------------------------------------------------------------------------

_FUNCS = [(torch, "relu"), (torch, "relu_"), (torch, "clamp"), (torch, "clip"), (torch, "clamp_min"),
          (F, "relu"), (F, "relu_"), (F, "relu6"), (F, "hardtanh"), (F, "hardtanh_")]
_METHODS = ["relu", "relu_", "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_"]


def _globals_snapshot():
    return ([getattr(o, n) for o, n in _FUNCS], [n in vars(torch.Tensor) for n in _METHODS])


@pytest.mark.parametrize("rule", di.RULES)
def test_state_restored_also_on_exception(rule):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU6(inplace=True),
                        Lambda(F.relu), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    before, funcs = model_state(net), _globals_snapshot()
    x = torch.randn(2, 3, 8, 8)
    ref = net(x)
    with pytest.raises(RuntimeError, match="boom"):
        with di.backward_rule(net, rule):
            xx = x.clone().requires_grad_()
            torch.autograd.grad(net(xx).sum(), xx)
            raise RuntimeError("boom")
    assert_same_state(before, model_state(net))
    assert _globals_snapshot() == funcs
    assert all(m.inplace for m in net.modules() if hasattr(m, "inplace"))
    assert torch.equal(net(x.detach()), ref)


@pytest.mark.slow
def test_state_restored_on_pretrained_model(clf):
    before, funcs = model_state(clf.net), _globals_snapshot()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    with di.backward_rule(clf.net, "guided"):
        clf.net(x)[0, 0].backward()
    assert_same_state(before, model_state(clf.net))
    assert _globals_snapshot() == funcs


def test_nested_blocks_restore_in_order():
    net = nn.Sequential(Lambda(lambda x: x), nn.ReLU())
    relu = net[1]
    funcs = _globals_snapshot()
    with di.backward_rule(net, "deconvnet"):
        with di.backward_rule(net, "guided"):
            torch.testing.assert_close(rule_grad(net, "guided"), expected("guided", None))
        xx = X.clone().requires_grad_()
        (W * net(xx)).sum().backward()                        # the outer rule again
        torch.testing.assert_close(xx.grad, expected("deconvnet", None))
    assert "forward" not in relu.__dict__ and _globals_snapshot() == funcs


def test_no_grad_forward_inside_block_is_fine():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with di.backward_rule(net, "guided") as stats:
        with torch.no_grad():
            net(torch.randn(2, 3))
    assert stats.calls == 0 and stats.seen == 1 and stats.net_calls == 1


# --- agreement with Captum on plain-ReLU networks --------------------------------------------------


def _small_vgg(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_captum_on_plain_relu_nets(seed):
    from captum.attr import Deconvolution, GuidedBackprop

    net = _small_vgg(seed)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    target = [0, 3, 4]
    for rule, peer in (("guided", GuidedBackprop), ("deconvnet", Deconvolution)):
        xx = x.clone().requires_grad_()
        with di.backward_rule(net, rule):
            net(xx).gather(1, torch.tensor(target)[:, None]).sum().backward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = peer(net).attribute(x.clone().requires_grad_(), target=target)
        rel = (xx.grad - theirs).abs().max() / theirs.abs().max()
        assert rel < 1e-4, (rule, float(rel))
        xg = x.clone().requires_grad_()
        net(xg).gather(1, torch.tensor(target)[:, None]).sum().backward()
        assert not torch.allclose(xx.grad, xg.grad)         # the rule is not the gradient here


@pytest.mark.slow
def test_rules_applied_on_efficientnet_lite0_where_captum_is_not(clf):
    """Lite0 uses in-place nn.ReLU6 inside timm's BatchNormAct2d (``x = self.act(x)``)."""
    from captum.attr import GuidedBackprop

    assert len(find_rectifiers(clf.net)) == 33
    assert {type(m) for _, m in find_rectifiers(clf.net)} == {nn.ReLU6}
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    grads = {}
    for rule in di.RULES:
        xx = x.clone().requires_grad_()
        with di.backward_rule(clf.net, rule) as stats:
            clf.net(xx)[0, 7].backward()
        grads[rule] = xx.grad
        assert stats.calls == (0 if rule == "gradient" else 33)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = GuidedBackprop(clf.net).attribute(x.clone().requires_grad_(), target=7)
    assert torch.equal(theirs, grads["gradient"])          # Captum: silently the plain gradient
    for rule in ("deconvnet", "guided"):
        rel = (grads[rule] - grads["gradient"]).abs().max() / grads["gradient"].abs().max()
        assert rel > 0.1, (rule, float(rel))                # ours: the rule is really applied


# --- properties ------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_in=st.integers(1, 6), n_hid=st.integers(1, 8), n_out=st.integers(1, 4))
def test_two_layer_rules_match_hand_formulas(seed, n_in, n_hid, n_out):
    """f = e_c . W2 relu(W1 x): gradient W1^T (1(h>0) W2^T e_c), deconvnet W1^T relu(W2^T e_c),
    guided W1^T (1(h>0) relu(W2^T e_c)); the DeconvNet map does not depend on x at all."""
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(n_hid, n_in, generator=g, dtype=torch.float64), torch.randn(n_out, n_hid, generator=g, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(n_in, n_hid, bias=False), nn.ReLU(), nn.Linear(n_hid, n_out, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(w1)
        net[2].weight.copy_(w2)
    c = seed % n_out
    back = w2[c]
    maps = {}
    for trial in range(2):
        x = torch.randn(n_in, generator=g, dtype=torch.float64)
        on = (w1 @ x > 0).double()
        hand = {"gradient": w1.T @ (on * back), "deconvnet": w1.T @ back.clamp(min=0),
                "guided": w1.T @ (on * back.clamp(min=0))}
        for rule in di.RULES:
            xx = x.clone().requires_grad_()
            with di.backward_rule(net, rule):
                net(xx)[c].backward()
            torch.testing.assert_close(xx.grad, hand[rule], rtol=1e-12, atol=1e-12)
            maps[rule, trial] = xx.grad
    assert torch.equal(maps["deconvnet", 0], maps["deconvnet", 1])


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=30), seed=st.integers(0, 999))
def test_guided_is_deconvnet_gated_by_the_forward(values, seed):
    """At one rectifier: guided = deconvnet * 1(0<X<h), gradient = R * 1(0<X<h), deconvnet >= 0."""
    x = torch.tensor(values, dtype=torch.float64)
    w = torch.randn(len(values), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for layer, hi in ((nn.ReLU(), np.inf), (nn.ReLU6(inplace=True), 6.0)):
        net = nn.Sequential(Lambda(lambda t: t), layer)
        gate = ((x > 0) & (x < hi)).double()
        d = rule_grad(net, "deconvnet", x=x, w=w)
        assert (d >= 0).all()
        torch.testing.assert_close(rule_grad(net, "guided", x=x, w=w), d * gate, rtol=0, atol=0)
        torch.testing.assert_close(rule_grad(net, "gradient", x=x, w=w), w * gate, rtol=0, atol=0)


def test_deterministic():
    net = _small_vgg(0)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    out = []
    for _ in range(2):
        xx = x.clone().requires_grad_()
        with di.backward_rule(net, "guided"):
            net(xx)[:, 1].sum().backward()
        out.append(xx.grad)
    assert torch.equal(out[0], out[1])


# --- chapter-4 measurements --------------------------------------------------------------------------


def test_map_correlation_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(backprop.map_correlation(a, 2 * a + 1), torch.tensor([1.0]))
    torch.testing.assert_close(backprop.map_correlation(a, -a), torch.tensor([-1.0]))
    b = torch.tensor([[1.0, -1.0, -1.0, 1.0]])                # orthogonal to a - mean(a)
    torch.testing.assert_close(backprop.map_correlation(a, b), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="same shape"):
        backprop.map_correlation(a, a[:, :3])


def test_input_gradient_matches_autograd_and_checks_input():
    net = _small_vgg(1)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    for rule in di.RULES:
        xx = x.clone().requires_grad_()
        with di.backward_rule(net, rule):
            net(xx)[[0, 1], [2, 4]].sum().backward()
        torch.testing.assert_close(backprop.input_gradient(net, x, [2, 4], rule), xx.grad)
    before = model_state(net)
    backprop.input_gradient(net, x, [2, 4], "guided")
    assert_same_state(before, model_state(net))
    with pytest.raises(ValueError, match="NaN"):
        backprop.input_gradient(net, x * float("nan"), [0, 0])
    with pytest.raises(ValueError, match="2 images"):
        backprop.input_gradient(net, x, [0])
    with pytest.raises(ValueError, match="out of range"):
        backprop.input_gradient(net, x, [0, 5])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        backprop.input_gradient(net, x[0], [0])


def test_bounded_rectifier_saturation_by_hand():
    net = nn.Sequential(nn.Identity(), nn.ReLU6(inplace=True))
    before = model_state(net)
    assert backprop.bounded_rectifier_saturation(net, torch.tensor([7.0, 1.0, -1.0, 8.0, 6.0, 5.9])) == 0.5
    assert_same_state(before, model_state(net))
    with pytest.raises(ValueError, match="no bounded rectifier"):
        backprop.bounded_rectifier_saturation(nn.Sequential(nn.ReLU()), torch.zeros(2))


@pytest.mark.slow
def test_class_sensitivity_small_input(clf):
    x = clf.normalize(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    corr = di.saliency_maps.class_sensitivity(clf, x, [1, 2], [500, 600])
    assert set(corr) == set(di.RULES) and all(c.shape == (2,) for c in corr.values())
    assert (corr["deconvnet"] > 0.99).all()                    # Lite0: no pooling switches
    assert (corr["gradient"] < corr["deconvnet"]).all()
    with pytest.raises(ValueError, match="one class per image"):
        di.saliency_maps.class_sensitivity(clf, x, [1, 2], [3])


def test_score_gradient_is_eq4_and_top1_of_groups():
    net = _small_vgg(2)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    w, t = backprop.score_gradient(net, x, group=2)
    avg = net(x).detach().view(2, 2, -1).mean(1).argmax(1)
    assert torch.equal(t, avg.repeat_interleave(2))
    torch.testing.assert_close(w, backprop.input_gradient(net, x, t))
    with pytest.raises(ValueError, match="groups of 3"):
        backprop.score_gradient(net, x, group=3)


def test_no_import_cycle_and_no_heavy_optional_import():
    import subprocess
    import sys

    code = ("import sys, deepinside\n"
            "heavy = [m for m in ('cv2', 'maxflow', 'matplotlib', 'ipywidgets') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "import deepinside.methods.backprop as b, inspect\n"
            "assert 'saliency' not in inspect.getsource(b).split('def ')[0], 'backprop imports saliency'\n"
            "assert callable(deepinside.saliency)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# --- concurrency ------------------------------------------------------------------------------------


def _stress(jobs, calls: int) -> list[list[torch.Tensor]]:
    """Run each job ``calls`` times in its own thread, all threads together; their outputs."""
    barrier = threading.Barrier(len(jobs))
    out: list[list[torch.Tensor]] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def run(j: int) -> None:
        try:
            barrier.wait()
            for _ in range(calls):
                out[j].append(jobs[j]())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


def _assert_clean(*nets: nn.Module, before: list[dict], funcs) -> None:
    assert _globals_snapshot() == funcs, "a patched torch function was left installed"
    assert backprop._INSTALLED[0] == 0 and not backprop._SAVED and not backprop._NET_HOOK
    assert not nn.modules.module._global_forward_pre_hooks
    for net, b in zip(nets, before):
        assert_same_state(b, model_state(net))
        assert all("forward" not in vars(m) or is_lean(m) for m in net.modules()), \
            "instance forward left"   # (load_classifier's lean BatchNorm is the network's own)


@pytest.mark.parametrize("same_model", [False, True], ids=["two models", "one model"])
def test_two_threads_guided_and_gradient_give_their_single_thread_maps(same_model):
    clf1 = conv_clf(seed=0, relu6=True)
    clf2 = clf1 if same_model else conv_clf(seed=1)
    im1, im2 = rand_pil(12, 10, seed=1), rand_pil(10, 12, seed=2)
    jobs = [lambda: di.saliency(clf1, [im1], target=3, rule="guided"),
            lambda: di.saliency(clf2, [im2], target=3, rule="gradient")]
    ref = [f() for f in jobs]
    assert not torch.allclose(ref[0], di.saliency(clf1, [im1], target=3))   # the rule matters
    before, funcs = [model_state(clf1.net), model_state(clf2.net)], _globals_snapshot()
    out = _stress(jobs, calls=50)
    for r, maps in zip(ref, out):
        assert len(maps) == 50 and all(torch.equal(m, r) for m in maps)
    _assert_clean(clf1.net, clf2.net, before=before, funcs=funcs)


def test_overlapping_blocks_in_two_threads_leave_nothing_behind():
    net = _small_vgg(3)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ref = {rule: backprop.input_gradient(net, x, [1, 2], rule) for rule in di.RULES}
    before, funcs = [model_state(net)], _globals_snapshot()
    out = _stress([lambda: backprop.input_gradient(net, x, [1, 2], "guided"),
                   lambda: backprop.input_gradient(net, x, [1, 2], "deconvnet"),
                   lambda: backprop.input_gradient(net, x, [1, 2], "gradient")], calls=30)
    for rule, grads in zip(("guided", "deconvnet", "gradient"), out):
        assert all(torch.equal(g, ref[rule]) for g in grads), rule
    _assert_clean(net, before=before, funcs=funcs)
    xx = x.clone().requires_grad_()                         # plain autograd is plain again
    net(xx)[[0, 1], [1, 2]].sum().backward()
    # same numbers up to rounding (score_gradient runs channels-last on CPU, this does not)
    torch.testing.assert_close(xx.grad, ref["gradient"], rtol=1e-5, atol=1e-6)


def test_thread_without_block_is_untouched_while_another_holds_one():
    net = nn.Sequential(Lambda(lambda x: x), nn.ReLU())
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with di.backward_rule(net, "deconvnet"):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert entered.wait(10)
        torch.testing.assert_close(rule_grad(net, "gradient"), expected("gradient", None))
        torch.testing.assert_close(rule_grad(net, "guided"), expected("guided", None))
    finally:
        release.set()
        t.join()
    assert backprop._INSTALLED[0] == 0


@pytest.mark.slow
def test_two_threads_on_the_pretrained_model(clf, photos):
    ims = [photos["chelsea"], photos["coffee"]]
    jobs = [lambda: di.saliency(clf, [ims[0]], target=909, rule="guided"),
            lambda: di.saliency(clf, [ims[1]], target=909, rule="gradient")]
    ref = [f() for f in jobs]
    before, funcs = [model_state(clf.net)], _globals_snapshot()
    out = _stress(jobs, calls=4)
    for r, maps in zip(ref, out):
        assert all(torch.equal(m, r) for m in maps)
    _assert_clean(clf.net, before=before, funcs=funcs)
