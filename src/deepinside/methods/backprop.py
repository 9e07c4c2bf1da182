"""Backward rules for rectifiers: gradient, DeconvNet and guided back-propagation (Sect. 4).

Simonyan et al. (2014), Sect. 4, "Relation to Deconvolutional Networks", compare how a signal
travels backwards through a RELU layer :math:`X_{n+1} = \\max(X_n, 0)`:

- the gradient (sub-gradient): :math:`\\partial f/\\partial X_n = \\partial f/\\partial X_{n+1}
  \\mathbf{1}(X_n > 0)`;
- the DeconvNet of Zeiler & Fergus (2014): :math:`R_n = R_{n+1} \\mathbf{1}(R_{n+1} > 0)`, "the sign
  indicator is computed on the output reconstruction :math:`R_{n+1}` instead of the layer input
  :math:`X_n`";
- guided back-propagation (Springenberg et al. 2015) applies both indicators:
  :math:`R_n = R_{n+1} \\mathbf{1}(X_n > 0) \\mathbf{1}(R_{n+1} > 0)`.

Convolutions, pooling and linear layers back-propagate identically under the three rules (the
paper's other two statements, proved numerically in :mod:`deepinside.deconvnet`), so a rule is a
property of the rectifiers only. :func:`backward_rule` switches every rectifier to a rule for the
duration of a ``with`` block, in the calling thread only; ordinary autograd then computes DeconvNet
and guided "gradients" through the same code path as the true gradient. :func:`score_gradient` is
the package's one implementation of eq. 4, the signed input gradient under the rule in force.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.batchnorm import gradient_net
from ..core.hooks import forward_hooks

__all__ = ["RULES", "backward_rule", "find_rectifiers", "RuleStats", "score_gradient",
           "input_gradient", "map_correlation", "bounded_rectifier_saturation"]

#: The three backward rules of Sect. 4, in the order the chapter shows them.
RULES: tuple[str, ...] = ("gradient", "deconvnet", "guided")

# Unpatched kernels, bound at import time, so the rectifier itself never goes through a patch.
_relu = torch.relu
_relu_ = torch.relu_
_clamp = torch.clamp
_clamp_ = torch.clamp_
_threshold_backward = torch.ops.aten.threshold_backward  # (grad, y, 0) = grad * 1(y > 0)

# Activations that are not rectifiers in the sense of Sect. 4: a rule cannot act on them.
_UNSUPPORTED_ACTIVATIONS = (nn.SiLU, nn.GELU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU,
                            nn.Hardswish, nn.Mish, nn.Softplus, nn.RReLU)

_SOURCE_MENTION = re.compile(r"\b(relu6?_?|hardtanh_?|clamp(_min)?_?|clip_?)\s*\(")


class _Rectifier(torch.autograd.Function):
    """:math:`Y = \\min(\\max(X, 0), h)` (``h = inf`` for a RELU) whose backward applies a rule.

    Forward is the exact rectifier (in place when asked, like ``nn.ReLU(inplace=True)``). Backward
    of the incoming signal :math:`R_{n+1}` (``grad``):

    - ``"deconvnet"``: :math:`R_{n+1} \\mathbf{1}(R_{n+1} > 0)`; the forward pass is not consulted;
    - ``"guided"``: :math:`R_{n+1} \\mathbf{1}(R_{n+1} > 0) \\mathbf{1}(0 < X_n)`, times
      :math:`\\mathbf{1}(X_n < h)` when ``upper_gate`` (see :func:`backward_rule`).

    The forward gate is read from the output :math:`Y` (saved instead of :math:`X`, so an
    in-place rectifier costs no extra memory): :math:`Y > 0 \\iff X > 0` and
    :math:`Y < h \\iff X < h`.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, hi: float | None, rule: str, inplace: bool,
                upper_gate: bool) -> torch.Tensor:
        if hi is None:
            y = _relu_(x) if inplace else _relu(x)
        else:
            y = _clamp_(x, 0, hi) if inplace else _clamp(x, 0, hi)
        if inplace:
            ctx.mark_dirty(x)
        ctx.rule = rule
        ctx.hi = hi if upper_gate else None
        if rule == "guided":
            ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        if ctx.rule == "deconvnet":
            return _relu(grad), None, None, None, None          # R_{n+1} 1(R_{n+1} > 0)
        (y,) = ctx.saved_tensors
        out = _threshold_backward(grad, y, 0)                   # R_{n+1} 1(X_n > 0): one pass
        if ctx.hi is not None:
            out = out.masked_fill_(y >= ctx.hi, 0)              # ... 1(X_n < h)
        return out.relu_(), None, None, None, None              # ... 1(R_{n+1} > 0), in place


