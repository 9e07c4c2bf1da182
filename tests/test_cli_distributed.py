"""``deepinside evaluate`` sharded: resumable with --out, identical under torchrun (2 processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepinside.cli import main

pytestmark = pytest.mark.slow


def _table(capsys) -> str:
    out = capsys.readouterr().out
    return out[out.index("images,"):]


def test_resume_recomputes_only_missing_shards_and_merge_is_the_same(ilsvrc_root, tmp_path,
                                                                     capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["evaluate", str(ilsvrc_root), "--limit", "9", "--shard-size", "4", "--device", "cpu",
            "--out", str(out)]
    assert main(args) == 0
    first = _table(capsys)
    shards = sorted((out / "shards").glob("*.json"))
    assert [p.name for p in shards] == ["00000000-00000004.json", "00000004-00000008.json",
                                        "00000008-00000009.json"]
    shards[1].unlink()  # as if the run had been killed before this shard was written
    loads = []
    import deepinside.cli as cli

    real = cli._classifier
    monkeypatch.setattr(cli, "_classifier", lambda a: loads.append(1) or real(a))
    stamp = {p: p.stat().st_mtime_ns for p in (shards[0], shards[2])}
    assert main(args) == 0
    assert _table(capsys) == first
    assert len(loads) == 1 and all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    assert main(args) == 0  # everything on disk: only the merge, no model
    assert _table(capsys) == first and len(loads) == 1
    assert main([*args[:-1], str(out), "--topk", "3"]) == 1  # another job's folder: refused
    assert "another job" in capsys.readouterr().err


def test_torchrun_two_processes_print_the_single_process_table(ilsvrc_root, capsys):
    args = ["evaluate", str(ilsvrc_root), "--limit", "11", "--shard-size", "4", "--device", "cpu"]
    assert main(args) == 0
    single = _table(capsys)
    env = dict(os.environ, DEEPINSIDE_PROGRESS="0", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "deepinside", *args],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout[run.stdout.index("images,"):] == single
