"""The chart library (uPlot) comes with the first chart, not with the page, in real
Chromium: a service page fetches it once its versions have traffic to draw and then
draws the four charts; a page without charts to draw never fetches it. No Ray: the
traffic is the head's reports, written as its heartbeat would (tests/serve/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from tests.conftest import make_tenant
from tests.factories import PASSWORD
from tests.serve.conftest import note_traffic
from workloads.serve.choices import ServiceState
from workloads.serve.models import Service

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    expect(page).not_to_have_url(f"{base}/accounts/login/")


def test_the_chart_library_comes_with_the_first_chart(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("charts")
    Service.objects.filter(pk=tenant.service.pk).update(state=ServiceState.RUNNING)
    version = tenant.service.versions.get()
    page = new_page()
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    sign_in(page, live_server.url, tenant.member.email)
    org = tenant.org.slug

    # No traffic yet: the page says so and fetches no chart library.
    page.goto(f"{live_server.url}/o/{org}/services/{tenant.service.pk}/")
    expect(page.get_by_text("No requests yet")).to_be_visible()
    page.wait_for_timeout(500)  # its first read of the metrics is in
    assert not [url for url in fetched if "/uplot/" in url]

    # The head reports traffic: the next read (every 5 s) fetches the library once and
    # draws every chart.
    note_traffic(version)
    charts = page.locator("#service-charts .chart canvas")
    expect(charts).to_have_count(4, timeout=15_000)
    expect(page.get_by_text("No requests yet")).to_be_hidden()
    assert [url for url in fetched if url.endswith("uPlot.iife.min.js")] == [
        f"{live_server.url}/static/vendor/uplot/uPlot.iife.min.js"
    ]
    assert [url for url in fetched if url.endswith("uPlot.min.css")]

    # A cluster page whose metrics are not available draws nothing and fetches nothing.
    fetched.clear()
    page.goto(f"{live_server.url}/o/{org}/clusters/{tenant.cluster.pk}/")
    expect(page.locator("h1")).to_have_text(tenant.cluster.name)
    page.wait_for_timeout(500)
    assert not [url for url in fetched if "/uplot/" in url]
