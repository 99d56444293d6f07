"""Domain claims verified by DNS TXT, and "Sign in with SSO". DNS is the stand-in in
tests/accounts/dns_server.py (a real UDP DNS server on loopback in place of public
DNS); IdPs are the fake OIDC IdP (tests/accounts/oidc_idp.py) and the test SAML IdP."""

from __future__ import annotations

import itertools
import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse

from accounts.choices import OrgRole
from accounts.models import AuditEvent, DomainClaim
from accounts.sso import domains
from tests.conftest import Tenant, client_for

from .dns_server import FakeDns
from .oidc_idp import Person
from .sso_helpers import connect, idp_for
from .test_sso_oidc import connect_oidc, idp_location

pytestmark = pytest.mark.django_db


def claim_page(tenant: Tenant, domain: str) -> tuple[Any, DomainClaim]:
    client = client_for(tenant.owner)
    response = client.post(reverse("sso_domains", args=[tenant.org.slug]), {"domain": domain})
    assert response.status_code == 302, response.content[-800:]
    return client, DomainClaim.objects.get(organization=tenant.org, domain=domain.lower())


def test_txt_records_come_from_the_configured_resolver(fake_dns: FakeDns) -> None:
    fake_dns.records["example.test"] = ["v=spf1 -all", "raydeck-verification=abc"]
    assert sorted(domains.txt_records("example.test")) == [
        "raydeck-verification=abc",
        "v=spf1 -all",
    ]
    assert domains.txt_records("nothing-here.test") == []
    fake_dns.failing.add("broken.test")
    with pytest.raises(domains.DnsLookupFailed):
        domains.txt_records("broken.test")
    assert fake_dns.queries == ["example.test", "nothing-here.test", "broken.test"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Example.COM", "example.com"),
        ("@example.com.", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
    ],
)
def test_domains_are_normalized(given: str, expected: str) -> None:
    assert domains.normalize_domain(given) == expected


@pytest.mark.parametrize(
    "bad", ["com", "https://example.com", "a b.com", "-x.com", "10.0.0.1", "x" * 64 + ".com", ""]
)
def test_what_is_not_a_domain_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        domains.normalize_domain(bad)


def test_an_owner_claims_a_domain_sees_the_record_and_verifies_it(
    tenant_a: Tenant, fake_dns: FakeDns
) -> None:
    client, claim = claim_page(tenant_a, "Alpha-Corp.test")
    page = client.get(reverse("sso_domains", args=["alpha"])).content.decode()
    assert "alpha-corp.test." in page and claim.verification_token in page
    verify = reverse("sso_domain_verify", args=["alpha", claim.pk])

    # No record yet: not verified, and the page says why.
    response = client.post(verify, follow=True)
    assert "No TXT record at alpha-corp.test" in response.content.decode()
    claim.refresh_from_db()
    assert not claim.is_verified and claim.last_checked_at is not None

    # A DNS outage: a clear message, still not verified.
    fake_dns.failing.add("alpha-corp.test")
    response = client.post(verify, follow=True)
    assert "DNS did not answer for alpha-corp.test" in response.content.decode()
    fake_dns.failing.clear()

    # A record with another value does not count; the right one does.
    fake_dns.records["alpha-corp.test"] = ["raydeck-verification=someone-elses"]
    client.post(verify)
    claim.refresh_from_db()
    assert not claim.is_verified
    fake_dns.records["alpha-corp.test"].append(claim.verification_token)
    response = client.post(verify, follow=True)
    assert "alpha-corp.test is verified" in response.content.decode()
    claim.refresh_from_db()
    assert claim.is_verified

    verbs = sorted(
        AuditEvent.objects.filter(
            organization=tenant_a.org, verb__startswith="sso.domain"
        ).values_list("verb", flat=True)
    )
    assert verbs == [
        "sso.domain_claim",
        "sso.domain_verify",
        "sso.domain_verify_failed",
        "sso.domain_verify_failed",
    ]


