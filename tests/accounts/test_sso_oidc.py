"""OpenID Connect sign-in, end to end against a fake IdP (tests/accounts/oidc_idp.py:
a real HTTP server on loopback standing in for a company's IdP on the internet, with
keys generated here). The happy path, PKCE and nonce in every authorization request,
and every bad answer refused with a clean page, no session and no user."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from allauth.socialaccount.models import SocialApp
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from accounts.choices import OrgRole
from accounts.models import AuditEvent, DomainClaim, Membership, SsoConnection, SsoIdentity, User
from accounts.sso import services
from accounts.sso.oidc import client as oidc_client
from accounts.sso.oidc import connections as oidc_connections
from kit.crypto import decrypt
from tests.conftest import Tenant, client_for

from .oidc_idp import DROP, FakeOidcIdp, Person, new_key
from .sso_helpers import browser, signed_in_user_id

pytestmark = pytest.mark.django_db

ALICE = Person("alice-sub-123", "alice@alpha-corp.test", "Alice Example", ["raydeck-admins"])


def connect_oidc(
    owner: User, organization: Any, idp: FakeOidcIdp, *, default_role: str = OrgRole.MEMBER
) -> SsoConnection:
    connection = oidc_connections.oidc_connection_save(
        organization=organization,
        actor=owner,
        issuer=idp.issuer,
        client_id=idp.client_id,
        client_secret=idp.client_secret,
        groups_attribute="groups",
    )
    return services.sso_connection_set_access(
        connection=connection,
        actor=owner,
        enabled=True,
        default_role=default_role,
        enforce_sso=False,
        break_glass_user=None,
        actor_signed_in_through=True,
    )


def idp_location(response: Any) -> str:
    """Where Raydeck sends the browser at its IdP. After a form POST that is a page that
    goes there by itself (a redirect would break the console's CSP form-action, see
    accounts.sso.idp_redirects.leave_for_idp)."""
    assert response.status_code == 200, response.content[-800:]
    location = response.context["location"]
    assert f'http-equiv="refresh" content="0; url={escape(location)}"' in response.content.decode()
    return location


def start(client: Client, connection: SsoConnection) -> str:
    """Press "sign in" for the connection: Raydeck answers with the IdP's authorize URL."""
    url = reverse("openid_connect_login", kwargs={"provider_id": connection.social_app.provider_id})
    return idp_location(client.post(url, {"process": "login"}))


def through_idp(client: Client, authorize_url: str) -> Any:
    """The browser at the IdP (signed in there already), then back at Raydeck."""
    at_idp = requests.get(authorize_url, allow_redirects=False, timeout=10)
    assert at_idp.status_code == 302
    back = urlsplit(at_idp.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def sign_in(client: Client, connection: SsoConnection) -> Any:
    return through_idp(client, start(client, connection))


def assert_refused(response: Any, client: Client, email: str, text: str = "") -> None:
    assert response.status_code in (400, 403, 502), response.status_code
    assert b"Single sign-on did not sign you in" in response.content
    if text:
        assert text.encode() in response.content, response.content.decode()[-1500:]
    assert signed_in_user_id(client) is None
    assert not User.objects.filter(email=email).exists()
    assert not SsoIdentity.objects.exists()


@pytest.fixture
def alpha(tenant_a: Tenant, oidc_idps: Any) -> tuple[FakeOidcIdp, SsoConnection]:
    idp = oidc_idps(person=ALICE)
    connection = connect_oidc(tenant_a.owner, tenant_a.org, idp)
    services.sso_group_mapping_create(
        connection=connection,
        actor=tenant_a.owner,
        idp_group="raydeck-admins",
        org_role=OrgRole.ADMIN,
    )
    return idp, connection


def test_a_full_oidc_sign_in_creates_the_user_and_membership_with_the_mapped_role(
    tenant_a: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection]
) -> None:
    idp, connection = alpha
    client = browser()
    authorize_url = start(client, connection)

    # PKCE S256 and a nonce are in the authorization request.
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert len(params["nonce"]) >= 32
    assert params["client_id"] == idp.client_id
    assert set(params["scope"].split()) >= {"openid", "email"}

    response = through_idp(client, authorize_url)

    assert response.status_code == 302, response.content[-1500:]
    assert response["Location"] == reverse("project_list", args=["alpha"])
    # The IdP got the verifier for its challenge (it refuses otherwise) and our secret.
    assert idp.token_refusals == []
    assert idp.token_requests[0]["code_verifier"]
    alice = User.objects.get(email=ALICE.email)
    assert alice.name == "Alice Example"
    assert not alice.has_usable_password()
    assert signed_in_user_id(client) == alice.pk
    assert Membership.objects.get(organization=tenant_a.org, user=alice).role == OrgRole.ADMIN
    assert SsoIdentity.objects.get(connection=connection, subject=ALICE.sub).user == alice
    verbs = set(AuditEvent.objects.filter(organization=tenant_a.org).values_list("verb", flat=True))
    assert {"user.create_sso", "sso.identity_create", "sso.member_add", "sso.login"} <= verbs
    assert client.get(reverse("project_list", args=["alpha"])).status_code == 200

    # The IdP drops the group: the next sign-in takes the mapped role away.
    idp.person = Person(ALICE.sub, ALICE.email, ALICE.name, [])
    assert sign_in(browser(), connection).status_code == 302
    assert Membership.objects.get(organization=tenant_a.org, user=alice).role == OrgRole.MEMBER


