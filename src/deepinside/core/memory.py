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

__all__ = ["release_memory"]


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
