"""Tests of deepinside.localisation (Sect. 3.2): seeds, colour-GMM GraphCut, boxes, localise()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from state_helpers import assert_same_state, conv_clf, model_state, rand_pil
from torch import nn

import deepinside as di
from deepinside.measures.localisation import Segmentation, saliency_seeds, smooth_saliency

H, W = 96, 128
OBJ = (slice(24, 72), slice(32, 96))  # rows, cols of the object: a 48 x 64 rectangle


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red rectangle on a green background (noisy), saliency on the left part of the object only."""
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3))
    img[:] = (40, 130, 50)
    img[OBJ] = (200, 40, 40)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:H, :W]
    sal = np.exp(-((yy - 44) ** 2 + (xx - 52) ** 2) / (2 * 15.0 ** 2)) + 0.01 * rng.random((H, W))
    gt = np.zeros((H, W), bool)
    gt[OBJ] = True
    return img, sal, gt


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_synthetic_object_is_segmented_whole():
    img, sal, gt = _scene()
    # the saliency alone (its top 5 %) covers a fifth of the object ...
    fg, _ = saliency_seeds(sal)
    assert _iou(fg, gt) < 0.25
    # ... the colour GraphCut propagates it to the whole object
    mask = di.segment(img, sal)
    assert mask.dtype == bool and mask.shape == (H, W)
    assert _iou(mask, gt) > 0.9
    assert di.bounding_box(mask) == pytest.approx((32, 24, 96, 72), abs=3)


@pytest.mark.parametrize("kw", [dict(seeds="soft"), dict(neighbourhood=4), dict(iterations=2),
                                dict(work_side=None), dict(work_side=48), dict(n_components=1)])
def test_synthetic_object_with_other_settings(kw):
    img, sal, gt = _scene(1)
    assert _iou(di.segment(img, sal, **kw), gt) > 0.85


def test_inputs_pil_tensor_and_grayscale_agree():
    img, sal, gt = _scene()
    a = di.segment(img, sal)
    b = di.segment(Image.fromarray(img), torch.from_numpy(sal).float())
    assert _iou(a, b) > 0.98
    gray = img.mean(2).astype(np.uint8)  # red (93) vs green (~88)... similar intensity
    m = di.segment(gray, sal)  # 2-D image: intensity models; must not crash
    assert m.shape == (H, W) and m.dtype == bool
    # float image in [0, 1]
    c = di.segment(img / 255.0, sal)
    assert _iou(a, c) > 0.98


def test_deterministic():
    img, sal, _ = _scene(2)
    assert np.array_equal(di.segment(img, sal), di.segment(img, sal))


def test_details_are_consistent():
    img, sal, _ = _scene()
    d = di.localisation.segment_details(img, sal)
    assert isinstance(d, Segmentation)
    assert not (d.fg_seeds & d.bg_seeds).any()
    assert np.array_equal(d.mask, di.segment(img, sal))
    assert (d.mask <= d.foreground).all()  # the mask is one component of the labelling
    # hard seeds: seed pixels keep their label
    assert d.foreground[d.fg_seeds].all() and not d.foreground[d.bg_seeds].any()
    for a in d:
        assert a.shape == (H, W)


