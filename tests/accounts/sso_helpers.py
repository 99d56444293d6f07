"""Shared steps of the SSO tests: connect an organization to a test IdP, start a
sign-in in a browser (the Django test client), and post the IdP's answer to the ACS.
The IdP is tests/accounts/saml_idp.py (no network)."""

from __future__ import annotations

from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from accounts.choices import OrgRole
from accounts.models import SsoConnection, User
from accounts.sso import services
from accounts.sso.services import SamlIdp

from .saml_idp import FakeIdp, Sp, authn_request_id, signing_key


def idp_for(slug: str) -> FakeIdp:
    return FakeIdp(f"https://idp.{slug}.test/", key=signing_key(slug))


def sp_for(slug: str) -> Sp:
    """Raydeck's SP values for the organization, as the test client's host sees them."""
    return Sp(
        acs_url=f"http://testserver/accounts/saml/{slug}/acs/",
        entity_id=f"http://testserver/accounts/saml/{slug}/metadata/",
    )


def connect(
    org_owner: User,
    organization: object,
    idp: FakeIdp,
    *,
    default_role: str = OrgRole.MEMBER,
    enforce_sso: bool = False,
    break_glass_user: User | None = None,
    enabled: bool = True,
) -> SsoConnection:
    connection = services.saml_connection_save(
        organization=organization,  # type: ignore[arg-type]
        actor=org_owner,
        idp=SamlIdp(entity_id=idp.entity_id, sso_url=idp.sso_url, x509cert=idp.key.cert_b64),
    )
    return services.sso_connection_set_access(
        connection=connection,
        actor=org_owner,
        enabled=enabled,
        default_role=default_role,
        enforce_sso=enforce_sso,
        break_glass_user=break_glass_user,
        actor_signed_in_through=True,
    )


def start_sign_in(client: Client, slug: str, next_url: str | None = None) -> str:
    """Press "sign in with SSO": Raydeck redirects to the IdP with an AuthnRequest,
    whose ID this browser's session now expects back as InResponseTo."""
    data = {"process": "login"}
    if next_url:
        data["next"] = next_url
    response = client.post(reverse("saml_login", args=[slug]), data)
    assert response.status_code == 302, response.status_code
    assert response["Location"].startswith(f"https://idp.{slug}.test/sso?SAMLRequest=")
    return authn_request_id(response["Location"])


def post_to_acs(client: Client, slug: str, saml_response: str, **extra: str) -> HttpResponse:
    """The IdP's auto-submitted form to the ACS, then the redirect that finishes it."""
    response = client.post(
        reverse("saml_acs", args=[slug]), {"SAMLResponse": saml_response, **extra}
    )
    if response.status_code != 302:
        return response
    return client.get(response["Location"])


def browser() -> Client:
    """A browser: unlike the test client's default, it sends a Host header."""
    return Client(HTTP_HOST="testserver")


def signed_in_user_id(client: Client) -> int | None:
    value = client.session.get("_auth_user_id")
    return int(value) if value is not None else None
