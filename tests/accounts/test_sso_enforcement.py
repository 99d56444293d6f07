"""SSO enforcement: an organization that requires SSO is only used from sessions signed
in through its IdP (accounts/sso/enforcement.py says how multi-organization people
fare). The IdP is the test IdP of tests/accounts/saml_idp.py (no network)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent, CliHandoff, Membership, SsoConnection, SsoIdentity
from accounts.sso import services
from tests.conftest import Tenant, client_for
from tests.factories import PASSWORD, MembershipFactory

from .saml_idp import encode
from .sso_helpers import browser, connect, idp_for, post_to_acs, signed_in_user_id, sp_for
from .sso_helpers import start_sign_in as start_saml_sign_in
from .test_tokens import poll, start_handoff

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def password_sign_in(email: str) -> tuple[Client, object]:
    client = Client(HTTP_HOST="testserver")
    return client, client.post(LOGIN, {"login": email, "password": PASSWORD})


def require_sso(tenant: Tenant, **kwargs: object):
    return connect(tenant.owner, tenant.org, idp_for(tenant.org.slug), enforce_sso=True, **kwargs)


def sso_sign_in_as(client: Client, tenant: Tenant, user, subject: str, next_url=None):
    """`user` signs in through the tenant's IdP (their identity there already exists)."""
    slug = tenant.org.slug
    request_id = start_saml_sign_in(client, slug, next_url)
    answer = idp_for(slug).signed_response(
        sp_for(slug),
        in_response_to=request_id,
        name_id=subject,
        attributes={"email": [user.email]},
    )
    return post_to_acs(client, slug, encode(answer))


def test_password_sign_in_is_refused_when_every_organization_requires_sso(tenant_a):
    require_sso(tenant_a, break_glass_user=tenant_a.owner)
    client, response = password_sign_in(tenant_a.member.email)
    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert signed_in_user_id(client) is None
    assert AuditEvent.objects.filter(
        verb="user.password_login_refused", actor=tenant_a.member
    ).exists()
    page = client.get(LOGIN)
    assert "requires single sign-on" in page.content.decode()


def test_the_break_glass_owner_may_still_use_a_password(tenant_a):
    require_sso(tenant_a, break_glass_user=tenant_a.owner)
    client, response = password_sign_in(tenant_a.owner.email)
    assert response.status_code == 302
    assert signed_in_user_id(client) == tenant_a.owner.pk
    assert client.get(reverse("project_list", args=["alpha"])).status_code == 200
    # The other owner (made one now) may not.
    Membership.objects.filter(organization=tenant_a.org, user=tenant_a.admin).update(role="owner")
    other, _ = password_sign_in(tenant_a.admin.email)
    assert signed_in_user_id(other) is None


def test_a_person_in_two_organizations_keeps_the_one_without_enforcement(
    tenant_a: Tenant, tenant_b: Tenant
):
    """A password session serves B; A (SSO required) sends it through A's IdP, after
    which the same session serves both."""
    require_sso(tenant_a, break_glass_user=tenant_a.owner)
    person = tenant_a.member
    MembershipFactory(organization=tenant_b.org, user=person, role="member")
    connection = tenant_a.org.sso_connection
    SsoIdentity.objects.create(
        organization=tenant_a.org, connection=connection, subject="member-1", user=person
    )
    client, _ = password_sign_in(person.email)
    assert signed_in_user_id(client) == person.pk
    assert client.get(reverse("project_list", args=["bravo"])).status_code == 200

    blocked = client.get(reverse("project_list", args=["alpha"]))
    assert blocked.status_code == 403
    assert "requires single sign-on" in blocked.content.decode()
    assert blocked.context["login_url"].startswith(reverse("saml_login", args=["alpha"]))
    # Its button posts to Raydeck, which redirects to the IdP: the CSP allows that hop.
    assert "form-action 'self' https://idp.alpha.test" in blocked["Content-Security-Policy"]
    # HTMX requests are told to reload the page (which then explains).
    htmx = client.get(reverse("project_list", args=["alpha"]), headers={"HX-Request": "true"})
    assert htmx.headers.get("HX-Redirect")

    done = sso_sign_in_as(
        client, tenant_a, person, "member-1", next_url=reverse("project_list", args=["alpha"])
    )
    assert done.status_code == 302
    assert done["Location"] == reverse("project_list", args=["alpha"])
    assert signed_in_user_id(client) == person.pk
    assert client.get(reverse("project_list", args=["alpha"])).status_code == 200
    assert client.get(reverse("project_list", args=["bravo"])).status_code == 200


