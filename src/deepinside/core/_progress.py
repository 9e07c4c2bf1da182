"""Progress bars for the loops a reader waits for (tqdm; widgets in Jupyter, text elsewhere).

``DEEPINSIDE_PROGRESS`` chooses them: unset or ``1`` (tqdm.auto: a widget in a notebook, text in
a terminal), ``text`` (plain text on stderr, also in a notebook), ``0`` (none; the test-suite and
the book build use this).

The book build sets ``0`` for the kernels it starts (``_ext/deepinside_book.py``): a progress
widget in a static page is only an embedded widget state and a blank gap.
"""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

T = TypeVar("T")

ENV = "DEEPINSIDE_PROGRESS"
_MODES = ("0", "1", "text")


def mode() -> str:
    """The progress mode from ``$DEEPINSIDE_PROGRESS``: ``"1"``, ``"text"`` or ``"0"``."""
    value = os.environ.get(ENV, "1").strip().lower() or "1"
    if value not in _MODES:
        raise ValueError(f"{ENV}={value!r}: use 1 (auto), text or 0 (off)")
    return value


def progress(iterable: Iterable[T] | None = None, **kwargs) -> "tqdm":  # noqa: F821
    """``tqdm`` over ``iterable``; disabled when ``DEEPINSIDE_PROGRESS=0`` or ``disable=True``."""
    m = mode()
    if m == "text":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    if m == "0":
        kwargs["disable"] = True
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)

