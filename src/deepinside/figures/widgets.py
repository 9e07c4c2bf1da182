"""The interactive explorer: one ipywidgets app over every map the package computes.

Pick a photograph (or upload an image file), a class by name (the field completes it; empty
means the network's top-1 class), a method and the crops; the figure below updates:

- ``gradient``: the class saliency map of Sect. 3.1, eq. 4 (:func:`deepinside.saliency`);
- ``deconvnet`` / ``guided``: the same backward pass with the DeconvNet or guided rule at every
  rectifier (Sect. 4, :func:`deepinside.backward_rule`);
- ``localisation``: the gradient map, the GraphCut mask it seeds and the box (Sect. 3.2,
  :func:`deepinside.segment`, :func:`deepinside.bounding_box`);
- ``occlusion``: Zeiler & Fergus's occlusion sensitivity (their Fig. 7), the drop of the class
  score when a grey square covers each pixel (:func:`deepinside.occlusion`; centre crop only).

Every method is a plain function too (:func:`explore`, :func:`explore_figure`), so a static page
can show the app's default state as an ordinary figure; the controls need a running kernel.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np
from PIL import Image

__all__ = ["METHODS", "CROPS", "ExploreResult", "Explorer", "class_options", "explore",
           "explore_figure", "explorer", "occlusion_geometry", "saliency_explorer"]

#: What the menu says for the methods of the papers; any other registered map is listed as
#: "map: <name>" (its docstring's first line is its description).
_LABELS = {
    "gradient": "saliency: gradient (Sect. 3.1, eq. 4)",
    "deconvnet": "saliency: DeconvNet rule (Sect. 4)",
    "guided": "saliency: guided backprop (Sect. 4)",
    "localisation": "localisation: GraphCut box (Sect. 3.2)",
    "occlusion": "occlusion: score drop (Zeiler & Fergus)",
    "smoothgrad": "saliency: SmoothGrad (Smilkov et al.)",
    "cam": "CAM (Zhou et al.)",
    "gradcam": "Grad-CAM (Selvaraju et al.)",
    "gradient_gradcam": "gradient gated by Grad-CAM (ch. 3)",
}


class _Methods(Mapping):
    """``{method: menu label}``: every map of the registry that is available
    (:func:`deepinside.map_names`, read at each use, so a method registered later is listed),
    then ``"localisation"`` (GraphCut on the gradient map)."""

    def _names(self) -> list[str]:
        from ..methods.maps import available_maps

        return list(available_maps()) + ["localisation"]

    def __getitem__(self, key: str) -> str:
        if key not in self._names():
            raise KeyError(key)
        return _LABELS.get(key, f"map: {key}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


#: method -> what it computes (shown in the method menu); from the registry.
METHODS: Mapping[str, str] = _Methods()


def occlusion_geometry(clf) -> tuple[int, int]:
    """Occluder side and stride in network-input pixels: 48 and 16 at 224 px (12 x 12
    positions, a few seconds on a CPU), in proportion for other input sizes."""
    window = max(2, round(clf.input_size * 48 / 224))
    return window, max(1, window // 3)
CROPS = {"center": "centre crop", "ten": "10 crops"}
UPLOAD_KEY = "(uploaded file)"


class ExploreResult(NamedTuple):
    """One state of the explorer: ``saliency`` ``(H, W)`` on the image's own pixels (0 outside
    the frame the crops cover; for ``"occlusion"`` the score drop, negative where covering a
    pixel raised the score); ``mask``/``box`` for ``"localisation"`` (else None)."""

    image: Image.Image
    method: str
    crops: str
    class_index: int
    class_name: str
    saliency: np.ndarray
    mask: np.ndarray | None
    box: tuple[int, int, int, int] | None


def class_options(clf) -> dict[str, int]:
    """Unique, completable labels for the classes: the name, plus ``(index)`` when it repeats."""
    counts: dict[str, int] = {}
    for nm in clf.class_names:
        counts[nm] = counts.get(nm, 0) + 1
    return {(nm if counts[nm] == 1 else f"{nm} ({i})"): i for i, nm in enumerate(clf.class_names)}


_class_options = class_options  # the name plotting.py used


def _check(name: str, value: str, allowed: dict) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(allowed)}")


def explore(clf, image: Image.Image, method: str = "gradient", target: int | str | None = None,
            crops: str = "center") -> ExploreResult:
    """Compute what the explorer shows for one image, class and method.

    Args:
        target: a class index or name (anything ``clf.class_index`` accepts); None = top-1.
        method: one of :data:`METHODS` (every available registered map, and "localisation":
            GraphCut on the gradient map), computed by :func:`deepinside.compute_maps`.
        crops: ``"center"`` (the network's centre crop) or ``"ten"`` (the paper's 10-crop
            average; ``"occlusion"`` always uses the centre crop, and says so in the result).
    """
    from ..measures.localisation import bounding_box, saliency_in_image, segment

    _check("method", method, METHODS)
    _check("crops", crops, CROPS)
    if not isinstance(image, Image.Image):
        raise TypeError(f"explore() expects a PIL image, got {type(image).__name__}")
    if target is None:
        c = int(clf.predict([image], topk=1)[0][0][0])
    else:
        c = int(clf.class_index(target))
    if method == "occlusion":
        from ..methods.occlusion import occlusion
        from ..methods.saliency_maps import saliency_to_image

        window, stride = occlusion_geometry(clf)
        occ = occlusion(clf, [image], target=c, window=window, stride=stride,
                        show_progress=False)
        drop = occ.attribution("score")[0, 0].cpu()
        m = np.asarray(saliency_to_image(drop, image.size, clf, "center"), dtype=np.float32)
        return ExploreResult(image, method, "center", c, clf.class_names[c], m, None, None)
    # every other map through the one pipeline (centre crop or the paper's 10 crops); the
    # localisation's map is the paper's gradient map
    m = saliency_in_image(clf, image, [c], crops=crops,
                          maps="gradient" if method == "localisation" else method)[0]
    mask = box = None
    if method == "localisation":
        mask = segment(image, m)
        box = bounding_box(mask)
    return ExploreResult(image, method, crops, c, clf.class_names[c], m, mask, box)


def explore_figure(result: ExploreResult, name: str | None = None, size: float = 3.0):
    """The explorer's figure: the image (with the box), the map, and the mask for localisation."""
    import matplotlib.pyplot as plt

    from .plotting import as_image_array, draw_box

    img = as_image_array(result.image)
    m = np.asarray(result.saliency, dtype=np.float32)
    vmax = float(np.percentile(m[m > 0], 99)) if (m > 0).any() else 1.0
    panels = 3 if result.mask is not None else 2
    h, w = img.shape[:2]
    fig, axes = plt.subplots(1, panels, figsize=(size * panels * max(w / h, 0.6), size))
    axes[0].imshow(img)
    axes[1].imshow(m, cmap="gray", vmin=0, vmax=vmax)
    what = {"localisation": "gradient map",
            "occlusion": "occlusion: score drop"}.get(result.method, f"{result.method} map")
    label = f"{name + ': ' if name else ''}{result.class_name} ({result.class_index})"
    axes[0].set_title(label, fontsize=9)
    axes[1].set_title(f"{what}, {CROPS[result.crops]}", fontsize=9)
    if result.mask is not None:
        shade = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
        shade = np.where(result.mask[..., None], shade, 0.25 * shade)
        axes[2].imshow(shade)
        axes[2].set_title("GraphCut mask and box", fontsize=9)
        if result.box is not None:
            for ax in (axes[0], axes[2]):
                draw_box(ax, result.box)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


