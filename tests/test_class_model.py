"""class_model (eq. 1): the linear optimum, batching, monotone score, errors, state left alone."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import deepinside as di
from deepinside.methods.class_model import class_model, recognised, sweep
from deepinside.core.models import Classifier
from state_helpers import assert_same_state, model_state


def linear_clf(n_classes: int = 3, size: int = 4, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, n_classes))
    for p in net.parameters():
        p.requires_grad_(False)
    return Classifier(net=net.eval(), device=torch.device("cpu"), input_size=size, crop_fraction=1.0,
                      mean=(0.5,) * 3, std=(0.5,) * 3, interpolation=Image.BICUBIC,
                      class_names=[f"class{i}" for i in range(n_classes)], wnids=[f"n{i:08d}" for i in range(n_classes)])


def test_linear_score_reaches_w_over_2_lambda():
    """For S(I) = w.I + b, eq. (1) is maximised by I* = w / (2 lambda)."""
    clf = linear_clf()
    lam = 0.5
    r = class_model(clf, [0, 2], steps=300, lr=0.1, l2=lam, clip=False, show_progress=False)
    w = clf.net[1].weight
    expected = torch.stack([w[0], w[2]]).reshape(2, 3, 4, 4) / (2 * lam)
    assert torch.allclose(r.inputs, expected, atol=1e-4)


def test_batched_equals_one_class_at_a_time():
    clf = linear_clf()
    both = class_model(clf, [0, 1], steps=20, lr=0.05, l2=0.1, show_progress=False)
    for i, c in enumerate([0, 1]):
        one = class_model(clf, [c], steps=20, lr=0.05, l2=0.1, show_progress=False)
        assert torch.allclose(both.inputs[i], one.inputs[0], atol=1e-6)


def test_score_increases_and_result_is_deterministic():
    clf = linear_clf()
    a = class_model(clf, ["class1"], steps=15, lr=0.05, l2=0.01, init="random", seed=3, show_progress=False)
    b = class_model(clf, ["class1"], steps=15, lr=0.05, l2=0.01, init="random", seed=3, show_progress=False)
    assert torch.equal(a.inputs, b.inputs)
    assert a.scores[-1, 0] > a.scores[0, 0]
    assert a.images.min() >= 0 and a.images.max() <= 1 and a.images.shape == (1, 3, 4, 4)


def test_posterior_objective_runs_and_raises_posterior():
    clf = linear_clf()
    r = class_model(clf, [2], steps=30, lr=0.05, l2=0.01, objective="posterior", show_progress=False)
    assert r.posteriors[-1, 0] > r.posteriors[0, 0]


@pytest.mark.parametrize("bad, err", [("no such class", ValueError), (7, ValueError), (-1, ValueError),
                                      ([], ValueError), (2.5, TypeError)])
def test_bad_classes_are_refused(bad, err):
    with pytest.raises(err):
        class_model(linear_clf(), bad, steps=1, show_progress=False)


@pytest.mark.parametrize("kw", [dict(objective="softmax"), dict(steps=-1), dict(lr=0.0), dict(l2=[0.1, 0.2, 0.3]),
                                dict(init="noise"), dict(l2=-1.0)])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        class_model(linear_clf(), [0, 1], show_progress=False, **{"steps": 1, **kw})


def test_model_state_unchanged():
    clf = linear_clf()
    clf.net.train()
    clf.net[1].weight.requires_grad_(True)
    before = model_state(clf.net)
    class_model(clf, [0], steps=3, show_progress=False)
    assert_same_state(before, model_state(clf.net))


def test_sweep_and_recognised_on_linear_model():
    clf = linear_clf()
    rows, results = sweep(clf, 1, l2_values=[0.0, 1.0], inits=("zero", "random"), clips=(False,), steps=30,
                          lr=0.05, show_progress=False)
    assert len(rows) == 4 and len(results) == 1
    by = {(r["init"], r["l2"]): r for r in rows}
    assert by[("zero", 1.0)]["norm"] < by[("zero", 0.0)]["norm"]
    assert recognised(clf, results[0]).shape == (4,)


@pytest.mark.slow
def test_pretrained_class_model_is_recognised(clf):
    r = class_model(clf, ["goose"], steps=15, lr=1.0, l2=1e-3, show_progress=False)
    assert bool(recognised(clf, r)[0]) and r.final_scores[0] > r.scores[0, 0]


# --- the decorrelated Fourier parameterisation (param="fourier") --------------------------------

from deepinside.methods.class_model import FourierParam  # noqa: E402
from deepinside.methods.param import (FourierImage, colour_basis, colour_statistics, default_colour_basis,  # noqa: E402
                              frequency_weights, high_frequency_share, random_transform)

STILL = FourierParam(jitter=0.0, scale=(1.0, 1.0), rotate=0.0)   # no random transforms


def test_colour_basis_of_a_diagonal_covariance():
    """cov = diag(4, 1, 9): C = U sqrt(S) / sqrt(9), columns sorted by variance: C C^T = cov / 9."""
    c = colour_basis(torch.diag(torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64)).numpy())
    assert torch.allclose(c @ c.T, torch.diag(torch.tensor([4 / 9, 1 / 9, 1.0])), atol=1e-6)
    assert torch.allclose(c.abs().sum(0), torch.tensor([1.0, 2 / 3, 1 / 3]), atol=1e-6)


def test_colour_statistics_of_two_flat_images_and_bad_covariances():
    a, b = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    st = colour_statistics([a, b])
    assert st.n_images == 2 and st.n_pixels == 32
    assert torch.allclose(torch.as_tensor(st.mean), torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64))
    # red and blue perfectly anti-correlated, green constant: cov[0, 2] = -var
    assert st.cov[0, 2] == pytest.approx(-st.cov[0, 0]) and st.cov[1, 1] == 0
    with pytest.raises(ValueError):
        colour_basis(st.cov)                       # singular: not positive definite
    with pytest.raises(ValueError):
        colour_statistics([])


def test_shipped_colour_basis_is_photo_like():
    """Photographs: R, G, B strongly correlated; the first direction is luminance (all > 0)."""
    from deepinside.methods import _colour_stats

    c = default_colour_basis()
    assert _colour_stats.N_IMAGES >= 800
    assert (c[:, 0] > 0.5).all() and c[:, 0].norm() == pytest.approx(1.0, abs=1e-5)
    assert c[:, 1].norm() < 0.5 and c[:, 2].norm() < c[:, 1].norm()


def test_frequency_weights_give_unit_variance_pixels():
    w = frequency_weights(16, 16, alpha=1.0)
    assert w.shape == (16, 9) and w[0, 0] == w.max() and w[0, 1] == pytest.approx(w[0, 0].item())
    assert w[0, 4] == pytest.approx(w[0, 0].item() / 4)     # 1/f: 4 cycles per image
    torch.manual_seed(0)
    p = torch.randn(400, 16, 9, 2) / 2 ** 0.5
    y = torch.fft.irfft2(torch.view_as_complex(p) * w, s=(16, 16), norm="ortho")
    assert y.var().item() == pytest.approx(1.0, abs=0.15)
    flat = frequency_weights(8, 8, alpha=0.0)
    assert torch.allclose(flat, torch.ones_like(flat))     # alpha = 0: orthonormal, no reweighting
    with pytest.raises(ValueError):
        frequency_weights(8, 8, alpha=-1.0)


def test_fourier_image_zero_is_the_mean_and_inverse_round_trips():
    f = FourierImage(2, 12, 10, mean=(0.5, 0.25, 0.75))
    assert torch.allclose(f(f.zeros()), torch.tensor([0.5, 0.25, 0.75]).view(1, 3, 1, 1).expand(2, 3, 12, 10))
    x = torch.rand(2, 3, 12, 10) * 0.9 + 0.05
    assert torch.allclose(f(f.inverse(x)), x, atol=1e-5)
    with pytest.raises(ValueError):
        f(torch.zeros(1, 3, 12, 6, 2))
    with pytest.raises(ValueError):
        FourierImage(1, 8, 8, mean=(0.0, 0.5, 0.5))


def test_random_transform_identity_shift_and_determinism():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_transform(x, g), x)                      # trivial ranges: no-op
    a = random_transform(x, torch.Generator().manual_seed(1), jitter=2, scale=(0.9, 1.1), rotate=10)
    b = random_transform(x, torch.Generator().manual_seed(1), jitter=2, scale=(0.9, 1.1), rotate=10)
    assert torch.equal(a, b) and not torch.equal(a, x)
    # a pure zoom of 1 and no rotation with jitter: content moves by less than 2 pixels
    c = random_transform(torch.ones(1, 1, 8, 8), g, jitter=2)
    assert c[0, 0, 2:6, 2:6].min() == pytest.approx(1.0)                # the centre stays covered
    with pytest.raises(ValueError):
        random_transform(x, g, scale=(1.1, 0.9))


def test_cheap_transform_is_an_integer_shift_and_a_shared_zoom():
    """rotate = 0: each image is its input shifted by whole pixels (|shift| <= jitter, zeros
    coming in), and a zoom of 1/2 puts the batch, halved, in the centre of a zero frame."""
    x = torch.rand(5, 2, 9, 7)
    y = random_transform(x, torch.Generator().manual_seed(2), jitter=3)
    for xi, yi in zip(x, y):
        found = []
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                p = torch.nn.functional.pad(xi, (3, 3, 3, 3))[:, 3 + dy: 12 + dy, 3 + dx: 10 + dx]
                found += [(dy, dx)] if torch.equal(p, yi) else []
        assert len(found) == 1
    ones = random_transform(torch.ones(2, 1, 8, 8), torch.Generator(), scale=(0.5, 0.5))
    frame = torch.zeros(8, 8)
    frame[2:6, 2:6] = 1
    assert torch.equal(ones[0, 0], frame) and torch.equal(ones[1, 0], frame)
    a = random_transform(x, torch.Generator().manual_seed(4), jitter=2, scale=(0.8, 1.25))
    b = random_transform(x, torch.Generator().manual_seed(4), jitter=2, scale=(0.8, 1.25))
    assert torch.equal(a, b) and a.shape == x.shape


def test_cosine_schedule_factors_and_bad_schedule():
    from deepinside.methods.class_model import _lr_factors

    assert _lr_factors("constant", 3) == [1.0, 1.0, 1.0]
    assert _lr_factors("cosine", 4) == pytest.approx([1.0, (1 + 2 ** -0.5) / 2, 0.5,
                                                      (1 - 2 ** -0.5) / 2])
    with pytest.raises(ValueError):
        class_model(linear_clf(), [0], steps=2, param=FourierParam(schedule="linear"),
                    show_progress=False)


def test_high_frequency_share_of_known_patterns():
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((xx + yy) % 2).float().expand(1, 3, 32, 32)             # only f = (0.5, 0.5)
    smooth = torch.cos(2 * torch.pi * xx / 32).float().expand(1, 3, 32, 32)  # only 1/32 cycles/px
    assert high_frequency_share(checker).item() == pytest.approx(1.0)
    assert high_frequency_share(smooth).item() == pytest.approx(0.0, abs=1e-6)


def test_fourier_reaches_the_same_optimum_as_pixels():
    """The reparameterisation changes the path, not the objective: on a linear score, without
    random transforms, both reach I* = w / (2 lambda) (inside the valid range here)."""
    clf = linear_clf()
    lam = 0.5
    w = clf.net[1].weight[1].reshape(1, 3, 4, 4)
    r = class_model(clf, [1], steps=600, lr=0.02, l2=lam, param=STILL, show_progress=False)
    assert r.param == "fourier" and r.optimizer == "adam"
    assert torch.allclose(r.inputs, w / (2 * lam), atol=5e-3)


def test_fourier_zero_steps_is_the_mean_image_and_result_is_seeded():
    clf = linear_clf()
    r0 = class_model(clf, [0, 1], steps=0, param="fourier", show_progress=False)
    assert torch.equal(r0.inputs, torch.zeros(2, 3, 4, 4))
    fp = FourierParam(jitter=1.0, scale=(0.9, 1.1), rotate=10.0)
    a = class_model(clf, [0, 2], steps=12, param=fp, seed=5, snapshots=[0, 6, 12], show_progress=False)
    b = class_model(clf, [0, 2], steps=12, param=fp, seed=5, show_progress=False)
    assert torch.equal(a.images, b.images) and a.scores[-1].gt(a.scores[0]).all()
    assert sorted(a.snapshots) == [0, 6, 12] and torch.equal(a.snapshots[12], a.images.cpu())
    assert a.images.min() > 0 and a.images.max() < 1


def test_fourier_batched_equals_one_at_a_time_without_transforms():
    clf = linear_clf()
    both = class_model(clf, [0, 1], steps=10, param=STILL, show_progress=False)
    one = class_model(clf, [1], steps=10, param=STILL, show_progress=False)
    assert torch.allclose(both.inputs[1], one.inputs[0], atol=1e-5)


@pytest.mark.parametrize("kw", [dict(param="wavelet"), dict(param=FourierParam(colour="lab")),
                                dict(param=FourierParam(alpha=-1.0)), dict(snapshots=[5])])
def test_bad_fourier_settings_are_refused(kw):
    with pytest.raises(ValueError):
        class_model(linear_clf(), [0], steps=2, show_progress=False, **kw)


def test_fourier_leaves_model_state_alone():
    clf = linear_clf()
    clf.net.train()
    before = model_state(clf.net)
    class_model(clf, [0], steps=2, param="fourier", show_progress=False)
    assert_same_state(before, model_state(clf.net))


def test_cached_class_model_stores_and_reloads(tmp_path):
    from deepinside.methods.class_model import cached_class_model

    clf = linear_clf()
    a = cached_class_model(tmp_path, clf, [0, 1], steps=3, param="fourier", show_progress=False)
    files = list(tmp_path.glob("class_model-*.npz"))
    assert len(files) == 1
    b = cached_class_model(tmp_path, clf, ["class0", 1], steps=3, param="fourier", show_progress=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.scores, b.scores)
    assert b.settings["fourier"] == a.settings["fourier"] and b.param == "fourier"
    cached_class_model(tmp_path, clf, [0, 1], steps=4, param="fourier", show_progress=False)
    assert len(list(tmp_path.glob("class_model-*.npz"))) == 2           # other settings, other key
    c = cached_class_model(None, clf, [0, 1], steps=3, param="fourier", show_progress=False)
    assert torch.equal(c.images, a.images)                             # no cache: same, seeded
    with pytest.raises(ValueError):
        cached_class_model(tmp_path, clf, [0], steps=1, init=torch.rand(3, 4, 4))


# --- transfer measurements and figures of the chapter ------------------------------------------


def test_recognition_ranks_and_tables():
    from deepinside.measures.transfer import markdown_table, recognition, snapshot_rows, summary_rows

    clf = linear_clf(n_classes=3, size=4)
    w = clf.net[1].weight                        # image = 0.5 + 0.5 * w_c scores class c highest?
    imgs = (0.5 + 0.5 * w[[0, 1]].reshape(2, 3, 4, 4) / w.abs().max()).clamp(0, 1)
    scores = clf.scores(clf.normalize(imgs))
    expected = (scores > scores[[0, 1], [0, 1]][:, None]).sum(1)
    assert torch.equal(recognition(clf, imgs, [0, 1]), expected.cpu())
    assert recognition(clf, imgs, [0, 1], topk=0).eq(0).all()
    big = torch.nn.functional.interpolate(imgs, size=(8, 8), mode="nearest")
    assert recognition(clf, big, [0, 1]).shape == (2,)                 # resized to 4x4 first
    with pytest.raises(ValueError):
        recognition(clf, imgs, [0])
    r = class_model(clf, [0, 2], steps=4, param="fourier", snapshots=[0, 4], show_progress=False)
    rows = summary_rows({"fourier": r}, clf, {"efficientnet_same": clf})
    assert rows[0]["own top-1"] == rows[0]["same top-1"] and rows[0]["same top-5"] == 2
    path = snapshot_rows(r, clf, {})
    assert [p["step"] for p in path] == [0, 4]
    table = markdown_table(rows)
    assert table.splitlines()[0].startswith("| method | own top-1") and "/2 |" in table


def test_chapter_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepinside.figures import plotting_class_model as pcm

    imgs = torch.rand(4, 3, 8, 8)
    fig = pcm.fig1_pair_figure({"a": imgs, "b": imgs}, ["w", "x", "y", "z"], cols=2)
    assert len(fig.subfigs) == 2
    pcm.snapshots_figure({0: imgs, 5: imgs}, ["w", "x", "y", "z"], rows=[1, 2])
    pcm.gallery_figure(imgs, list("wxyz"), {"g1": ["w", "x"], "g2": ["y", "z"]}, marks=["L1", "", "", ""])
    with pytest.raises(ValueError):
        pcm.fig1_pair_figure({"a": imgs}, ["w"])
    with pytest.raises(ValueError):
        pcm.gallery_figure(imgs, list("wxyz"), {"g1": ["w"]})
    plt.close("all")


@pytest.mark.slow
def test_pretrained_fourier_class_model_is_recognised_and_smoother(clf):
    """Two classes, 40 decorrelated steps: recognised by the network, and less high-frequency
    energy than the pixel-space class models of the same classes."""
    pix = class_model(clf, ["goose", "lemon"], steps=15, lr=1.0, show_progress=False)
    four = class_model(clf, ["goose", "lemon"], steps=40, param="fourier", show_progress=False)
    assert bool(recognised(clf, four).all())
    assert (high_frequency_share(four.images) < 0.5 * high_frequency_share(pix.images)).all()


def test_markdown_table_escapes_pipes_and_right_aligns_numbers():
    from markdown_it import MarkdownIt

    from deepinside.measures.transfer import markdown_table

    text = markdown_table([{"method": "pixel", "K": 12, "own top-1": 12, "||I||": 1.5}])
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert html.count("</th>") == 3 and "<table>" in html  # the norm's bars stay in one cell
    assert html.count('style="text-align:right"') == 4   # both numeric columns, head and body


# --- issue 24: every option is checked, by name ----------------------------------------------


@pytest.mark.parametrize("kw, err, name", [
    (dict(size=0), ValueError, "size"), (dict(size=-3), ValueError, "size"), (dict(size=2.0), TypeError, "size"),
    (dict(size=5), ValueError, "size"),                       # the Linear head takes 4x4 only
    (dict(steps=10 ** 12), ValueError, "steps"), (dict(steps=1e12), TypeError, "steps"),
    (dict(steps=True), TypeError, "steps"), (dict(steps="3"), TypeError, "steps"),
    (dict(seed="3"), TypeError, "seed"), (dict(seed=2.5), TypeError, "seed"), (dict(seed=2 ** 70), ValueError, "seed"),
    (dict(clip="no"), TypeError, "clip"), (dict(clip=0), TypeError, "clip"),
    (dict(show_progress="no"), TypeError, "show_progress"),
    (dict(lr="1"), TypeError, "lr"), (dict(lr=True), TypeError, "lr"), (dict(lr=float("nan")), ValueError, "lr"),
    (dict(momentum="x"), TypeError, "momentum"), (dict(momentum=1.0), ValueError, "momentum"),
    (dict(precondition=-1.0), ValueError, "precondition"), (dict(precondition="1"), TypeError, "precondition"),
    (dict(l2="big"), TypeError, "l2"), (dict(l2=[[0.1, "a"]]), TypeError, "l2"),
    (dict(snapshots=[0.5]), TypeError, "snapshots"), (dict(snapshots=3), TypeError, "snapshots"),
    (dict(objective=["score"]), ValueError, "objective"),
])
def test_bad_option_names_itself(kw, err, name):
    with pytest.raises(err, match=name):
        class_model(linear_clf(), [0], **{"steps": 1, "show_progress": False, **kw})


def test_digit_strings_are_class_indices():
    r = class_model(linear_clf(), ["2", 0, "class1"], steps=1, show_progress=False)
    assert r.classes == [2, 0, 1]
    with pytest.raises(ValueError, match="out of range"):
        class_model(linear_clf(), ["3"], steps=1, show_progress=False)


def test_numpy_integers_and_other_sizes_are_fine():
    import numpy as np

    conv = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    clf = linear_clf()
    clf.net = conv
    r = class_model(clf, [np.int64(1)], steps=np.int32(2), seed=np.int64(4), size=np.int64(6), lr=np.float32(0.1),
                    init="random", show_progress=False)
    assert r.images.shape == (1, 3, 6, 6) and r.steps == 2 and r.seed == 4


_OPTION = {
    "size": [None, 0, 1, 4, 5, -2, 2.0, "4", True, 10 ** 9],
    "steps": [None, 0, 1, 2, -1, 1.5, 1e12, 10 ** 12, "2", True],
    "seed": [0, 7, -1, 2 ** 64, 2.5, "3", None, False],
    "lr": [None, 0.1, 1, 0, -1.0, float("inf"), float("nan"), "0.1", True],
    "momentum": [0.0, 0.5, 0.99, 1.0, -0.1, float("nan"), "0.9", None],
    "l2": [0.0, 1e-3, 1, -1.0, float("nan"), "x", [0.1], [0.1, 0.2, 0.3], None],
    "clip": [True, False, "no", 0, None],
    "init": ["zero", "random", "noise", 3, None],
    "param": ["pixel", "fourier", "wavelet", None],
    "objective": ["score", "posterior", "logit", None],
    "precondition": [0.0, 1.0, -1.0, "1", float("nan")],
}


def _option_values():
    from hypothesis import strategies as st

    return st.fixed_dictionaries({}, optional={n: st.sampled_from(v) for n, v in _OPTION.items()})


def test_random_options_work_or_name_themselves():
    """Any mix of option values either gives a result or a ValueError/TypeError whose message
    names one of the options given, never another exception (issue 24)."""
    from hypothesis import given, settings

    @settings(max_examples=20, deadline=None, derandomize=True)
    @given(_option_values())
    def check(kw):
        kw = {"steps": 2, **kw}
        if kw["steps"] is not None and isinstance(kw["steps"], int) and not isinstance(kw["steps"], bool):
            kw["steps"] = min(kw["steps"], 2)                       # keep it tiny
        try:
            r = class_model(linear_clf(), [0, 1], show_progress=False, **kw)
        except (ValueError, TypeError) as e:
            assert any(n in str(e) for n in kw), (kw, e)
        else:
            assert torch.isfinite(r.images).all() and r.images.shape[0] == 2

    check()


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_train_mode_model_with_batchnorm_is_left_as_found(param):
    """Issue 24: train mode, BN running statistics, requires_grad, hooks and grads all survive,
    also when the run fails half-way."""
    clf = linear_clf()
    net = _BNNet()
    net.train()
    net.body[0].weight.requires_grad_(True)
    net.body[6].bias.requires_grad_(False)
    net.body[1].register_forward_hook(lambda m, i, o: None)
    clf.net = net
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    before = model_state(net)
    class_model(clf, [0, 2], steps=2, param=param, show_progress=False)
    assert_same_state(before, model_state(net))
    assert all(torch.equal(buffers[k], v) for k, v in net.named_buffers()), "BN statistics changed"
    calls = []
    net.body[6].register_forward_hook(lambda m, i, o: calls.append(1) or o[:1])   # wrong shape: fails
    before = model_state(net)
    with pytest.raises(ValueError, match="shape"):
        class_model(clf, [0, 2], steps=2, param=param, show_progress=False)
    assert calls and assert_same_state(before, model_state(net)) is None
    assert all(torch.equal(buffers[k], v) for k, v in net.named_buffers())


@pytest.mark.parametrize("kw", [dict(), dict(objective="posterior"), dict(param="fourier"),
                                dict(param="fourier", objective="posterior", lr=0.1)])
def test_passes_in_chunks_give_the_same_optimisation(kw):
    """batch_size splits each step's forward/backward pass only (issue 21: memory): 5 images in
    chunks of 2 (and of 1) follow the same path as one pass of 5, random transforms included,
    histories and snapshots alike; the model's state is left alone."""
    clf = linear_clf(n_classes=5, size=16)
    clf.net.train()
    before = model_state(clf.net)
    run = lambda b: class_model(clf, [0, 1, 2, 3, 4], steps=12, l2=0.05, seed=4, batch_size=b,
                                show_progress=False, **({"lr": 0.05} | kw))
    one = run(5)
    seen: list[int] = []   # rows of every pass the network makes, the final scores included
    hook = clf.net.register_forward_pre_hook(lambda _m, a: seen.append(len(a[0])))
    try:
        chunked = [run(2)]
    finally:
        hook.remove()
    assert seen and max(seen) == 2, seen
    chunked.append(run(1))
    for r in chunked:
        assert torch.allclose(r.inputs, one.inputs, atol=1e-5)
        assert torch.allclose(r.scores, one.scores, atol=1e-4)
        assert torch.allclose(r.others_max, one.others_max, atol=1e-4)
    assert not torch.equal(one.inputs[0], one.inputs[1])  # the images did move, each its own way
    assert_same_state(before, model_state(clf.net))


