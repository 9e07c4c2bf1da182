"""Images: robust loading, the offline sample photographs, and ILSVRC validation data with boxes.

``IlsvrcDataset`` reads the layout of the ILSVRC-2012 validation set as distributed with its
localisation annotations (PASCAL-VOC style XML, one ``<object>`` per ground-truth box, the
``<name>`` being the WordNet id, coordinates in original pixels)::

    root/images/ILSVRC2012_val_00000001.JPEG
    root/annotations/ILSVRC2012_val_00000001.xml
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .models import imagenet_labels

__all__ = ["load_image", "UnreadableImageError", "to_rgb", "sample_images", "SAMPLE_IMAGES", "IlsvrcDataset", "IlsvrcRecord",
           "default_ilsvrc_root"]

#: Largest image accepted by :func:`load_image` (pixels), unless ``max_pixels`` says otherwise.
MAX_PIXELS = 100_000_000
#: Serialises the moments :func:`load_image` lifts PIL's own bomb limit for a larger max_pixels.
_PIL_LIMIT_LOCK = threading.Lock()
_EXTS = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL image -> 8-bit RGB.

    Grayscale (``L``, ``1``), palette (``P``), CMYK, YCbCr and LAB are converted by PIL; 16/32-bit
    integer and float grayscale (``I;16``, ``I``, ``F``) are rescaled from their value range to
    0..255; images with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) are
    composited over ``background`` (white), as a viewer would show them.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        else:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            if mode == "I" and lo >= 0 and hi <= 255:
                lo, hi = 0.0, 255.0
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


class UnreadableImageError(ValueError):
    """A file that is not a readable image (empty, not an image, truncated, too large); the
    message names the file. A ``ValueError``, so existing ``except ValueError`` still catch it."""


def _open(p: Path, max_pixels: int) -> Image.Image:
    """``Image.open`` whose pixel limit is ``max_pixels`` rather than PIL's own
    (``Image.MAX_IMAGE_PIXELS``, ~89 Mpx, an error above twice that): the limit is checked here,
    before decoding, so PIL's is lifted (under a lock) while the header is read when
    ``max_pixels`` is larger than PIL's."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or max_pixels <= limit:
        return Image.open(p)
    with _PIL_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(p)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image, upright.

    Applies the EXIF orientation tag, then :func:`to_rgb` (grayscale, palette, RGBA, CMYK, 16-bit
    all become RGB). The whole file is decoded here, so a truncated file fails now rather than
    later inside a model.

    ``max_pixels`` is the only size limit: PIL's own decompression-bomb limit (~89 Mpx) is
    replaced by it, so ``max_pixels=200_000_000`` loads a 90 Mpx photo.

    Raises:
        FileNotFoundError: no such file.
        UnreadableImageError (a ValueError): naming the file, for an empty file, a directory, a
            file that is not an image, a truncated/corrupt image, or one larger than
            ``max_pixels``.
        ValueError: ``max_pixels`` not a positive int.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such image file: {p}")
    if p.is_dir():
        raise UnreadableImageError(f"{p} is a directory, not an image file")
    if p.stat().st_size == 0:
        raise UnreadableImageError(f"{p} is empty (0 bytes), not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(p, int(max_pixels)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise UnreadableImageError(f"{p} is {w}x{h} = {w * h:,} pixels, more than max_pixels={max_pixels:,}; "
                                     f"downscale it first or pass a larger max_pixels")
                if w < 1 or h < 1:
                    raise UnreadableImageError(f"{p} has no pixels ({w}x{h})")
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb(im)
    except UnidentifiedImageError as e:
        raise UnreadableImageError(f"{p} is not an image file PIL can read") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImageError(f"{p} is absurdly large ({e})") from e
    except (OSError, SyntaxError) as e:  # truncated / corrupt data
        raise UnreadableImageError(f"{p} is truncated or corrupt: {e}") from e


# -- offline photographs -----------------------------------------------------------------------

#: name -> (package, path inside the package) of the photographs shipped by installed packages.
SAMPLE_IMAGES: dict[str, tuple[str, str]] = {
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for its sample photograph {rel})")
    return Path(spec.origin).parent / rel


def sample_images(names: Sequence[str] | None = None) -> dict[str, Image.Image]:
    """The offline photographs by name (all of :data:`SAMPLE_IMAGES` when ``names`` is None).

    They ship inside scikit-image, scikit-learn and matplotlib, so no download is needed:
    ``chelsea`` (a tabby cat), ``coffee`` (a cup), ``astronaut``, ``rocket``, ``motorcycle``,
    ``china`` (a temple), ``flower``, ``grace_hopper`` (a portrait in uniform).
    """
    names = list(SAMPLE_IMAGES) if names is None else list(names)
    out = {}
    for n in names:
        if n not in SAMPLE_IMAGES:
            raise ValueError(f"unknown sample image {n!r}; available: {sorted(SAMPLE_IMAGES)}")
        out[n] = load_image(_package_file(*SAMPLE_IMAGES[n]))
    return out