class Explorer:
    """The app: controls, the last :class:`ExploreResult` (``.result``) and its figure.

    Display it (or its ``.widget``) in a notebook. Changing any control recomputes the result;
    a class name that is still being typed (not yet a class) is ignored.
    """

    def __init__(self, clf, images: dict[str, Image.Image], method: str = "gradient",
                 crops: str = "center", initial: bool = True):
        import ipywidgets as w

        if not images:
            raise ValueError("Explorer needs at least one image")
        _check("method", method, METHODS)
        _check("crops", crops, CROPS)
        self.clf = clf
        self.pool = dict(images)
        self.options = class_options(clf)
        self.result: ExploreResult | None = None
        self.message = ""
        self.pick = w.Dropdown(options=list(self.pool) + [UPLOAD_KEY],
                               value=next(iter(self.pool)), description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.cls = w.Combobox(options=list(self.options), ensure_option=False,
                              placeholder="class name; empty = top-1", description="class")
        self.crops = w.ToggleButtons(options=[(v, k) for k, v in CROPS.items()], value=crops)
        self.method = w.Dropdown(options=[(v, k) for k, v in METHODS.items()], value=method,
                                 description="method", layout=w.Layout(width="24em"))
        # the figure as a PNG image widget and a one-line note: no Output widget, whose captured
        # displays some headless executors (nbclient under jupyter-cache) handle badly
        self.view = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.note = w.HTML()
        self.widget = w.VBox([w.HBox([self.pick, self.upload]), w.HBox([self.cls, self.crops]),
                              self.method, self.note, self.view])
        for control in (self.pick, self.cls, self.crops, self.method):
            control.observe(self.update, "value")
        self.upload.observe(self._on_upload, "value")
        if initial:
            self.update()
        else:
            self._say("change the image, the class, the crops or the method: "
                      "the figure appears here")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _say(self, text: str) -> None:
        import html

        self.message = text
        self.note.value = f"<i>{html.escape(text)}</i>"

    def update(self, *_) -> ExploreResult | None:
        """Recompute for the controls' current values and draw the figure."""
        import matplotlib.pyplot as plt

        key, text = self.pick.value, self.cls.value.strip()
        if text and text not in self.options:
            return None  # still typing: wait for a complete class name
        if key not in self.pool:
            self._say("upload an image file to see its maps")
            return None
        self.result = explore(self.clf, self.pool[key], self.method.value,
                              self.options[text] if text else None, self.crops.value)
        self._say("")
        fig = explore_figure(self.result, name=key)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        self.view.value = buf.getvalue()
        return self.result

    def figure(self, name: str | None = None):
        """The figure of the current state (for a static page)."""
        if self.result is None:
            raise RuntimeError("nothing computed yet: call update() or set a control")
        return explore_figure(self.result, name=name if name is not None else self.pick.value)

    def _on_upload(self, change) -> None:
        from PIL import ImageOps

        from ..core.data import to_rgb

        files = change["new"]
        if not files:
            return
        f = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        try:
            img = Image.open(io.BytesIO(bytes(f["content"])))
            img.load()
            self.pool[UPLOAD_KEY] = to_rgb(ImageOps.exif_transpose(img))
        except Exception as e:  # noqa: BLE001 - any undecodable upload: tell the user
            self._say(f"could not read {f.get('name', 'the file')} as an image: {e}")
            return
        if self.pick.value == UPLOAD_KEY:
            self.update()
        else:
            self.pick.value = UPLOAD_KEY


def explorer(clf, images: dict[str, Image.Image], method: str = "gradient",
             crops: str = "center", initial: bool = True) -> Explorer:
    """The explorer app over ``images`` (name -> PIL image): see :class:`Explorer`."""
    return Explorer(clf, images, method=method, crops=crops, initial=initial)


def saliency_explorer(clf, images: dict[str, Image.Image], crops: str = "center",
                      initial: bool = True):
    """The explorer's widget (``VBox``), starting on the gradient map; kept for the name
    ``deepinside.plotting.saliency_explorer`` that chapter 2 used."""
    return Explorer(clf, images, crops=crops, initial=initial).widget
