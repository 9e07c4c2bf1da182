"""Sphinx extension of this book (``sphinx: local_extensions`` in ``_config.yml``).

- Chapters executed by the build show no progress bars: a kernel started by the build inherits
  ``DEEPINSIDE_PROGRESS=0`` (see ``deepinside._progress``). A progress-bar widget in a static
  page is only an embedded widget state and a blank gap.
- Every inline script is included once per page. jupyter-book 1.x registers sphinx-thebe's
  configuration script twice, and the second copy throws ``SyntaxError: Identifier
  'THEBE_JS_URL' has already been declared`` in every page (tests/test_browser.py sees it).
"""

from __future__ import annotations

import os


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        body = getattr(js, "attributes", {}).get("body", "")
        key = body or str(js)  # an inline script by its text (whatever its priority)
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    scripts[:] = kept


def setup(app) -> dict:
    os.environ["DEEPINSIDE_PROGRESS"] = "0"
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
