"""Every change to accounts, tenancy and roles: `<entity>_<verb>` functions.

Each one checks permission, validates, writes, and records its audit event in one
transaction; emails go out only after that transaction commits.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .audit import audit, changes_between, snapshot
from .choices import InvitationStatus, OrgRole, ProjectRole
from .emails import send_invitation_email
from .models import (
    RESERVED_SLUGS,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMembership,
    User,
)
from .permissions import require

INVITATION_SALT = "raydeck.invitation"


# --- Organizations -------------------------------------------------------------------


def _check_slug(slug: str) -> None:
    if slug in RESERVED_SLUGS:
        raise ValidationError({"slug": f"“{slug}” is reserved; choose another."})


@transaction.atomic
def organization_create(*, name: str, slug: str, actor: User) -> Organization:
    _check_slug(slug)
    organization = Organization(name=name.strip(), slug=slug)
    organization.full_clean()
    organization.save()
    membership = Membership.objects.create(
        organization=organization, user=actor, role=OrgRole.OWNER
    )
    actor.forget_roles()
    audit(
        actor=actor,
        verb="organization.create",
        target=organization,
        changes={"name": [None, organization.name], "slug": [None, organization.slug]},
    )
    audit(
        actor=actor, verb="member.add", target=membership, changes={"role": [None, membership.role]}
    )
    return organization


@transaction.atomic
def organization_update(*, organization: Organization, name: str, actor: User) -> Organization:
    require(actor, "organization.update", organization)
    before = snapshot(organization, ["name"])
    organization.name = name.strip()
    organization.full_clean()
    organization.save(update_fields=["name", "updated_at"])
    changes = changes_between(before, snapshot(organization, ["name"]))
    if changes:
        audit(actor=actor, verb="organization.update", target=organization, changes=changes)
    return organization


# --- Memberships ---------------------------------------------------------------------


def _lock_owners(organization: Organization) -> list[Membership]:
    # Locking every owner row serialises concurrent demotions, so two owners demoting
    # each other cannot leave the organization with none.
    return list(
        Membership.objects.select_for_update()
        .filter(organization=organization, role=OrgRole.OWNER)
        .order_by("pk")
    )


def _ensure_not_last_owner(membership: Membership, *, leaving_role: bool) -> None:
    if membership.role != OrgRole.OWNER or not leaving_role:
        return
    owners = _lock_owners(membership.organization)
    if len(owners) <= 1:
        raise ValidationError(
            "An organization needs at least one owner. Make someone else an owner first."
        )


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, actor: User) -> Membership:
    if role not in OrgRole.values:
        raise ValidationError({"role": f"Unknown role “{role}”."})
    organization = membership.organization
    require(actor, "member.update_role", organization)
    if OrgRole.OWNER in (role, membership.role):
        require(actor, "member.manage_owners", organization)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == role:
        return membership
    _ensure_not_last_owner(membership, leaving_role=True)
    before = membership.role
    membership.role = role
    membership.full_clean()
    membership.save(update_fields=["role", "updated_at"])
    membership.user.forget_roles()
    audit(
        actor=actor, verb="member.role_change", target=membership, changes={"role": [before, role]}
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: User) -> None:
    """Remove a member, or let a member leave (when `actor` is the member)."""
    organization = membership.organization
    leaving = membership.user_id == actor.pk
    if not leaving:
        require(actor, "member.remove", organization)
        if membership.role == OrgRole.OWNER:
            require(actor, "member.manage_owners", organization)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _ensure_not_last_owner(membership, leaving_role=True)
    ProjectMembership.objects.filter(organization=organization, user=membership.user).delete()
    audit(
        actor=actor,
        verb="member.leave" if leaving else "member.remove",
        target=membership,
        organization=organization,
        changes={"role": [membership.role, None]},
    )
    membership.delete()
    membership.user.forget_roles()


# --- Invitations ---------------------------------------------------------------------


class InvalidInvitation(Exception):
    """The link is not valid: tampered, superseded by a resend, or too old."""


def invitation_token(invitation: Invitation) -> str:
    return signing.dumps({"i": invitation.pk, "n": invitation.nonce}, salt=INVITATION_SALT)


def invitation_from_token(token: str) -> Invitation:
    max_age = settings.RAYDECK_INVITATION_DAYS * 24 * 60 * 60
    try:
        data = signing.loads(token, salt=INVITATION_SALT, max_age=max_age)
    except signing.BadSignature as exc:
        raise InvalidInvitation("This invitation link is invalid or has expired.") from exc
    invitation = (
        Invitation.objects.select_related("organization", "project")
        .filter(pk=data.get("i"), nonce=data.get("n"))
        .first()
    )
    if invitation is None:
        raise InvalidInvitation(
            "This invitation link is no longer valid. Ask for a new invitation."
        )
    return invitation


def _validate_invitation_project(
    organization: Organization, project: Project | None, project_role: str
) -> str:
    if project is None:
        return ""
    if project.organization_id != organization.pk:
        raise ValidationError({"project": "Choose a project of this organization."})
    return project_role or ProjectRole.WRITER


@transaction.atomic
def invitation_create(
    *,
    organization: Organization,
    email: str,
    role: str,
    actor: User,
    project: Project | None = None,
    project_role: str = "",
) -> Invitation:
    require(actor, "member.invite", organization)
    if role == OrgRole.OWNER:
        require(actor, "member.manage_owners", organization)
    email = email.strip().lower()
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise ValidationError({"email": f"{email} is already a member of {organization}."})
    previous = (
        Invitation.objects.select_for_update()
        .filter(organization=organization, email=email, accepted_at=None, revoked_at=None)
        .first()
    )
    if previous is not None:
        if previous.is_open:
            raise ValidationError(
                {"email": f"{email} already has a pending invitation. Resend it instead."}
            )
        previous.revoked_at = timezone.now()  # an expired one is superseded
        previous.save(update_fields=["revoked_at"])
    invitation = Invitation(
        organization=organization,
        email=email,
        role=role,
        project=project,
        project_role=_validate_invitation_project(organization, project, project_role),
        invited_by=actor,
    )
    invitation.full_clean()
    invitation.save()
    audit(
        actor=actor,
        verb="invitation.create",
        target=invitation,
        changes={
            "email": [None, email],
            "role": [None, role],
            "project": [None, str(project) if project else None],
        },
    )
    transaction.on_commit(lambda: send_invitation_email(invitation, invitation_token(invitation)))
    return invitation


CLOSED_INVITATION_MESSAGES = {
    InvitationStatus.ACCEPTED: "This invitation was already accepted.",
    InvitationStatus.REVOKED: "This invitation was revoked. Ask for a new one.",
    InvitationStatus.EXPIRED: "This invitation has expired. Ask for a new one.",
}


def _lock_unanswered_invitation(invitation: Invitation) -> Invitation:
    """Lock an invitation that was neither accepted nor revoked (expired is fine:
    it can still be revoked, or resent with a new expiry)."""
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status in (InvitationStatus.ACCEPTED, InvitationStatus.REVOKED):
        raise ValidationError(CLOSED_INVITATION_MESSAGES[invitation.status])
    return invitation


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: User) -> Invitation:
    require(actor, "member.invite", invitation.organization)
    invitation = _lock_unanswered_invitation(invitation)
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit(actor=actor, verb="invitation.revoke", target=invitation)
    return invitation


@transaction.atomic
def invitation_resend(*, invitation: Invitation, actor: User) -> Invitation:
    """Send a fresh link with a new expiry; earlier links stop working."""
    require(actor, "member.invite", invitation.organization)
    invitation = _lock_unanswered_invitation(invitation)
    invitation.nonce = Invitation._meta.get_field("nonce").get_default()
    invitation.sent_at = timezone.now()
    invitation.expires_at = Invitation._meta.get_field("expires_at").get_default()
    invitation.save(update_fields=["nonce", "sent_at", "expires_at"])
    audit(actor=actor, verb="invitation.resend", target=invitation)
    transaction.on_commit(lambda: send_invitation_email(invitation, invitation_token(invitation)))
    return invitation


def user_has_verified_email(user: User, email: str) -> bool:
    from allauth.account.models import EmailAddress

    return EmailAddress.objects.filter(user=user, email__iexact=email, verified=True).exists()


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User) -> Membership:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_open:
        raise ValidationError(CLOSED_INVITATION_MESSAGES[invitation.status])
    if not user_has_verified_email(user, invitation.email):
        raise ValidationError(
            f"This invitation is for {invitation.email}. Sign in with that address "
            "(and verify it) to accept it."
        )
    organization = invitation.organization
    membership, created = Membership.objects.get_or_create(
        organization=organization, user=user, defaults={"role": invitation.role}
    )
    if invitation.project_id:
        ProjectMembership.objects.get_or_create(
            organization=organization,
            project=invitation.project,
            user=user,
            defaults={"role": invitation.project_role or ProjectRole.WRITER},
        )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    user.forget_roles()
    audit(actor=user, verb="invitation.accept", target=invitation)
    if created:
        audit(
            actor=user,
            verb="member.add",
            target=membership,
            changes={"role": [None, membership.role]},
        )
    return membership


# --- Projects ------------------------------------------------------------------------

PROJECT_FIELDS = ["name", "description"]


@transaction.atomic
def project_create(
    *, organization: Organization, name: str, slug: str, description: str, actor: User
) -> Project:
    require(actor, "project.create", organization)
    _check_slug(slug)
    project = Project(
        organization=organization, name=name.strip(), slug=slug, description=description.strip()
    )
    project.full_clean()
    project.save()
    audit(
        actor=actor,
        verb="project.create",
        target=project,
        changes={
            k: [None, v] for k, v in snapshot(project, ["name", "slug", "description"]).items()
        },
    )
    if actor.org_role(organization) not in (OrgRole.OWNER, OrgRole.ADMIN):
        # Whoever creates a project can manage it, even without an org-wide role.
        pm = ProjectMembership.objects.create(
            organization=organization, project=project, user=actor, role=ProjectRole.OWNER
        )
        audit(actor=actor, verb="project_member.add", target=pm, changes={"role": [None, pm.role]})
        actor.forget_roles()
    return project


@transaction.atomic
def project_update(*, project: Project, name: str, description: str, actor: User) -> Project:
    require(actor, "project.update", project)
    before = snapshot(project, PROJECT_FIELDS)
    project.name = name.strip()
    project.description = description.strip()
    project.full_clean()
    project.save(update_fields=[*PROJECT_FIELDS, "updated_at"])
    changes = changes_between(before, snapshot(project, PROJECT_FIELDS))
    if changes:
        audit(actor=actor, verb="project.update", target=project, changes=changes)
    return project


@transaction.atomic
def project_delete(*, project: Project, actor: User) -> None:
    require(actor, "project.delete", project)
    audit(
        actor=actor, verb="project.delete", target=project, changes={"name": [project.name, None]}
    )
    project.delete()


@transaction.atomic
def project_member_add(
    *, project: Project, user: User, role: str, actor: User
) -> ProjectMembership:
    require(actor, "project.manage_members", project)
    if role not in ProjectRole.values:
        raise ValidationError({"role": f"Unknown role “{role}”."})
    if user.org_role(project.organization) is None:
        raise ValidationError({"user": "Only members of the organization can join its projects."})
    if ProjectMembership.objects.filter(project=project, user=user).exists():
        raise ValidationError({"user": f"{user} is already in this project."})
    pm = ProjectMembership.objects.create(
        organization=project.organization, project=project, user=user, role=role
    )
    audit(actor=actor, verb="project_member.add", target=pm, changes={"role": [None, role]})
    return pm


@transaction.atomic
def project_member_change_role(
    *, project_membership: ProjectMembership, role: str, actor: User
) -> ProjectMembership:
    require(actor, "project.manage_members", project_membership.project)
    if role not in ProjectRole.values:
        raise ValidationError({"role": f"Unknown role “{role}”."})
    pm = ProjectMembership.objects.select_for_update().get(pk=project_membership.pk)
    if pm.role != role:
        before, pm.role = pm.role, role
        pm.save(update_fields=["role"])
        audit(
            actor=actor,
            verb="project_member.role_change",
            target=pm,
            changes={"role": [before, role]},
        )
    return pm


@transaction.atomic
def project_member_remove(*, project_membership: ProjectMembership, actor: User) -> None:
    require(actor, "project.manage_members", project_membership.project)
    audit(
        actor=actor,
        verb="project_member.remove",
        target=project_membership,
        changes={"role": [project_membership.role, None]},
    )
    project_membership.delete()


# --- Users ---------------------------------------------------------------------------


@transaction.atomic
def user_update_profile(*, user: User, name: str) -> User:
    before = snapshot(user, ["name"])
    user.name = name.strip()
    user.full_clean(exclude=["password"])
    user.save(update_fields=["name"])
    changes = changes_between(before, snapshot(user, ["name"]))
    if changes:
        audit(actor=user, verb="user.update", target=user, changes=changes)
    return user


@transaction.atomic
def user_deactivate(*, user: User, actor: User) -> User:
    """Support action: the user can no longer sign in, and their sessions end at their
    next request (Django drops the session of an inactive user)."""
    if not user.is_active:
        return user
    user.is_active = False
    user.save(update_fields=["is_active"])
    audit(actor=actor, verb="user.deactivate", target=user, changes={"is_active": [True, False]})
    return user


@transaction.atomic
def user_unlock(*, user: User, actor: User, request) -> None:  # type: ignore[no-untyped-def]
    """Support action: clear the failed-sign-in rate limit of this account."""
    from allauth.account.adapter import get_adapter

    # allauth keeps its per-account counter under a key of its own making; this is
    # the call it uses itself after a successful password reset.
    get_adapter()._delete_login_attempts_cached_email(request, email=user.email)
    audit(actor=actor, verb="user.unlock", target=user)
