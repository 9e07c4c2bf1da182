"""Every page of the built book, opened in headless Chromium with the network cut off.

What a reader sees, checked in a real browser after MathJax has typeset the page:

- no paragraph that is a markdown table (a line of pipes), no raw TeX (``\\(``, ``$$``, ...);
- every ``<img>`` loaded, with a non-zero natural size; every output image in a captioned figure;
- no traceback, error or stderr block, no JavaScript error, no resource that failed to load;
- nothing wider than the content column, and nothing cut off inside it (code lines, equations);
- as many tables and images on the page as the executed notebook (or markdown source) produces;
- nothing fetched from the network: MathJax and the widget manager come from the site itself;
- no progress bar embedded as widget state.

A full-page screenshot of each page is saved under ``_build/screenshots/``.

Which build: ``$DEEPINSIDE_HTML``, else the newer of ``_build/test-book/_build/html`` (written
by tests/test_book_build.py, which runs just before this file in ``make test``) and
``_build/html`` (``make book``). Chromium: ``$DEEPINSIDE_CHROMIUM`` or ``chromium`` on the PATH
(Debian's package; ``.ci/run`` installs it). Without either the tests skip, saying why.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "_build" / "screenshots"
BUILDS = (ROOT / "_build" / "test-book" / "_build" / "html", ROOT / "_build" / "html")
WIDTH, MAX_HEIGHT = 1280, 20000
# MyST-NB's output priority for HTML builders (the first mime type an output has is rendered)
PRIORITY = ("application/vnd.jupyter.widget-view+json", "application/javascript", "text/html",
            "image/svg+xml", "image/png", "image/jpeg", "text/markdown", "text/latex",
            "text/plain")
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.M)


def _pages() -> list[str]:
    """Document names in reading order, from _toc.yml (root, chapters)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def walk(entries: list) -> list[str]:   # a chapter, then its sections' pages
        return [d for e in entries for d in [e["file"], *walk(e.get("sections", []))]]

    return [toc["root"], *walk(toc.get("chapters", []))]


def _html_root() -> Path:
    env = os.environ.get("DEEPINSIDE_HTML")
    if env:
        root = Path(env)
        if not (root / "index.html").exists():
            pytest.fail(f"DEEPINSIDE_HTML={env} holds no built book (no index.html)")
        return root
    built = [b for b in BUILDS if (b / "index.html").exists()]
    if not built:
        pytest.skip("no built book: run `make book` (or tests/test_book_build.py) first")
    return max(built, key=lambda b: (b / "index.html").stat().st_mtime)


def _chromium() -> str:
    exe = os.environ.get("DEEPINSIDE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None)
    if not exe:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium; .ci/run "
                    "installs it where it can): the built pages were not opened in a browser")
    return exe


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, synchronous)."""

    def __init__(self, exe: str):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="deepinside-chromium-")
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--disable-extensions", "--disable-sync",
                 "--no-first-run", "--no-default-browser-check", "--mute-audio",
                 "--hide-scrollbars", "--remote-debugging-port=0",
                 f"--user-data-dir={self.profile}", f"--window-size={WIDTH},1000",
                 "about:blank"]
        self.proc = subprocess.Popen([exe, *flags], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"Chromium exited at start ({self.proc.returncode}):\n{err}")
            if time.time() > deadline:
                raise RuntimeError("Chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120,
                                              suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def send(self, method: str, **params):
        """Call a DevTools method and return its result (events are kept in self.events)."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 120.0) -> dict:
        deadline = time.time() + timeout
        for i, ev in enumerate(self.events):
            if ev["method"] == method:
                return self.events.pop(i)
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == method:
                return msg
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"no {method} within {timeout} s")

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                        returnByValue=True, timeout=120000)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def html_root() -> Path:
    return _html_root()


@pytest.fixture(scope="module")
def browser(html_root):
    b = Browser(_chromium())
    b.send("Page.enable")
    b.send("Runtime.enable")
    b.send("Log.enable")
    b.send("Network.enable")
    # the network is cut off: only the site's own files (file://) can load
    b.send("Network.emulateNetworkConditions", offline=True, latency=0,
           downloadThroughput=-1, uploadThroughput=-1)
    b.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=1000,
           deviceScaleFactor=1, mobile=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield b
    b.close()


# --- what the page should hold, from the executed notebook or the markdown source ------------

def _chosen(output: dict) -> str | None:
    if output.get("output_type") == "stream":
        return "stream"
    data = output.get("data", {})
    return next((m for m in PRIORITY if m in data), None)