# -- ILSVRC ------------------------------------------------------------------------------------


#: ``DEEPINSIDE_FETCH=0`` turns off the fetch on first use of :func:`default_ilsvrc_root`.
ENV_FETCH = "DEEPINSIDE_FETCH"


def default_ilsvrc_root(*, fetch: bool | None = None) -> Path | None:
    """The ILSVRC validation folder to use (the sample's ``ilsvrc2012-val-201``), or None.

    In this order: ``$DEEPINSIDE_ILSVRC`` if set; the sample ``../shared/data/ilsvrc2012-val-201``
    next to the current directory or one of its parents (the book's development setup); the
    sample fetched before (:func:`deepinside.fetch_ilsvrc_sample` into ``$DEEPINSIDE_DATA`` or the
    per-user cache); and, when the machine reaches the images' sources (Binder, Colab, a laptop),
    the sample fetched now, once, with a one-line note saying what and how much. The second
    folder, ``ilsvrc2012-val-650-227px``, lies beside the returned one in every case.

    Args:
        fetch: whether a missing sample may be fetched (None: unless ``$DEEPINSIDE_FETCH=0``).

    Returns None (the chapters then say what they skip) when none of these holds: offline with
    nothing cached, or the fetch failed (a warning says why).
    """
    env = os.environ.get("DEEPINSIDE_ILSVRC")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:
        cand = d.parent / "shared" / "data" / "ilsvrc2012-val-201"
        if (cand / "images").is_dir():
            return cand
    from . import fetch as _fetch

    roots = _fetched_roots_quietly(_fetch)
    if roots is not None:
        return roots[_fetch.FOLDERS[0]]
    if fetch is None:
        fetch = os.environ.get(ENV_FETCH, "1").strip() not in ("0", "false", "no")
    if not fetch or not _fetch.sources_reachable():
        return None
    files = _fetch.registry()
    mb = sum(f.size for f in files) / 1e6
    source = os.environ.get(_fetch.ENV_URL) or "public GitHub repositories"
    _fetch.note(f"deepinside: fetching the book's ILSVRC sample ({len(files)} images, {mb:.0f} MB, "
                f"from {source}) into {_fetch.data_dir()}, once")
    try:
        return _fetch.fetch_ilsvrc_sample()[_fetch.FOLDERS[0]]
    except (_fetch.FetchError, ValueError) as e:
        warnings.warn(f"the ILSVRC sample could not be fetched: {e}", RuntimeWarning, stacklevel=2)
        return None


def _fetched_roots_quietly(module) -> dict[str, Path] | None:
    try:
        return module.fetched_roots()
    except OSError:
        return None


@dataclass(frozen=True)
class IlsvrcRecord:
    """One annotated validation image.

    Attributes:
        image_path: the JPEG.
        wnid, label: the image's class (WordNet id and index in the sorted 1000 synsets).
        width, height: the original size from the XML (pixels).
        boxes: ground-truth boxes ``(x0, y0, x1, y1)`` in original pixels, half-open: the XML's
            0-based inclusive corners (``xmax = width - 1`` for a full-width box) become
            ``x0 = xmin``, ``x1 = xmax + 1``, so that ``x1 - x0`` is the box width.
        box_wnids: the WordNet id of each box (ILSVRC val boxes all carry the image's class).
    """

    image_path: Path
    wnid: str
    label: int
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]
    box_wnids: tuple[str, ...]


def record_files(rec: IlsvrcRecord) -> tuple[Path, Path]:
    """The JPEG and the XML annotation a record was read from (``images/``, ``annotations/``)."""
    p = Path(rec.image_path)
    return p, p.parent.parent / "annotations" / f"{p.stem}.xml"


def _xml_number(parent: ET.Element, tag: str, xml_path: Path, kind: type) -> float | int:
    """The number in ``<tag>`` under ``parent`` (``int`` or finite ``float``); else a ValueError
    naming the file and the tag."""
    text = parent.findtext(tag)
    if text is None or not text.strip():
        raise ValueError(f"{xml_path}: <{parent.tag}> has no <{tag}>")
    try:
        value = kind(float(text)) if kind is int and "." in text else kind(text.strip())
    except ValueError:
        raise ValueError(f"{xml_path}: <{tag}>{text.strip()}</{tag}> is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{xml_path}: <{tag}> is {text.strip()}, not a finite number")
    return value