def test_a_domain_verified_by_one_organization_is_not_verified_by_another(
    tenant_a: Tenant, tenant_b: Tenant, fake_dns: FakeDns
) -> None:
    _, bravo_claim = claim_page(tenant_b, "shared-corp.test")  # B claimed it first...
    _, alpha_claim = claim_page(tenant_a, "shared-corp.test")
    fake_dns.records["shared-corp.test"] = [alpha_claim.verification_token]
    assert domains.domain_claim_verify(claim=alpha_claim, actor=tenant_a.owner)

    # ...but A verified it; B cannot, even once its own record is published too.
    fake_dns.records["shared-corp.test"].append(bravo_claim.verification_token)
    client = client_for(tenant_b.owner)
    response = client.post(
        reverse("sso_domain_verify", args=["bravo", bravo_claim.pk]), follow=True
    )
    assert "Another organization has verified this domain." in response.content.decode()
    bravo_claim.refresh_from_db()
    assert not bravo_claim.is_verified

    # And nobody else can claim it any more.
    other = client.post(reverse("sso_domains", args=["bravo"]), {"domain": "SHARED-corp.test"})
    assert b"This organization has already claimed" in other.content
    bravo_claim.delete()
    other = client.post(reverse("sso_domains", args=["bravo"]), {"domain": "SHARED-corp.test"})
    assert b"Another organization has verified this domain." in other.content
    assert not DomainClaim.objects.filter(
        organization=tenant_b.org, domain="shared-corp.test"
    ).exists()


def test_removing_a_claim_is_audited_and_stops_routing(
    tenant_a: Tenant, fake_dns: FakeDns, oidc_idps: Any
) -> None:
    connect_oidc(tenant_a.owner, tenant_a.org, oidc_idps())
    client, claim = claim_page(tenant_a, "alpha-corp.test")
    fake_dns.records["alpha-corp.test"] = [claim.verification_token]
    domains.domain_claim_verify(claim=claim, actor=tenant_a.owner)
    assert domains.connection_for_sign_in("pat@alpha-corp.test") is not None

    url = reverse("sso_domain_remove", args=["alpha", claim.pk])
    assert b"Remove alpha-corp.test?" in client.get(url).content
    assert client.post(url).status_code == 302

    assert not DomainClaim.objects.filter(pk=claim.pk).exists()
    assert domains.connection_for_sign_in("pat@alpha-corp.test") is None
    assert AuditEvent.objects.filter(verb="sso.domain_remove", organization=tenant_a.org).exists()


@pytest.mark.parametrize("role", [OrgRole.ADMIN, OrgRole.MEMBER, OrgRole.VIEWER])
def test_only_owners_manage_domains(tenant_a: Tenant, role: str) -> None:
    client = client_for(tenant_a.users[role])
    claim = tenant_a.domain_claim
    assert client.get(reverse("sso_domains", args=["alpha"])).status_code == 403
    assert (
        client.post(reverse("sso_domains", args=["alpha"]), {"domain": "x.test"}).status_code == 403
    )
    assert client.post(reverse("sso_domain_verify", args=["alpha", claim.pk])).status_code == 403
    assert client.post(reverse("sso_domain_remove", args=["alpha", claim.pk])).status_code == 403
    assert DomainClaim.objects.filter(organization=tenant_a.org).count() == 1
    with pytest.raises(PermissionDenied):
        domains.domain_claim_create(
            organization=tenant_a.org, domain="x.test", actor=tenant_a.users[role]
        )


