"""Tests of deepinside.core.parallel: thread_map keeps the plain loop's results and errors."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinside.core.parallel import thread_map, usable_cores


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-1000, 1000), max_size=30), st.integers(1, 6))
def test_thread_map_is_the_plain_loop_in_order(xs, workers):
    done = []
    assert thread_map(lambda x: x * x - 3, xs, workers=workers, on_done=done.append) == \
        [x * x - 3 for x in xs]
    assert done == [x * x - 3 for x in xs]     # on_done in order, in the calling thread


def test_thread_map_uses_several_threads_and_one_means_the_caller():
    seen = set()

    def f(x):
        seen.add(threading.get_ident())
        time.sleep(0.02)
        return x

    assert thread_map(f, range(8), workers=4) == list(range(8))
    assert len(seen) > 1 and threading.get_ident() not in seen
    seen.clear()
    thread_map(f, range(3), workers=1)
    assert seen == {threading.get_ident()}


def test_thread_map_raises_the_functions_error_and_checks_workers():
    def f(x):
        if x == 5:
            raise KeyError("five")
        return x

    with pytest.raises(KeyError, match="five"):
        thread_map(f, range(10), workers=3)
    with pytest.raises(TypeError, match="workers"):
        thread_map(f, range(3), workers="2")
    with pytest.raises(ValueError, match="workers"):
        thread_map(f, range(3), workers=0)
    assert thread_map(f, [], workers=4) == []
    assert usable_cores() >= 1
