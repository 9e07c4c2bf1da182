"""Tests of the command line (deepinside.cli): errors without tracebacks, JSON output, figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from PIL import Image

from deepinside import cli
from deepinside.cli import main
from deepinside.core.data import SAMPLE_IMAGES, _package_file


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


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(cli, "load_classifier", refuse, raising=False)


def _fake_root(tmp_path, box="<xmin>0</xmin><ymin>2</ymin><xmax>49</xmax><ymax>30</ymax>"):
    root = tmp_path / "val"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(2):
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        Image.new("RGB", (50, 40)).save(root / "images" / f"{stem}.JPEG")
        (root / "annotations" / f"{stem}.xml").write_text(
            "<annotation><size><width>50</width><height>40</height></size><object><name>n01440764"
            f"</name><bndbox>{box if i else '<xmin>0</xmin><ymin>0</ymin><xmax>9</xmax><ymax>9</ymax>'}"
            "</bndbox></object></annotation>")
    return root


def _one_line(err: str) -> bool:
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_tiny_image_is_refused_before_the_model_and_before_out(capsys, tmp_path, no_model):
    # regression: 27-line traceback, after loading the model and creating --out
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (7, 30)).save(tiny)
    code, out, err = _run(capsys, "localise", str(tiny), "--out", str(tmp_path / "figs"))
    assert code == 1 and out == "" and _one_line(err) and "tiny.png is 7x30" in err
    assert not (tmp_path / "figs").exists()


@pytest.mark.parametrize("box, message", [
    ("<xmin>nan</xmin><ymin>2</ymin><xmax>49</xmax><ymax>30</ymax>", "not a finite number"),
    ("<ymin>2</ymin><xmax>49</xmax><ymax>30</ymax>", "has no <xmin>"),
    ("<xmin>40</xmin><ymin>2</ymin><xmax>10</xmax><ymax>30</ymax>", "xmax < xmin"),
])
def test_evaluate_bad_box_is_one_line_naming_the_file(capsys, tmp_path, no_model, box, message):
    # regression: a NaN / inverted box gave a 24-line traceback
    code, _, err = _run(capsys, "evaluate", str(_fake_root(tmp_path, box)))
    assert code == 1 and _one_line(err) and "ILSVRC2012_val_00000002.xml" in err and message in err


def test_evaluate_unreadable_jpeg_is_one_line_before_the_model(capsys, tmp_path, no_model):
    # regression: an unreadable JPEG gave a 34-line traceback, after loading the model
    root = _fake_root(tmp_path)
    (root / "images" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"\xff\xd8 garbage")
    code, _, err = _run(capsys, "evaluate", str(root))
    assert code == 1 and _one_line(err) and "ILSVRC2012_val_00000001.JPEG" in err


def test_figure_names_never_collide():
    # regression: a/x.webp and a/x.gif both wrote x_localisation.png
    assert cli.figure_names(["a/x.webp", "a/x.gif"]) == ["x_webp_localisation.png",
                                                         "x_gif_localisation.png"]
    names = cli.figure_names(["a/x.webp", "b/x.webp", "c/y.png", "x"])
    assert len(set(names)) == 4 and names[2] == "y_localisation.png"
    assert cli.figure_names(["p/cat.jpg"]) == ["cat_localisation.png"]


@pytest.mark.slow
def test_localise_two_files_with_one_stem_write_two_figures(capsys, tmp_path):
    src = Image.open(_package_file(*SAMPLE_IMAGES["chelsea"])).convert("RGB").resize((120, 80))
    (tmp_path / "a").mkdir()
    src.save(tmp_path / "a" / "x.webp")
    src.save(tmp_path / "a" / "x.gif")
    code, out, err = _run(capsys, "localise", str(tmp_path / "a" / "x.webp"), str(tmp_path / "a" / "x.gif"),
                          "--topk", "1", "--crops", "center", "--device", "cpu", "--out", str(tmp_path / "d"))
    assert code == 0, err
    figs = [r["figure"] for r in json.loads(out)]
    assert len(set(figs)) == 2 and all((tmp_path / "d" / f.split("/")[-1]).stat().st_size > 1000 for f in figs)


@pytest.mark.slow
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
    assert lines[0].startswith("3 images") and "crops=full" in lines[0]
    rows = [ln for ln in lines if ln.endswith("%")]
    from deepinside.measures.evaluation import EVALUATE_ROWS

    assert len(rows) == len(EVALUATE_ROWS) + 1
    assert rows[0].startswith("GraphCut") and rows[-1].startswith("classification error")
    for r in rows:
        vals = [float(v.rstrip("%")) for v in r.split()[-2:]]
        assert all(0.0 <= v <= 100.0 for v in vals)


@pytest.mark.slow
def test_evaluate_maps_and_boxes_flags(capsys, ilsvrc_root):
    code, out, err = _run(capsys, "evaluate", str(ilsvrc_root), "--limit", "3", "--device", "cpu",
                          "--maps", "cam", "--boxes", "threshold", "--crops", "center")
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if ln.endswith("%")]
    assert [r.split("  ")[0] for r in rows] == ["threshold on cam maps", "centred box, 80 % of each side",
                                                "whole image", "classification error"]
    assert "crops=center" in out.splitlines()[0]


def test_evaluate_rows_from_the_flags():
    """The table's rows are defined once (evaluation.EVALUATE_ROWS); --maps/--boxes make one row."""
    from argparse import Namespace

    from deepinside.measures import evaluation as ev

    assert cli._evaluate_rows(Namespace(maps=None, boxes=None, crops="full")) == ev.EVALUATE_ROWS
    # the row at another scale needs whole-image maps: left out for the centre crop
    centre = cli._evaluate_rows(Namespace(maps=None, boxes=None, crops="center"))
    assert list(centre) == [k for k, v in ev.EVALUATE_ROWS.items() if "full_side" not in v]
    assert len(centre) == len(ev.EVALUATE_ROWS) - 1
    (name, spec), *baselines = cli._evaluate_rows(Namespace(maps="gradcam", boxes="threshold")).items()
    assert name == "threshold on gradcam maps" and spec == {"maps": "gradcam", "boxes": "threshold"}
    assert [ev.needs_saliency(s) for _, s in baselines] == [False, False]
    name, spec = next(iter(cli._evaluate_rows(Namespace(maps="cam", boxes=None)).items()))
    assert spec == {"maps": "cam", "boxes": "graphcut"}
    name, spec = next(iter(cli._evaluate_rows(Namespace(maps=None, boxes="graphcut")).items()))
    assert spec["maps"] == ev.DEFAULT_MAPS
    only = cli._evaluate_rows(Namespace(maps=None, boxes="full_image"))
    assert not any(ev.needs_saliency(s) for s in only.values()) and "whole image" in only


