"""The protocol-neutral sign-in service (accounts.sso.services.sso_sign_in): identities
keyed by (connection, subject), no linking of existing accounts without a verified
domain, roles from groups, and the owners it must never demote."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.utils import timezone

from accounts.choices import OrgRole
from accounts.models import DomainClaim, Membership, SsoIdentity, User
from accounts.sso import services
from accounts.sso.services import IdpClaims, SsoRefused, sso_sign_in
from tests.conftest import Tenant

from .sso_helpers import connect, idp_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def both(tenant_a: Tenant, tenant_b: Tenant):
    return (
        connect(tenant_a.owner, tenant_a.org, idp_for("alpha")),
        connect(tenant_b.owner, tenant_b.org, idp_for("bravo")),
    )


def test_the_same_subject_from_two_organizations_idps_is_two_people(both) -> None:
    alpha, bravo = both
    at_a = sso_sign_in(
        connection=alpha, claims=IdpClaims(subject="employee-42", email="sam@alpha-corp.test")
    )
    at_b = sso_sign_in(
        connection=bravo, claims=IdpClaims(subject="employee-42", email="sam@bravo-corp.test")
    )
    assert at_a.user != at_b.user
    assert SsoIdentity.objects.filter(subject="employee-42").count() == 2
    # Each IdP's person belongs to its own organization only.
    assert [m.organization for m in at_a.user.memberships.all()] == [alpha.organization]
    assert [m.organization for m in at_b.user.memberships.all()] == [bravo.organization]


def test_an_idp_cannot_sign_in_to_an_existing_account_by_claiming_its_email(
    tenant_a: Tenant, both
) -> None:
    """B's IdP says its person is A's owner: without B having verified A's domain,
    that links nothing, creates nothing and signs in no one."""
    _, bravo = both
    victim = tenant_a.owner
    with pytest.raises(SsoRefused, match="has not verified the domain"):
        sso_sign_in(connection=bravo, claims=IdpClaims(subject="x-1", email=victim.email))
    assert not SsoIdentity.objects.filter(user=victim).exists()
    assert not Membership.objects.filter(organization=bravo.organization, user=victim).exists()


def test_a_verified_domain_links_an_existing_account(tenant_a: Tenant, both) -> None:
    alpha, _ = both
    existing = tenant_a.member  # member@alpha.example.com
    DomainClaim.objects.create(
        organization=tenant_a.org, domain="alpha.example.com", verified_at=timezone.now()
    )
    result = sso_sign_in(
        connection=alpha, claims=IdpClaims(subject="m-7", email=existing.email.upper())
    )
    assert result.user == existing
    assert SsoIdentity.objects.get(connection=alpha, subject="m-7").user == existing


def test_an_unverified_claim_does_not_link(tenant_a: Tenant, both) -> None:
    alpha, _ = both
    DomainClaim.objects.create(organization=tenant_a.org, domain="alpha.example.com")
    with pytest.raises(SsoRefused):
        sso_sign_in(connection=alpha, claims=IdpClaims(subject="m-7", email=tenant_a.member.email))


def test_new_people_get_a_verified_address_only_on_a_verified_domain(tenant_a, both) -> None:
    """Otherwise an IdP could claim anyone's address and, say, accept their invitations."""
    alpha, _ = both
    DomainClaim.objects.create(
        organization=tenant_a.org, domain="alpha-corp.test", verified_at=timezone.now()
    )
    sso_sign_in(connection=alpha, claims=IdpClaims(subject="1", email="a@alpha-corp.test"))
    sso_sign_in(connection=alpha, claims=IdpClaims(subject="2", email="b@gmail.test"))
    assert EmailAddress.objects.get(email="a@alpha-corp.test").verified
    assert not EmailAddress.objects.get(email="b@gmail.test").verified
    assert not User.objects.get(email="b@gmail.test").has_usable_password()


