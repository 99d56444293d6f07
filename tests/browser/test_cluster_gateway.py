"""A member clicks "Ray Dashboard" on a running cluster's page and lands in the Ray
Dashboard, served through the cluster's access gateway: real Chromium, real Ray. On the
same cluster start, the page draws the last hour's charts with data the browser read
from the head's Prometheus (Debian's, started by the agent, scraping Ray's metrics
ports) through the gateway with a token the console vended, and says what this machine
lacks: GPUs (the GPU charts' queries are checked against the same Prometheus) and Grafana.

The cluster is started by driving the reconciler from the test (as test_end_to_end.py
does); the click, the audited redirect, the gateway's cookie and the dashboard's own
pages and API calls are all the browser's, over HTTPS: the gateway's certificate chains
to an operator-supplied CA that this Chromium trusts (as a company's browsers would).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from accounts.models import AuditEvent
from clouds.choices import CloudState
from clouds.models import Cloud
from clusters import access, charts
from clusters.choices import ClusterState
from clusters.services import lifecycle
from tests.agent.tls_ca import TestCA
from tests.browser.gateway_ca import chromium_extra_args, gateway_ca, operator_ca  # noqa: F401
from tests.clusters.test_end_to_end import drive
from tests.conftest import make_tenant
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.usefixtures("transactional_db")]


def test_ray_dashboard_opens_from_the_cluster_page(
    live_server: LiveServer,
    new_page: Callable[[], Page],
    settings,
    tmp_path: Path,
    gateway_ca: TestCA,  # noqa: F811 - the fixture imported above
) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("dash")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    cluster = lifecycle.cluster_create(
        project=tenant.project, actor=tenant.member, name="dash", cloud=tenant.cloud
    )
    try:
        cluster = drive(
            cluster, {ClusterState.RUNNING, ClusterState.FAILED}, time.monotonic() + 150
        )
        assert cluster.state == ClusterState.RUNNING, cluster.state_reason
        address = access.gateway_address(cluster)
        assert address is not None

        page = new_page()
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Email").fill(tenant.member.email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign In").click()
        page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/{cluster.pk}/")
        expect(page.locator("#cluster-access")).to_contain_text(address)
        # The local cloud's built-in image (this project's Python) has JupyterLab.
        expect(page.get_by_role("button", name="Jupyter")).to_have_count(1)

        # The charts: Prometheus scraped Ray (every 10 s) and the browser drew its data.
        metrics = page.locator("#cluster-metrics")
        cpu = metrics.locator('.chart[data-title="CPU (%)"]')
        expect(cpu).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"), timeout=120_000)
        expect(cpu.locator("canvas")).to_have_count(1)
        expect(metrics.locator(".metrics-status")).not_to_contain_text("unavailable")
        tokens = AuditEvent.objects.filter(verb="cluster.token", actor=tenant.member)
        assert tokens.filter(changes__app=[None, "metrics"]).exists()
        # This machine has no GPU and no Grafana: the page says both plainly.
        expect(metrics.locator(".metrics-no-gpus")).to_contain_text("No GPUs on this cluster")
        expect(metrics).to_contain_text("Grafana: not in this image")
        # The GPU charts' queries are ones this Prometheus answers (no series here).
        token = access.mint_token(
            user=tenant.member, cluster=cluster, lifetime=access.LINK_LIFETIME
        )
        for chart in charts.GPU_CHARTS:
            request = urllib.request.Request(  # noqa: S310 - the gateway's https URL
                f"{address}/prometheus/api/v1/query?{urlencode({'query': chart.query})}",
                headers={"Authorization": f"Bearer {token.token}"},
            )
            with urllib.request.urlopen(  # noqa: S310 - the gateway's https URL
                request, context=gateway_ca.client_context(), timeout=10
            ) as answer:
                assert json.load(answer) == {
                    "status": "success",
                    "data": {"resultType": "vector", "result": []},
                }, chart

        with page.context.expect_page() as opened:
            page.get_by_role("button", name="Ray Dashboard").click()
        dashboard = opened.value
        dashboard.wait_for_load_state()
        # The link's token was swapped for a cookie: the address bar is clean.
        expect(dashboard).to_have_url(re.compile(re.escape(address) + r"/(#.*)?$"), timeout=30_000)
        # "Ray Dashboard", then "<page> | Ray Dashboard" once its overview has loaded.
        expect(dashboard).to_have_title(re.compile(r"Ray Dashboard$"))
        # The dashboard's own API calls (with the cookie) work: it lists the head node.
        dashboard.goto(f"{address}/#/cluster")
        expect(dashboard.get_by_role("cell", name="ALIVE").first).to_be_visible(timeout=30_000)
        assert "token=" not in dashboard.url
        assert AuditEvent.objects.filter(verb="cluster.open", actor=tenant.member).count() == 1

        # Without the cookie (a new browser), the gateway refuses.
        stranger = new_page()
        response = stranger.goto(f"{address}/")
        assert response is not None and response.status == 401
    finally:
        lifecycle.cluster_terminate(cluster=cluster, actor=None)
        drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 60)
