"""An owner connects the company's OpenID Connect IdP and verifies the email domain; a
colleague then signs in from "Sign in with single sign-on" with nothing but their work
email. The IdP is the fake one in tests/accounts/oidc_idp.py and DNS the stand-in in
tests/accounts/dns_server.py (both real servers on loopback, in place of the internet)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from accounts.choices import OrgRole
from accounts.models import DomainClaim, Membership, User
from tests.accounts.dns_server import FakeDns
from tests.accounts.oidc_idp import FakeOidcIdp, Person
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]

PASSWORD = "violet-harbour-1729"
OWNER = "ada@acme-rockets.test"
COLLEAGUE = "grace@acme-rockets.test"


@pytest.fixture
def idp() -> Iterator[FakeOidcIdp]:
    server = FakeOidcIdp(person=Person("grace-1", COLLEAGUE, "Grace Hopper", [])).start()
    yield server
    server.stop()


@pytest.fixture
def dns(settings: Any) -> Iterator[FakeDns]:
    server = FakeDns().start()
    settings.RAYDECK_DNS_NAMESERVERS = [server.address]
    yield server
    server.stop()


def test_owner_connects_oidc_and_a_colleague_signs_in_by_email(
    live_server: LiveServer, new_page: Callable[[], Page], idp: FakeOidcIdp, dns: FakeDns
) -> None:
    org = OrganizationFactory(name="Acme Rockets", slug="acme-rockets")
    owner_user = UserFactory(email=OWNER, password=PASSWORD)
    MembershipFactory(organization=org, user=owner_user, role=OrgRole.OWNER)

    # 1. The owner signs in with a password and opens SSO → OpenID Connect.
    owner = new_page()
    owner.goto(f"{live_server.url}/accounts/login/")
    owner.get_by_label("Email").fill(OWNER)
    owner.get_by_label("Password").fill(PASSWORD)
    owner.get_by_role("button", name="Sign In").click()
    owner.get_by_role("navigation", name="Organization").get_by_role("link", name="SSO").click()
    owner.get_by_role("link", name="Set up OpenID Connect instead").click()
    expect(owner.locator("#oidc-redirect-uri")).to_have_text(
        f"{live_server.url}/accounts/oidc/oidc-acme-rockets/login/callback/"
    )

    # 2. Issuer, client id and secret; saved, the secret is never shown again.
    owner.get_by_label("Issuer URL").fill(idp.issuer)
    owner.get_by_label("Client id").fill(idp.client_id)
    owner.get_by_label("Client secret").fill(idp.client_secret)
    owner.get_by_role("button", name="Save identity provider").click()
    expect(owner.get_by_text("OpenID Connect provider saved.")).to_be_visible()
    expect(owner.get_by_text("Set (hidden)")).to_be_visible()
    assert idp.client_secret not in owner.content()

    # 3. Switch it on.
    owner.get_by_label("Single sign-on is on").check()
    owner.get_by_role("button", name="Save", exact=True).click()
    expect(owner.get_by_role("heading", name="Single sign-on On")).to_be_visible()

    # 4. Claim the domain; the page shows the TXT record to create; verify it.
    owner.get_by_role("link", name="Email domains").click()
    owner.get_by_role("textbox", name="Domain").fill("acme-rockets.test")
    owner.get_by_role("button", name="Claim domain").click()
    token = DomainClaim.objects.get(domain="acme-rockets.test").verification_token
    expect(owner.locator("#domain-claims")).to_contain_text(token)
    dns.records["acme-rockets.test"] = [token]  # the owner creates the record
    owner.get_by_role("button", name="Verify").click()
    expect(owner.get_by_text("acme-rockets.test is verified")).to_be_visible()
    expect(owner.locator("#domain-claims")).to_contain_text("Verified")

    # 5. A colleague signs in with SSO by email: the IdP, then the organization.
    colleague = new_page()
    colleague.goto(f"{live_server.url}/accounts/login/")
    colleague.get_by_role("link", name="Sign in with single sign-on (SSO)").click()
    colleague.get_by_label("Work email or organization URL name").fill(COLLEAGUE)
    colleague.get_by_role("button", name="Continue").click()
    expect(colleague).to_have_url(f"{live_server.url}/o/acme-rockets/projects/")

    # The IdP saw PKCE and a nonce; the colleague is a member with the default role.
    assert idp.authorize_requests[0]["code_challenge_method"] == "S256"
    assert idp.authorize_requests[0]["nonce"]
    grace = User.objects.get(email=COLLEAGUE)
    assert Membership.objects.get(organization=org, user=grace).role == OrgRole.MEMBER
