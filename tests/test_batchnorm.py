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