def test_the_idp_checks_the_pkce_verifier_raydeck_kept(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    """The control for PKCE: a verifier other than the one for the challenge is refused
    by the IdP, and Raydeck shows a clean error."""
    idp, connection = alpha
    client = browser()
    authorize_url = start(client, connection)
    session = client.session
    states = session["socialaccount_states"]
    for state in states.values():
        state[0]["pkce_code_verifier"] = "not-the-verifier-for-this-challenge-" + "x" * 20
    session["socialaccount_states"] = states
    session.save()

    response = through_idp(client, authorize_url)

    assert idp.token_refusals == ["PKCE verifier does not match the challenge"]
    assert_refused(response, client, ALICE.email, "did not accept the sign-in code")


BAD_TOKENS: dict[str, tuple[dict[str, Any], str]] = {
    "no kid": ({"id_token_header": {"kid": DROP}}, "does not name its signing key"),
    "unknown kid": ({"id_token_header": {"kid": "someone-elses"}}, "does not publish"),
    "JWKS answers 500": ({"jwks_status": 500}, "answered with HTTP 500"),
    "JWKS not JSON": ({"jwks_body": b"<html>oops</html>"}, "is not JSON"),
    "JWKS without keys": ({"jwks_body": b'{"nokeys": 1}'}, "list no keys"),
    "wrong issuer": ({"id_token_claims": {"iss": "https://evil.test/"}}, "another identity"),
    "wrong audience": ({"id_token_claims": {"aud": "another-client"}}, "another application"),
    "extra audience without azp": (
        {"id_token_claims": {"aud": ["raydeck-client", "another-client"]}},
        "another application",
    ),
    "expired": ({"id_token_claims": {"exp": 1_000_000_000, "iat": 999_999_000}}, "has expired"),
    "wrong nonce": ({"id_token_claims": {"nonce": "a-nonce-from-another-sign-in"}}, "nonce"),
    "no nonce": ({"id_token_claims": {"nonce": DROP}}, "nonce"),
    "alg none": ({"sign_with": "none"}, "algorithm Raydeck does not accept"),
    "HS256 keyed with the public key": ({"sign_with": "hs256-public"}, "does not accept"),
    "signed by another key under the IdP's kid": ({"other_key": new_key()}, "signature"),
    "no sub": ({"id_token_claims": {"sub": DROP}}, "not valid"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_a_bad_id_token_is_refused_cleanly(
    alpha: tuple[FakeOidcIdp, SsoConnection], case: str
) -> None:
    idp, connection = alpha
    spoilers, message = BAD_TOKENS[case]
    for name, value in spoilers.items():
        setattr(idp, name, value)
    client = browser()

    response = sign_in(client, connection)

    assert_refused(response, client, ALICE.email, message)


def test_groups_missing_from_the_id_token_come_from_user_info(
    tenant_a: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection]
) -> None:
    idp, connection = alpha
    idp.id_token_claims = {"groups": DROP}

    assert sign_in(browser(), connection).status_code == 302

    alice = User.objects.get(email=ALICE.email)
    assert Membership.objects.get(organization=tenant_a.org, user=alice).role == OrgRole.ADMIN


def test_user_info_about_someone_else_is_refused(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    idp, connection = alpha
    idp.id_token_claims = {"groups": DROP}
    idp.userinfo_overrides = {"sub": "someone-else", "groups": ["raydeck-admins"]}
    client = browser()

    response = sign_in(client, connection)

    assert_refused(response, client, ALICE.email, "user info is about someone else")


def test_the_idp_unreachable_at_callback_is_a_clean_error(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    idp, connection = alpha
    client = browser()
    authorize_url = start(client, connection)
    at_idp = requests.get(authorize_url, allow_redirects=False, timeout=10)
    idp.stop()
    back = urlsplit(at_idp.headers["Location"])

    response = client.get(f"{back.path}?{back.query}")

    assert_refused(response, client, ALICE.email, "could not reach the identity provider")


def test_a_callback_from_another_browser_or_a_replay_is_refused(
    alpha: tuple[FakeOidcIdp, SsoConnection],
) -> None:
    _, connection = alpha
    victim, attacker = browser(), browser()
    at_idp = requests.get(start(attacker, connection), allow_redirects=False, timeout=10)
    back = urlsplit(at_idp.headers["Location"])
    callback = f"{back.path}?{back.query}"

    # Wrong state: the attacker's callback in the victim's browser.
    response = victim.get(callback)
    assert_refused(response, victim, ALICE.email, "not started in this browser")

    # The attacker's own browser succeeds once, then the same callback is refused.
    assert attacker.get(callback).status_code == 302
    replay = attacker.get(callback)
    assert replay.status_code == 400
    assert b"not started in this browser" in replay.content


def test_an_error_from_the_idp_signs_nobody_in(alpha: tuple[FakeOidcIdp, SsoConnection]) -> None:
    _, connection = alpha
    client = browser()
    authorize_url = start(client, connection)
    state = parse_qs(urlsplit(authorize_url).query)["state"][0]
    callback = reverse("openid_connect_callback", kwargs={"provider_id": "oidc-alpha"})

    response = client.get(callback, {"state": state, "error": "access_denied"})

    assert_refused(response, client, ALICE.email, "did not sign you in")


def test_the_same_sub_from_two_organizations_idps_is_two_people(
    tenant_a: Tenant, tenant_b: Tenant, oidc_idps: Any
) -> None:
    alpha_idp = oidc_idps(person=Person("shared-sub", "sam@alpha-corp.test", "Sam A"))
    bravo_idp = oidc_idps(person=Person("shared-sub", "sam@bravo-corp.test", "Sam B"))
    alpha_connection = connect_oidc(tenant_a.owner, tenant_a.org, alpha_idp)
    bravo_connection = connect_oidc(tenant_b.owner, tenant_b.org, bravo_idp)

    assert sign_in(browser(), alpha_connection).status_code == 302
    assert sign_in(browser(), bravo_connection).status_code == 302

    sam_a = User.objects.get(email="sam@alpha-corp.test")
    sam_b = User.objects.get(email="sam@bravo-corp.test")
    assert sam_a != sam_b
    assert list(sam_a.memberships.values_list("organization__slug", flat=True)) == ["alpha"]
    assert list(sam_b.memberships.values_list("organization__slug", flat=True)) == ["bravo"]
    assert SsoIdentity.objects.filter(subject="shared-sub").count() == 2


def test_bravos_idp_cannot_finish_a_sign_in_started_for_alpha(
    tenant_a: Tenant, tenant_b: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection], oidc_idps: Any
) -> None:
    """State is per provider: Bravo's callback with a state Alpha's sign-in stashed is
    refused, so one organization's IdP never answers for another's."""
    _, alpha_connection = alpha
    bravo_connection = connect_oidc(tenant_b.owner, tenant_b.org, oidc_idps(person=ALICE))
    client = browser()
    state = parse_qs(urlsplit(start(client, alpha_connection)).query)["state"][0]
    bravo_callback = reverse(
        "openid_connect_callback",
        kwargs={"provider_id": bravo_connection.social_app.provider_id},
    )

    response = client.get(bravo_callback, {"state": state, "code": "x"})

    assert_refused(response, client, ALICE.email, "not started in this browser")


def test_an_existing_accounts_email_is_linked_only_on_a_verified_domain(
    tenant_a: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection], fake_dns: Any
) -> None:
    from accounts.sso import domains

    _, connection = alpha
    existing = User.objects.create_user(email=ALICE.email, password="a-long-password-1234")
    client = browser()

    response = sign_in(client, connection)

    assert response.status_code == 403
    assert b"has not verified the domain alpha-corp.test" in response.content
    assert signed_in_user_id(client) is None
    assert not SsoIdentity.objects.exists()
    assert not Membership.objects.filter(user=existing).exists()

    # The organization proves it owns the domain (DNS TXT, through the stand-in).
    claim = domains.domain_claim_create(
        organization=tenant_a.org, domain="alpha-corp.test", actor=tenant_a.owner
    )
    fake_dns.records["alpha-corp.test"] = ["v=spf1 -all", claim.verification_token]
    assert domains.domain_claim_verify(claim=claim, actor=tenant_a.owner)

    client = browser()
    response = sign_in(client, connection)

    assert response.status_code == 302
    assert signed_in_user_id(client) == existing.pk
    assert SsoIdentity.objects.get(connection=connection).user == existing
    assert User.objects.filter(email=ALICE.email).count() == 1
    assert AuditEvent.objects.filter(verb="sso.identity_link", actor=existing).exists()


def test_a_switched_off_connection_signs_nobody_in(
    tenant_a: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection]
) -> None:
    _, connection = alpha
    connection.enabled = False
    connection.save(update_fields=["enabled"])
    client = browser()

    response = sign_in(client, connection)

    assert_refused(response, client, ALICE.email)


def test_an_idp_whose_discovery_names_another_issuer_is_refused(
    tenant_a: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection]
) -> None:
    """Mix-up defence: at sign-in, and when an owner saves it."""
    idp, connection = alpha
    idp.discovery_overrides = {"issuer": "https://login.other.test/"}
    url = reverse("openid_connect_login", kwargs={"provider_id": connection.social_app.provider_id})

    response = browser().post(url, {"process": "login"})

    assert response.status_code == 502
    assert b"says its issuer is" in response.content
    with pytest.raises(ValidationError) as error:
        oidc_connections.oidc_connection_save(
            organization=tenant_a.org,
            actor=tenant_a.owner,
            issuer=idp.issuer,
            client_id="c",
            client_secret="",
            groups_attribute="groups",
        )
    assert "says its issuer is" in str(error.value)