def _executed_notebook(html_root: Path, doc: str) -> dict:
    """The notebook as the build rendered it, with its outputs: the source the build read
    (``_sources``) when it was already executed (tests/test_book_build.py), else MyST-NB's
    executed copy, else that source merged with the outputs of the build's execution cache
    (``make book``: ``.jupyter_cache``; its executed copies of cached chapters lack outputs)."""
    import nbformat

    def has_outputs(nb) -> bool:
        return any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")

    source = html_root / "_sources" / f"{doc}.ipynb"
    for path in (source, html_root.parent / "jupyter_execute" / f"{doc}.ipynb"):
        if path.exists():
            nb = json.loads(path.read_text())
            if has_outputs(nb):
                return nb
    cache_dir = Path(os.environ.get("DEEPINSIDE_JUPYTER_CACHE",
                                    html_root.parents[1] / ".jupyter_cache"))
    if source.exists() and cache_dir.is_dir():
        from jupyter_cache import get_cache

        _, nb = get_cache(str(cache_dir)).merge_match_into_notebook(
            nbformat.read(str(source), as_version=4))
        return json.loads(nbformat.writes(nb))
    raise AssertionError(f"{doc}: no executed copy of the notebook for {html_root}")


def expected_counts(html_root: Path, doc: str) -> dict:
    """Tables and output images the source produces."""
    src = ROOT / f"{doc}.md"
    if src.exists():
        return {"tables": len(TABLE_RULE.findall(src.read_text())), "images": 0}
    nb = _executed_notebook(html_root, doc)
    tables = images = 0
    for cell in nb["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if "remove-cell" in tags:
            continue
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            tables += len(TABLE_RULE.findall(text))
            continue
        if cell["cell_type"] != "code" or "remove-output" in tags:
            continue
        for out in cell.get("outputs", []):
            mime = _chosen(out)
            if mime == "text/markdown":
                md = out["data"][mime]
                tables += len(TABLE_RULE.findall(md if isinstance(md, str) else "".join(md)))
            elif mime == "text/html":
                html = out["data"][mime]
                tables += (html if isinstance(html, str) else "".join(html)).count("<table")
            elif mime and mime.startswith("image/"):
                images += 1
    return {"tables": tables, "images": images}


# --- what the browser shows -----------------------------------------------------------------

SETTLE = """(async () => {
  const imgs = [...document.images].filter(i => !i.complete);
  await Promise.all(imgs.map(i => new Promise(r => { i.onload = i.onerror = r; })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  await new Promise(r => setTimeout(r, 500));
  return true;
})()"""

INSPECT = r"""(() => {
  const art = document.querySelector("article.bd-article") || document.querySelector("main");
  const col = art.getBoundingClientRect();
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight, .MathJax";
  const issues = {pipes: [], tex: [], images: [], captions: [], errors: [], wide: [], cut: []};
  const short = (s) => s.replace(/\s+/g, " ").trim().slice(0, 120);
  const where = (e) => {
    const h = e.closest("section");
    const t = h && h.querySelector("h1, h2, h3");
    return (t ? t.textContent.replace("#", "").trim() : "") + " <" + e.tagName.toLowerCase() +
      (e.className && typeof e.className === "string" ? "." + e.className.split(" ")[0] : "") + ">";
  };
  // text a reader sees, outside code and typeset math
  const walker = document.createTreeWalker(art, NodeFilter.SHOW_TEXT);
  const pipeRe = /\|\s*:?[-\u2013\u2014]{1,}:?\s*\|/;
  const texRe = /\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\$[^$\s][^$]*\\[A-Za-z]+[^$]*\$/;
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip)) continue;
    const t = n.textContent;
    if (pipeRe.test(t) || (t.match(/\|/g) || []).length >= 4) issues.pipes.push(short(t));
    if (texRe.test(t)) issues.tex.push(short(t));
  }
  for (const img of art.querySelectorAll("img")) {
    if (!img.complete || img.naturalWidth === 0 || img.naturalHeight === 0)
      issues.images.push(img.getAttribute("src").slice(0, 120));
  }
  const outImgs = art.querySelectorAll(".cell_output img");
  for (const img of outImgs) {
    const fig = img.closest("figure");
    const cap = fig && fig.querySelector("figcaption");
    if (!cap || !cap.textContent.trim()) issues.captions.push(where(img));
  }
  for (const fig of art.querySelectorAll("figure")) {
    const cap = fig.querySelector("figcaption");
    if (!cap || !cap.textContent.trim()) issues.captions.push(where(fig));
  }
  const bad = ".output.stderr, .output.traceback, .output.error, .system-message, .problematic";
  for (const e of art.querySelectorAll(bad)) issues.errors.push(where(e) + ": " + short(e.textContent));
  if (/Traceback \(most recent call last\)/.test(art.innerText)) issues.errors.push("Traceback");
  // nothing sticks out of the content column; nothing is cut off inside it
  for (const e of art.querySelectorAll("img, table, pre, figure, svg, mjx-container, .cell_output > *")) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || e.closest("mjx-assistive-mml")) continue;
    const clipper = e.parentElement && e.parentElement.closest("pre, .highlight, mjx-container, .table-wrapper");
    if (!clipper && r.right > col.right + 2) issues.wide.push(where(e) + " right=" + Math.round(r.right) + " > " + Math.round(col.right));
  }
  for (const e of art.querySelectorAll("pre, mjx-container[display='true'], .table-wrapper, table")) {
    if (e.scrollWidth > e.clientWidth + 2 && e.clientWidth > 0) {
      const line = e.tagName === "PRE" ? e.textContent.split("\n").reduce((a, b) => a.length > b.length ? a : b, "") : e.textContent;
      issues.cut.push(where(e) + " " + e.scrollWidth + " > " + e.clientWidth + ": " + short(line));
    }
  }
  issues.tables = art.querySelectorAll("table").length;
  issues.images_count = outImgs.length;
  issues.math = document.querySelectorAll(".math").length;
  issues.typeset = document.querySelectorAll("mjx-container").length;
  issues.widget_views = document.querySelectorAll("script[type='application/vnd.jupyter.widget-view+json']").length;
  issues.widgets_shown = document.querySelectorAll(".jupyter-widgets").length;
  issues.progress_widgets = 0;  // progress bars embedded as widget state (blank gaps)
  for (const st of document.querySelectorAll("script[type='application/vnd.jupyter.widget-state+json']")) {
    const models = Object.values(JSON.parse(st.textContent).state || {});
    issues.progress_widgets += models.filter(m => /Progress/.test(m.model_name || "")).length;
  }
  issues.height = Math.ceil(document.documentElement.scrollHeight);
  return issues;
})()"""


@pytest.mark.slow
@pytest.mark.parametrize("doc", _pages())
def test_page_as_a_reader_sees_it(browser, html_root, doc):
    page = html_root / f"{doc}.html"
    assert page.exists(), f"{page} was not built"
    browser.events.clear()
    browser.send("Page.navigate", url=page.as_uri())
    browser.wait_event("Page.loadEventFired")
    browser.evaluate(SETTLE)
    seen = browser.evaluate(INSPECT)

    height = min(seen["height"], MAX_HEIGHT)
    browser.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height,
                 deviceScaleFactor=1, mobile=False)  # the whole page in one viewport
    browser.evaluate("new Promise(r => setTimeout(r, 300))")
    shot = browser.send("Page.captureScreenshot", format="png")
    browser.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=1000,
                 deviceScaleFactor=1, mobile=False)
    name = doc.replace("/", "_")
    (SHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))

    net = [e["params"]["request"]["url"] for e in browser.events
           if e["method"] == "Network.requestWillBeSent"
           and not e["params"]["request"]["url"].startswith(("file:", "data:", "blob:"))]
    js = [e["params"]["exceptionDetails"].get("exception", {}).get("description", "")[:300]
          or e["params"]["exceptionDetails"].get("text", "")
          for e in browser.events if e["method"] == "Runtime.exceptionThrown"]
    logs = [f'{e["params"]["entry"]["text"]} {e["params"]["entry"].get("url", "")}'[:300]
            for e in browser.events if e["method"] == "Log.entryAdded"
            and e["params"]["entry"]["level"] == "error"]
    problems = {k: seen[k] for k in ("pipes", "tex", "images", "captions", "errors", "wide", "cut")
                if seen[k]}
    if net:
        problems["network"] = net
    if js:
        problems["javascript"] = js
    if logs:
        problems["console"] = logs
    if seen["math"] and not seen["typeset"]:
        problems["mathjax"] = f"{seen['math']} math elements, none typeset (MathJax not loaded)"
    if seen["progress_widgets"]:
        problems["progress bars"] = f"{seen['progress_widgets']} progress-bar widget states"
    if seen["widgets_shown"] < seen["widget_views"]:
        problems["widgets"] = f"{seen['widget_views']} widget views, {seen['widgets_shown']} shown"
    want = expected_counts(html_root, doc)
    got = {"tables": seen["tables"], "images": seen["images_count"]}
    if got != want:
        problems["counts"] = f"page shows {got}, the source produces {want}"
    assert not problems, (f"{doc} (screenshot {SHOTS / name}.png):\n"
                          + json.dumps(problems, indent=1, ensure_ascii=False))
