"""The API reference page in Debian's Chromium: Swagger UI from the vendored assets draws
every endpoint of the OpenAPI document, with no request leaving the server and no
Content Security Policy violation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, Request, expect
from pytest_django.live_server_helper import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]


def test_the_reference_page_lists_the_endpoints(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    elsewhere: list[str] = []

    def watch(request: Request) -> None:
        if not request.url.startswith(live_server.url) and not request.url.startswith("data:"):
            elsewhere.append(request.url)

    page.on("request", watch)
    page.goto(f"{live_server.url}/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Raydeck API")
    clusters = page.locator(".opblock-summary-path", has_text="/api/v1/orgs/{org}/clusters")
    expect(clusters.first).to_be_visible()
    assert page.locator(".opblock").count() >= 20
    assert elsewhere == []  # no CDN, no fonts, nothing from the internet
