"""Forward hooks that act only for the thread that installed them.

PyTorch's module hooks are global to the module: a hook installed by one thread also fires when
another thread runs the same network, so that thread's activations are captured (wrong maps in
the first thread), its outputs are replaced, or a private "stop here" exception ends its forward
pass (issue 24). Every hook of this package is installed through :func:`forward_hook`, whose hook
does nothing in any other thread: CAM, Grad-CAM, occlusion at a layer, top activations and the
backward rules (:mod:`deepinside.backprop`, thread-local too) may share one model across threads.

A consequence worth knowing: a network that runs its own forward in worker threads (e.g.
``nn.DataParallel``) does not see these hooks in its workers; use one process per device
(``torchrun``, :mod:`deepinside.distributed`) instead.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterable, Iterator

from torch import nn

__all__ = ["StopForward", "forward_hook", "forward_hooks"]


class StopForward(Exception):
    """Raised by a hook of this thread once the layers of interest have run: the rest of the
    forward pass is not needed. Caught by the caller that installed the hook."""


@contextlib.contextmanager
def forward_hook(module: nn.Module, fn: Callable[..., Any], *, pre: bool = False) -> Iterator[None]:
    """Context: ``fn`` as a forward hook of ``module`` (a forward pre-hook with ``pre``), called
    only in the thread that opened the block; removed in ``finally``.

    ``fn(module, args, output)`` (``fn(module, args)`` with ``pre``) may return a replacement,
    as a PyTorch hook may; in other threads the module runs as if unhooked.
    """
    owner = threading.get_ident()

    if pre:
        def hook(m: nn.Module, args: Any) -> Any:
            return fn(m, args) if threading.get_ident() == owner else None
        handle = module.register_forward_pre_hook(hook)
    else:
        def hook(m: nn.Module, args: Any, out: Any) -> Any:  # type: ignore[misc]
            return fn(m, args, out) if threading.get_ident() == owner else None
        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    """Context: several :func:`forward_hook` at once, ``(module, fn)`` pairs; all removed on exit."""
    with contextlib.ExitStack() as stack:
        for module, fn in hooks:
            stack.enter_context(forward_hook(module, fn))
        yield
