"""A member deploys a service from the console, watches it start and then a new version
roll out step by step on the live page, and calls the endpoint with the token the page
showed once: real Chromium, real Ray Serve on the local cloud, real HAProxy.

The reconciler and the orchestrator run in a thread of this test (tests/serve/conftest.py
Driver), calling the services the Celery tasks call; PostgreSQL only, as the thread
needs its own connection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clouds.choices import CloudState
from clouds.models import Cloud
from tests.conftest import make_tenant
from tests.factories import PASSWORD
from tests.serve.conftest import APPS_DIR, Driver, needs_haproxy, query
from workloads.serve.models import Service
from workloads.serve.services import deploy

pytestmark = [
    pytest.mark.browser,
    pytest.mark.ray,
    needs_haproxy,
    pytest.mark.usefixtures("transactional_db"),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="the driver thread needs a database shared across connections (PostgreSQL)",
    ),
]
START_TIMEOUT_MS = 240_000


def serve_yaml(version: str) -> str:
    return (
        "import_path: echo_app:build\n"
        f"args: {{version: {version}}}\n"
        f"runtime_env: {{env_vars: {{PYTHONPATH: {APPS_DIR}}}}}\n"
    )


def test_deploy_watch_a_rollout_and_call_the_endpoint(
    live_server: LiveServer, new_page: Callable[[], Page], settings, tmp_path
) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("deck")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    org = tenant.org.slug

    page = new_page()
    # Two Ray clusters, HAProxy and the driver share the machine with the browser: pages
    # may take longer than the usual 10 s to load.
    page.set_default_timeout(60_000)
    page.set_default_navigation_timeout(60_000)
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(tenant.member.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()

    page.goto(f"{live_server.url}/o/{org}/clusters/")
    page.get_by_role("navigation", name="Organization").get_by_role("link", name="Services").click()
    page.get_by_role("link", name="Deploy a service").first.click()

    def fill(version: str) -> None:
        page.get_by_role("textbox", name="Name", exact=True).fill("hello")
        page.get_by_role("combobox", name="Project", exact=True).select_option(
            label=tenant.project.name
        )
        page.get_by_role("combobox", name="Cloud", exact=True).select_option(str(tenant.cloud.pk))
        page.get_by_role("textbox", name="Serve config").fill(serve_yaml(version))
        page.get_by_label("Step seconds").fill("6")
        page.get_by_role("button", name="Deploy").click()

    fill("v1")
    token = page.locator("#service-token").inner_text().strip()
    assert token.startswith("rds_")
    service = Service.objects.get(name="hello")
    driver = Driver(service)
    driver.start()
    try:
        page.get_by_role("link", name="Watch it start").click()
        live = page.locator("#service-live")
        expect(live.locator(".status-line .badge")).to_have_text(
            "Running", timeout=START_TIMEOUT_MS
        )
        service.refresh_from_db()
        endpoint = service.endpoint_url + "/"
        expect(page.locator("#service-endpoint")).to_have_text(endpoint)
        assert query(endpoint, token) == "v1"
        assert query(endpoint, None) == "HTTP 401"

        # v2 from the same form: the page shows the rollout's steps as they pass.
        page.goto(f"{live_server.url}/o/{org}/services/deploy/")
        fill("v2")
        expect(page.locator("#service-live")).to_contain_text(
            "Rolling out v2", timeout=START_TIMEOUT_MS
        )
        expect(page.locator(".rollout-steps .step-now")).to_have_text(
            "10%", timeout=START_TIMEOUT_MS
        )
        expect(page.locator(".rollout-steps .step-now")).to_have_text("50%", timeout=60_000)
        expect(live).to_contain_text(re.compile("v2 serves 100% of the traffic"), timeout=90_000)
        assert query(endpoint, token) == "v2"
    finally:
        deploy.service_terminate(service=service, actor=tenant.member)
        import time

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            service.refresh_from_db()
            live_clusters = service.versions.exclude(cluster__state="terminated").exclude(
                cluster=None
            )
            if service.state == "terminated" and not live_clusters.exists():
                break
            time.sleep(1)
        driver.stop()
    assert service.state == "terminated"