@dataclass
class RuleStats:
    """What a :func:`backward_rule` block acted on (returned by ``with ... as stats``).

    Attributes:
        rule: the rule in force.
        modules: qualified names of the rectifier modules switched to the rule.
        calls: rectifier applications (modules and functional calls) recorded under the rule
            (input requiring grad, grad mode on); EfficientNet-Lite0 counts 33 per forward pass.
        seen: rectifier calls met during the block, recorded under the rule or not (e.g. under
            ``torch.no_grad()``); filled in on exit.
        net_calls: forward passes through the network itself during the block.
    """

    rule: str
    modules: list[str] = field(default_factory=list)
    calls: int = 0
    seen: int = 0
    net_calls: int = 0


def _rectifier_bound(m: nn.Module) -> tuple[bool, float | None]:
    """``(is_rectifier, upper bound h)`` of a module: ReLU -> (True, None), ReLU6 -> (True, 6)."""
    if isinstance(m, nn.ReLU):
        return True, None
    if isinstance(m, nn.Hardtanh) and float(m.min_val) == 0.0 and float(m.max_val) > 0.0:
        return True, float(m.max_val)          # nn.ReLU6 is Hardtanh(0, 6)
    return False, None


def find_rectifiers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The rectifier modules of ``net`` a rule acts on: ``nn.ReLU`` and ``nn.Hardtanh`` with lower
    bound 0 (``nn.ReLU6`` included), in ``named_modules`` order, as ``(qualified_name, module)``."""
    return [(n, m) for n, m in net.named_modules() if _rectifier_bound(m)[0]]


@functools.lru_cache(maxsize=None)
def _source_mentions_rectifier(fn: Callable) -> bool:
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return False
    return bool(_SOURCE_MENTION.search(src))


def _may_call_functional_rectifier(m: nn.Module) -> bool:
    """Whether ``m.forward`` (or a function stored on ``m``) mentions relu/relu6/hardtanh/clamp/clip.

    A cheap static look used only to refuse networks that cannot hold a rectifier; the exit check
    of :func:`backward_rule` catches the rest at run time.
    """
    if _source_mentions_rectifier(type(m).forward):
        return True
    for v in vars(m).values():
        if callable(v) and not isinstance(v, (nn.Module, type)):
            fn = getattr(v, "func", v)                     # functools.partial
            if _SOURCE_MENTION.search(f"{getattr(fn, '__name__', '')}(") or \
                    (inspect.isfunction(fn) and _source_mentions_rectifier(fn)):
                return True
    return False


# ----------------------------------------------------------------------------------------------
# Thread-scoped dispatch. The functional rectifiers (which the rectifier modules call too:
# nn.ReLU -> F.relu -> torch.relu(_), nn.ReLU6 / nn.Hardtanh -> F.hardtanh -> torch._C._nn.hardtanh(_))
# are replaced by dispatchers while at least one block is open in any thread (reference-counted,
# under a lock). A dispatcher reads the rule from the calling thread's own stack of open blocks
# and falls through to the original function when that stack is empty, so a block in one thread
# never changes what another thread computes, two blocks on two models in two threads do not
# wait on each other, and after the last block closes every function is the original again.
# Nothing is stored on the network: no instance attribute, no hook, no changed flag.


class _ThreadState(threading.local):
    """Per-thread: the stack of open blocks (innermost last)."""

    def __init__(self) -> None:
        self.stack: list[_Context] = []


_LOCAL = _ThreadState()
_INSTALL_LOCK = threading.Lock()
_INSTALLED = [0]                          # open blocks, all threads together
_SAVED: list[tuple[Any, str, bool, Any]] = []   # what the dispatchers replaced
_NET_HOOK: list[Any] = []                 # the global module pre-hook handle while installed


@dataclass
class _Context:
    """One open ``backward_rule`` block of one thread."""

    net: nn.Module
    rule: str
    upper_gate: bool
    stats: RuleStats

    def apply(self, x: torch.Tensor, hi: float | None, inplace: bool) -> torch.Tensor:
        self.stats.calls += 1
        return _Rectifier.apply(x, hi, self.rule, inplace, self.upper_gate)


def _route(input: Any, is_rectifier: bool) -> _Context | None:
    """The calling thread's innermost block when this call must go through its rule, else None.

    Counts every rectifier call met inside a block (``RuleStats.seen``), routed or not."""
    stack = _LOCAL.stack
    if not stack or not is_rectifier or not isinstance(input, torch.Tensor):
        return None
    for open_ctx in stack:                 # an outer block sees its inner blocks' calls
        open_ctx.stats.seen += 1
    ctx = stack[-1]
    if ctx.rule == "gradient":  # an explicit gradient block inside another rule's block
        return None
    if input.is_floating_point() and input.requires_grad and torch.is_grad_enabled():
        return ctx
    return None


def _is_zero(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0


def _is_pos(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)


def _make_relu(orig: Callable, inplace: bool, hi: float | None = None) -> Callable:
    """torch.relu(input), torch.relu_ (= F.relu_), Tensor.relu(_), torch._C._nn.relu6(_)."""
    def relu(input, *args, **kwargs):
        ctx = _route(input, not args and not kwargs)
        if ctx is not None:
            return ctx.apply(input, hi, inplace)
        return orig(input, *args, **kwargs)
    return functools.wraps(orig)(relu)


def _make_hardtanh(orig: Callable, inplace: bool) -> Callable:
    """torch._C._nn.hardtanh(_) (behind F.hardtanh, F.hardtanh_ and nn.Hardtanh/nn.ReLU6)."""
    def hardtanh(input, min_val=-1.0, max_val=1.0, *args, **kwargs):
        ctx = _route(input, _is_zero(min_val) and _is_pos(max_val) and not args and not kwargs)
        if ctx is not None:
            return ctx.apply(input, float(max_val), inplace)
        return orig(input, min_val, max_val, *args, **kwargs)
    return functools.wraps(orig)(hardtanh)


def _make_clamp(orig: Callable, inplace: bool, min_only: bool = False) -> Callable:
    """torch.clamp / clip / clamp_min (and the Tensor methods): a rectifier iff min == 0."""
    if min_only:
        def clamp(input, min, *args, **kwargs):
            ctx = _route(input, _is_zero(min) and not args and not kwargs)
            if ctx is not None:
                return ctx.apply(input, None, inplace)
            return orig(input, min, *args, **kwargs)
    else:
        def clamp(input, min=None, max=None, *args, **kwargs):
            ctx = _route(input, _is_zero(min) and _is_pos(max) and not args and not kwargs)
            if ctx is not None:
                return ctx.apply(input, None if max is None else float(max), inplace)
            return orig(input, min, max, *args, **kwargs)
    return functools.wraps(orig)(clamp)


def _functional_patches() -> list[tuple[Any, str, Callable]]:
    """(owner, attribute, dispatcher) for every functional rectifier we intercept.

    Patched at the lowest Python-visible level, so each call is seen once: ``F.relu`` calls
    ``torch.relu``/``torch.relu_``; ``F.relu6``, ``F.hardtanh`` and the ``nn.ReLU6``/``nn.Hardtanh``
    modules call ``torch._C._nn.relu6``/``hardtanh`` (and their in-place forms), looked up at call
    time. ``F.relu_`` and ``F.hardtanh_`` are the builtins themselves, patched under both names.
    """
    nn_c, tensor = torch._C._nn, torch.Tensor
    specs: list[tuple[Any, str, Callable]] = []
    for owner, name, inplace in ((torch, "relu", False), (torch, "relu_", True), (F, "relu_", True),
                                 (tensor, "relu", False), (tensor, "relu_", True)):
        specs.append((owner, name, _make_relu(getattr(owner, name), inplace)))
    for name, inplace in (("relu6", False), ("relu6_", True)):
        if hasattr(nn_c, name):
            specs.append((nn_c, name, _make_relu(getattr(nn_c, name), inplace, hi=6.0)))
    for owner, name, inplace in ((nn_c, "hardtanh", False), (nn_c, "hardtanh_", True),
                                 (F, "hardtanh_", True)):
        specs.append((owner, name, _make_hardtanh(getattr(owner, name), inplace)))
    for name, inplace in (("clamp", False), ("clip", False), ("clamp_", True), ("clip_", True)):
        for owner in (torch, tensor):
            if hasattr(owner, name):
                specs.append((owner, name, _make_clamp(getattr(owner, name), inplace)))
    for name, inplace in (("clamp_min", False), ("clamp_min_", True)):
        for owner in (torch, tensor):
            if hasattr(owner, name):
                specs.append((owner, name, _make_clamp(getattr(owner, name), inplace,
                                                       min_only=True)))
    return specs


_PATCHES = _functional_patches()  # built at import, around the unpatched functions


def _count_net_call(module: nn.Module, args: Any) -> None:
    """Global forward pre-hook (installed with the dispatchers): counts the calls of a block's
    own network made by the block's own thread (``RuleStats.net_calls``)."""
    for ctx in _LOCAL.stack:
        if ctx.net is module:
            ctx.stats.net_calls += 1


