"""The console's own stylesheet and scripts, sent inside every page instead of as three
more requests: a first visit (empty cache) then waits for one answer, not for one and
then three (benchmarks/README.md, console pages). Each text is read once per process.
The Content-Security-Policy allows exactly these texts, by their SHA-256, so no other
inline script or style runs. No Django here: the settings import it, and pass the
folder (RAYDECK_STATIC_DIR, their STATICFILES_DIRS): the files are found wherever the
templates are."""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

STYLES = ("console/console.css", "serve/serve.css")
SCRIPTS = (
    "vendor/htmx/htmx.min.js",
    "console/console.js",
    "console/cluster_metrics.js",
    "serve/service_charts.js",
)


@functools.cache
def text(static_dir: Path, path: str) -> str:
    """The file under static/, which must not end its own <style> or <script> early (nor
    open an HTML comment, which would change how a script's end is found)."""
    content = (static_dir / path).read_text(encoding="utf-8")
    element = "style" if path.endswith(".css") else "script"
    if f"</{element}" in content.lower() or "<!--" in content:
        raise ValueError(f"static/{path} would end its inline <{element}>: it cannot go inline")
    return content


def csp_source(static_dir: Path, path: str) -> str:
    """The CSP source that allows this file's text as an inline <style> or <script>."""
    digest = hashlib.sha256(text(static_dir, path).encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"
