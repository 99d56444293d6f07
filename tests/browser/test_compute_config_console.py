"""An owner creates a compute config with one worker group from the console form (no
API, no JavaScript needed) and finds it in the list."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clusters.models import ComputeConfig
from tests.conftest import make_tenant
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]


def test_create_a_compute_config_and_see_it_listed(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("deck")
    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(tenant.owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()

    page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/")
    page.get_by_role("navigation", name="Organization").get_by_role(
        "link", name="Compute configs"
    ).click()
    page.get_by_role("link", name="New compute config").first.click()
    page.get_by_role("textbox", name="Name", exact=True).fill("browser-config")
    page.get_by_role("combobox", name="Cloud", exact=True).select_option(str(tenant.cloud.pk))
    page.get_by_role("textbox", name="Group 1 Name").fill("workers")
    page.get_by_role("spinbutton", name="Group 1 Max").fill("3")
    page.get_by_role("button", name="Create compute config").click()

    expect(page.get_by_role("heading", name="browser-config")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("created (version 1)")

    page.get_by_role("link", name="Compute configs").first.click()
    row = page.get_by_role("row").filter(has_text="browser-config")
    expect(row).to_contain_text("Organization-wide")
    expect(row).to_contain_text(tenant.cloud.name)
    expect(row).to_contain_text("v1")
    expect(row).to_contain_text("workers 0\u20133")
    groups = ComputeConfig.objects.get(name="browser-config").latest.worker_groups
    assert [(g["name"], g["max"]) for g in groups] == [("workers", 3)]
