"""The ILSVRC sample fetcher (issue 20) on its real code path (pooch, requests, HTTP), without the
internet: a server on 127.0.0.1 serves a mirror of every registry URL from ``../shared/data``
(``sources.csv`` maps URLs to files) and ``$DEEPINSIDE_DATA_URL`` points at it."""

from __future__ import annotations

import csv
import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

import deepinside as di
from deepinside.core import fetch as df
from deepinside.cli import main as cli_main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "sources.csv").is_file(),
                                reason="../shared/data (the mirror's source) is absent")


class Mirror:
    """A loopback HTTP server laid out like raw.githubusercontent.com at the registry's paths.

    ``faults`` maps a URL path to ``"flip"`` (one byte changed), ``"cut"`` (half the body, then the
    connection closes, Content-Length still the whole) or ``"404"``; ``requests`` counts GETs."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        with open(SHARED / "sources.csv", newline="") as f:
            for r in csv.DictReader(f):
                self.files[urllib.parse.urlsplit(r["url"]).path] = SHARED / r["folder"] / (
                    "images" if r["folder"].startswith("ilsvrc") else "") / r["file"]
        self.faults: dict[str, str] = {}
        self.requests = 0
        self.served: list[str] = []
        self.lock = threading.Lock()
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = urllib.parse.urlsplit(self.path).path
                with mirror.lock:
                    mirror.requests += 1
                fault = mirror.faults.get(path)
                src = mirror.files.get(path)
                if src is None or fault == "404":
                    self.send_error(404)
                    return
                body = src.read_bytes()
                if fault == "flip":
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "cut":
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)
                with mirror.lock:
                    mirror.served.append(path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Mirror":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(monkeypatch):
    with Mirror() as m:
        monkeypatch.setenv("DEEPINSIDE_DATA_URL", m.url)
        yield m


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """One complete fetch from the mirror (module scope: 46 MB once); (dest, seconds, requests)."""
    dest = tmp_path_factory.mktemp("sample")
    with Mirror() as m, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPINSIDE_DATA_URL", m.url)
        t = time.perf_counter()
        roots = di.fetch_ilsvrc_sample(dest, progress=False)
        seconds = time.perf_counter() - t
        requests = m.requests
    return dest, roots, seconds, requests


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _url_path(f: df.SampleFile) -> str:
    return urllib.parse.urlsplit(f.url).path


def test_registry_matches_sources_csv():
    with open(SHARED / "sources.csv", newline="") as f:
        rows = {(r["folder"], r["file"]): r for r in csv.DictReader(f)}
    reg = df.registry()
    assert len(reg) == 850 and {f.folder for f in reg} == set(df.FOLDERS)
    for f in reg:
        r = rows[(f.folder, f.file)]
        assert (f.url, f.sha256, f.size) == (r["url"], r["sha256"], int(r["bytes"]))


def test_fetch_equals_the_shared_folders(fetched):
    dest, roots, seconds, requests = fetched
    assert roots == {f: dest / f for f in df.FOLDERS} and requests == 850
    print(f"fetched 850 files from the loopback mirror in {seconds:.1f} s")
    for folder, root in roots.items():
        shared = SHARED / folder
        names = sorted(p.name for p in (root / "images").iterdir())
        assert names == sorted(p.name for p in (shared / "images").iterdir())
        for n in names:   # images byte for byte
            assert _sha(root / "images" / n) == _sha(shared / "images" / n), n
        for p in (shared / "annotations").iterdir():   # the XML too, byte for byte
            assert (root / "annotations" / p.name).read_bytes() == p.read_bytes(), p.name
        got, want = di.IlsvrcDataset(root), di.IlsvrcDataset(shared)
        assert len(got) == len(want) == len(names)
        for a, b in zip(got.records, want.records):   # box for box, through the reader
            assert (a.image_path.name, a.wnid, a.label, a.width, a.height, a.boxes, a.box_wnids) == \
                   (b.image_path.name, b.wnid, b.label, b.width, b.height, b.boxes, b.box_wnids)
        got.check_images()


def test_second_fetch_makes_no_request(fetched, mirror):
    dest = fetched[0]
    t = time.perf_counter()
    assert di.fetch_ilsvrc_sample(dest, progress=False) == fetched[1]
    assert mirror.requests == 0 and time.perf_counter() - t < 10
    assert df.fetched_roots(dest) == fetched[1]


def test_a_flipped_byte_is_refused_and_not_kept(mirror, tmp_path):
    bad = df.registry()[3]
    mirror.faults[_url_path(bad)] = "flip"
    with pytest.raises(di.FetchError, match=rf"{bad.file}.*SHA-256 differs.*not kept") as e:
        di.fetch_ilsvrc_sample(tmp_path, progress=False, retries=0)
    assert "\n" not in str(e.value)
    images = tmp_path / bad.folder / "images"
    assert not (images / bad.file).exists() and not list(images.glob("tmp*"))
    assert df.fetched_roots(tmp_path) is None


def test_a_truncated_download_is_not_kept(mirror, tmp_path):
    bad = df.registry()[0]
    mirror.faults[_url_path(bad)] = "cut"
    with pytest.raises(di.FetchError, match=rf"{bad.file}.*(cut short|SHA-256 differs)"):
        di.fetch_ilsvrc_sample(tmp_path, progress=False, retries=0)
    images = tmp_path / bad.folder / "images"
    assert not (images / bad.file).exists() and not list(images.glob("tmp*"))
    del mirror.faults[_url_path(bad)]           # the same call, rerun, completes
    di.fetch_ilsvrc_sample(tmp_path, progress=False, folders=(bad.folder,))
    assert _sha(images / bad.file) == bad.sha256


def test_http_error_and_no_network(mirror, tmp_path, monkeypatch):
    bad = df.registry()[-1]
    mirror.faults[_url_path(bad)] = "404"
    with pytest.raises(di.FetchError, match=rf"{bad.file}.*HTTP error 404"):
        di.fetch_ilsvrc_sample(tmp_path, progress=False, retries=0, folders=(bad.folder,))
    import socket
    with socket.socket() as s:            # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DEEPINSIDE_DATA_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(di.FetchError, match=r"cannot reach 127\.0\.0\.1.*no network"):
        di.fetch_ilsvrc_sample(tmp_path / "b", progress=False, retries=0)
    assert not df.sources_reachable(timeout=1.0)


def test_bad_destinations(mirror, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(di.FetchError, match="is a file, not a folder"):
        di.fetch_ilsvrc_sample(f, progress=False)
    if os.geteuid() == 0:   # root writes anywhere chmod allows: /proc refuses everyone
        ro = Path("/proc/deepinside-fetch-test")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
    with pytest.raises(di.FetchError, match="not writable"):
        di.fetch_ilsvrc_sample(ro, progress=False)
    with pytest.raises(ValueError, match="folders"):
        di.fetch_ilsvrc_sample(tmp_path, folders=("nosuch",))
    assert mirror.requests == 0


def test_killed_fetch_resumes_with_only_the_rest(mirror, tmp_path):
    """A fetch killed midway (SIGKILL, one download at a time), rerun: completes, fetching only the
    files that were not complete, and nothing partial carries a registry name."""
    code = ("import deepinside as di, sys; "
            "di.fetch_ilsvrc_sample(sys.argv[1], progress=False, workers=1)")
    env = {**os.environ, "DEEPINSIDE_DATA_URL": mirror.url}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env)
    try:
        deadline = time.time() + 120
        while len(mirror.served) < 120 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the fetch ended before it was killed"
    done = [f for f in df.registry() if (tmp_path / f.relpath).exists()]
    assert 100 <= len(done) < 850
    assert all(_sha(tmp_path / f.relpath) == f.sha256 for f in done)   # complete files only
    before = mirror.requests
    df.STALE_TMP_S, stale = 0.0, df.STALE_TMP_S   # the killed fetch's temp file is stale now
    try:
        di.fetch_ilsvrc_sample(tmp_path, progress=False)
    finally:
        df.STALE_TMP_S = stale
    assert mirror.requests - before == 850 - len(done)
    assert df.fetched_roots(tmp_path) is not None
    assert not [p for f in df.FOLDERS for p in (tmp_path / f / "images").glob("tmp*")]


def test_default_root_order(fetched, mirror, tmp_path, monkeypatch):
    """$DEEPINSIDE_ILSVRC, ../shared/data, the fetched cache, then a fetch on first use."""
    monkeypatch.delenv("DEEPINSIDE_ILSVRC", raising=False)
    assert di.default_ilsvrc_root() == SHARED / df.FOLDERS[0]       # the tests run beside shared/
    monkeypatch.setenv("DEEPINSIDE_ILSVRC", str(tmp_path))
    assert di.default_ilsvrc_root() == tmp_path
    monkeypatch.delenv("DEEPINSIDE_ILSVRC")
    monkeypatch.chdir(tmp_path)                                       # no shared/ beside it
    monkeypatch.setenv("DEEPINSIDE_DATA", str(fetched[0]))
    assert di.default_ilsvrc_root() == fetched[0] / df.FOLDERS[0] and mirror.requests == 0
    monkeypatch.setenv("DEEPINSIDE_DATA", str(tmp_path / "empty"))
    assert di.default_ilsvrc_root(fetch=False) is None
    monkeypatch.setenv("DEEPINSIDE_FETCH", "0")
    assert di.default_ilsvrc_root() is None and mirror.requests == 0
    monkeypatch.delenv("DEEPINSIDE_FETCH")
    df._reachable.cache_clear()
    root = di.default_ilsvrc_root()                                   # fetched on first use
    assert root == tmp_path / "empty" / df.FOLDERS[0] and mirror.requests == 850
    assert (root.parent / df.FOLDERS[1] / "images").is_dir()


def test_cli_fetch_data_then_evaluate_as_on_shared(fetched, mirror, tmp_path, capsys):
    dest = tmp_path / "d"
    assert cli_main(["fetch-data", "--dest", str(dest), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.split() == [df.FOLDERS[0], str(dest / df.FOLDERS[0]),
                           df.FOLDERS[1], str(dest / df.FOLDERS[1])]
    tables = []
    for root in (dest / df.FOLDERS[1], SHARED / df.FOLDERS[1]):
        assert cli_main(["evaluate", str(root), "--limit", "4"]) == 0   # the default table
        tables.append(capsys.readouterr().out.replace(str(root), "ROOT"))
    assert tables[0] == tables[1] and "%" in tables[0]
    ro = tmp_path / "f"
    ro.write_text("")
    assert cli_main(["fetch-data", "--dest", str(ro)]) == 1
    assert "is a file" in capsys.readouterr().err