def test_help_does_not_import_torch():
    """Issue 22: `deepinside --help` answers without importing torch, in well under a second."""
    import time

    code = ("import sys, time; t = time.perf_counter(); from deepinside.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', time.perf_counter() - t)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    flag, inside = r.stdout.split()[-2:]
    assert flag == "NOTORCH" and "localise" in r.stdout and "evaluate" in r.stdout
    assert float(inside) < 0.5, (inside, wall)


def test_subcommand_help_lists_the_registry(capsys):
    """A command's help reads the lists of the package when printed (maps from the registry)."""
    import deepinside as di

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in di.map_names()) and "graphcut" in out and "ten" in out


@pytest.mark.parametrize("flag", [["--maps", "nope"], ["--boxes", "oracle"]])
def test_evaluate_unknown_maps_or_boxes_is_a_usage_error(capsys, flag):
    code, _, err = _run(capsys, "evaluate", "root", *flag)
    assert code == 2 and "invalid choice" in err


def test_map_option_values_are_typed():
    assert cli._map_option("n=50") == ("n", 50)
    assert cli._map_option("sigma=0.1") == ("sigma", 0.1)
    assert cli._map_option("signed=true") == ("signed", True)
    assert cli._map_option("layer=blocks.6") == ("layer", "blocks.6")


@pytest.mark.parametrize("bad", ["n50", "=3", "2x=1"])
def test_malformed_map_option_is_a_usage_error(capsys, bad):
    code, _, err = _run(capsys, "evaluate", "root", "--maps", "smoothgrad", "--map-option", bad)
    assert code == 2 and "KEY=VALUE" in err


def test_map_option_without_maps_is_refused(capsys, ilsvrc_root):
    code, _, err = _run(capsys, "evaluate", str(ilsvrc_root), "--limit", "2", "--map-option", "n=4")
    assert code != 0 and "--map-option needs --maps" in err


def test_shard_checks_find_impossible_results():
    """Issue 24: a top-activations shard with an image index outside it and a class-models shard
    whose PNG does not decode are impossible: the store recomputes them instead of merging."""
    from deepinside.cli import _check_class_models, _check_counts, _check_top
    from deepinside.jobs import _png
    import numpy as np

    top = {"units": [0, 1], "values": [[2.0], [1.0]], "image_index": [[4], [5]],
           "position": [[[0, 1]], [[1, 0]]], "map_size": [2, 2], "n_images": 4}
    check = _check_top(["blocks.4"], {"blocks.4": [0, 1]}, k=9)
    assert check({"blocks.4": top}, 4, 8) is None
    assert "image index outside 4..7" in check({"blocks.4": {**top, "image_index": [[4], [99]]}}, 4, 8)
    assert "position outside" in check({"blocks.4": {**top, "position": [[[0, 5]], [[1, 0]]]}}, 4, 8)
    assert "other units" in check({"blocks.4": {**top, "units": [0, 2]}}, 4, 8)
    good = {"class_index": 3, "class_name": "c", "score": 1.0,
            "png": _png(np.zeros((4, 4, 3), np.uint8))}
    check = _check_class_models([7, 3])
    assert check([good], 1, 2) is None
    assert "does not decode" in check([{**good, "png": "bm90IGEgcG5n"}], 1, 2)
    assert "expected [3]" in check([{**good, "class_index": 5}], 1, 2)
    check = _check_counts(["graphcut", "classification"], 5)
    assert check({"n": 4, "rows": {"graphcut": [1, 2], "classification": [2, 3]}}, 0, 4) is None
    assert "not two integers in 0..4" in check(
        {"n": 4, "rows": {"graphcut": [900, -5], "classification": [2, 3]}}, 0, 4)
    assert "exceeds top-5" in check({"n": 4, "rows": {"graphcut": [1, 2],
                                                      "classification": [3, 2]}}, 0, 4)