def test_another_organizations_claim_is_404(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = client_for(tenant_b.owner)
    for name in ("sso_domain_verify", "sso_domain_remove"):
        url = reverse(name, args=["bravo", tenant_a.domain_claim.pk])
        assert client.post(url).status_code == 404
    assert DomainClaim.objects.filter(pk=tenant_a.domain_claim.pk).exists()


# --- Sign in with SSO ---------------------------------------------------------------------


def fresh_browser(ip: str | None = None) -> Client:
    """A browser at an address of its own: "Sign in with SSO" is rate limited per
    address, and other tests' attempts must not count against this one's."""
    return Client(HTTP_HOST="testserver", REMOTE_ADDR=ip or f"198.51.100.{next(_ips)}")


_ips = itertools.cycle(range(1, 255))


def sso_start(identifier: str, client: Client | None = None) -> Any:
    return (client or fresh_browser()).post(reverse("sso_start"), {"identifier": identifier})


@pytest.fixture
def alpha_oidc(tenant_a: Tenant, oidc_idps: Any, fake_dns: FakeDns) -> Any:
    idp = oidc_idps(person=Person("pat", "pat@alpha-corp.test"))
    connect_oidc(tenant_a.owner, tenant_a.org, idp)
    claim = domains.domain_claim_create(
        organization=tenant_a.org, domain="alpha-corp.test", actor=tenant_a.owner
    )
    fake_dns.records["alpha-corp.test"] = [claim.verification_token]
    assert domains.domain_claim_verify(claim=claim, actor=tenant_a.owner)
    return idp


def test_sign_in_with_sso_by_email_goes_to_the_verified_domains_idp(alpha_oidc: Any) -> None:
    client = fresh_browser()
    page = client.get(reverse("account_login"))
    assert reverse("sso_start").encode() in page.content

    response = client.post(reverse("sso_start"), {"identifier": "Pat@Alpha-Corp.test"})

    location = idp_location(response)
    assert location.startswith(f"{alpha_oidc.issuer}/authorize?")
    params = parse_qs(urlsplit(location).query)
    assert params["login_hint"] == ["Pat@Alpha-Corp.test"]  # as typed: the IdP decides
    assert params["code_challenge_method"] == ["S256"] and params["nonce"]


def test_sign_in_with_sso_by_slug_goes_to_the_organizations_idp(
    tenant_a: Tenant, tenant_b: Tenant, alpha_oidc: Any
) -> None:
    response = sso_start("alpha")
    assert idp_location(response).startswith(f"{alpha_oidc.issuer}/authorize?")

    # Bravo uses SAML: the same page sends its people to its SAML IdP.
    connect(tenant_b.owner, tenant_b.org, idp_for("bravo"))
    response = sso_start("BRAVO")
    assert idp_location(response).startswith("https://idp.bravo.test/sso?SAMLRequest=")


def test_sign_in_with_sso_says_the_same_for_every_miss(
    tenant_a: Tenant, tenant_b: Tenant, alpha_oidc: Any, fake_dns: FakeDns
) -> None:
    """No such organization, an organization without SSO, SSO switched off, a domain
    nobody claimed, a domain claimed but not verified: one answer, so the page
    enumerates nothing a redirect would not."""
    domains.domain_claim_create(
        organization=tenant_b.org, domain="bravo-corp.test", actor=tenant_b.owner
    )
    connect(tenant_b.owner, tenant_b.org, idp_for("bravo"), enabled=False)
    misses = [
        "no-such-org",
        "bravo",  # SSO off
        "pat@nobody-claimed.test",
        "pat@bravo-corp.test",  # claimed, not verified
        "pat@sub.alpha-corp.test",  # a subdomain is another domain
        "x" * 300,
    ]
    for identifier in misses[:-1]:
        response = sso_start(identifier)
        assert response.status_code == 404, identifier
        assert "No single sign-on matches that." in response.content.decode()
    assert sso_start(misses[-1]).status_code == 400  # too long to be either
    assert alpha_oidc.authorize_requests == []


def test_sign_in_with_sso_keeps_a_safe_next_url(alpha_oidc: Any) -> None:
    client = fresh_browser()
    response = client.post(
        reverse("sso_start"), {"identifier": "alpha", "next": "/o/alpha/clusters/"}
    )
    idp_location(response)
    states = client.session["socialaccount_states"]
    assert [s[0].get("next") for s in states.values()] == ["/o/alpha/clusters/"]

    client = fresh_browser()
    client.post(reverse("sso_start"), {"identifier": "alpha", "next": "https://evil.test/"})
    states = client.session["socialaccount_states"]
    assert [s[0].get("next") for s in states.values()] == [None]


def test_sign_in_with_sso_is_rate_limited(tenant_a: Tenant) -> None:
    client = fresh_browser(f"203.0.113.{os.getpid() % 250}")
    statuses = [sso_start(f"nobody-{i}", client).status_code for i in range(25)]
    assert statuses[:20] == [404] * 20
    assert statuses[-1] == 429
