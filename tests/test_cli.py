"""Tests of the command line (deepinside.cli): errors without tracebacks, JSON output, figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deepinside.cli import main
from deepinside.data import SAMPLE_IMAGES, _package_file


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_image(capsys, tmp_path):
    code, out, err = _run(capsys, "localise", str(tmp_path / "nope.jpg"))
    assert code == 1 and out == ""
    assert "no such image file" in err and "Traceback" not in err


def test_unreadable_image(capsys, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is not a JPEG")
    code, _, err = _run(capsys, "localise", str(bad))
    assert code == 1 and "not an image" in err and "Traceback" not in err


def test_folder_not_in_ilsvrc_layout(capsys, tmp_path):
    code, _, err = _run(capsys, "evaluate", str(tmp_path))
    assert code == 1 and "ILSVRC layout" in err
    code, _, err = _run(capsys, "evaluate", str(tmp_path / "missing"))
    assert code == 1 and "does not exist" in err


@pytest.mark.parametrize("argv", [["localise"], ["localise", "--topk", "0", "x.jpg"],
                                  ["evaluate", "r", "--limit", "-3"], ["localise", "--crops", "five", "x.jpg"],
                                  ["frobnicate"], []])
def test_usage_errors(capsys, argv):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "usage" in err


def test_out_is_a_file(capsys, tmp_path):
    img = _package_file(*SAMPLE_IMAGES["coffee"])
    f = tmp_path / "file"
    f.write_text("")
    code, _, err = _run(capsys, "localise", str(img), "--out", str(f))
    assert code == 1 and "not a directory" in err


def test_localise_one_photo(capsys, tmp_path):
    img = _package_file(*SAMPLE_IMAGES["chelsea"])
    code, out, err = _run(capsys, "localise", str(img), "--topk", "2", "--crops", "center", "--device", "cpu",
                          "--out", str(tmp_path / "figs"))
    assert code == 0, err
    res = json.loads(out)
    assert len(res) == 1 and res[0]["image"] == str(img)
    assert (res[0]["width"], res[0]["height"]) == (451, 300)
    dets = res[0]["detections"]
    assert [d["rank"] for d in dets] == [1, 2]
    assert "cat" in dets[0]["class_name"] and dets[0]["wnid"].startswith("n")
    x0, y0, x1, y1 = dets[0]["box"]
    assert 0 <= x0 < x1 <= 451 and 0 <= y0 < y1 <= 300
    assert (tmp_path / "figs" / "chelsea_localisation.png").stat().st_size > 1000


def test_entry_point_module(tmp_path):
    # the installed command's module, in a fresh interpreter: exit status and one-line message
    r = subprocess.run([sys.executable, "-m", "deepinside.cli", "localise", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().startswith("deepinside: error:") and "Traceback" not in r.stderr


@pytest.mark.slow
def test_evaluate_prints_the_table(capsys, ilsvrc_root):
    code, out, err = _run(capsys, "evaluate", str(ilsvrc_root), "--limit", "3", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("3 images") and "crops=center" in lines[0]
    rows = [ln for ln in lines if ln.endswith("%")]
    assert len(rows) == 6 and rows[0].startswith("GraphCut") and rows[-1].startswith("classification error")
    for r in rows:
        vals = [float(v.rstrip("%")) for v in r.split()[-2:]]
        assert all(0.0 <= v <= 100.0 for v in vals)
