"""Removing an organization's SSO connection: members keep their accounts and
memberships and go back to passwords, the connection's identity links and group
mappings go, verified domain claims stay; refused while SSO is required and when the
acting owner has no password; owners only, one organization at a time, audited."""

from __future__ import annotations

from typing import Any

import pytest
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialApp
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from accounts.choices import OrgRole
from accounts.models import (
    AuditEvent,
    DomainClaim,
    Membership,
    SsoConnection,
    SsoGroupMapping,
    SsoIdentity,
    User,
)
from accounts.sso import domains, services
from accounts.sso.enforcement import password_sign_in_refusal
from tests.conftest import Tenant, client_for

from .saml_idp import encode
from .sso_helpers import (
    browser,
    connect,
    idp_for,
    post_to_acs,
    signed_in_user_id,
    sp_for,
    start_sign_in,
)

pytestmark = pytest.mark.django_db


def remove_url(slug: str = "alpha") -> str:
    return reverse("sso_remove", args=[slug])


def sso_person(tenant: Tenant, connection: SsoConnection, email: str, subject: str) -> User:
    """Someone the IdP created: an account without a password, a membership, a link."""
    user = User.objects.create_user(email=email, password=None)
    Membership.objects.create(organization=tenant.org, user=user, role=OrgRole.MEMBER)
    SsoIdentity.objects.create(
        organization=tenant.org, connection=connection, subject=subject, user=user
    )
    return user


@pytest.fixture
def alpha_sso(tenant_a: Tenant) -> SsoConnection:
    """Alpha's SAML connection, switched on, with two people who never had a password
    and a verified domain."""
    connection = connect(tenant_a.owner, tenant_a.org, idp_for("alpha"))
    sso_person(tenant_a, connection, "ann@alpha-corp.test", "ann")
    sso_person(tenant_a, connection, "ben@alpha-corp.test", "ben")
    DomainClaim.objects.create(
        organization=tenant_a.org, domain="alpha-corp.test", verified_at=timezone.now()
    )
    return connection


# --- The service ---------------------------------------------------------------------------


def test_removing_keeps_members_and_domains_and_drops_links_mappings_and_the_app(
    tenant_a: Tenant, tenant_b: Tenant, alpha_sso: SsoConnection
) -> None:
    app_id = alpha_sso.social_app_id
    members_before = set(
        Membership.objects.filter(organization=tenant_a.org).values_list("user_id", "role")
    )
    bravo_before = (
        SsoConnection.objects.filter(organization=tenant_b.org).count(),
        SsoGroupMapping.objects.filter(organization=tenant_b.org).count(),
    )

    impact = services.sso_connection_remove(connection=alpha_sso, actor=tenant_a.owner)

    assert impact == services.RemovalImpact(
        identities=2, mappings=1, members_without_password=2, verified_domains=1
    )
    assert not SsoConnection.objects.filter(organization=tenant_a.org).exists()
    assert not SocialApp.objects.filter(pk=app_id).exists()
    assert not SsoIdentity.objects.filter(organization=tenant_a.org).exists()
    assert not SsoGroupMapping.objects.filter(organization=tenant_a.org).exists()
    assert (
        set(Membership.objects.filter(organization=tenant_a.org).values_list("user_id", "role"))
        == members_before
    )
    assert User.objects.filter(email="ann@alpha-corp.test").exists()
    assert DomainClaim.objects.filter(organization=tenant_a.org, domain="alpha-corp.test").exists()
    # Bravo's connection and mapping are untouched.
    assert bravo_before == (
        SsoConnection.objects.filter(organization=tenant_b.org).count(),
        SsoGroupMapping.objects.filter(organization=tenant_b.org).count(),
    )
    assert bravo_before == (1, 1)


