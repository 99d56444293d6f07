"""At 1280 px wide no page is wider than the window, with the longest names and ids
Raydeck accepts (real Chromium measures the laid-out page)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from clusters.choices import ClusterState, NodeRole, NodeState
from tests.conftest import activate, make_tenant
from tests.factories import PASSWORD, ClusterFactory, NodeFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]

LONG = "a-very-long-cluster-name-that-goes-on-" + "and-on-" * 8  # 94 characters


def test_no_page_is_wider_than_a_1280_px_window(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("wide")
    activate(tenant.cloud)
    cluster = ClusterFactory(
        project=tenant.project,
        cloud=tenant.cloud,
        name=LONG[:100],
        state=ClusterState.RUNNING,
        head_address="10.123.234.245:6379",
    )
    NodeFactory(
        cluster=cluster,
        role=NodeRole.HEAD,
        state=NodeState.READY,
        instance_id="local-" + "0123456789abcdef" * 4,
        private_address="10.123.234.245",
    )
    page = new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.set_default_timeout(60_000)  # nine pages, on a busy machine
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(tenant.owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    org = f"/o/{tenant.org.slug}"
    paths = [
        f"{org}/",
        f"{org}/clusters/",
        f"{org}/clusters/{cluster.pk}/",
        f"{org}/compute-configs/",
        f"{org}/clouds/",
        f"{org}/audit/",
        f"{org}/sso/",
        "/profile/",
        f"{org}/no-such-page/",
    ]
    too_wide = {}
    for path in paths:
        page.goto(live_server.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 1280:
            too_wide[path] = width
    assert too_wide == {}


def signed_in_page(live_server: LiveServer, new_page: Callable[[], Page], email: str) -> Page:
    page = new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/accounts/login/", timeout=60_000)  # a fresh server is slow
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    return page


def test_the_ray_job_submit_command_shows_whole_and_copies(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("cmd")
    activate(tenant.cloud)
    cluster = ClusterFactory(
        project=tenant.project, cloud=tenant.cloud, name=LONG[:100], state=ClusterState.RUNNING
    )
    NodeFactory(
        cluster=cluster,
        role=NodeRole.HEAD,
        state=NodeState.READY,
        private_address="10.123.234.245",
        ray_ports={"gateway": 18443},
    )
    page = signed_in_page(live_server, new_page, tenant.owner.email)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(f"{live_server.url}/o/{tenant.org.slug}/clusters/{cluster.pk}/")
    access = page.locator("#cluster-access")
    command = access.get_by_text("ray job submit --address")
    # Every character can be seen: the box fits its text or scrolls, never cuts it off.
    fits_or_scrolls = command.evaluate(
        "el => el.scrollWidth <= el.clientWidth || getComputedStyle(el).overflowX === 'auto'"
    )
    assert fits_or_scrolls
    box = command.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280
    access.get_by_role("button", name="Copy").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("ray job submit --address https://10.123.234.245:18443 ")
    assert "print(ray.cluster_resources())" in copied


def test_form_inputs_are_styled_alike_and_the_audit_filters_line_up(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("forms")
    page = signed_in_page(live_server, new_page, tenant.owner.email)
    org = f"{live_server.url}/o/{tenant.org.slug}"

    page.goto(f"{org}/sso/")
    for summary in page.locator("details:not(.menu) > summary").all():
        summary.click()  # the identity provider's form may be folded
    style = """el => {
        const s = getComputedStyle(el);
        return [s.borderTopColor, s.borderRadius, s.paddingLeft, s.width];
    }"""
    text_style = page.get_by_label("IdP entity id").evaluate(style)
    for label in ("IdP metadata URL", "IdP sign-on URL"):
        assert page.get_by_label(label).evaluate(style) == text_style, label

    page.goto(f"{org}/audit/")
    filters = page.locator("form.filter")
    controls = filters.locator("input:not([type=hidden]), select").all()
    boxes = [c.bounding_box() for c in [*controls, filters.get_by_role("button", name="Filter")]]
    bottoms = {round(box["y"] + box["height"]) for box in boxes if box}
    assert len(boxes) >= 5 and len(bottoms) == 1, f"the filters' bottom edges: {sorted(bottoms)}"


def test_profile_and_error_pages_keep_the_navigation_and_organization_switcher(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("lost")
    page = signed_in_page(live_server, new_page, tenant.owner.email)
    org = f"/o/{tenant.org.slug}"
    for path in ("/profile/", f"{org}/no-such-page/", f"{org}/clusters/999999/"):
        page.goto(live_server.url + path)
        navigation = page.get_by_role("navigation", name="Organization")
        expect(navigation.get_by_role("link", name="Clusters")).to_be_visible()
        expect(page.locator(".org-switcher > summary")).to_have_text(tenant.org.name)