def test_valid_region_restricts_the_seeds():
    img, sal, _ = _scene()
    valid = np.zeros((H, W), bool)
    valid[:, W // 4:] = True  # the left quarter was "not seen"
    d = di.localisation.segment_details(img, np.where(valid, sal, 0.0), valid=valid)
    assert not (d.fg_seeds | d.bg_seeds)[~valid].any()
    assert d.fg_seeds.sum() == pytest.approx(0.05 * valid.sum(), abs=2)
    assert d.bg_seeds.sum() == pytest.approx(0.30 * valid.sum(), abs=2)
    # without it, the zero margin is all background seeds
    d0 = di.localisation.segment_details(img, np.where(valid, sal, 0.0))
    assert d0.bg_seeds[~valid].all()
    with pytest.raises(ValueError, match="valid"):
        di.segment(img, sal, valid=valid[:, :-1])
    assert not di.segment(img, sal, valid=np.zeros((H, W), bool)).any()  # nothing valid: empty


@pytest.mark.parametrize("value", [0.0, 3.0])
def test_constant_saliency_gives_empty_mask(value):
    img, _, _ = _scene()
    mask = di.segment(img, np.full((H, W), value))
    assert mask.shape == (H, W) and not mask.any()
    assert di.bounding_box(mask) is None


@pytest.mark.parametrize("value", [0.5, 0.1, 1e-7])
def test_constant_map_resized_to_the_working_side_gives_empty_mask(value):
    # regression: the area resize to work_side turned 0.5 everywhere into 242 values, 554 px mask
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    assert not di.segment(img, np.full((300, 451), value)).any()
    d = di.localisation.segment_details(img, np.full((300, 451), value))
    assert not (d.mask.any() or d.foreground.any() or d.fg_seeds.any() or d.bg_seeds.any())
    sal = np.zeros((300, 451))
    valid = np.zeros((300, 451), bool)
    valid[50:250, 100:300] = True
    sal[valid] = value                                  # constant inside the frame
    assert not di.segment(img, sal, valid=valid).any()


def test_one_pixel_foreground_does_not_crash():
    img, _, _ = _scene()
    sal = np.zeros((H, W))
    sal[40, 50] = 1.0
    for smooth in (0.0, 0.02):
        mask = di.segment(img, sal, smooth=smooth)
        assert mask.dtype == bool and mask.shape == (H, W)
        assert mask[40, 50]  # the single seed is a hard foreground seed
    # a one-colour image: singular colour statistics are regularised
    flat = np.full((H, W, 3), 128, np.uint8)
    assert di.segment(flat, sal, smooth=0.0)[40, 50]


def test_seeds_are_the_paper_quantiles():
    s = np.arange(100, dtype=float).reshape(10, 10)
    fg, bg = saliency_seeds(s, 0.95, 0.30)
    assert fg.sum() == 5 and s[fg].min() == 95  # 95 % quantile = 94.05
    assert bg.sum() == 30 and s[bg].max() == 29  # 30 % quantile = 29.7
    # ties at the bottom (the zero border left by a crop) all go to the background
    s2 = np.zeros((10, 10))
    s2[:, 5:] = np.arange(50).reshape(10, 5) + 1
    fg2, bg2 = saliency_seeds(s2)
    assert bg2.sum() == 50 and not (fg2 & bg2).any() and fg2.sum() == 5


def test_smoothing_sigma_is_a_fraction_of_the_shorter_side():
    s = np.zeros((50, 200))
    s[25, 100] = 1.0
    out = smooth_saliency(s, 0.1)  # sigma = 5 px
    assert out.sum() == pytest.approx(1.0, rel=1e-6)
    col = out[:, 100] / out[25, 100]
    assert col[30] == pytest.approx(np.exp(-0.5), rel=0.02)  # one sigma away
    assert np.array_equal(smooth_saliency(s, 0.0), s)


@pytest.mark.parametrize("bad, err", [
    (lambda img, sal: di.segment(img, sal[:-1]), "same pixel grid"),
    (lambda img, sal: di.segment(img, np.where(sal > 0.5, np.nan, sal)), "NaN"),
    (lambda img, sal: di.segment(img, sal[None]), "2-D"),
    (lambda img, sal: di.segment(img[..., :2], sal), "shape"),
    (lambda img, sal: di.segment(img[:1, :1], sal[:1, :1]), "too small"),
    (lambda img, sal: di.segment(img / 255.0 * 2, sal), r"\[0, 1\]"),
    (lambda img, sal: di.segment(img, sal, fg_quantile=0.3, bg_quantile=0.9), "bg_quantile < fg_quantile"),
    (lambda img, sal: di.segment(img, sal, neighbourhood=6), "neighbourhood"),
    (lambda img, sal: di.segment(img, sal, seeds="medium"), "seeds"),
    (lambda img, sal: di.segment(img, sal, pairwise=-1), "pairwise"),
    (lambda img, sal: di.segment(img, sal, iterations=0), "iterations"),
    (lambda img, sal: di.segment(img, sal, smooth=-0.1), "sigma"),
    (lambda img, sal: di.segment("image.jpg", sal), "PIL image"),
])
def test_bad_inputs_raise_clear_errors(bad, err):
    img, sal, _ = _scene()
    with pytest.raises((ValueError, TypeError), match=err):
        bad(img, sal)


def test_bounding_box_by_hand():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True  # 3 rows x 6 cols
    assert di.bounding_box(m) == (3, 2, 9, 5)
    m[8, 0] = True  # a stray pixel: not in the largest component ...
    assert di.bounding_box(m) == (3, 2, 9, 5)
    assert di.bounding_box(m, largest_component=False) == (0, 2, 9, 9)  # ... unless asked
    assert di.bounding_box(np.zeros((4, 4), bool)) is None
    assert di.bounding_box(torch.ones(3, 5, dtype=torch.bool)) == (0, 0, 5, 3)
    with pytest.raises(ValueError, match="2-D"):
        di.bounding_box(np.ones((2, 3, 4), bool))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 20), st.integers(0, 20), st.integers(1, 20), st.integers(1, 20))
