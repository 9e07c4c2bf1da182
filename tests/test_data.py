"""load_image on every kind of bad or unusual file; sample images; the ILSVRC reader."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from state_helpers import tiny_clf
from torch import nn

import deepinside as di


#: Lite0's preprocessing (TF constants, 224 of 256, bicubic) around a stand-in network
LITE0_GEOMETRY = tiny_clf(nn.Identity(), 1000, size=224, frac=224 / 256, mean=(127 / 255,) * 3,
                          std=(128 / 255,) * 3)


def _save(tmp_path: Path, img: Image.Image, name: str, **kw) -> Path:
    p = tmp_path / name
    img.save(p, **kw)
    return p


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "RGB"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (12, 20, 3), dtype=np.uint8))
    if mode in ("I;16", "I", "F"):
        arr = np.linspace(0, 1, 240).reshape(12, 20)
        scale = {"I;16": 65535, "I": 4000, "F": 1.0}[mode]
        img = Image.fromarray((arr * scale).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
        if mode == "I;16":
            img = img.convert("I;16") if img.mode != "I;16" else img
    else:
        img = rgb.convert(mode)
    ext = "tiff" if mode in ("CMYK", "I;16", "I", "F") else "png"
    out = di.load_image(_save(tmp_path, img, f"x.{ext}"))
    assert out.mode == "RGB" and out.size == (20, 12)
    if mode in ("I;16", "I", "F"):  # rescaled to the full 8-bit range, not clipped to black/white
        a = np.asarray(out)[..., 0]
        assert a.min() == 0 and a.max() == 255


def test_rgba_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    out = di.load_image(_save(tmp_path, img, "t.png"))
    assert np.asarray(out)[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    p = _save(tmp_path, img, "r.jpg", exif=exif, quality=95)
    out = di.load_image(p)
    assert out.size == (10, 30)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg.*empty"):
        di.load_image(p)


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is text, not a JPEG")
    with pytest.raises(ValueError, match="notes.jpg.*not an image"):
        di.load_image(p)


def test_truncated_image(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match="cut.jpg.*truncated"):
        di.load_image(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        di.load_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="directory"):
        di.load_image(tmp_path)


def test_huge_image_is_refused_before_decoding(tmp_path):
    p = _save(tmp_path, Image.new("RGB", (400, 300)), "big.png")
    with pytest.raises(ValueError, match="big.png.*max_pixels"):
        di.load_image(p, max_pixels=100_000)


def test_max_pixels_above_pils_bomb_limit_is_honoured(tmp_path, monkeypatch):
    # regression: PIL's own limit (~89 Mpx; an error above twice it) fired before max_pixels.
    # A small image and a lowered PIL limit stand for a 90 Mpx photo.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    p = _save(tmp_path, Image.new("RGB", (60, 50), (1, 2, 3)), "wide.png")   # 3000 px: 3x PIL's
    assert di.load_image(p, max_pixels=10_000).size == (60, 50)
    assert Image.MAX_IMAGE_PIXELS == 1000                                       # restored
    with pytest.raises(ValueError, match="wide.png.*max_pixels"):
        di.load_image(p, max_pixels=2_000)
    with pytest.raises(di.data.UnreadableImageError):
        di.load_image(p, max_pixels=2_000)
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        di.load_image(p, max_pixels=0)


@pytest.mark.slow
def test_one_pixel_image_loads_but_is_refused_by_the_classifier(tmp_path, clf):
    img = di.load_image(_save(tmp_path, Image.new("RGB", (1, 1)), "dot.png"))
    assert img.size == (1, 1)
    with pytest.raises(ValueError, match="1x1.*too small"):
        clf.preprocess([img])


@settings(max_examples=25, deadline=None)
@given(w=st.integers(8, 90), h=st.integers(8, 90))
def test_preprocess_any_size_gives_the_input_size(w, h):
    x = LITE0_GEOMETRY.preprocess([Image.new("RGB", (w, h), (10, 200, 30))])
    assert x.shape == (1, 3, 224, 224)
    assert np.allclose(x[0, :, 100, 100].cpu().numpy(), (np.array([10, 200, 30]) - 127) / 128, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(w=st.integers(1, 5000), h=st.integers(1, 5000))
def test_center_crop_box_is_a_centred_square_inside(w, h):
    x0, y0, x1, y1 = LITE0_GEOMETRY.center_crop_box(w, h)
    assert x1 - x0 == y1 - y0 >= 1
    assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h
    assert abs((x0 + x1) - w) <= 1 and abs((y0 + y1) - h) <= 1


def test_sample_images_offline():
    imgs = di.sample_images()
    assert set(imgs) >= {"chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower", "grace_hopper"}
    assert all(im.mode == "RGB" and min(im.size) >= 200 for im in imgs.values())
    with pytest.raises(ValueError, match="unknown sample image"):
        di.sample_images(["lena"])


def _fake_ilsvrc(root: Path, n: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(n):
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        Image.new("RGB", (50, 40), (i * 40, 0, 0)).save(root / "images" / f"{stem}.JPEG")
        (root / "annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>50</width><height>40</height><depth>3</depth></size>"
            f"<object><name>n01440764</name><bndbox><xmin>0</xmin><ymin>2</ymin><xmax>49</xmax><ymax>30</ymax></bndbox></object>"
            f"<object><name>n01440764</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
            f"</annotation>")
    return root


def test_ilsvrc_reader_on_a_handmade_folder(tmp_path):
    ds = di.IlsvrcDataset(_fake_ilsvrc(tmp_path / "val"))
    assert len(ds) == 3
    img, rec = ds[1]
    assert img.size == (50, 40) and rec.label == 0 and rec.wnid == "n01440764"
    # 0-based inclusive XML corners -> half-open boxes: the full-width box is 50 wide
    assert rec.boxes == ((0.0, 2.0, 50.0, 31.0), (5.0, 5.0, 10.0, 10.0))
    assert ds.labels.tolist() == [0, 0, 0]


def test_ilsvrc_reader_refuses_wrong_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        di.IlsvrcDataset(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="not in the ILSVRC layout"):
        di.IlsvrcDataset(tmp_path / "flat")
    root = _fake_ilsvrc(tmp_path / "bad")
    (root / "annotations" / "ILSVRC2012_val_00000001.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="not valid XML"):
        di.IlsvrcDataset(root)


def _annotation(width: str = "50", height: str = "40", box: str = "<xmin>0</xmin><ymin>2</ymin>"
                "<xmax>49</xmax><ymax>30</ymax>") -> str:
    return (f"<annotation><size><width>{width}</width><height>{height}</height></size>"
            f"<object><name>n01440764</name><bndbox>{box}</bndbox></object></annotation>")


@pytest.mark.parametrize("xml, message", [
    (_annotation(box="<ymin>2</ymin><xmax>49</xmax><ymax>30</ymax>"), "has no <xmin>"),
    (_annotation(box="<xmin>40</xmin><ymin>2</ymin><xmax>10</xmax><ymax>30</ymax>"), "xmax < xmin"),
    (_annotation(box="<xmin>0</xmin><ymin>30</ymin><xmax>10</xmax><ymax>2</ymax>"), "ymax < ymin"),
    (_annotation(box="<xmin>nan</xmin><ymin>2</ymin><xmax>10</xmax><ymax>30</ymax>"), "not a finite"),
    (_annotation(box="<xmin>a</xmin><ymin>2</ymin><xmax>10</xmax><ymax>30</ymax>"), "not a number"),
    (_annotation(width="five hundred"), "<width>five hundred</width> is not a number"),
    (_annotation(height="0"), "has no pixels"),
    (_annotation(box="<xmin>0</xmin><ymin>2</ymin><xmax>60</xmax><ymax>30</ymax>"),
     "lies outside the 50x40 image"),
    (_annotation(box="<xmin>-3</xmin><ymin>2</ymin><xmax>10</xmax><ymax>30</ymax>"),
     "lies outside"),
])
def test_ilsvrc_reader_refuses_bad_boxes_naming_the_file(tmp_path, xml, message):
    # regression: a missing <xmin> became NaN, xmax < xmin passed, "five hundred" a bare int() error
    root = _fake_ilsvrc(tmp_path / "val")
    (root / "annotations" / "ILSVRC2012_val_00000002.xml").write_text(xml)
    with pytest.raises(ValueError, match=r"ILSVRC2012_val_00000002\.xml.*" + re.escape(message)):
        di.IlsvrcDataset(root)


def test_ilsvrc_check_images_names_an_unreadable_file(tmp_path):
    root = _fake_ilsvrc(tmp_path / "val")
    di.IlsvrcDataset(root).check_images()
    (root / "images" / "ILSVRC2012_val_00000003.JPEG").write_bytes(b"not a jpeg at all")
    ds = di.IlsvrcDataset(root)
    with pytest.raises(di.data.UnreadableImageError, match="ILSVRC2012_val_00000003.JPEG"):
        ds.check_images()
    with pytest.raises(di.data.UnreadableImageError, match="ILSVRC2012_val_00000003.JPEG"):
        ds[2]


def test_ilsvrc_sample_when_present(ilsvrc_root):
    ds = di.IlsvrcDataset(ilsvrc_root)
    assert len(ds) >= 200 and len(set(ds.labels.tolist())) == 10
    img, rec = ds[0]
    assert img.size == (rec.width, rec.height)
    for x0, y0, x1, y1 in rec.boxes:
        assert 0 <= x0 < x1 <= rec.width and 0 <= y0 < y1 <= rec.height


def test_ilsvrc_size_that_disagrees_with_the_image_is_refused(tmp_path):
    # an XML <width> that is not the image's: its boxes would be scored misplaced
    root = _fake_ilsvrc(tmp_path / "val")
    xml = root / "annotations" / "ILSVRC2012_val_00000002.xml"
    w, h = Image.open(root / "images" / "ILSVRC2012_val_00000002.JPEG").size
    xml.write_text(_annotation(width=str(w + 7), height=str(h), box="<xmin>0</xmin><ymin>0</ymin>"
                               "<xmax>3</xmax><ymax>3</ymax>"))
    ds = di.IlsvrcDataset(root)
    i = [r.image_path.name for r in ds.records].index("ILSVRC2012_val_00000002.JPEG")
    with pytest.raises(ValueError, match=rf"00000002.JPEG is {w}x{h} pixels but .*<size> {w + 7}x{h}"):
        ds[i]
    with pytest.raises(ValueError, match="boxes would be misplaced"):
        ds.check_images()
