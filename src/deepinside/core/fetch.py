"""The book's ILSVRC validation sample on any machine: fetched from its public sources, checked,
cached (issue 20).

The quantitative chapters measure things on 850 real ILSVRC-2012 validation images with their
ground-truth boxes, in two folders (``ilsvrc2012-val-201``: 200 images of 10 classes at full
resolution; ``ilsvrc2012-val-650-227px``: 650 images of about 480 classes, prescaled to 227 x 227).
Every image lies, byte for byte, in a public repository at a pinned commit (Adebayo et al.'s
``adebayoj/sanity_checks_saliency`` and VeriSilicon's ``acuity-dataset``). The registry that
ships in the package, ``_data/ilsvrc_sample.csv``, gives per image its URL at that commit, its
SHA-256, its size, and its ``<size>`` and boxes. **The boxes ship in the package**: they were
derived from the ILSVRC-2012 validation annotations as redistributed (MIT licence) by
``clovaai/wsolevaluation`` (``metadata/ILSVRC/test/``; for the 650 folder scaled to 227 x 227 and
rounded), so the fetch needs no metadata file; the annotations are written from them.

Downloading, retrying, hashing and the atomic move into the cache are pooch's (the data fetcher
of SciPy and scikit-image): a file is downloaded to a temporary name next to its place, checked
against its SHA-256, and only then renamed, so a corrupt, truncated or interrupted download never
leaves a file under a registry name, and a rerun of the same call fetches only what is missing.

ImageNet's terms of use apply to the images: research and education only.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ._progress import progress as _progress

__all__ = ["FOLDERS", "FetchError", "SampleFile", "registry", "data_dir", "fetched_roots",
           "fetch_ilsvrc_sample", "sources_reachable", "GITHUB_RAW", "ENV_DEST", "ENV_URL"]

#: The two sample folders, in the order the chapters use them.
FOLDERS = ("ilsvrc2012-val-201", "ilsvrc2012-val-650-227px")
#: The prefix of every registry URL; ``$DEEPINSIDE_DATA_URL`` replaces it (a mirror).
GITHUB_RAW = "https://raw.githubusercontent.com"
ENV_DEST = "DEEPINSIDE_DATA"
ENV_URL = "DEEPINSIDE_DATA_URL"
#: Seconds a stale temporary file of an interrupted download is kept (younger ones may belong to
#: a fetch that is running in another process).
STALE_TMP_S = 120.0
_LOCK = threading.Lock()


class FetchError(OSError):
    """A fetch that could not complete: the message (one line) names the file and what to do."""


@dataclass(frozen=True)
class SampleFile:
    """One image of the registry: ``folder/images/file`` from ``url``; its annotation's
    ``<size>`` and boxes ``(wnid, xmin, ymin, xmax, ymax)`` (the XML's 0-based inclusive corners)."""

    folder: str
    file: str
    url: str
    sha256: str
    size: int
    width: int
    height: int
    boxes: tuple[tuple[str, int, int, int, int], ...]

    @property
    def relpath(self) -> str:
        return f"{self.folder}/images/{self.file}"


@functools.lru_cache(maxsize=1)
def registry() -> tuple[SampleFile, ...]:
    """The 850 images of the sample (read once from the package's ``_data/ilsvrc_sample.csv``)."""
    text = importlib.resources.files("deepinside").joinpath("_data/ilsvrc_sample.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    out = []
    for r in rows:
        boxes = tuple((b.split()[0], *map(int, b.split()[1:])) for b in r["boxes"].split("|"))
        out.append(SampleFile(r["folder"], r["file"], r["url"], r["sha256"], int(r["bytes"]),
                              int(r["width"]), int(r["height"]), boxes))  # type: ignore[arg-type]
    return tuple(out)


def data_dir(dest: str | os.PathLike | None = None) -> Path:
    """Where the sample goes: ``dest``, else ``$DEEPINSIDE_DATA``, else pooch's per-user cache
    for ``deepinside`` (``~/.cache/deepinside`` on Linux, ``~/Library/Caches/deepinside`` on macOS)."""
    if dest is not None:
        return Path(dest).expanduser()
    env = os.environ.get(ENV_DEST)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("deepinside"))


def _url(f: SampleFile) -> str:
    mirror = os.environ.get(ENV_URL)
    if mirror and f.url.startswith(GITHUB_RAW):
        return mirror.rstrip("/") + f.url[len(GITHUB_RAW):]
    return f.url


def annotation_xml(f: SampleFile) -> str:
    """The PASCAL-VOC/ILSVRC XML of ``f`` (the shared folders' format, byte for byte)."""
    objs = "".join(
        f"  <object>\n    <name>{w}</name>\n    <bndbox>\n      <xmin>{x0}</xmin>\n"
        f"      <ymin>{y0}</ymin>\n      <xmax>{x1}</xmax>\n      <ymax>{y1}</ymax>\n"
        f"    </bndbox>\n  </object>\n" for w, x0, y0, x1, y1 in f.boxes)
    return (f"<annotation>\n  <folder>val</folder>\n  <filename>{Path(f.file).stem}</filename>\n"
            f"  <size>\n    <width>{f.width}</width>\n    <height>{f.height}</height>\n"
            f"    <depth>3</depth>\n  </size>\n{objs}</annotation>\n")


def fetched_roots(dest: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """The two folders under :func:`data_dir` if the sample is complete there (every image with
    its registry size, every annotation), else None. Reads no network and hashes nothing (the
    fetch checked every file before it gave it its name)."""
    base = data_dir(dest)
    if not base.is_dir():
        return None
    for f in registry():
        img = base / f.relpath
        ann = base / f.folder / "annotations" / (Path(f.file).stem + ".xml")
        try:
            if img.stat().st_size != f.size or not ann.is_file():
                return None
        except OSError:
            return None
    return {folder: base / folder for folder in FOLDERS}


def _check_destination(base: Path) -> None:
    if base.exists() and not base.is_dir():
        raise FetchError(f"destination {base} is a file, not a folder: give another dest= (or "
                         f"${ENV_DEST})")
    try:
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=base, prefix=".write-test-"):
            pass
    except OSError as e:
        raise FetchError(f"destination {base} is not writable ({e.strerror or e}): give a "
                         f"writable dest= (or ${ENV_DEST})") from None


def _clean_stale(base: Path) -> None:
    """Remove the temporary files of interrupted downloads (pooch names them ``tmp*``)."""
    now = time.time()
    for folder in FOLDERS:
        d = base / folder / "images"
        if not d.is_dir():
            continue
        for p in d.glob("tmp*"):
            try:
                if now - p.stat().st_mtime > STALE_TMP_S:
                    p.unlink()
            except OSError:
                pass


def _explain(f: SampleFile, url: str, e: BaseException) -> FetchError:
    """A one-line :class:`FetchError` for a failed download of ``f``."""
    import requests

    what = f"{f.relpath} ({url})"
    if isinstance(e, ValueError) and "hash" in str(e).lower():
        return FetchError(f"{what}: its SHA-256 differs from the registry's, so it was not kept "
                          f"(a corrupt copy or a changed file at the source): rerun, or set "
                          f"${ENV_URL} to another mirror")
    if isinstance(e, requests.HTTPError):
        code = e.response.status_code if e.response is not None else "?"
        return FetchError(f"{what}: HTTP error {code}: check ${ENV_URL} (or the registry URL) "
                          f"and rerun")
    if isinstance(e, (requests.exceptions.ChunkedEncodingError,
                      requests.exceptions.ContentDecodingError)):
        return FetchError(f"{what}: the download was cut short; nothing was kept: rerun the same "
                          f"call to resume (files already fetched are not fetched again)")
    if isinstance(e, (requests.ConnectionError, requests.Timeout)):
        host = urllib.parse.urlsplit(url).netloc
        return FetchError(f"{what}: cannot reach {host} (no network?): fetch on a machine that "
                          f"reaches it, or set ${ENV_URL} to a mirror")
    if isinstance(e, OSError):
        return FetchError(f"{what}: cannot write it ({e.strerror or e}): give a writable dest= "
                          f"(or ${ENV_DEST})")
    return FetchError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _write_annotations(base: Path) -> None:
    for f in registry():
        ann = base / f.folder / "annotations" / (Path(f.file).stem + ".xml")
        text = annotation_xml(f)
        try:
            if ann.is_file() and ann.read_text() == text:
                continue
            ann.parent.mkdir(parents=True, exist_ok=True)
            tmp = ann.with_name(f".{ann.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, ann)
        except OSError as e:
            raise FetchError(f"{ann}: cannot write the annotation ({e.strerror or e}): give a "
                             f"writable dest= (or ${ENV_DEST})") from None


def fetch_ilsvrc_sample(dest: str | os.PathLike | None = None, *, progress: bool = True,
                        workers: int = 8, retries: int = 2,
                        folders: Sequence[str] = FOLDERS) -> dict[str, Path]:
    """Fetch the book's 850 ILSVRC-2012 validation images and write their annotations.

    Args:
        dest: the folder that receives ``ilsvrc2012-val-201/`` and ``ilsvrc2012-val-650-227px/``
            (default: ``$DEEPINSIDE_DATA``, else pooch's per-user cache for ``deepinside``).
        progress: a progress bar over the files.
        workers: downloads in parallel (threads).
        retries: further tries of a failed download (pooch's ``retry_if_failed``).
        folders: which of :data:`FOLDERS` to fetch.

    Returns:
        ``{folder: root}``, each root in the layout :class:`~deepinside.IlsvrcDataset` reads
        (``images/*.JPEG``, ``annotations/*.xml``), identical to the project's shared folders.

    Every URL is the registry's, with its ``https://raw.githubusercontent.com`` prefix replaced by
    ``$DEEPINSIDE_DATA_URL`` when that is set (a lab mirror). A file already in place with the
    right SHA-256 is not fetched again: a second call reads no network; an interrupted call,
    repeated, fetches only what is missing.

    Raises:
        FetchError: one line naming the file and what to do: a checksum that differs (the file is
            not kept), a truncated download, an HTTP error, no network, a destination that is a
            file or is not writable.
    """
    import pooch

    unknown = [f for f in folders if f not in FOLDERS]
    if unknown or not folders:
        raise ValueError(f"folders must be among {FOLDERS}, got {list(folders)!r}")
    base = data_dir(dest)
    _check_destination(base)
    _clean_stale(base)
    files = [f for f in registry() if f.folder in folders]
    try:   # before the threads: pooch creates a missing parent without exist_ok (a race)
        for folder in folders:
            (base / folder / "images").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create {base}/{folders[0]}/images ({e.strerror or e}): give a "
                         f"writable dest= (or ${ENV_DEST})") from None
    urls = {f.relpath: _url(f) for f in files}
    pup = pooch.create(path=base, base_url="", registry={f.relpath: f"sha256:{f.sha256}" for f in files},
                       urls=urls, retry_if_failed=retries, allow_updates=True)
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=60)
    logger = pooch.get_logger()
    level = logger.level
    bar = _progress(total=len(files), desc="ILSVRC sample", unit="file", disable=not progress)
    errors: list[FetchError] = []

    def one(f: SampleFile) -> None:
        if errors:
            return
        try:
            pup.fetch(f.relpath, downloader=downloader)
        except Exception as e:  # noqa: BLE001 - every failure becomes one line naming the file
            errors.append(_explain(f, urls[f.relpath], e))
        finally:
            bar.update(1)

    with _LOCK:
        logger.setLevel(logging.WARNING)
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                list(pool.map(one, files))
        finally:
            logger.setLevel(level)
            bar.close()
    if errors:
        raise errors[0]
    _write_annotations(base)
    return {folder: base / folder for folder in folders}


@functools.lru_cache(maxsize=4)
def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        socket.getaddrinfo(host, port)
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def sources_reachable(timeout: float = 3.0) -> bool:
    """Whether this machine reaches the registry's host (or ``$DEEPINSIDE_DATA_URL``'s): one TCP
    connection, answered once per process."""
    url = _url(registry()[0])
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return _reachable(parts.hostname or "", port, timeout)


def note(text: str) -> None:
    """One line on stderr (the chapters show it under the cell)."""
    print(text, file=sys.stderr, flush=True)