def test_endpoints_must_be_https_on_a_public_address(settings: Any) -> None:
    settings.RAYDECK_SSO_ALLOW_HTTP_LOOPBACK = False
    for url in ("http://127.0.0.1:8080/idp", "http://idp.example.com/", "https://127.0.0.1/x"):
        with pytest.raises(oidc_client.OidcError):
            oidc_client.check_endpoint_url(url, "issuer")


# --- The settings page -------------------------------------------------------------------


def test_an_owner_connects_an_oidc_idp_and_the_secret_is_never_shown_again(
    tenant_a: Tenant, oidc_idps: Any
) -> None:
    idp = oidc_idps()
    client = client_for(tenant_a.owner)
    url = reverse("sso_oidc", args=["alpha"])
    page = client.get(url)
    assert b"/accounts/oidc/oidc-alpha/login/callback/" in page.content

    response = client.post(
        url,
        {
            "issuer": idp.issuer,
            "client_id": idp.client_id,
            "client_secret": idp.client_secret,
            "groups_attribute": "groups",
        },
    )

    assert response.status_code == 302
    connection = SsoConnection.objects.get(organization=tenant_a.org)
    app = connection.social_app
    assert (connection.protocol, connection.enabled) == ("oidc", False)
    # The tenant's unused SAML connection became this one: its mapping stays, its
    # SAML app is gone.
    assert connection.pk == tenant_a.sso_connection.pk
    assert list(connection.group_mappings.all()) == [tenant_a.sso_mapping]
    assert not SocialApp.objects.filter(pk=tenant_a.sso_connection.social_app_id).exists()
    assert app.secret != idp.client_secret
    assert decrypt(app.secret) == idp.client_secret
    assert app.settings["server_url"] == idp.issuer
    for page_url in (url, reverse("sso_settings", args=["alpha"])):
        content = client.get(page_url).content.decode()
        assert idp.client_secret not in content
        assert app.secret not in content
    assert "Set (hidden)" in client.get(url).content.decode()
    event = AuditEvent.objects.get(verb="sso.connection_update", organization=tenant_a.org)
    assert event.changes["client_secret"] == [None, "set"]
    assert event.changes["protocol"] == ["saml", "oidc"]
    assert idp.client_secret not in str(event.changes)

    # Saving again without a secret keeps it; with one replaces it (audited, not shown).
    client.post(url, {"issuer": idp.issuer, "client_id": "new-id", "client_secret": ""})
    app.refresh_from_db()
    assert (app.client_id, decrypt(app.secret)) == ("new-id", idp.client_secret)
    client.post(url, {"issuer": idp.issuer, "client_id": "new-id", "client_secret": "rotated"})
    app.refresh_from_db()
    assert decrypt(app.secret) == "rotated"
    assert AuditEvent.objects.filter(
        verb="sso.connection_update", changes__client_secret=["set", "replaced"]
    ).exists()


