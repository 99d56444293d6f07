"""An admin picks the organization's preferred default cloud on the settings page (the
card the clouds app draws, loaded by HTMX), and the cluster form then starts on it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clouds.models import DefaultCloud
from tests.conftest import activate, make_tenant
from tests.factories import PASSWORD, CloudFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]


def test_the_organization_s_default_cloud_is_chosen_in_settings_and_used_by_the_form(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("deck")
    activate(tenant.cloud)
    second = activate(CloudFactory(organization=tenant.org, name="deck second"))
    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(tenant.admin.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()

    page.goto(f"{live_server.url}/o/{tenant.org.slug}/settings/")
    card = page.locator("#default-cloud")
    picker = card.get_by_role("combobox", name="Preferred default cloud")
    expect(picker).to_be_visible()  # the card replaced its link
    picker.select_option(label=second.name)
    card.get_by_role("button", name="Save default cloud").click()
    expect(page.get_by_role("status")).to_contain_text("Preferred default cloud saved.")
    expect(page.locator("#default-cloud").get_by_role("combobox")).to_have_value(str(second.pk))
    assert DefaultCloud.objects.get(organization=tenant.org, project=None).cloud == second

    page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/new/")
    expect(page.get_by_role("combobox", name="Cloud", exact=True)).to_have_value(str(second.pk))
