"""The cluster form keeps what a person chose while it follows their choices (HTMX swaps
in real Chromium); no cluster is started (the reconciler does not run here)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clusters.models import Cluster
from tests.conftest import activate, make_tenant
from tests.factories import PASSWORD, CloudFactory, ComputeConfigVersionFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]


# Counts the times #cloud-fields showed before HTMX had wired it up: a choice made in that
# moment sends nothing and is lost (this test used to time out on it now and then).
WATCH_SWAPS = """() => {
  window.unwiredSwaps = 0;
  new MutationObserver(() => {
    const fields = document.getElementById("cloud-fields");
    if (fields && fields.classList.contains("htmx-added")) window.unwiredSwaps++;
  }).observe(document.body, {childList: true, subtree: true});
}"""


def sign_in(page: Page, base: str, email: str) -> None:
    # The first page of a fresh live server imports every view: slow on a busy machine.
    page.goto(f"{base}/accounts/login/", timeout=60_000)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()


def choose(page: Page, field: str, value: object) -> None:
    """Pick an option and wait for the page to follow it (its HTMX swap), which asks with
    what was chosen and never with the CSRF token (a GET's query ends up in access logs)."""
    with page.expect_response(lambda r: "/clusters/new/" in r.url) as swap:
        page.get_by_role("combobox", name=field).select_option(str(value))
    assert "csrfmiddlewaretoken" not in swap.value.url
    assert "cloud=" in swap.value.url
    page.wait_for_load_state()


def test_a_config_chosen_before_the_cloud_is_kept_and_its_machines_shown(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("form")
    first = activate(tenant.cloud)
    second = activate(CloudFactory(organization=tenant.org, name="form second"))
    big = ComputeConfigVersionFactory(
        cloud=first, config__name="big head", head_cpus=8, head_memory_mb=32768
    )
    ComputeConfigVersionFactory(cloud=second, config__name="other")
    page = new_page()
    sign_in(page, live_server.url, tenant.member.email)
    page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/new/")
    page.evaluate(WATCH_SWAPS)

    # The only project is chosen; two clouds: none is.
    expect(page.get_by_role("combobox", name="Project")).to_have_value(str(tenant.project.pk))
    choose(page, "Compute config", big.pk)
    # The config brings its cloud, and the page shows what the cluster will run on.
    expect(page.get_by_role("combobox", name="Cloud")).to_have_value(str(first.pk))
    machines = page.get_by_label("Machines")
    expect(machines).to_contain_text("8 CPUs")
    expect(machines).to_contain_text("workers")

    # Choosing the cloud again (the old page reset the config here) keeps the config.
    choose(page, "Cloud", first.pk)
    expect(page.get_by_role("combobox", name="Compute config")).to_have_value(str(big.pk))
    # Another cloud: the config stays chosen and the page says it does not fit.
    choose(page, "Cloud", second.pk)
    expect(page.get_by_role("combobox", name="Compute config")).to_have_value(str(big.pk))
    expect(page.get_by_role("alert")).to_contain_text("runs on form local")
    choose(page, "Cloud", first.pk)
    expect(page.get_by_role("alert")).to_have_count(0)
    assert page.evaluate("window.unwiredSwaps") == 0, "fields showed before they answer a choice"

    page.get_by_role("button", name="Create cluster").click()
    expect(page.get_by_role("status")).to_contain_text("is starting")
    cluster = Cluster.objects.exclude(pk=tenant.cluster.pk).get()
    assert cluster.compute_config_id == big.pk
    assert cluster.cloud_id == first.pk


def test_the_only_cloud_and_project_are_chosen_and_the_default_machines_shown(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("single")
    activate(tenant.cloud)
    page = new_page()
    sign_in(page, live_server.url, tenant.member.email)
    page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/new/")
    expect(page.get_by_role("combobox", name="Project")).to_have_value(str(tenant.project.pk))
    expect(page.get_by_role("combobox", name="Cloud")).to_have_value(str(tenant.cloud.pk))
    expect(page.get_by_label("Machines")).to_contain_text("Head")
