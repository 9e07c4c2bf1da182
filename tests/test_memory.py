"""release_memory (issue 21): freed heap pages go back to the OS on glibc; a no-op elsewhere."""

import sys

import pytest

from deepinside.core.memory import release_memory


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_blocks_leave_the_resident_set():
    # 64 KB blocks sit below glibc's mmap threshold: they live in the heap; a small block kept
    # after every tenth leaves holes that free() cannot hand back (only the heap's top can be)
    blocks, keep = [], []
    for i in range(3000):                                        # ~190 MB, touched (zeroed)
        blocks.append(bytearray(64 * 1024))
        if i % 10 == 9:
            keep.append(bytearray(64 * 1024 - 64))
    before = _rss_mb()
    del blocks
    freed = _rss_mb()
    assert release_memory() in (True, False)
    after = _rss_mb()
    assert keep
    if freed < before - 100:     # this libc gave the pages back on free() already
        pytest.skip(f"free() already returned the memory ({before:.0f} -> {freed:.0f} MB)")
    assert after < freed - 100, (before, freed, after)


def test_release_memory_twice_is_harmless():
    release_memory()
    assert isinstance(release_memory(), bool)


def test_release_after_each_cell_registers_once(monkeypatch):
    """In an IPython session the trim runs after every cell, registered once however often the
    chapter's first cell runs; outside IPython nothing is registered."""
    import IPython
    from IPython.core.events import EventManager, available_events

    from deepinside.core import memory

    calls = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(1) or True)
    shell = type("Shell", (), {})()
    shell.events = EventManager(shell, available_events)
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert memory.release_memory_after_each_cell() is False
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    if memory._trim() is None:                         # no glibc: nothing to release
        assert memory.release_memory_after_each_cell() is False
        return
    assert memory.release_memory_after_each_cell() and memory.release_memory_after_each_cell()
    assert shell.events.callbacks["post_run_cell"].count(memory._after_cell) == 1
    shell.events.trigger("post_run_cell", object())
    assert calls == [1]
