"""What a first visit costs the browser: pages and static files go gzip-compressed to a
browser that accepts it (the embedded default serves static/ as it is, so nothing else
compresses them), the console's own CSS and scripts come inside each page, and the
chart library is no part of a page until it draws a chart."""

from __future__ import annotations

import base64
import gzip
import hashlib

import pytest
from django.conf import settings
from django.templatetags.static import static

from tests.conftest import Tenant, client_for

pytestmark = pytest.mark.django_db

BROWSER = {"HTTP_ACCEPT_ENCODING": "gzip, deflate, br, zstd"}


def test_static_files_go_compressed_and_unchanged(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.member)
    url = static("vendor/htmx/htmx.min.js")
    original = (settings.BASE_DIR / "static/vendor/htmx/htmx.min.js").read_bytes()

    sent = client.get(url, **BROWSER)
    assert sent.status_code == 200 and sent["Content-Encoding"] == "gzip"
    body = b"".join(sent.streaming_content)
    assert gzip.decompress(body) == original
    assert len(body) < len(original) / 2
    assert "Accept-Encoding" in sent["Vary"]

    # A client that does not accept gzip gets the file as it is.
    plain = client.get(url)
    assert not plain.has_header("Content-Encoding")
    assert b"".join(plain.streaming_content) == original
    # HEAD tells the size of the file, with no body to compress.
    head = client.head(url, **BROWSER)
    assert not head.has_header("Content-Encoding") and head["Content-Length"] == str(len(original))


def test_pages_go_compressed_and_load_no_chart_library(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.member)
    org = tenant_a.org.slug
    pages = (
        f"/o/{org}/clusters/{tenant_a.cluster.pk}/",
        f"/o/{org}/services/{tenant_a.service.pk}/",
    )
    for path in pages:
        sent = client.get(path, **BROWSER)
        assert sent.status_code == 200 and sent["Content-Encoding"] == "gzip"
        page = gzip.decompress(sent.content).decode()
        assert tenant_a.org.name in page
        # The library's URL is there for the page's script, which fetches it when it
        # first draws; no tag loads it with the page.
        assert f'src="{static("vendor/uplot/uPlot.iife.min.js")}"' not in page
        assert f'href="{static("vendor/uplot/uPlot.min.css")}"' not in page


def test_the_service_page_names_the_chart_library_for_its_script(tenant_a: Tenant) -> None:
    page = (
        client_for(tenant_a.member)
        .get(f"/o/{tenant_a.org.slug}/services/{tenant_a.service.pk}/")
        .content.decode()
    )
    assert f'data-chart-script="{static("vendor/uplot/uPlot.iife.min.js")}"' in page
    assert f'data-chart-style="{static("vendor/uplot/uPlot.min.css")}"' in page


def test_the_console_css_and_scripts_come_inside_the_page_and_only_they_may(
    tenant_a: Tenant,
) -> None:
    """A first visit waits for one answer, not for a page and then its files; the policy
    still refuses any inline script or style but exactly these."""
    client = client_for(tenant_a.member)
    org = tenant_a.org.slug
    base = (("console/console.css", "style"), ("vendor/htmx/htmx.min.js", "script"))
    base += (("console/console.js", "script"),)
    pages = {
        f"/o/{org}/": base,
        f"/o/{org}/clusters/{tenant_a.cluster.pk}/": (("console/cluster_metrics.js", "script"),),
        f"/o/{org}/services/{tenant_a.service.pk}/": (
            ("serve/serve.css", "style"),
            ("serve/service_charts.js", "script"),
        ),
    }
    for url, files in pages.items():
        sent = client.get(url)
        page = sent.content.decode()
        policy = sent["Content-Security-Policy"]
        for path, element in files:
            text = (settings.BASE_DIR / "static" / path).read_text()
            assert f"<{element}>{text}</{element}>" in page
            assert static(path) not in page  # not fetched a second time
            digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            directive = next(d for d in policy.split("; ") if d.startswith(element))
            assert f"'sha256-{digest}'" in directive.split()
        assert "unsafe-inline" not in policy
        # The scripts run after the document, as `defer` ran them.
        assert page.index("<script>") > page.index('<main class="content"')
