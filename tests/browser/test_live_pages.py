"""Live pages in real Chromium: a polling cluster page whose session ends goes to the
sign-in page as a whole, instead of drawing the sign-in form inside its live panel; the
"… is starting." banner goes once the cluster has moved on. No reconciler runs: the
tests move the cluster's state themselves."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clusters.choices import ClusterState
from clusters.models import Cluster
from tests.conftest import activate, make_tenant
from tests.factories import PASSWORD, ClusterFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]


def test_a_live_page_reloads_to_sign_in_after_sign_out(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("live")
    cluster = ClusterFactory(
        project=tenant.project, cloud=tenant.cloud, name="polling", state=ClusterState.STARTING
    )
    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(tenant.member.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/{cluster.pk}/")
    expect(page.get_by_text("Live", exact=True)).to_be_visible()

    page.context.clear_cookies()  # signed out (or the session expired) elsewhere

    # The next poll finds the session gone: the whole page goes to sign-in.
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="), timeout=10_000)
    expect(page.get_by_role("button", name="Sign In")).to_have_count(1)
    expect(page.locator("#cluster-live")).to_have_count(0)


def test_the_starting_banner_goes_once_the_cluster_runs(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("banner")
    activate(tenant.cloud)
    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(tenant.member.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/new/")
    page.get_by_role("button", name="Create cluster").click()
    banner = page.get_by_role("status").filter(has_text="is starting")
    expect(banner).to_be_visible()

    cluster = Cluster.objects.exclude(pk=tenant.cluster.pk).get()
    Cluster.objects.filter(pk=cluster.pk).update(state=ClusterState.RUNNING)
    expect(page.locator(".status-line")).to_contain_text("Running")
    expect(banner).to_have_count(0)
