"""Progress bars for the loops a reader waits for (tqdm; widgets in Jupyter, text elsewhere).

Set ``DEEPINSIDE_PROGRESS=0`` to silence them (the test-suite does for unit tests).
"""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, **kwargs) -> "tqdm":  # noqa: F821
    """``tqdm`` over ``iterable``; disabled when ``DEEPINSIDE_PROGRESS=0`` or ``disable=True``."""
    from tqdm.auto import tqdm

    if os.environ.get("DEEPINSIDE_PROGRESS", "1") == "0":
        kwargs["disable"] = True
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
