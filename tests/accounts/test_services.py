"""Tenancy rules as the services enforce them: invitations, last owner, projects, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import services
from accounts.choices import OrgRole, ProjectRole
from accounts.models import AuditEvent, Invitation, Membership, Organization, ProjectMembership
from tests.conftest import Tenant
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def verbs(org: Organization) -> list[str]:
    return list(AuditEvent.objects.filter(organization=org).values_list("verb", flat=True))


# --- Organizations and audit -------------------------------------------------------


def test_creating_an_organization_makes_the_creator_its_owner_and_is_audited() -> None:
    user = UserFactory()
    org = services.organization_create(name=" Acme ", slug="acme", actor=user)
    assert org.name == "Acme"
    assert Membership.objects.get(organization=org, user=user).role == OrgRole.OWNER
    event = AuditEvent.objects.get(organization=org, verb="organization.create")
    assert event.actor == user and event.actor_email == user.email
    assert event.changes["slug"] == [None, "acme"]


def test_reserved_and_invalid_slugs_are_refused_with_a_message() -> None:
    user = UserFactory()
    with pytest.raises(ValidationError) as reserved:
        services.organization_create(name="X", slug="admin", actor=user)
    assert "reserved" in str(reserved.value)
    with pytest.raises(ValidationError):
        services.organization_create(name="X", slug="Not A Slug!", actor=user)
    assert not Organization.objects.exists()


def test_rename_records_before_and_after(tenant_a: Tenant) -> None:
    services.organization_update(organization=tenant_a.org, name="Renamed", actor=tenant_a.admin)
    event = AuditEvent.objects.get(verb="organization.update")
    assert event.changes == {"name": ["Org ALPHA", "Renamed"]}


def test_member_cannot_rename(tenant_a: Tenant) -> None:
    with pytest.raises(PermissionDenied):
        services.organization_update(organization=tenant_a.org, name="X", actor=tenant_a.member)
    tenant_a.org.refresh_from_db()
    assert tenant_a.org.name == "Org ALPHA"


def test_audit_event_rolls_back_with_the_change(tenant_a: Tenant) -> None:
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.project_create(
            organization=tenant_a.org,
            name="Doomed",
            slug="doomed",
            description="",
            actor=tenant_a.owner,
        )
        raise RuntimeError("crash after the change, before commit")
    assert AuditEvent.objects.count() == before
    assert not tenant_a.org.projects.filter(slug="doomed").exists()


def test_a_failed_service_writes_no_audit_event(tenant_a: Tenant) -> None:
    before = AuditEvent.objects.count()
    with pytest.raises(ValidationError):
        services.project_create(
            organization=tenant_a.org,
            name="Dup",
            slug=tenant_a.project.slug,
            description="",
            actor=tenant_a.owner,
        )
    assert AuditEvent.objects.count() == before


# --- Last owner ------------------------------------------------------------------------


def test_last_owner_cannot_be_demoted(tenant_a: Tenant) -> None:
    owner = tenant_a.memberships[OrgRole.OWNER]
    with pytest.raises(ValidationError, match="at least one owner"):
        services.membership_change_role(membership=owner, role=OrgRole.ADMIN, actor=tenant_a.owner)
    owner.refresh_from_db()
    assert owner.role == OrgRole.OWNER


def test_last_owner_cannot_leave(tenant_a: Tenant) -> None:
    owner = tenant_a.memberships[OrgRole.OWNER]
    with pytest.raises(ValidationError, match="at least one owner"):
        services.membership_remove(membership=owner, actor=tenant_a.owner)
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_an_owner_can_leave_once_there_is_another(tenant_a: Tenant) -> None:
    admin = tenant_a.memberships[OrgRole.ADMIN]
    services.membership_change_role(membership=admin, role=OrgRole.OWNER, actor=tenant_a.owner)
    services.membership_remove(membership=tenant_a.memberships[OrgRole.OWNER], actor=tenant_a.owner)
    assert list(tenant_a.org.memberships.filter(role=OrgRole.OWNER)) == [admin]
    assert "member.leave" in verbs(tenant_a.org)


def test_admins_cannot_touch_owners_or_make_new_ones(tenant_a: Tenant) -> None:
    with pytest.raises(PermissionDenied):
        services.membership_change_role(
            membership=tenant_a.memberships[OrgRole.MEMBER],
            role=OrgRole.OWNER,
            actor=tenant_a.admin,
        )
    with pytest.raises(PermissionDenied):
        services.membership_remove(
            membership=tenant_a.memberships[OrgRole.OWNER], actor=tenant_a.admin
        )


def test_role_change_is_audited_with_old_and_new_role(tenant_a: Tenant) -> None:
    services.membership_change_role(
        membership=tenant_a.memberships[OrgRole.VIEWER], role=OrgRole.MEMBER, actor=tenant_a.admin
    )
    event = AuditEvent.objects.get(verb="member.role_change")
    assert event.changes == {"role": ["viewer", "member"]}
    assert event.actor == tenant_a.admin


def test_removing_a_member_removes_their_project_access(tenant_a: Tenant) -> None:
    services.membership_remove(
        membership=tenant_a.memberships[OrgRole.MEMBER], actor=tenant_a.admin
    )
    assert not ProjectMembership.objects.filter(user=tenant_a.member).exists()


# --- Invitations -----------------------------------------------------------------------


def invite(tenant: Tenant, email: str = "newbie@example.com", **kw: object) -> Invitation:
    return services.invitation_create(
        organization=tenant.org,
        email=email,
        role=kw.pop("role", OrgRole.MEMBER),
        actor=tenant.admin,
        **kw,
    )


def test_invitation_sends_a_link_that_a_new_user_can_accept(
    tenant_a: Tenant, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        invitation = invite(
            tenant_a,
            "Newbie@Example.com",
            project=tenant_a.project,
            project_role=ProjectRole.READER,
        )
    assert invitation.email == "newbie@example.com"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["newbie@example.com"]
    token = services.invitation_token(invitation)
    assert token in mail.outbox[0].body
    newbie = UserFactory(email="newbie@example.com")
    membership = services.invitation_accept(
        invitation=services.invitation_from_token(token), user=newbie
    )
    assert membership.role == OrgRole.MEMBER
    assert ProjectMembership.objects.get(user=newbie).role == ProjectRole.READER
    assert {"invitation.create", "invitation.accept", "member.add"} <= set(verbs(tenant_a.org))


def test_invitation_email_goes_out_only_after_commit(tenant_a: Tenant) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        invite(tenant_a)
        raise RuntimeError
    assert mail.outbox == []


def test_existing_user_accepts_and_keeps_other_orgs(tenant_a: Tenant, tenant_b: Tenant) -> None:
    invitation = invite(tenant_a, tenant_b.member.email, role=OrgRole.VIEWER)
    services.invitation_accept(invitation=invitation, user=tenant_b.member)
    assert tenant_b.member.memberships.count() == 2


def test_expired_invitation_cannot_be_accepted(tenant_a: Tenant) -> None:
    invitation = invite(tenant_a)
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(ValidationError, match="expired"):
        services.invitation_accept(invitation=invitation, user=UserFactory(email=invitation.email))
    assert not tenant_a.org.memberships.filter(user__email=invitation.email).exists()


def test_expired_signed_link_is_refused(tenant_a: Tenant, time_machine) -> None:
    token = services.invitation_token(invite(tenant_a))
    time_machine.move_to(timezone.now() + timedelta(days=8))
    with pytest.raises(services.InvalidInvitation):
        services.invitation_from_token(token)


def test_revoked_invitation_cannot_be_accepted(tenant_a: Tenant) -> None:
    invitation = invite(tenant_a)
    services.invitation_revoke(invitation=invitation, actor=tenant_a.admin)
    with pytest.raises(ValidationError, match="revoked"):
        services.invitation_accept(invitation=invitation, user=UserFactory(email=invitation.email))


def test_invitation_cannot_be_used_twice(tenant_a: Tenant) -> None:
    invitation = invite(tenant_a)
    services.invitation_accept(invitation=invitation, user=UserFactory(email=invitation.email))
    with pytest.raises(ValidationError, match="already accepted"):
        services.invitation_accept(invitation=invitation, user=UserFactory(email="x@example.com"))
    assert tenant_a.org.memberships.count() == 5


def test_invitation_for_another_email_is_refused(tenant_a: Tenant) -> None:
    invitation = invite(tenant_a, "right@example.com")
    intruder = UserFactory(email="wrong@example.com")
    with pytest.raises(ValidationError, match=r"right@example\.com"):
        services.invitation_accept(invitation=invitation, user=intruder)
    assert not intruder.memberships.exists()


def test_unverified_email_cannot_accept(tenant_a: Tenant) -> None:
    invitation = invite(tenant_a, "unverified@example.com")
    user = UserFactory(email="unverified@example.com")
    user.emailaddress_set.update(verified=False)
    with pytest.raises(ValidationError):
        services.invitation_accept(invitation=invitation, user=user)


def test_tampered_or_superseded_links_are_refused(tenant_a: Tenant) -> None:
    invitation = invite(tenant_a)
    old_token = services.invitation_token(invitation)
    with pytest.raises(services.InvalidInvitation):
        services.invitation_from_token(old_token[:-2] + "xx")
    services.invitation_resend(invitation=invitation, actor=tenant_a.admin)
    with pytest.raises(services.InvalidInvitation):
        services.invitation_from_token(old_token)
    invitation.refresh_from_db()
    assert services.invitation_from_token(services.invitation_token(invitation)) == invitation


def test_cannot_invite_twice_or_invite_a_member(tenant_a: Tenant) -> None:
    invite(tenant_a, "twice@example.com")
    with pytest.raises(ValidationError, match="pending invitation"):
        invite(tenant_a, "twice@example.com")
    with pytest.raises(ValidationError, match="already a member"):
        invite(tenant_a, tenant_a.member.email)


def test_reinviting_after_expiry_supersedes_the_old_invitation(tenant_a: Tenant) -> None:
    first = invite(tenant_a, "late@example.com")
    Invitation.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(days=1))
    second = invite(tenant_a, "late@example.com")
    first.refresh_from_db()
    assert first.revoked_at is not None and second.is_open


def test_invitation_to_a_project_of_another_org_is_refused(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    with pytest.raises(ValidationError):
        invite(tenant_a, project=tenant_b.project)
    assert not Invitation.objects.filter(email="newbie@example.com").exists()


def test_only_owners_invite_owners(tenant_a: Tenant) -> None:
    with pytest.raises(PermissionDenied):
        invite(tenant_a, role=OrgRole.OWNER)
    services.invitation_create(
        organization=tenant_a.org,
        email="co-owner@example.com",
        role=OrgRole.OWNER,
        actor=tenant_a.owner,
    )


# --- Projects --------------------------------------------------------------------------


def test_a_member_who_creates_a_project_owns_it(tenant_a: Tenant) -> None:
    project = services.project_create(
        organization=tenant_a.org, name="Mine", slug="mine", description="", actor=tenant_a.member
    )
    assert ProjectMembership.objects.get(project=project, user=tenant_a.member).role == "owner"


def test_viewer_cannot_create_projects(tenant_a: Tenant) -> None:
    with pytest.raises(PermissionDenied):
        services.project_create(
            organization=tenant_a.org, name="No", slug="no", description="", actor=tenant_a.viewer
        )


def test_project_members_must_belong_to_the_organization(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    with pytest.raises(ValidationError, match="Only members"):
        services.project_member_add(
            project=tenant_a.project,
            user=tenant_b.member,
            role=ProjectRole.WRITER,
            actor=tenant_a.owner,
        )


def test_project_delete_is_audited(tenant_a: Tenant) -> None:
    services.project_delete(project=tenant_a.project, actor=tenant_a.owner)
    event = AuditEvent.objects.get(verb="project.delete")
    assert event.target_repr == tenant_a.project.name


def test_user_deactivation_is_audited() -> None:
    staff = UserFactory(is_staff=True)
    user = UserFactory()
    services.user_deactivate(user=user, actor=staff)
    user.refresh_from_db()
    assert not user.is_active
    assert AuditEvent.objects.get(verb="user.deactivate").actor == staff