@pytest.mark.parametrize("bad, err", [(0, ValueError), (2.5, TypeError), ("8", TypeError)])
def test_bad_batch_size_is_refused(bad, err):
    with pytest.raises(err, match="batch_size"):
        class_model(linear_clf(), [0, 1], steps=2, batch_size=bad, show_progress=False)


def test_concat_class_models_equals_one_call_and_refuses_other_settings():
    """Pixel class models of a linear model: two calls joined equal one call over both classes
    (histories, images, snapshots); results of other settings are refused."""
    from deepinside.methods.class_model import concat_class_models

    clf = linear_clf()
    kw = dict(steps=10, lr=0.05, l2=0.1, show_progress=False, snapshots=(5,))
    both = class_model(clf, [0, 2], **kw)
    joined = concat_class_models(class_model(clf, [0], **kw), class_model(clf, [2], **kw))
    assert joined.classes == [0, 2] and joined.class_names == both.class_names
    for f in ("images", "inputs", "scores", "posteriors", "norms", "l2"):
        assert getattr(joined, f).shape == getattr(both, f).shape, f
        assert torch.allclose(getattr(joined, f), getattr(both, f), atol=1e-6), f
    assert torch.allclose(joined.snapshots[5], both.snapshots[5], atol=1e-6)
    with pytest.raises(ValueError, match="settings differ"):
        concat_class_models(both, class_model(clf, [1], **{**kw, "steps": 11, "snapshots": ()}))
    with pytest.raises(ValueError, match="at least one"):
        concat_class_models()