def _parse_annotation(xml_path: Path, wnid_index: dict[str, int], image_path: Path) -> IlsvrcRecord:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{xml_path} is not valid XML: {e}") from e
    size = root.find("size")
    if size is None:
        raise ValueError(f"{xml_path} has no <size> element: not an ILSVRC/PASCAL-VOC annotation")
    width, height = (_xml_number(size, k, xml_path, int) for k in ("width", "height"))
    if width < 1 or height < 1:
        raise ValueError(f"{xml_path}: <size> {width}x{height} has no pixels")
    boxes, wn = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if bb is None or name not in wnid_index:
            raise ValueError(f"{xml_path}: object without a <bndbox> or with unknown WordNet id {name!r}")
        x0, y0, x1, y1 = (_xml_number(bb, k, xml_path, float) for k in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise ValueError(f"{xml_path}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has xmax < xmin or "
                             "ymax < ymin")
        # xmax == width is tolerated: boxes scaled to a resized image and rounded end there
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ValueError(f"{xml_path}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the "
                             f"{width}x{height} image of <size>")
        boxes.append((x0, y0, x1 + 1.0, y1 + 1.0))
        wn.append(name)
    if not boxes:
        raise ValueError(f"{xml_path} has no <object> boxes")
    return IlsvrcRecord(image_path, wn[0], wnid_index[wn[0]], width, height, tuple(boxes), tuple(wn))


def _check_size(rec: IlsvrcRecord, w: int, h: int) -> None:
    """The boxes are in the pixels of ``<size>``: an image of another size would be scored
    against misplaced boxes, so it is refused, naming both files."""
    if (w, h) != (rec.width, rec.height):
        xml = record_files(rec)[1]
        raise ValueError(f"{rec.image_path} is {w}x{h} pixels but {xml.name} says <size> "
                         f"{rec.width}x{rec.height}: the boxes would be misplaced")


class IlsvrcDataset:
    """ILSVRC validation images with their ground-truth boxes.

    ``root`` holds ``images/*.JPEG`` and ``annotations/*.xml`` with the same stems. Indexing
    gives ``(PIL RGB image, IlsvrcRecord)``; ``records`` holds all annotations, parsed eagerly
    (cheap), while images are decoded on access.
    """

    def __init__(self, root: str | os.PathLike, limit: int | None = None) -> None:
        self.root = Path(root)
        img_dir, ann_dir = self.root / "images", self.root / "annotations"
        if not self.root.is_dir():
            raise FileNotFoundError(f"ILSVRC folder {self.root} does not exist")
        if not img_dir.is_dir() or not ann_dir.is_dir():
            raise ValueError(f"{self.root} is not in the ILSVRC layout: expected the sub-folders "
                             f"images/ (*.JPEG) and annotations/ (*.xml)")
        wnid_index = {w: i for i, w in enumerate(imagenet_labels()[1])}
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in _EXTS)
        records = []
        for p in images:
            xml = ann_dir / (p.stem + ".xml")
            if xml.exists():
                records.append(_parse_annotation(xml, wnid_index, p))
        if not records:
            raise ValueError(f"{self.root} holds no image with a matching annotations/<stem>.xml")
        self.records: list[IlsvrcRecord] = records[:limit] if limit else records

    def __len__(self) -> int:
        return len(self.records)

    def check_images(self, max_pixels: int = MAX_PIXELS) -> None:
        """Open every image's header (no decoding): raises :class:`UnreadableImageError` naming
        the first file that is not an image or is too large. Cheap (~0.1 ms per file); a file
        truncated after its header is found only when it is decoded (``dataset[i]``)."""
        for rec in self.records:
            p = rec.image_path
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with _open(p, max_pixels) as im:
                        w, h = im.size
            except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
                raise UnreadableImageError(f"{p} is not an image file PIL can read ({e})") from None
            if w * h > max_pixels or w < 1 or h < 1:
                raise UnreadableImageError(f"{p} is {w}x{h} pixels: outside 1..max_pixels={max_pixels:,}")
            _check_size(rec, w, h)

    def __getitem__(self, i: int) -> tuple[Image.Image, IlsvrcRecord]:
        rec = self.records[i]
        img = load_image(rec.image_path)
        _check_size(rec, *img.size)
        return img, rec

    def __iter__(self) -> Iterator[tuple[Image.Image, IlsvrcRecord]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def labels(self) -> np.ndarray:
        """Class index of every image, ``(N,)`` int64."""
        return np.array([r.label for r in self.records], dtype=np.int64)

    def __repr__(self) -> str:
        return f"IlsvrcDataset({str(self.root)!r}, n={len(self)}, classes={len(set(self.labels.tolist()))})"