def test_bounding_box_of_a_rectangle_is_the_rectangle(x0, y0, w, h):
    m = np.zeros((45, 45), bool)
    m[y0:y0 + h, x0:x0 + w] = True
    assert di.bounding_box(m) == (x0, y0, x0 + w, y0 + h)


@pytest.mark.slow
def test_localise_on_a_photo(clf, photos):
    img = photos["chelsea"]
    before = model_state(clf.net)
    dets = di.localise(clf, img, topk=2, crops="center")
    assert_same_state(before, model_state(clf.net))
    assert [d.class_index for d in dets] == [c for c, _, _ in clf.predict(img, topk=2)[0]]
    W_, H_ = img.size
    d = dets[0]
    assert d.mask.shape == (H_, W_) and d.mask.dtype == bool
    x0, y0, x1, y1 = d.box
    assert 0 <= x0 < x1 <= W_ and 0 <= y0 < y1 <= H_
    assert 0 < d.score <= 1 and dets[0].score >= dets[1].score
    # the cat (chelsea) fills the middle of the photo: the box covers the image centre
    assert x0 < W_ / 2 < x1 and y0 < H_ / 2 < y1


@pytest.mark.slow
def test_localise_bad_inputs(clf, photos):
    with pytest.raises(TypeError, match="PIL"):
        di.localise(clf, np.zeros((10, 10, 3)))
    with pytest.raises(ValueError, match="topk"):
        di.localise(clf, photos["coffee"], topk=0)
    with pytest.raises(ValueError, match="crops"):
        di.localise(clf, photos["coffee"], topk=1, crops="five")


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(8, 40), st.integers(8, 40))
def test_segment_properties_on_random_inputs(seed, h, w):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    sal = rng.random((h, w)) ** 3
    d = di.localisation.segment_details(img, sal)
    assert d.mask.shape == (h, w) and d.mask.dtype == bool
    assert (d.mask <= d.foreground).all() and d.foreground[d.fg_seeds].all() and not d.foreground[d.bg_seeds].any()
    box = di.bounding_box(d.mask)
    assert box is not None  # hard foreground seeds exist, so the mask is never empty
    import cv2
    n, _ = cv2.connectedComponents(d.mask.astype(np.uint8), connectivity=8)
    assert n == 2  # background + exactly one component
    assert np.array_equal(d.mask, di.segment(img, sal))  # deterministic


@pytest.mark.slow
@pytest.mark.parametrize("crops", ["center", "ten", "full"])
def test_saliency_in_image_frames(clf, photos, crops):
    from deepinside.measures.localisation import saliency_in_image

    img = photos["coffee"]  # 600 x 400
    W_, H_ = img.size
    maps = saliency_in_image(clf, img, [967, "espresso"], crops=crops)  # same class twice, by index and name
    assert maps.shape == (2, H_, W_) and maps.dtype == np.float32 and (maps >= 0).all()
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6 * maps.max())
    if crops == "full":
        assert (maps[0][:, :20] > 0).mean() > 0.9  # the whole image is seen
    else:
        assert maps[0][:, :20].max() == 0.0  # margins outside the crop frame
    with pytest.raises(ValueError, match="class"):
        saliency_in_image(clf, img, [1000], crops=crops)