def test_removal_is_audited_with_what_it_changed(
    tenant_a: Tenant, alpha_sso: SsoConnection
) -> None:
    services.sso_connection_remove(connection=alpha_sso, actor=tenant_a.owner)

    event = AuditEvent.objects.get(verb="sso.connection_remove")
    assert event.organization == tenant_a.org
    assert event.actor == tenant_a.owner
    assert event.target_type == "ssoconnection"
    assert event.changes["protocol"] == ["saml", None]
    assert event.changes["idp"] == [idp_for("alpha").entity_id, None]
    assert event.changes["identities"] == [2, 0]
    assert event.changes["group_mappings"] == [1, 0]
    assert event.changes["members_without_password"] == [2, None]
    assert event.changes["verified_domains_kept"] == [1, 1]


def test_removal_is_refused_while_sso_is_required(
    tenant_a: Tenant, alpha_sso: SsoConnection
) -> None:
    services.sso_connection_set_access(
        connection=alpha_sso,
        actor=tenant_a.owner,
        enabled=True,
        default_role=OrgRole.MEMBER,
        enforce_sso=True,
        break_glass_user=tenant_a.owner,
        actor_signed_in_through=False,
    )

    with pytest.raises(ValidationError) as error:
        services.sso_connection_remove(connection=alpha_sso, actor=tenant_a.owner)

    assert "Require single sign-on" in str(error.value)
    assert SsoConnection.objects.filter(pk=alpha_sso.pk, enforce_sso=True).exists()
    assert SsoIdentity.objects.filter(connection=alpha_sso).count() == 2
    assert not AuditEvent.objects.filter(verb="sso.connection_remove").exists()


def test_an_owner_without_a_password_is_told_to_set_one_first(
    tenant_a: Tenant, alpha_sso: SsoConnection
) -> None:
    """Otherwise the organization could be left with no owner able to sign in."""
    sso_owner = sso_person(tenant_a, alpha_sso, "olga@alpha-corp.test", "olga")
    Membership.objects.filter(user=sso_owner).update(role=OrgRole.OWNER)

    with pytest.raises(ValidationError) as error:
        services.sso_connection_remove(connection=alpha_sso, actor=sso_owner)

    assert "Set a password for your account first" in str(error.value)
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()

    sso_owner.set_password("a-long-password-1234")
    sso_owner.save(update_fields=["password"])
    services.sso_connection_remove(connection=alpha_sso, actor=sso_owner)
    assert not SsoConnection.objects.filter(pk=alpha_sso.pk).exists()


@pytest.mark.parametrize("role", [OrgRole.ADMIN, OrgRole.MEMBER, OrgRole.VIEWER])
def test_only_owners_remove_sso(tenant_a: Tenant, alpha_sso: SsoConnection, role: str) -> None:
    with pytest.raises(PermissionDenied):
        services.sso_connection_remove(connection=alpha_sso, actor=tenant_a.users[role])
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()


def test_another_organizations_owner_cannot_remove_it(
    tenant_b: Tenant, alpha_sso: SsoConnection
) -> None:
    with pytest.raises(PermissionDenied):
        services.sso_connection_remove(connection=alpha_sso, actor=tenant_b.owner)
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()


def test_after_removal_people_sign_in_with_a_password_and_the_idp_signs_in_nobody(
    tenant_a: Tenant, alpha_sso: SsoConnection
) -> None:
    services.sso_connection_remove(connection=alpha_sso, actor=tenant_a.owner)

    # "Sign in with SSO" finds nothing, by domain or by the organization's name.
    assert domains.connection_for_sign_in("ann@alpha-corp.test") is None
    assert domains.connection_for_sign_in("alpha") is None
    # The IdP's answers are refused: nothing binds it to the organization any more.
    client = browser()
    response = client.post(reverse("saml_login", args=["alpha"]), {"process": "login"})
    assert response.status_code in (403, 404)
    assert signed_in_user_id(client) is None
    # A password sign-in is no longer refused for anyone of the organization.
    assert password_sign_in_refusal(tenant_a.member) is None


