"""The one disk cache of the package (issue 22): core/cache.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from deepinside.core import cache


def test_default_cache_dir_env_book_or_none(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINSIDE_CACHE", str(tmp_path / "c"))
    assert cache.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DEEPINSIDE_CACHE")
    book = tmp_path / "book"
    (book / "chapters").mkdir(parents=True)
    (book / "_config.yml").write_text("title: x\n")
    monkeypatch.chdir(book / "chapters")
    assert cache.default_cache_dir() == (book / "_build" / "cache").resolve()
    monkeypatch.chdir(tmp_path)
    assert cache.default_cache_dir() is None or (cache.default_cache_dir() / "..").exists()


@dataclass
class _Result:
    name: str
    values: torch.Tensor


def test_registered_types_round_trip_and_keys_separate(tmp_path):
    cache.register_cacheable(_Result, lambda r: {"name": r.name, "values": r.values},
                             lambda d: _Result(**d))
    calls = []

    def compute():
        calls.append(1)
        return {"a": _Result("x", torch.arange(3.0)), 2: [np.float32(1.5), None]}

    first = cache.cached("thing", ("k", 1), compute, tmp_path)
    again = cache.cached("thing", ("k", 1), compute, tmp_path)
    assert len(calls) == 1 and isinstance(again["a"], _Result) and torch.equal(again["a"].values, first["a"].values)
    assert again[2][0] == np.float32(1.5) and again[2][1] is None
    cache.cached("thing", ("k", 2), compute, tmp_path)            # another key: computed again
    assert len(calls) == 2 and len(list(tmp_path.glob("thing-*.npz"))) == 2
    assert cache.cached("thing", ("k", 1), compute, None) is not None and len(calls) == 3   # no dir


def test_a_value_that_cannot_be_stored_is_returned_with_a_warning(tmp_path):
    with pytest.warns(RuntimeWarning, match="not cached"):
        v = cache.cached("odd", 1, lambda: {"f": object()}, tmp_path)
    assert "f" in v and not list(tmp_path.glob("odd-*.npz"))


def test_top_activations_and_class_models_use_it(tmp_path):
    """Chapter 5's scan is stored once and reloaded equal (TopActivations is registered)."""
    from state_helpers import conv_clf, rand_pil

    from deepinside.methods.features import cached_top_activations

    clf = conv_clf(seed=1)
    ims = [rand_pil(20, 20, seed=i) for i in range(5)]
    a = cached_top_activations(clf, ims, ["0"], "five", k=2, cache_dir=tmp_path, show_progress=False)
    b = cached_top_activations(clf, ims, ["0"], "five", k=2, cache_dir=tmp_path, show_progress=False)
    assert len(list(tmp_path.glob("top_activations-*.npz"))) == 1
    assert torch.equal(a["0"].values, b["0"].values) and b["0"].map_size == a["0"].map_size
    assert type(b["0"].map_size) is tuple