class _BatchSpy(nn.Module):
    """Wraps a network and records the largest batch it was given."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.largest = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, x.shape[0])
        return self.net(x)


def test_localise_large_photo_works_on_a_reduced_copy_with_boxes_in_original_pixels():
    # regression: localise worked at full resolution (48 Mpx: 25 s, 7.2 GB) and put the 50
    # ten-crop inputs through one batch
    clf = conv_clf(seed=3)
    spy = _BatchSpy(clf.net)
    clf.net = spy
    big = rand_pil(30, 20, seed=5).resize((300, 200), Image.NEAREST)
    dets = di.localise(clf, big, topk=3, crops="ten")          # max_side = 2 * resize_size = 20
    assert spy.largest <= 5                                      # at most 5 inputs per pass
    work, scale = di.frames.working_copy(big, 20, clf.interpolation)
    assert work.size == (30, 20) and scale == (10.0, 10.0)
    ref = di.localise(clf, work, topk=3, crops="ten")
    for d, r in zip(dets, ref):
        assert d.mask.shape == (200, 300) and d.class_index == r.class_index
        if r.box is None:
            assert d.box is None
        else:                                                    # the small box, 10x
            assert d.box == tuple(10 * v for v in r.box)
    det = di.localisation.localise_details(clf, big, topk=1, crops="center")[0]
    assert det.image.size == (30, 20) and det.scale == (10.0, 10.0)
    assert det.saliency.shape == (20, 30) and det.detection.mask.shape == (200, 300)
    full = di.localisation.localise_details(clf, big, topk=1, crops="center", max_side=200)[0]
    assert full.image is big and full.scale == (1.0, 1.0)
    with pytest.raises(ValueError, match="max_side"):
        di.localise(clf, big, topk=1, max_side=5)


def test_localise_refuses_a_tiny_image():
    with pytest.raises(ValueError, match="7x30 pixels is too small"):
        di.localise(conv_clf(), Image.new("RGB", (7, 30)), topk=1)


def test_segment_params_are_a_frozen_dataclass_for_ablations():
    from dataclasses import FrozenInstanceError, replace

    img, sal, _ = _scene()
    p = di.localisation.SegmentParams()
    assert (p.fg_quantile, p.bg_quantile, p.work_side) == (0.95, 0.30, 112)
    with pytest.raises(FrozenInstanceError):
        p.pairwise = 0.0
    row = replace(p, pairwise=0.0, neighbourhood=4)
    assert np.array_equal(di.segment(img, sal, row), di.segment(img, sal, pairwise=0.0, neighbourhood=4))
    assert np.array_equal(di.segment(img, sal, p), di.segment(img, sal))
    with pytest.raises(TypeError, match="unknown segment parameter"):
        di.segment(img, sal, gamma=3)
    with pytest.raises(ValueError, match="neighbourhood"):
        replace(p, neighbourhood=6)
    assert isinstance(di.segment(img, sal), np.ndarray)       # one return type


def test_saliency_in_image_with_a_registered_map():
    """maps= computes that method's map in the frame of crops; the gated map is the product."""
    from state_helpers import conv_clf, rand_pil

    from deepinside.measures.localisation import saliency_in_image

    clf = conv_clf(seed=4)
    im = rand_pil(40, 30, seed=1)
    g = saliency_in_image(clf, im, [0, 1], crops="full", maps="gradient")
    gg = saliency_in_image(clf, im, [0, 1], crops="full", maps="gradient_gradcam")
    cam = saliency_in_image(clf, im, [0, 1], crops="full", maps="gradcam")
    assert g.shape == gg.shape == (2, 30, 40)
    assert np.allclose(g, saliency_in_image(clf, im, [0, 1], crops="full"))  # the paper's map
    assert (gg >= 0).all() and ((cam > 0) | (gg == 0)).all()  # gated: 0 where Grad-CAM is 0
    c = saliency_in_image(clf, im, [0], crops="center", maps="gradient_gradcam")[0]
    assert c[:, :5].max() == 0 and c.max() > 0               # outside the centre crop: 0
    ten = saliency_in_image(clf, im, [0, 1], crops="ten", maps="gradient")  # any map, 10 crops
    assert np.allclose(ten, saliency_in_image(clf, im, [0, 1], crops="ten"), atol=1e-6)
