"""The lean eval-mode BatchNorm (deepinside.core.batchnorm): same outputs, same input gradients,
less saved for backward, the layer's own forward whenever the lean path does not apply."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from deepinside.core.batchnorm import is_lean, lean_batchnorm


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                        nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 5))
    for m in net.modules():            # non-trivial statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval().requires_grad_(False)


def _saved_bytes(net: nn.Module, x: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x.clone().requires_grad_(True))
    return sum(storages.values())


def _output_and_grad(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = net(x)
    out[:, 2].sum().backward()
    return out.detach(), x.grad


def test_same_outputs_and_input_gradients_less_saved():
    x = torch.randn(4, 3, 6, 6)
    stock, lean = _net(), _net()
    assert lean_batchnorm(lean) == 2
    o1, g1 = _output_and_grad(stock, x)
    o2, g2 = _output_and_grad(lean, x)
    assert torch.equal(o1, o2)
    torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-6)
    # each BatchNorm's (4, 8, 6, 6) / (4, 4, 6, 6) float input is no longer kept
    assert _saved_bytes(stock, x) - _saved_bytes(lean, x) >= 4 * (8 + 4) * 36 * 4


def test_training_mode_and_trainable_parameters_take_the_layers_own_forward():
    x = torch.randn(4, 3, 6, 6)
    net = _net()
    lean_batchnorm(net)
    bn = net[1]
    net.train()
    before = bn.running_mean.clone()
    net(x)                                       # training: batch statistics, running update
    assert not torch.equal(bn.running_mean, before)
    net.eval()
    net.requires_grad_(True)                     # trainable affine parameters get gradients
    net(x).sum().backward()
    assert bn.weight.grad is not None and bn.bias.grad is not None


def test_idempotent_copies_and_pickles():
    net = _net()
    assert lean_batchnorm(net) == lean_batchnorm(net) == 2
    x = torch.randn(2, 3, 6, 6)
    twin = copy.deepcopy(net)
    twin[1].running_mean.add_(1.0)               # the copy's forward uses the copy's buffers
    assert not torch.equal(twin(x), net(x))
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert torch.equal(back(x), net(x))
    assert torch.equal(pickle.loads(pickle.dumps(net))(x), net(x))


def test_other_subclasses_are_left_alone():
    class Custom(nn.BatchNorm2d):
        def forward(self, x):  # noqa: D401 - a subclass with its own forward
            return super().forward(x) * 2

    net = nn.Sequential(Custom(3)).eval()
    assert lean_batchnorm(net) == 0
    assert "forward" not in net[0].__dict__ and not is_lean(net[0])


@pytest.mark.slow
def test_the_default_classifier_is_lean_and_exact():
    import deepinside as di

    clf = di.load_classifier()
    bns = [m for m in clf.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all("forward" in m.__dict__ for m in bns)
    stock = copy.deepcopy(clf.net)
    for m in stock.modules():
        m.__dict__.pop("forward", None)
    x = torch.randn(2, 3, 224, 224)
    o1, g1 = _output_and_grad(stock, x)
    o2, g2 = _output_and_grad(clf.net, x)
    assert torch.equal(o1, o2)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6 * float(g1.abs().max()))
    assert _saved_bytes(clf.net, x) < 0.75 * _saved_bytes(stock, x)


# -- the inference twin: BatchNorm folded into the convolution before it ----------------------------

from deepinside.core.batchnorm import inference_twin, twin_forward  # noqa: E402


def test_twin_folds_every_conv_batchnorm_pair_and_scores_the_same():
    net = _net()
    before = copy.deepcopy(net.state_dict())
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    twin = inference_twin(net)
    assert twin is not net
    assert not any(isinstance(m, nn.BatchNorm2d) for m in twin.modules())
    assert all(isinstance(m, nn.BatchNorm2d) for m in (net[1], net[4]))   # net untouched
    with torch.no_grad():
        want, got = net(x), twin_forward(net, x)
        assert torch.allclose(got, want, atol=1e-5) and not torch.equal(twin(x), net(x) * 0)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert inference_twin(net) is twin   # made once per state


def test_twin_is_remade_after_an_in_place_change_and_skipped_for_hooked_nets():
    net = _net()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first = inference_twin(net)
        twin_forward(net, x)
        net[1].running_mean.add_(0.5)          # in place: the old twin is stale
        assert inference_twin(net) is not first
        assert torch.allclose(twin_forward(net, x), net(x), atol=1e-5)
        h = net[2].register_forward_hook(lambda m, i, o: None)
        try:
            assert inference_twin(net) is net    # the twin would not run the hook
        finally:
            h.remove()
        assert inference_twin(net) is not net


class _Reordered(nn.Module):
    """A BatchNorm listed after a convolution but applied before it: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x)).mean((2, 3))


