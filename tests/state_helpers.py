"""Model-state snapshots: what every call of the package must leave unchanged."""

from __future__ import annotations

import torch


def model_state(net: torch.nn.Module) -> dict:
    """Everything a call must leave unchanged: modes, requires_grad flags, hooks, parameters."""
    return {
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in net.modules()],
        "forward": [type(m).forward for m in net.modules()] + [m.__dict__.get("forward") for m in net.modules()],
        "inplace": [getattr(m, "inplace", None) for m in net.modules()],
        "params": [p.detach().clone() for p in net.parameters()],
        "grads": [p.grad for p in net.parameters()],
    }


def assert_same_state(before: dict, after: dict) -> None:
    for k in before:
        if k == "params":
            assert all(torch.equal(a, b) for a, b in zip(before[k], after[k])), "parameters changed"
        elif k == "grads":
            assert all((a is None) == (b is None) for a, b in zip(before[k], after[k])), "parameter .grad changed"
        else:
            assert before[k] == after[k], f"model state {k!r} changed"
