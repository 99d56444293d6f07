"""Invitations: invite someone by email, revoke or resend, and accept with a signed link."""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ..audit import audit
from ..choices import InvitationStatus, OrgRole, ProjectRole
from ..emails import send_invitation_email
from ..models import (
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMembership,
    User,
)
from ..permissions import require

INVITATION_SALT = "raydeck.invitation"


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


@transaction.atomic(durable=True)
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


@transaction.atomic(durable=True)
def invitation_revoke(*, invitation: Invitation, actor: User) -> Invitation:
    require(actor, "member.invite", invitation.organization)
    invitation = _lock_unanswered_invitation(invitation)
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit(actor=actor, verb="invitation.revoke", target=invitation)
    return invitation


@transaction.atomic(durable=True)
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


@transaction.atomic(durable=True)
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