def test_a_fold_that_breaks_the_forward_is_caught_and_the_network_used():
    torch.manual_seed(0)
    net = _Reordered().eval().requires_grad_(False)
    net.bn.running_mean.uniform_(-2, 2)
    net.bn.running_var.uniform_(0.2, 3)
    x = torch.randn(3, 3, 5, 5)
    with torch.no_grad():
        assert inference_twin(net) is not net            # folded by position ...
        assert torch.equal(twin_forward(net, x), net(x))  # ... caught on the first batch
        assert inference_twin(net) is net
        assert torch.equal(twin_forward(net, x), net(x))


def test_scores_of_the_default_classifier_use_the_twin_and_match_the_network():
    import deepinside as di

    clf = di.load_classifier()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    got = clf.scores(x)
    with torch.no_grad():
        want = clf.net(x)
    assert torch.allclose(got, want, atol=1e-4 * (1 + float(want.abs().max())))
    twin = inference_twin(clf.net)
    assert twin is not clf.net and sum(isinstance(m, nn.BatchNorm2d) for m in twin.modules()) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in clf.net.modules()) >= 40


# -- gradient_net: the twin differentiated for input gradients (issue 21) -------------------------


def test_gradient_net_gives_the_twin_with_the_same_input_gradient():
    from deepinside.core.batchnorm import gradient_net

    net = _net()
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    g = gradient_net(net, x)
    assert g is inference_twin(net) and g is not net
    assert not any(p.requires_grad for p in g.parameters())      # a constant copy
    want_out, want_grad = _output_and_grad(net, x)
    got_out, got_grad = _output_and_grad(g, x)
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in net.parameters())


def test_gradient_net_is_the_network_itself_when_the_twin_would_differ():
    from deepinside.core.batchnorm import gradient_net

    net = _net()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    net.train()                                   # train mode: BatchNorm is not a fixed map
    assert gradient_net(net, x) is net
    net.eval()
    for register in (lambda m: m.register_forward_hook(lambda *a: None),
                     lambda m: m.register_full_backward_hook(lambda *a: None),
                     lambda m: m.register_full_backward_pre_hook(lambda *a: None)):
        h = register(net[2])
        try:
            assert gradient_net(net, x) is net    # the twin would not run the hook
        finally:
            h.remove()
    assert gradient_net(net, x) is not net
    bad = _Reordered().eval().requires_grad_(False)   # a fold that breaks the forward
    bad.bn.running_mean.uniform_(-2, 2)
    assert gradient_net(bad, torch.randn(2, 3, 5, 5)) is bad


def test_score_gradient_folded_uses_the_twin_only_outside_rule_blocks(monkeypatch):
    from deepinside.methods import backprop

    net = nn.Sequential(_net(), nn.ReLU())
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    seen = []
    real = backprop.gradient_net
    monkeypatch.setattr(backprop, "gradient_net", lambda n, xx: seen.append(1) or real(n, xx))
    exact, _ = backprop.score_gradient(net, x)
    assert not seen                           # eq. 4 by default: autograd on the network itself
    w, _ = backprop.score_gradient(net, x, folded=True)
    assert len(seen) == 1
    with backprop.backward_rule(net, "guided"):
        backprop.score_gradient(net, x, folded=True)
    assert len(seen) == 1                     # a rule block: the network itself, hooks and all
    xg = x.clone().requires_grad_(True)
    s = net(xg)
    (want,) = torch.autograd.grad(s.gather(1, s.argmax(1, keepdim=True)).sum(), xg)
    torch.testing.assert_close(w, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(exact, want, rtol=1e-5, atol=1e-6)
