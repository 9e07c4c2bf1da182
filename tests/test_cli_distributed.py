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


def _copy_root(src, dst, n):
    import shutil

    for sub, ext in (("images", "*.JPEG"), ("annotations", "*.xml")):
        (dst / sub).mkdir(parents=True)
        for p in sorted((src / sub).glob(ext))[:n]:
            shutil.copy(p, dst / sub / p.name)
    return dst


def test_shards_know_what_they_were_computed_from(ilsvrc_root, tmp_path, capsys):
    """Issue 24: an edited annotation, impossible counts and another job's shards are recomputed
    (one warning each), never merged into the table."""
    import json
    import shutil

    root = _copy_root(ilsvrc_root, tmp_path / "data", 8)
    out = tmp_path / "run"
    args = ["evaluate", str(root), "--shard-size", "4", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    first = _table(capsys)
    shard0, shard1 = sorted((out / "shards").glob("*.json"))
    # an annotation edited after the run: its shard (only) is recomputed, and the table changes
    xml = sorted((root / "annotations").glob("*.xml"))[5]
    text = xml.read_text()
    w = int(text.split("<width>")[1].split("<")[0])
    h = int(text.split("<height>")[1].split("<")[0])
    tiny = (f"<xmin>0</xmin><ymin>0</ymin><xmax>{max(1, w // 20)}</xmax>"
            f"<ymax>{max(1, h // 20)}</ymax>")
    import re

    xml.write_text(re.sub(r"<xmin>.*?</ymax>", tiny, text, flags=re.S))
    stamp0 = shard0.stat().st_mtime_ns
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "other images or annotations" in cap.err and shard1.name in cap.err
    assert shard0.stat().st_mtime_ns == stamp0
    edited = cap.out[cap.out.index("images,"):]
    xml.write_text(text)
    assert main(args) == 0
    assert _table(capsys) == first
    # impossible counts ([900, -5]) in a shard: recomputed with a warning, same table
    doc = json.loads(shard0.read_text())
    doc["result"]["rows"][next(iter(doc["result"]["rows"]))] = [900, -5]
    shard0.write_text(json.dumps(doc))
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "impossible result" in cap.err and cap.out[cap.out.index("images,"):] == first
    # a truncated shard: recomputed
    shard1.write_text(shard1.read_text()[:40])
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "does not parse" in cap.err and cap.out[cap.out.index("images,"):] == first
    # the shards copied to a folder without job.json, rerun with --topk 3: not merged as top-3
    other = tmp_path / "other"
    shutil.copytree(out / "shards", other / "shards")
    assert main([*args[:-1], str(other), "--topk", "3"]) == 0
    cap = capsys.readouterr()
    assert cap.err.count("another job") == 2 and "top-3" in cap.out
    assert edited != first  # the edited box changed the table: the recompute was not a no-op


def test_map_options_are_checked_before_any_work(ilsvrc_root, tmp_path, capsys):
    base = ["evaluate", str(ilsvrc_root), "--limit", "1", "--device", "cpu", "--maps", "smoothgrad"]
    assert main([*base, "--map-option", "n=abc"]) == 1
    assert "smoothgrad's n takes int" in capsys.readouterr().err
    assert main([*base, "--map-option", "foo=1"]) == 1
    assert "smoothgrad has no option 'foo'" in capsys.readouterr().err
