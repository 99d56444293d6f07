"""A node's log in real Chromium: opened from the cluster page, narrowed to one file and
a text, and downloaded as shown (the node's lines are stored as its heartbeats store
them; no Ray runs here)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clusters.choices import ClusterState, NodeRole, NodeState
from tests.clusters.test_cluster_pages import HEAD_TAIL
from tests.conftest import activate, make_tenant
from tests.factories import PASSWORD, ClusterFactory, NodeFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]


def test_a_node_log_narrows_to_one_file_and_a_text_and_downloads_that(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("logs")
    activate(tenant.cloud)
    cluster = ClusterFactory(
        project=tenant.project, cloud=tenant.cloud, name="logs", state=ClusterState.RUNNING
    )
    NodeFactory(cluster=cluster, role=NodeRole.HEAD, state=NodeState.READY, log_tail=HEAD_TAIL)
    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/", timeout=60_000)  # a fresh server is slow
    page.get_by_label("Email").fill(tenant.viewer.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/{cluster.pk}/")

    page.get_by_role("link", name="Log", exact=True).click()
    log = page.get_by_label("Last log lines")
    expect(log).to_contain_text("[agent]")
    expect(log).not_to_contain_text("[state-dump]")
    page.get_by_label("File").select_option(label="Raylet")
    expect(log).not_to_contain_text("[agent]")
    expect(log).to_contain_text("Raylet started")
    page.get_by_role("checkbox", name="Ray's periodic state dumps").check()
    expect(log).to_contain_text("[state-dump] Event stats:")
    search = page.get_by_label("Search")
    search.fill("event stats")
    search.press("Enter")
    expect(log).not_to_contain_text("Raylet started")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download").click()
    body = download.value.path().read_text()
    assert body.splitlines() == [
        line for line in HEAD_TAIL.splitlines() if "[raylet.out]" in line and "Event stats" in line
    ]