def _install() -> None:
    """Open one block: install the dispatchers when it is the first open block anywhere."""
    with _INSTALL_LOCK:
        if _INSTALLED[0] == 0:
            try:
                for owner, name, fn in _PATCHES:
                    _SAVED.append((owner, name, name in vars(owner), vars(owner).get(name)))
                    setattr(owner, name, fn)
                _NET_HOOK.append(nn.modules.module.register_module_forward_pre_hook(_count_net_call))
            except BaseException:
                _restore()
                raise
        _INSTALLED[0] += 1


def _restore() -> None:
    """Put back exactly what the dispatchers replaced (caller holds the lock)."""
    while _NET_HOOK:
        _NET_HOOK.pop().remove()
    while _SAVED:
        owner, name, had_own, value = _SAVED.pop()
        if had_own:
            setattr(owner, name, value)
        else:
            delattr(owner, name)           # e.g. Tensor.relu, inherited from the C base


def _uninstall() -> None:
    """Close one block: restore the original functions when it was the last open block."""
    with _INSTALL_LOCK:
        _INSTALLED[0] -= 1
        if _INSTALLED[0] == 0:
            _restore()


# ----------------------------------------------------------------------------------------------


def _leave(stack: list[_Context], ctx: _Context) -> None:
    """Close block ``ctx`` of this thread's ``stack`` (normally its top; removed wherever it is)."""
    if stack and stack[-1] is ctx:
        stack.pop()
    elif ctx in stack:
        stack.remove(ctx)


