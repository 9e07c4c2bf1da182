"""The explorer app (deepinside.widgets) on a tiny ConvNet: every control recomputes the map."""

from __future__ import annotations

import datetime
import io

import matplotlib
import numpy as np
import pytest

import deepinside as di
from deepinside.figures import widgets
from state_helpers import conv_clf, rand_pil

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def clf():
    return conv_clf(relu6=True)


def test_explore_every_method_on_the_image_pixels(clf, one_thread):
    img = rand_pil(40, 30, 1)
    for method in widgets.METHODS:
        if method in ("cam", "smoothgrad"):   # CAM needs global average pooling; smoothgrad: 50 passes
            continue
        r = widgets.explore(clf, img, method=method, target=2, crops="center")
        assert r.saliency.shape == (30, 40) and r.class_index == 2
        assert method == "occlusion" or (r.saliency >= 0).all()
        assert (r.mask is not None) == (method == "localisation")
    # the rules give the maps of di.saliency under di.backward_rule (same crop, same class)
    for rule in ("gradient", "guided"):
        with di.backward_rule(clf.net, rule):
            ref = di.saliency(clf, [img], target=2)[0]
        got = widgets.explore(clf, img, method=rule, target=2).saliency
        inside = got[got > 0]
        assert np.isclose(inside.max(), float(ref.max()), rtol=1e-4), rule
    # occlusion: the drop of the class score under a grey square, on the centre crop
    r = widgets.explore(clf, img, method="occlusion", target=2, crops="ten")
    window, stride = widgets.occlusion_geometry(clf)
    occ = di.occlusion(clf, [img], target=2, window=window, stride=stride,
                       show_progress=False)
    drop = occ.attribution("score")[0, 0]
    assert r.crops == "center" and r.saliency.shape == (30, 40)
    assert np.isclose(np.abs(r.saliency).max(), float(drop.abs().max()), rtol=1e-4)
    r = widgets.explore(clf, img, method="localisation", target="class1")
    assert r.class_index == 1 and r.mask.shape == (30, 40)
    assert r.box == di.bounding_box(r.mask)
    fig = widgets.explore_figure(r, name="x")
    assert len(fig.axes) == 3


def test_explore_errors_are_clear(clf):
    img = rand_pil(20, 20)
    with pytest.raises(ValueError, match="unknown method 'occlusions'"):
        widgets.explore(clf, img, method="occlusions")
    with pytest.raises(ValueError, match="unknown crops"):
        widgets.explore(clf, img, crops="full-ish")
    with pytest.raises(TypeError, match="PIL image"):
        widgets.explore(clf, np.zeros((4, 4, 3)))


def test_explorer_reacts_to_every_control(clf, one_thread):
    app = widgets.explorer(clf, {"a": rand_pil(24, 24), "b": rand_pil(28, 20, 1)})
    top1 = int(clf.scores(clf.preprocess([rand_pil(24, 24)])).argmax())
    assert app.result.class_index == top1 and app.result.method == "gradient"
    assert app.view.value[:4] == b"\x89PNG" and app.message == ""
    app.cls.value = "class3"
    assert app.result.class_index == 3
    app.cls.value = "cla"                        # still typing: nothing recomputed
    assert app.result.class_index == 3
    app.cls.value = "class0"
    app.method.value = "localisation"
    assert app.result.method == "localisation" and app.result.mask is not None
    assert app.result.class_index == 0
    app.crops.value = "ten"
    app.pick.value = "b"
    assert app.result.crops == "ten" and app.result.saliency.shape == (20, 28)
    buf = io.BytesIO()
    rand_pil(20, 16, 3).save(buf, format="PNG")
    when = datetime.datetime(2020, 1, 1)
    app.upload.value = ({"name": "x.png", "type": "image/png", "size": buf.tell(),
                         "content": memoryview(buf.getvalue()), "last_modified": when},)
    assert app.pick.value == widgets.UPLOAD_KEY and app.result.saliency.shape == (16, 20)
    app.upload.value = ({"name": "bad.png", "type": "image/png", "size": 3,
                         "content": memoryview(b"abc"), "last_modified": when},)
    assert "could not read bad.png" in app.message
    assert app.figure() is not None


def test_saliency_explorer_and_class_options(clf):
    ui = di.widgets.saliency_explorer(clf, {"a": rand_pil(12, 12)}, initial=False)
    (pick, upload), (cls, which) = ui.children[0].children, ui.children[1].children
    assert pick.value == "a" and which.value == "center"
    names = ["a", "b", "a"]
    fake = type("F", (), {"class_names": names})()
    assert widgets.class_options(fake) == {"a (0)": 0, "b": 1, "a (2)": 2}
    with pytest.raises(ValueError, match="at least one image"):
        widgets.Explorer(clf, {})