def test_a_saml_connection_in_use_is_not_replaced_by_oidc(tenant_a: Tenant, oidc_idps: Any) -> None:
    idp = oidc_idps()
    saml = tenant_a.sso_connection
    saml.enabled = True
    saml.save(update_fields=["enabled"])
    client = client_for(tenant_a.owner)
    url = reverse("sso_oidc", args=["alpha"])
    assert b"Switch single sign-on off and remove that connection" in client.get(url).content

    response = client.post(url, {"issuer": idp.issuer, "client_id": "c", "client_secret": "s"})

    assert b"people have used it or it is on" in response.content
    saml.refresh_from_db()
    assert saml.protocol == "saml"
    assert not SocialApp.objects.filter(provider="openid_connect").exists()


def test_a_bad_issuer_is_a_form_error_and_saves_nothing(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.owner)
    response = client.post(
        reverse("sso_oidc", args=["alpha"]),
        {"issuer": "http://127.0.0.1:9/nothing-here", "client_id": "c", "client_secret": "s"},
    )
    assert response.status_code == 200
    assert b"could not reach the identity provider" in response.content
    assert not SsoConnection.objects.filter(protocol="oidc").exists()
    assert not SocialApp.objects.filter(provider="openid_connect").exists()


@pytest.mark.parametrize("role", [OrgRole.ADMIN, OrgRole.MEMBER, OrgRole.VIEWER])
def test_only_owners_configure_oidc(tenant_a: Tenant, oidc_idps: Any, role: str) -> None:
    idp = oidc_idps()
    client = client_for(tenant_a.users[role])
    url = reverse("sso_oidc", args=["alpha"])
    assert client.get(url).status_code == 403
    data = {"issuer": idp.issuer, "client_id": "c", "client_secret": "s"}
    assert client.post(url, data).status_code == 403
    assert not SsoConnection.objects.filter(protocol="oidc").exists()
    with pytest.raises(PermissionDenied):
        oidc_connections.oidc_connection_save(
            organization=tenant_a.org,
            actor=tenant_a.users[role],
            issuer=idp.issuer,
            client_id="c",
            client_secret="s",
            groups_attribute="",
        )