@contextlib.contextmanager
def backward_rule(net: nn.Module, rule: str, *, upper_gate: bool = True) -> Iterator[RuleStats]:
    """Back-propagate through every rectifier with ``rule`` inside the ``with`` block.

    Sect. 4 of Simonyan et al. (2014): for :math:`X_{n+1} = \\max(X_n, 0)` the gradient is
    :math:`\\partial f/\\partial X_n = \\partial f/\\partial X_{n+1} \\mathbf{1}(X_n > 0)` while the
    DeconvNet computes :math:`R_n = R_{n+1} \\mathbf{1}(R_{n+1} > 0)`. Rules:

    - ``"gradient"``: the true (sub-)gradient. Nothing is installed: autograd is left untouched,
      so results are bit-identical to plain ``backward()``.
    - ``"deconvnet"``: :math:`R_n = R_{n+1} \\mathbf{1}(R_{n+1} > 0)` (Zeiler & Fergus 2014).
    - ``"guided"``: :math:`R_n = R_{n+1} \\mathbf{1}(R_{n+1} > 0)\\, g(X_n)`, :math:`g` the
      gradient's own gate (Springenberg et al. 2015): both indicators.

    Bounded rectifiers :math:`\\min(\\max(X, 0), h)` (``nn.ReLU6``, ``h = 6``, used in place by
    EfficientNet-Lite): the gradient's gate is :math:`\\mathbf{1}(0 < X < h)`. Our rule for the
    upper bound: ``"deconvnet"`` ignores it (by definition it does not consult the forward pass
    at all), ``"guided"`` keeps it: guided back-propagation is "the gradient's gate AND the
    DeconvNet's gate", and above :math:`h` the unit is as constant as below 0, so dropping the
    upper half of the gradient's gate would make guided back-propagation pass signal through
    units that the forward pass cut off. ``upper_gate=False`` drops it (guided then uses
    :math:`\\mathbf{1}(X > 0)` only). Chapter 4 measures the difference.

    What is acted on: every rectifier call made **by the calling thread** during the block, when
    its input requires grad under grad mode: the modules ``nn.ReLU`` (also in place), ``nn.ReLU6``
    and ``nn.Hardtanh(0, h)`` (through the functions they call), and ``F.relu``, ``F.relu_``,
    ``F.relu6``, ``F.hardtanh``/``hardtanh_`` with ``min_val == 0``, ``torch.relu``,
    ``torch.relu_``, ``torch.clamp``/``clip``/``clamp_min`` (and their in-place and ``Tensor``
    method forms) with ``min == 0`` and ``max`` None or positive. In-place rectifiers stay in
    place. A builtin bound to another name before the first block (``from torch import relu``)
    is not seen; the Python wrappers ``F.relu``/``F.relu6``/``F.hardtanh`` are, even when stored.

    Concurrency: safe. The functions above are replaced by thread-aware dispatchers while any
    block is open in the process (installed by the first block, removed by the last; a lock
    guards the count); a thread without an open block gets the original functions' results,
    bit for bit, so blocks on two threads (same or different models, different rules) neither
    interfere nor wait on each other. Nothing is written to ``net``: no instance attribute, no
    hook, no changed flag (a global forward pre-hook counts the network's calls while the
    dispatchers are installed, and goes with them).

    Not rectifiers, left with their true gradient (a warning names them): SiLU, GELU, LeakyReLU,
    ELU, Hardswish, ... Nested blocks work (last in, first out): the innermost rule is used.
    The rule is fixed when the forward pass runs: build the graph inside the block (calling
    ``backward`` after leaving it is fine, also from another thread).

    Args:
        net: the network (not modified).
        rule: one of :data:`RULES`.
        upper_gate: for ``"guided"`` on bounded rectifiers, keep the gate :math:`\\mathbf{1}(X<h)`.

    Yields:
        :class:`RuleStats`: the rectifier modules of ``net`` and the rectifier calls seen.

    Raises:
        TypeError: ``net`` is not an ``nn.Module``.
        ValueError: unknown ``rule``; a network with no rectifier a rule can act on (neither a
            rectifier module nor a functional rectifier in any ``forward`` source), or, on exit, a
            block that ran the network without meeting a single rectifier (rule not applied).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"backward_rule needs an nn.Module, got {type(net).__name__}")
    if rule not in RULES:
        raise ValueError(f"unknown backward rule {rule!r}; choose one of {RULES}")
    stats = RuleStats(rule=rule)
    if rule == "gradient":
        stack = _LOCAL.stack
        if not stack:  # nothing installed, nothing to undo: autograd is left untouched
            yield stats
            return
        # inside another block: an explicit "gradient" wins over the outer rule until it ends
        ctx = _Context(net=net, rule=rule, upper_gate=upper_gate, stats=stats)
        stack.append(ctx)
        try:
            yield stats
        finally:
            _leave(stack, ctx)
        return

    rectifiers = find_rectifiers(net)
    if not rectifiers and not any(_may_call_functional_rectifier(m) for m in net.modules()):
        raise ValueError(
            f"backward rule {rule!r} cannot act on {type(net).__name__}: it has no rectifier "
            "(no nn.ReLU / nn.ReLU6 / nn.Hardtanh(0, h) module and no relu/clamp call in any "
            "forward); only rule='gradient' is defined for it")
    others = sorted({type(m).__name__ for m in net.modules()
                     if isinstance(m, _UNSUPPORTED_ACTIVATIONS)})
    if others:
        warnings.warn(f"backward_rule({rule!r}): {', '.join(others)} are not rectifiers; they keep "
                      "their true gradient", stacklevel=3)
    stats.modules = [name for name, _ in rectifiers]

    ctx = _Context(net=net, rule=rule, upper_gate=upper_gate, stats=stats)
    stack = _LOCAL.stack
    _install()
    try:
        stack.append(ctx)
        yield stats
    finally:
        _leave(stack, ctx)
        _uninstall()
    if stats.net_calls > 0 and stats.seen == 0:
        raise ValueError(
            f"backward rule {rule!r} was not applied: {type(net).__name__} ran {stats.net_calls} "
            "time(s) in the block without calling a rectifier (ReLU/ReLU6/Hardtanh(0, h)/"
            "clamp(min=0)); its backward pass is the plain gradient")


# --- measurements for chapter 4 ---------------------------------------------------------------------


def score_gradient(net: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *,
                   group: int = 1, folded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4, :math:`w = \\partial S_c / \\partial I |_{I_0}`, signed, under the rule in force.

    One forward and one backward pass for the whole batch: :math:`\\sum_n S_{c_n}(x_n)` is
    differentiated, which gives each image its own derivative (the network treats the images
    of a batch independently: eval mode). Whatever :func:`backward_rule` block is open decides
    how the rectifiers back-propagate; grad mode is switched on here. The one implementation
    of eq. 4 in the package: :func:`input_gradient` returns it, :func:`deepinside.saliency`
    reduces it with :math:`\\max_c |w|`.

    The derivative is autograd's on ``net`` itself, bit for bit, unless ``folded``: then, with
    no rule block open, the network differentiated is its BatchNorm-folded twin when it has one
    (:func:`deepinside.core.batchnorm.gradient_net`: the same function in eval mode, 0.87-0.90
    of the time; equal to ``net``'s gradient up to float32 rounding at the rectifiers' bounds,
    about 1 % of the map's maximum at a few pixels). SmoothGrad asks for it (an average over
    noise, where float rounding is far below the noise); the maps that the book compares with
    autograd, Captum or each other exactly (eq. 4, the backward rules) do not.

    Args:
        net: maps ``(B, C, H, W)`` to scores ``(B, K)`` (unnormalised: logits).
        x: ``(B, C, H, W)`` float input (not modified; a detached leaf gets the gradient),
            cast to the network's parameter dtype (a float64 batch for a float32 network).
        target: ``(B,)`` long class per row, or None: the top-1 class of the scores averaged
            over consecutive groups of ``group`` rows (``group = 10``: the 10 crops of an image).
        group: rows per image for ``target=None``; ``B`` must be a multiple of it.
        folded: differentiate the BatchNorm-folded twin (above) when no rule block is open.

    Returns:
        ``w`` ``(B, C, H, W)`` in the network's dtype and the classes used ``(B,)`` (long).

    Raises:
        TypeError: an integer input.
        ValueError: scores not ``(B, K)``, a class out of range, ``B`` not a multiple of ``group``.
    """
    if target is None and x.shape[0] % group:
        raise ValueError(f"{x.shape[0]} rows do not split into groups of {group}")
    if not x.is_floating_point():
        raise TypeError(f"the input must be a float tensor, got {x.dtype}")
    dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), x.dtype)
    xg = x.detach().to(dtype)   # float64 input, float32 net: cast (lossless for inputs that came
    # from float32, and the network cannot mix the two)
    if xg.device.type == "cpu" and xg.ndim == 4:
        # channels-last convolutions: 1.3-1.4x faster forward+backward on CPU (oneDNN), same math
        xg = xg.contiguous(memory_format=torch.channels_last)
    xg.requires_grad_(True)
    if folded and not _LOCAL.stack:   # the true gradient, BatchNorm folded into the convolutions
        net = gradient_net(net, xg)
    with torch.enable_grad():
        scores = net(xg)
        if scores.ndim != 2 or scores.shape[0] != x.shape[0]:
            raise ValueError(f"the network returned scores of shape {tuple(scores.shape)}, "
                             f"expected ({x.shape[0]}, classes)")
        if target is None:
            with torch.no_grad():
                avg = scores.detach().view(-1, group, scores.shape[1]).mean(1)
                target = avg.argmax(1).repeat_interleave(group)
        elif int(target.min()) < 0 or int(target.max()) >= scores.shape[1]:
            raise ValueError(f"target {target.tolist()} out of range: the network has "
                             f"{scores.shape[1]} classes")
        (w,) = torch.autograd.grad(scores.gather(1, target[:, None]).sum(), xg)
    return w.contiguous(), target


