"""Sharding under torch.distributed: disjoint shards, exact merge, resumable runs, 2 processes."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinside.core.distributed import (Context, ShardStore, ShardStoreError, Subset, files_digest,
                                   run_sharded, shard_ranges)

WORKER = Path(__file__).with_name("_dist_worker.py")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 500), size=st.integers(1, 64), world=st.integers(1, 9))
def test_every_item_in_exactly_one_shard_of_exactly_one_rank(n, size, world):
    shards = shard_ranges(n, size)
    taken = [s for r in range(world) for s in shards[r::world]]
    items = sorted(i for a, b in taken for i in range(a, b))
    assert items == list(range(n))  # no item lost, none counted twice, no padding
    assert all(b - a == size for a, b in shards[:-1])


def test_shard_ranges_rejects_bad_sizes():
    with pytest.raises(ValueError, match="shard_size"):
        shard_ranges(10, 0)
    with pytest.raises(ValueError, match="n must"):
        shard_ranges(-1, 4)


def _squares(start, stop):
    return {"items": list(range(start, stop)), "sum": sum(i * i for i in range(start, stop))}


def test_single_process_is_a_plain_loop():
    res = run_sharded(11, _squares, shard_size=4)
    assert [r["items"] for r in res] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_other_ranks_get_none_and_compute_their_shards_only():
    calls = []
    res = run_sharded(11, lambda a, b: calls.append((a, b)) or a, shard_size=2,
                      ctx=Context(rank=1, world_size=3))
    assert res is None and calls == [(2, 4), (8, 10)]


def test_restart_computes_only_the_missing_shards(tmp_path):
    key = {"job": "squares", "n": 23}
    calls = []

    def compute(a, b):
        calls.append((a, b))
        return _squares(a, b)

    first = run_sharded(23, compute, shard_size=5, store=ShardStore(tmp_path, key))
    assert len(calls) == 5
    store = ShardStore(tmp_path, key)
    store.path((5, 10)).unlink()  # as if killed before these two were written
    store.path((20, 23)).unlink()
    calls.clear()
    again = run_sharded(23, compute, shard_size=5, store=store)
    assert calls == [(5, 10), (20, 23)]
    assert again == first


def test_store_refuses_another_jobs_folder(tmp_path):
    run_sharded(4, _squares, shard_size=2, store=ShardStore(tmp_path, {"model": "a"}))
    with pytest.raises(ValueError, match="another job.*model"):
        ShardStore(tmp_path, {"model": "b"})


def test_store_reports_missing_shards_instead_of_a_short_result(tmp_path):
    store = ShardStore(tmp_path, {"k": 1})
    store.prepare()
    with pytest.raises(RuntimeError, match="missing"):
        # a rank that claims to be rank 0 of 2 without a group: shard 1 never arrives
        run_sharded(4, _squares, shard_size=2, ctx=Context(rank=0, world_size=2), store=store)


def test_subset_keeps_records_in_order():
    class Data:
        records = ["r0", "r1", "r2", "r3"]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return (f"im{i}", self.records[i])

    sub = Subset(Data(), range(1, 3))
    assert len(sub) == 2 and sub.records == ["r1", "r2"] and list(sub) == [("im1", "r1"), ("im2", "r2")]


def _launch(tmp_path: Path, n: int, size: int, store: Path | None, **env_extra: str) -> dict:
    init = tmp_path / "rendezvous"
    out = tmp_path / "out.json"
    for p in (init, out):
        if p.exists():
            p.unlink()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                   OMP_NUM_THREADS="1", DEEPINSIDE_PROGRESS="0", **env_extra)
        args = [sys.executable, str(WORKER), str(init), str(out), str(n), str(size)]
        if store is not None:
            args.append(str(store))
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for p in procs:
        log, _ = p.communicate(timeout=240)
        assert p.returncode == 0, log.decode()[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("with_store", [False, True])
def test_two_gloo_processes_merge_to_the_single_process_result(tmp_path, with_store):
    n, size = 37, 4  # odd length, last shard short, ranks get 5 and 5 shards
    got = _launch(tmp_path, n, size, tmp_path / "store" if with_store else None)
    assert got["world"] == 2
    assert got["shards"] == run_sharded(n, _squares, shard_size=size)
    assert sum(got["per_rank"]) == 10


@pytest.mark.parametrize("with_store", [False, True])
def test_a_slow_rank_claims_fewer_shards_and_the_result_is_unchanged(tmp_path, with_store):
    # rank 1 needs 0.2 s per shard, rank 0 almost nothing: with a fixed split each would take
    # 10 of 20 shards; claimed from the shared counter, rank 0 takes most of them
    n, size = 40, 2
    got = _launch(tmp_path, n, size, tmp_path / "store" if with_store else None, SLOW_RANK="1")
    assert got["shards"] == run_sharded(n, _squares, shard_size=size)
    assert sum(got["per_rank"]) == 20 and got["per_rank"][0] >= 15, got["per_rank"]


# --- a shard's identity is what it was computed from (issue 24) ---------------------------------

def _run_counting(tmp_path, n=8, size=4, **store_kw):
    calls = []

    def compute(a, b):
        calls.append((a, b))
        return _squares(a, b)

    res = run_sharded(n, compute, shard_size=size, store=ShardStore(tmp_path, {"j": 1}, **store_kw))
    return res, calls


def test_changed_inputs_recompute_only_that_shard(tmp_path, capsys):
    files = [tmp_path / f"f{i}.txt" for i in range(8)]
    for f in files:
        f.write_text("a")
    inputs = lambda a, b: files_digest(files[a:b])  # noqa: E731
    first, calls = _run_counting(tmp_path / "out", inputs=inputs)
    assert calls == [(0, 4), (4, 8)]
    files[5].write_text("b")  # an annotation edited after the run
    again, calls = _run_counting(tmp_path / "out", inputs=inputs)
    assert calls == [(4, 8)] and again == first
    assert "other images or annotations" in capsys.readouterr().err


def test_shards_of_another_job_without_job_json_are_recomputed(tmp_path, capsys):
    run_sharded(8, _squares, shard_size=4, store=ShardStore(tmp_path / "a", {"topk": 5}))
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "shards", tmp_path / "b" / "shards")
    calls = []
    res = run_sharded(8, lambda a, b: calls.append(a) or _squares(a, b), shard_size=4,
                      store=ShardStore(tmp_path / "b", {"topk": 3}))
    assert calls == [0, 4] and res == run_sharded(8, _squares, shard_size=4)
    assert capsys.readouterr().err.count("another job") == 2


@pytest.mark.parametrize("text", ["", "{trunc", "\x00\xff garbage", "[1, 2]",
                                  '{"format": 2, "job": "x", "result": 1}'])
def test_unparsable_shard_is_recomputed_with_one_warning(tmp_path, capsys, text):
    first, _ = _run_counting(tmp_path)
    store = ShardStore(tmp_path, {"j": 1})
    store.path((0, 4)).write_bytes(text.encode("latin-1"))
    again, calls = _run_counting(tmp_path)
    assert calls == [(0, 4)] and again == first
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and "00000000-00000004.json" in err[0]


def test_impossible_result_is_recomputed(tmp_path, capsys):
    check = lambda r, a, b: None if len(r["items"]) == b - a else "wrong length"  # noqa: E731
    first, _ = _run_counting(tmp_path, check=check)
    p = ShardStore(tmp_path, {"j": 1}).path((4, 8))
    doc = json.loads(p.read_text())
    doc["result"]["items"] = [900, -5]
    p.write_text(json.dumps(doc))
    again, calls = _run_counting(tmp_path, check=check)
    assert calls == [(4, 8)] and again == first
    assert "impossible result: wrong length" in capsys.readouterr().err


def test_merge_only_writes_nothing(tmp_path, monkeypatch):
    first, _ = _run_counting(tmp_path)
    import deepinside.core.distributed as dd

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(dd, "_atomic_write", refuse)
    again, calls = _run_counting(tmp_path)  # read-only folder: the merge still works
    assert calls == [] and again == first
    ShardStore(tmp_path, {"j": 1}).path((0, 4)).unlink()
    with pytest.raises(ShardStoreError, match="cannot write.*Permission denied"):
        _run_counting(tmp_path)


def test_shards_being_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "shards").write_text("not a folder")
    with pytest.raises(ShardStoreError, match="cannot write results under"):
        _run_counting(tmp_path)
    with pytest.raises(ShardStoreError, match="not a directory"):
        ShardStore(tmp_path / "shards", {"j": 1})