def test_a_person_without_a_password_sets_one_by_email_and_signs_in(
    tenant_a: Tenant, alpha_sso: SsoConnection, mailoutbox: list[Any]
) -> None:
    services.sso_connection_remove(connection=alpha_sso, actor=tenant_a.owner)
    # As the IdP created it: the address unverified (the domain was not, back then).
    EmailAddress.objects.create(
        user=User.objects.get(email="ann@alpha-corp.test"),
        email="ann@alpha-corp.test",
        primary=True,
        verified=False,
    )

    response = browser().post(reverse("account_reset_password"), {"email": "ann@alpha-corp.test"})

    assert response.status_code == 302
    assert [m.to for m in mailoutbox] == [["ann@alpha-corp.test"]]


def test_members_without_a_password_are_emailed_how_to_set_one(
    tenant_a: Tenant,
    alpha_sso: SsoConnection,
    django_capture_on_commit_callbacks: Any,
    mailoutbox: list[Any],
) -> None:
    with django_capture_on_commit_callbacks() as enqueued:
        services.sso_connection_remove(connection=alpha_sso, actor=tenant_a.owner)
    assert len(enqueued) == 1
    assert mailoutbox == []  # not before the removal commits

    ids = list(User.objects.filter(email__endswith="@alpha-corp.test").values_list("pk", flat=True))
    sent = services.sso_removal_notify(organization_id=tenant_a.org.pk, user_ids=ids)

    assert sent == 2
    assert sorted(m.to[0] for m in mailoutbox) == ["ann@alpha-corp.test", "ben@alpha-corp.test"]
    body = mailoutbox[0].body
    assert "Org ALPHA no longer signs in to Raydeck through its identity provider" in body
    assert reverse("account_reset_password") in body
    # Someone who set a password meanwhile, or another organization's id, gets nothing.
    ann = User.objects.get(email="ann@alpha-corp.test")
    ann.set_password("a-long-password-1234")
    ann.save(update_fields=["password"])
    assert services.sso_removal_notify(organization_id=tenant_a.org.pk, user_ids=ids) == 1
    assert services.sso_removal_notify(organization_id=0, user_ids=ids) == 0