def input_gradient(net: nn.Module, x: torch.Tensor, target: torch.Tensor | Sequence[int],
                   rule: str = "gradient", **rule_kwargs: Any) -> torch.Tensor:
    """:math:`\\partial S_c / \\partial x` back-propagated with ``rule``: ``(N, C, H, W)``, signed.

    Eq. 4 (:func:`score_gradient`) inside ``backward_rule(net, rule, **rule_kwargs)``.
    ``net`` maps ``x`` to scores ``(N, K)``; ``target`` holds one class per image. The model's
    parameters get no ``.grad``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    target = torch.as_tensor(target, device=x.device).reshape(-1)
    if len(target) != len(x):
        raise ValueError(f"target has {len(target)} classes for {len(x)} images")
    with backward_rule(net, rule, **rule_kwargs):
        g, _ = score_gradient(net, x, target.long())
    return g


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two batches of maps, one value per map: ``(N, ...) -> (N,)``.

    Used to measure class sensitivity: the correlation between the maps of two different
    classes for the same image (1 = the map ignores the class).
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"maps must have the same shape (N, ...), got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-300)
    return ((a * b).sum(1) / den).float()


def bounded_rectifier_saturation(net: nn.Module, x: torch.Tensor) -> float:
    """Fraction of the inputs of bounded rectifiers (``nn.ReLU6``, ``Hardtanh(0, h)``) that reach
    the upper bound :math:`h`: where guided back-propagation's choice of ``upper_gate`` matters.

    Temporary forward hooks, removed in ``finally``; no gradient is computed.
    """
    bounded = [m for _, m in find_rectifiers(net) if _rectifier_bound(m)[1] is not None]
    if not bounded:
        raise ValueError(f"{type(net).__name__} has no bounded rectifier (nn.ReLU6 / nn.Hardtanh(0, h))")
    counts = [0, 0]

    def hook(m: nn.Module, args: Any, y: torch.Tensor) -> None:
        counts[0] += int((y >= _rectifier_bound(m)[1]).sum())   # in place: y is X clamped
        counts[1] += y.numel()

    with forward_hooks((m, hook) for m in bounded), torch.no_grad():
        net(x)
    return counts[0] / max(counts[1], 1)