def test_sessions_opened_before_sso_was_required_lose_the_organization(tenant_a):
    connection = connect(tenant_a.owner, tenant_a.org, idp_for("alpha"))
    member = client_for(tenant_a.member)
    assert member.get(reverse("project_list", args=["alpha"])).status_code == 200
    services.sso_connection_set_access(
        connection=connection,
        actor=tenant_a.owner,
        enabled=True,
        default_role="member",
        enforce_sso=True,
        break_glass_user=tenant_a.owner,
        actor_signed_in_through=False,
    )
    assert member.get(reverse("project_list", args=["alpha"])).status_code == 403
    assert member.get(reverse("cluster_list", args=["alpha"])).status_code == 403
    assert member.post(reverse("project_create", args=["alpha"]), {"name": "x"}).status_code == 403
    assert AuditEvent.objects.filter(verb="sso.access_update", actor=tenant_a.owner).exists()


def test_requiring_sso_from_a_session_that_would_lose_access_is_refused(tenant_a):
    connect(tenant_a.owner, tenant_a.org, idp_for("alpha"))
    owner = client_for(tenant_a.owner)
    response = owner.post(
        reverse("sso_access", args=["alpha"]),
        {"enabled": "on", "default_role": "member", "enforce_sso": "on"},
    )
    assert response.status_code == 200
    assert "You would lose access yourself" in response.content.decode()
    assert not SsoConnection.objects.get(organization=tenant_a.org).enforce_sso
    # Naming yourself the break-glass owner is enough.
    response = owner.post(
        reverse("sso_access", args=["alpha"]),
        {
            "enabled": "on",
            "default_role": "member",
            "enforce_sso": "on",
            "break_glass_user": tenant_a.owner.pk,
        },
    )
    assert response.status_code == 302
    assert owner.get(reverse("sso_settings", args=["alpha"])).status_code == 200


def test_the_break_glass_user_must_be_an_owner(tenant_a, tenant_b):
    connect(tenant_a.owner, tenant_a.org, idp_for("alpha"))
    owner = client_for(tenant_a.owner)
    for outsider in (tenant_a.admin, tenant_b.owner):
        response = owner.post(
            reverse("sso_access", args=["alpha"]),
            {"enabled": "on", "default_role": "member", "break_glass_user": outsider.pk},
        )
        assert response.status_code == 200
        assert SsoConnection.objects.get(organization=tenant_a.org).break_glass_user is None


def test_the_cli_hand_off_needs_an_sso_session_too(tenant_a):
    require_sso(tenant_a, break_glass_user=tenant_a.owner)
    started = start_handoff()
    response = client_for(tenant_a.member).post(
        reverse("cli_verify"), {"code": started["code"], "organization": tenant_a.org.pk}
    )
    assert response.status_code == 200
    assert "requires single sign-on" in response.content.decode()
    assert CliHandoff.objects.get(code=started["code"]).confirmed_at is None
    assert poll(started["poll_token"]).status_code == 202


def test_a_person_signed_in_through_sso_can_use_an_enforced_organization(tenant_a):
    require_sso(tenant_a, break_glass_user=tenant_a.owner)
    client = browser()
    SsoIdentity.objects.create(
        organization=tenant_a.org,
        connection=tenant_a.org.sso_connection,
        subject="viewer-1",
        user=tenant_a.viewer,
    )
    assert sso_sign_in_as(client, tenant_a, tenant_a.viewer, "viewer-1").status_code == 302
    assert client.get(reverse("project_list", args=["alpha"])).status_code == 200
    # Roles follow the IdP: the viewer had no mapped group, so the default role applies.
    assert Membership.objects.get(organization=tenant_a.org, user=tenant_a.viewer).role == "member"
