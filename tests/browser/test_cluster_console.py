"""A member creates a cluster on the local cloud from the console, watches it reach
running on the live page, and terminates it: real Chromium, real Ray, real agents.

The reconciler runs in a thread of this test, calling the same service the Celery task
calls (Celery's own behaviour is covered by tests/clusters/test_faults.py). A thread
needs its own database connection, so this test runs on PostgreSQL (as in CI).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.models import Cluster
from clusters.services import reconcile
from tests.conftest import make_tenant
from tests.factories import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.ray,
    pytest.mark.usefixtures("transactional_db"),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="the reconciler thread needs a database shared across connections "
        "(PostgreSQL; set DATABASE_URL)",
    ),
]
START_TIMEOUT_MS = 150_000


@pytest.fixture
def reconciler() -> Iterator[None]:
    """What the Celery worker does, in a thread: reconcile every cluster not yet final."""
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.is_set():
                for cluster_id in reconcile.clusters_needing_reconcile():
                    reconcile.cluster_reconcile(cluster_id=cluster_id)
                stop.wait(1)
        finally:
            connection.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=60)


@pytest.fixture
def no_leftover_nodes(settings) -> Iterator[None]:
    """Whatever happens in the test, no node process outlives it."""
    yield
    from clouds.providers.registry import provider_for

    for cloud in Cloud.objects.all():
        provider = provider_for(cloud)
        for instance in provider.list_instances():
            provider.terminate(instance_id=instance.instance_id)


def test_create_watch_and_terminate_a_cluster(
    live_server: LiveServer,
    new_page: Callable[[], Page],
    settings,
    tmp_path: Path,
    no_leftover_nodes: None,  # before the reconciler: torn down after it stops
    reconciler: None,
) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("deck")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    org = tenant.org.slug

    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(tenant.member.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()

    page.goto(f"{live_server.url}/o/{org}/clusters/")
    page.get_by_role("link", name="Create a cluster").first.click()
    page.get_by_role("combobox", name="Project", exact=True).select_option(
        label=tenant.project.name
    )
    page.get_by_role("combobox", name="Cloud", exact=True).select_option(str(tenant.cloud.pk))
    page.get_by_role("textbox", name="Name", exact=True).fill("from-the-browser")
    page.get_by_role("button", name="Create cluster").click()

    # The live panel shows the steps as they happen, then "Running".
    live = page.locator("#cluster-live")
    expect(page.get_by_role("heading", name="from-the-browser")).to_be_visible()
    expect(live).to_contain_text("agent registered", timeout=START_TIMEOUT_MS)
    expect(live.locator(".badge").first).to_have_text("Running", timeout=START_TIMEOUT_MS)
    expect(live).to_contain_text(re.compile("ray started", re.IGNORECASE))

    page.get_by_role("link", name="Terminate").click()
    page.get_by_role("button", name="Terminate cluster").click()
    expect(page.locator("#cluster-live .badge").first).to_have_text("Terminated", timeout=60_000)
    cluster = Cluster.objects.get(name="from-the-browser")
    assert cluster.state == "terminated"
    assert not [n for n in cluster.nodes.all() if n.state != "terminated"]
