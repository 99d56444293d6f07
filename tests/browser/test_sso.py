"""An owner connects the company's SAML IdP from the console, tests it, switches it on
and maps a group; a colleague then signs in through the IdP for the first time and
lands in the organization with the mapped role.

The IdP is the test IdP of tests/accounts/saml_idp.py (the stand-in for a company's
IdP on the internet), answering in the browser through Playwright's request routing:
its page auto-posts the signed answer to Raydeck's ACS cross-site, as a real IdP's
does, so the SameSite handling of the ACS is exercised for real."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import escape

import pytest
from playwright.sync_api import Page, Route, expect
from pytest_django.live_server_helper import LiveServer

from accounts.models import Membership, User
from tests.accounts.saml_idp import Sp, authn_request_id, encode
from tests.accounts.sso_helpers import idp_for
from tests.conftest import make_tenant
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]

COLLEAGUE = "grace@acme-corp.test"


def serve_idp(page: Page, live_server: LiveServer, slug: str, person: dict) -> None:
    """Answer the IdP's sign-on URL in this browser: sign `person` in and post back."""
    idp = idp_for(slug)
    sp = Sp(
        acs_url=f"{live_server.url}/accounts/saml/{slug}/acs/",
        entity_id=f"{live_server.url}/accounts/saml/{slug}/metadata/",
    )

    def answer(route: Route) -> None:
        request_id = authn_request_id(route.request.url)
        signed = idp.signed_response(
            sp,
            in_response_to=request_id,
            name_id=person["email"],
            attributes={
                "email": [person["email"]],
                "displayName": [person["name"]],
                "groups": person["groups"],
            },
        )
        route.fulfill(
            status=200,
            content_type="text/html",
            body=(
                f'<form method="post" action="{sp.acs_url}">'
                f'<input type="hidden" name="SAMLResponse" value="{escape(encode(signed))}">'
                "</form><script>document.forms[0].submit()</script>"
            ),
        )

    page.route(re.compile(rf"^https://idp\.{slug}\.test/sso\?.*"), answer)


def test_owner_connects_an_idp_and_a_colleague_signs_in_with_the_mapped_role(
    live_server: LiveServer, new_page: Callable[[], Page]
) -> None:
    tenant = make_tenant("acme")
    base = live_server.url
    idp = idp_for("acme")

    # 1. The owner signs in and opens SSO.
    owner = new_page()
    owner.goto(f"{base}/accounts/login/")
    owner.get_by_label("Email").fill(tenant.owner.email)
    owner.get_by_label("Password").fill(PASSWORD)
    owner.get_by_role("button", name="Sign In").click()
    owner.goto(f"{base}/o/acme/projects/")
    owner.get_by_role("navigation", name="Organization").get_by_role("link", name="SSO").click()
    expect(owner.locator("#sp-acs")).to_have_text(f"{base}/accounts/saml/acme/acs/")
    expect(owner.locator("#sp-entity")).to_have_text(f"{base}/accounts/saml/acme/metadata/")

    # 2. Pastes the IdP's metadata.
    owner.get_by_text("Change the identity provider").click()
    owner.get_by_label("…or IdP metadata XML").fill(idp.metadata())
    owner.get_by_role("button", name="Save identity provider").click()
    expect(owner.get_by_text("Identity provider saved.")).to_be_visible()
    expect(owner.get_by_text(idp.entity_id, exact=True)).to_be_visible()

    # 3. Tests the connection: the IdP's answer is shown, nobody is signed in.
    serve_idp(
        owner, live_server, "acme", {"email": COLLEAGUE, "name": "Grace", "groups": ["acme-admins"]}
    )
    owner.get_by_role("button", name="Test connection").click()
    expect(owner.get_by_text("Nobody was signed in")).to_be_visible()
    expect(owner.get_by_role("definition").filter(has_text=COLLEAGUE).first).to_be_visible()
    assert not User.objects.filter(email=COLLEAGUE).exists()

    # 4. Maps the IdP's admins group to Admin and switches SSO on.
    owner.get_by_role("link", name="Back to single sign-on").click()
    owner.get_by_label("IdP group").fill("acme-admins")
    owner.get_by_role("combobox", name="Organization role").select_option(label="Admin")
    owner.get_by_role("button", name="Add mapping").click()
    expect(owner.get_by_role("cell", name="acme-admins")).to_be_visible()
    owner.get_by_label("Single sign-on is on").check()
    owner.locator("form", has=owner.get_by_label("Single sign-on is on")).get_by_role(
        "button", name="Save"
    ).click()
    expect(owner.get_by_text("Access settings saved.")).to_be_visible()

    # 5. The colleague signs in through the IdP for the first time.
    colleague = new_page()
    serve_idp(
        colleague,
        live_server,
        "acme",
        {"email": COLLEAGUE, "name": "Grace", "groups": ["acme-admins"]},
    )
    colleague.goto(f"{base}/accounts/saml/acme/login/?process=login")
    colleague.get_by_role("button", name="Continue").click()
    expect(colleague).to_have_url(f"{base}/o/acme/projects/")
    expect(colleague.locator("details.user-menu summary")).to_have_text("Grace")
    grace = User.objects.get(email=COLLEAGUE)
    assert Membership.objects.get(organization=tenant.org, user=grace).role == "admin"

    # 6. The owner removes single sign-on: the page says who has no password, Grace
    # keeps her membership and is emailed how to set a password.
    owner.goto(f"{base}/o/acme/sso/")
    owner.get_by_role("link", name="Remove SSO").click()
    expect(owner.get_by_text("1 member has no password")).to_be_visible()
    owner.get_by_role("button", name="Remove single sign-on").click()
    expect(owner.get_by_text("1 member has no password yet and was emailed")).to_be_visible()
    expect(owner.get_by_role("link", name="Remove SSO")).to_have_count(0)
    assert Membership.objects.get(organization=tenant.org, user=grace).role == "admin"
    assert not grace.sso_identities.exists()