def test_claims_without_a_usable_subject_or_email_are_refused() -> None:
    with pytest.raises(SsoRefused):
        IdpClaims.clean(subject="", email="a@b.test")
    with pytest.raises(SsoRefused):
        IdpClaims.clean(subject="x", email="not an email")
    with pytest.raises(SsoRefused):
        IdpClaims.clean(subject="x" * 600, email="a@b.test")
    claims = IdpClaims.clean(subject=" s ", email=" A@B.test ", groups=["b", " a ", 3, "b"])
    assert (claims.subject, claims.email, claims.groups) == ("s", "a@b.test", ("a", "b"))


def test_the_idp_never_demotes_the_last_owner_or_the_break_glass_owner(tenant_a, both) -> None:
    alpha, _ = both
    owner = tenant_a.owner
    SsoIdentity.objects.create(
        organization=tenant_a.org, connection=alpha, subject="owner-1", user=owner
    )
    # The only owner, in no mapped group (default role: member): stays owner.
    sso_sign_in(connection=alpha, claims=IdpClaims(subject="owner-1", email=owner.email))
    assert Membership.objects.get(organization=tenant_a.org, user=owner).role == OrgRole.OWNER

    second = tenant_a.admin
    Membership.objects.filter(organization=tenant_a.org, user=second).update(role=OrgRole.OWNER)
    services.sso_connection_set_access(
        connection=alpha,
        actor=owner,
        enabled=True,
        default_role="member",
        enforce_sso=False,
        break_glass_user=owner,
        actor_signed_in_through=True,
    )
    alpha.refresh_from_db()
    sso_sign_in(connection=alpha, claims=IdpClaims(subject="owner-1", email=owner.email))
    assert Membership.objects.get(organization=tenant_a.org, user=owner).role == OrgRole.OWNER
    # Not the last owner and not break-glass: the IdP decides.
    SsoIdentity.objects.create(
        organization=tenant_a.org, connection=alpha, subject="owner-2", user=second
    )
    sso_sign_in(connection=alpha, claims=IdpClaims(subject="owner-2", email=second.email))
    assert Membership.objects.get(organization=tenant_a.org, user=second).role == OrgRole.MEMBER


def test_a_mapping_to_another_organizations_project_is_refused(tenant_a, tenant_b, both) -> None:
    alpha, _ = both
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.sso_group_mapping_create(
            connection=alpha,
            actor=tenant_a.owner,
            idp_group="g",
            org_role="member",
            project=tenant_b.project,
            project_role="writer",
        )


def test_proving_the_address_releases_identities_on_unverified_domains(tenant_a, both) -> None:
    """Account pre-hijacking: alpha's IdP makes an account for someone else's address
    (alpha has not verified gmail.test). Once the real owner of the address proves it
    (password reset, email confirmation), alpha's IdP can no longer sign in as them."""
    from allauth.account.signals import password_reset

    alpha, _ = both
    created = sso_sign_in(connection=alpha, claims=IdpClaims(subject="v", email="vic@gmail.test"))
    victim = created.user
    DomainClaim.objects.create(
        organization=tenant_a.org, domain="alpha-corp.test", verified_at=timezone.now()
    )
    kept = sso_sign_in(connection=alpha, claims=IdpClaims(subject="k", email="k@alpha-corp.test"))

    from django.test import RequestFactory

    request = RequestFactory().post("/accounts/password/reset/key/x/")
    password_reset.send(sender=User, request=request, user=victim)
    password_reset.send(sender=User, request=request, user=kept.user)

    assert not SsoIdentity.objects.filter(user=victim).exists()
    assert SsoIdentity.objects.filter(user=kept.user).exists()  # alpha owns that domain
    with pytest.raises(SsoRefused):
        sso_sign_in(connection=alpha, claims=IdpClaims(subject="v", email="vic@gmail.test"))
    from accounts.models import AuditEvent

    assert AuditEvent.objects.filter(verb="sso.identity_release", actor=victim).exists()