def test_test_connection_through_oidc_shows_the_result_and_changes_no_membership(
    tenant_a: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection]
) -> None:
    assert alpha[1].enabled
    client = client_for(tenant_a.owner, HTTP_HOST="testserver")
    response = client.post(reverse("sso_test", args=["alpha"]))

    result = through_idp(client, idp_location(response))

    assert result.status_code == 200
    assert b"Organization role: Admin" in result.content
    assert not User.objects.filter(email=ALICE.email).exists()
    assert signed_in_user_id(client) == tenant_a.owner.pk
    assert AuditEvent.objects.filter(verb="sso.test", organization=tenant_a.org).exists()


def test_an_organization_requiring_sso_is_reached_through_its_oidc_idp(
    tenant_a: Tenant, alpha: tuple[FakeOidcIdp, SsoConnection]
) -> None:
    """Enforcement works the same through OIDC: a password session is sent to the IdP,
    and comes back with the organization."""
    idp, connection = alpha
    services.sso_connection_set_access(
        connection=connection,
        actor=tenant_a.owner,
        enabled=True,
        default_role=OrgRole.MEMBER,
        enforce_sso=True,
        break_glass_user=tenant_a.owner,
        actor_signed_in_through=False,
    )
    member = tenant_a.member
    idp.person = Person("member-sub", member.email, "Member", [])
    client = client_for(member, HTTP_HOST="testserver")
    page = client.get(reverse("project_list", args=["alpha"]))
    assert page.status_code == 403
    login_url = page.context["login_url"]

    # The organization's IdP answers for the member: it may link the account only on a
    # verified domain, so verify it the short way here (the DNS path is tested above).
    DomainClaim.objects.create(
        organization=tenant_a.org, domain="alpha.example.com", verified_at=timezone.now()
    )
    back = through_idp(client, idp_location(client.post(login_url)))

    assert back.status_code == 302
    assert signed_in_user_id(client) == member.pk
    assert client.get(reverse("project_list", args=["alpha"])).status_code == 200
