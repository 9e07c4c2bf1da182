"""Sharded jobs: the merged top-k scan equals one streaming pass; the CLI jobs under torchrun
(2 processes) equal the single-process run; class-model galleries resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import deepinside as di
from deepinside.cli import main
from deepinside.jobs import merge_top_activations, top_activations_job

pytestmark = pytest.mark.slow


def _noise_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (96 + 8 * (i % 3), 120, 3), dtype=np.uint8))
            for i in range(n)]


def test_sharded_scan_equals_one_streaming_pass(clf):
    images = _noise_images(13)  # odd: the last shard is short
    units = {"blocks.2": [0, 3, 7, 11], "conv_head": None}
    one = di.top_activations(clf, images, list(units), units=units, k=4, batch_size=2,
                             show_progress=False)
    merged = top_activations_job(lambda: clf, images, list(units), units, k=4, batch_size=2,
                                 shard_size=4)
    for name in units:
        a, b = one[name], merged[name]
        assert torch.equal(a.units, b.units) and a.n_images == b.n_images == 13
        assert torch.equal(a.values, b.values)
        assert torch.equal(a.image_index, b.image_index)
        assert torch.equal(a.position, b.position)


def test_merge_keeps_the_earlier_image_among_equal_values():
    part = {"units": [5], "values": [[2.0, 1.0]], "image_index": [[0, 1]],
            "position": [[[0, 0], [1, 1]]], "map_size": [2, 2], "n_images": 2}
    later = dict(part, image_index=[[2, 3]], position=[[[1, 0], [0, 1]]])
    r = merge_top_activations("x", [part, later], k=3)
    assert r.values.tolist() == [[2.0, 2.0, 1.0]]
    assert r.image_index.tolist() == [[0, 2, 1]] and r.n_images == 4


def _torchrun(args):
    env = dict(os.environ, DEEPINSIDE_PROGRESS="0", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "deepinside", *args],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_top_activations_cli_two_processes_equal_one(ilsvrc_root, tmp_path):
    args = [str(ilsvrc_root), "--limit", "19", "--layer", "blocks.3", "--units", "6", "--k", "5",
            "--shard-size", "8", "--batch-size", "4", "--device", "cpu"]
    # one thread, as torchrun's processes: the float sums inside a convolution are ordered by
    # the thread count, so bitwise equality needs the same count (the ranking agrees anyway)
    n = torch.get_num_threads()
    try:
        assert main(["top-activations", *args, "--threads", "1", "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(n)
    _torchrun(["top-activations", *args, "--out", str(tmp_path / "two")])
    one = json.loads((tmp_path / "one" / "top_activations.json").read_text())
    two = json.loads((tmp_path / "two" / "top_activations.json").read_text())
    assert one == two and one["blocks.3"]["n_images"] == 19


def test_class_models_cli_two_processes_equal_one_and_resume(tmp_path):
    args = ["goose", "dalmatian", "bell pepper", "--steps", "3", "--shard-size", "2",
            "--device", "cpu", "--threads", "1"]
    n = torch.get_num_threads()
    try:
        assert main(["class-models", *args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(n)
    _torchrun(["class-models", *args, "--out", str(tmp_path / "two")])
    one = json.loads((tmp_path / "one" / "class_models.json").read_text())
    two = json.loads((tmp_path / "two" / "class_models.json").read_text())
    assert one == two and [e["class_name"] for e in one] == ["goose", "dalmatian", "bell pepper"]
    for e in one:
        a = np.asarray(Image.open(tmp_path / "one" / e["file"]))
        b = np.asarray(Image.open(tmp_path / "two" / e["file"]))
        assert a.shape == (224, 224, 3) and np.array_equal(a, b)
    shard = tmp_path / "one" / "shards" / "00000002-00000003.json"
    shard.unlink()
    try:
        assert main(["class-models", *args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(n)
    assert shard.exists()
    assert json.loads((tmp_path / "one" / "class_models.json").read_text()) == one