def test_the_email_task_is_not_enqueued_when_everyone_has_a_password(
    tenant_a: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as enqueued:
        services.sso_connection_remove(connection=tenant_a.sso_connection, actor=tenant_a.owner)
    assert enqueued == []


def test_removing_an_oidc_connection_forgets_its_cached_idp_documents(
    tenant_a: Tenant, oidc_idps: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.core.cache import cache

    from accounts.sso.oidc import client as oidc_client
    from accounts.sso.oidc import documents as idp_documents

    from .test_sso_oidc import connect_oidc

    idp = oidc_idps()
    connection = connect_oidc(tenant_a.owner, tenant_a.org, idp)
    app = connection.social_app
    oidc_client.cached_discovery(app_id=app.pk, issuer=idp.issuer)
    key = idp_documents.cache_key("discovery", app.pk, idp.issuer)
    assert cache.get(key) is not None

    with django_capture_on_commit_callbacks(execute=True):
        services.sso_connection_remove(connection=connection, actor=tenant_a.owner)

    assert cache.get(key) is None
    callback = reverse("openid_connect_callback", kwargs={"provider_id": app.provider_id})
    assert browser().get(callback, {"state": "x", "code": "y"}).status_code == 404


def test_a_new_connection_after_removal_links_the_same_accounts_through_the_kept_domain(
    tenant_a: Tenant, alpha_sso: SsoConnection
) -> None:
    """The reason verified domains stay: moving to another IdP does not strand anyone."""
    ann = User.objects.get(email="ann@alpha-corp.test")
    services.sso_connection_remove(connection=alpha_sso, actor=tenant_a.owner)
    new_idp = idp_for("alpha")
    connect(tenant_a.owner, tenant_a.org, new_idp)
    client = browser()
    request_id = start_sign_in(client, "alpha")

    answer = new_idp.signed_response(
        sp_for("alpha"),
        in_response_to=request_id,
        name_id=ann.email,
        attributes={"email": [ann.email], "groups": []},
    )

    response = post_to_acs(client, "alpha", encode(answer))

    assert response.status_code == 302, response.content[-800:]
    assert signed_in_user_id(client) == ann.pk


# --- The pages -----------------------------------------------------------------------------


def test_the_settings_page_offers_remove_sso(tenant_a: Tenant, alpha_sso: SsoConnection) -> None:
    page = client_for(tenant_a.owner).get(reverse("sso_settings", args=["alpha"]))
    assert remove_url().encode() in page.content
    assert b"Remove SSO" in page.content


def test_the_confirmation_page_says_plainly_what_happens(
    tenant_a: Tenant, alpha_sso: SsoConnection
) -> None:
    page = client_for(tenant_a.owner).get(remove_url())

    assert page.status_code == 200
    text = " ".join(page.content.decode().split())
    assert "Members keep their accounts, memberships and roles." in text
    assert "Sign-in goes back to passwords" in text
    assert "2 members have no password" in text
    assert "“Forgot password”" in text
    assert (
        "2 links between a person at the identity provider and a Raydeck account are "
        "deleted, and 1 group mapping" in text
    )
    assert "Your 1 verified email domain stays" in text
    assert 'type="submit">Remove single sign-on</button>' in text
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()  # GET changes nothing


def test_removing_through_the_page(tenant_a: Tenant, alpha_sso: SsoConnection) -> None:
    client = client_for(tenant_a.owner)

    response = client.post(remove_url())

    assert response.status_code == 302
    assert response["Location"] == reverse("sso_settings", args=["alpha"])
    assert not SsoConnection.objects.filter(organization=tenant_a.org).exists()
    page = client.get(response["Location"])
    assert b"2 members have no password yet and were emailed" in page.content
    assert b"Remove SSO" not in page.content
    # Nothing left to remove.
    assert client.get(remove_url()).status_code == 404


def test_the_page_refuses_while_sso_is_required_and_says_how_to_go_on(
    tenant_a: Tenant, alpha_sso: SsoConnection
) -> None:
    SsoConnection.objects.filter(pk=alpha_sso.pk).update(
        enforce_sso=True, break_glass_user=tenant_a.owner
    )
    client = client_for(tenant_a.owner)

    page = client.get(remove_url())
    assert b"Switch \xe2\x80\x9cRequire single sign-on\xe2\x80\x9d off" in page.content
    assert b'type="submit">Remove single sign-on' not in page.content

    response = client.post(remove_url())
    assert response.status_code == 200
    assert b"Switch \xe2\x80\x9cRequire single sign-on\xe2\x80\x9d off" in response.content
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()


def test_the_page_tells_an_owner_without_a_password_to_set_one(
    tenant_a: Tenant, alpha_sso: SsoConnection
) -> None:
    olga = sso_person(tenant_a, alpha_sso, "olga@alpha-corp.test", "olga")
    Membership.objects.filter(user=olga).update(role=OrgRole.OWNER)
    client = client_for(olga)

    page = client.get(remove_url())
    assert b"Set a password for your account first" in page.content
    assert reverse("account_set_password").encode() in page.content

    assert client.post(remove_url()).status_code == 200
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()


@pytest.mark.parametrize("role", [OrgRole.ADMIN, OrgRole.MEMBER, OrgRole.VIEWER])
def test_only_owners_reach_the_remove_page(
    tenant_a: Tenant, alpha_sso: SsoConnection, role: str
) -> None:
    client = client_for(tenant_a.users[role])
    assert client.get(remove_url()).status_code == 403
    assert client.post(remove_url()).status_code == 403
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()


def test_another_organizations_connection_is_a_404(
    tenant_a: Tenant, tenant_b: Tenant, alpha_sso: SsoConnection
) -> None:
    bravo_owner = client_for(tenant_b.owner)
    assert bravo_owner.get(remove_url("alpha")).status_code == 404
    assert bravo_owner.post(remove_url("alpha")).status_code == 404
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()
    # Their own is theirs to remove, and Alpha's stays.
    assert bravo_owner.post(remove_url("bravo")).status_code == 302
    assert not SsoConnection.objects.filter(organization=tenant_b.org).exists()
    assert SsoConnection.objects.filter(pk=alpha_sso.pk).exists()
