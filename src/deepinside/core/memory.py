"""Giving freed memory back to the operating system between the long loops of the book.

A backward pass of EfficientNet-Lite0 allocates and frees hundreds of megabytes of activations.
glibc's ``malloc`` keeps freed blocks below its (growing) mmap threshold in the process's heap
for reuse, so the resident memory of a kernel that computes maps of images of many shapes ratchets
up to the sum of its largest passes and never comes down (chapter 3: 1.9 GB after its first
table with 0.2 GB of maps held; issue 21). ``malloc_trim(0)`` returns the free pages of every
arena (measured: 1.38 GB -> 0.76 GB after batches of 224 x 300 backward passes, in 35-100 ms).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["release_memory", "release_memory_after_each_cell"]


@functools.lru_cache(maxsize=1)
def _trim():
    """glibc's ``malloc_trim``, or None (macOS, Windows, musl: nothing to do or no such call)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_memory() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``); a no-op elsewhere.

    Call it after a loop of network passes, not inside one (it walks the heap: tens of ms).
    Returns True when memory was released.
    """
    fn = _trim()
    return bool(fn(0)) if fn is not None else False


def _after_cell(*_args: object) -> None:
    release_memory()


def release_memory_after_each_cell() -> bool:
    """In a Jupyter/IPython session, :func:`release_memory` after every cell; idempotent.

    A chapter's cells each leave the heap larger than the memory they still hold (freed
    activations, images decoded, figures drawn), so without it the kernel's resident memory
    ratchets up from cell to cell and a figure cell at the end of chapter 4 peaked at 1.85 GB while
    holding far less (measured with ``benchmarks/bench_book.py``, which records each cell's peak).
    Each call after a cell takes a few milliseconds to ~100 ms. Returns True when registered (or
    already), False outside IPython or where there is nothing to release (no glibc).
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or _trim() is None:
        return False
    callbacks = shell.events.callbacks.get("post_run_cell", [])
    if _after_cell not in callbacks:
        shell.events.register("post_run_cell", _after_cell)
    return True
