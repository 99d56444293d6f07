"""Every change to accounts, tenancy and roles: `<entity>_<verb>` functions.

Each one checks permission, validates, writes, and records its audit event in one
transaction; emails go out only after that transaction commits.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django.utils.text import slugify

from console.statements import Param, StatementCache

from .audit import audit, changes_between, snapshot
from .choices import CliHandoffStatus, InvitationStatus, OrgRole, ProjectRole
from .emails import send_invitation_email
from .models import (
    RESERVED_SLUGS,
    SERVICE_ACCOUNT_ROLES,
    ApiToken,
    CliHandoff,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMembership,
    ServiceAccount,
    User,
)
from .permissions import READ_ONLY_ORG_ROLES, require
from .revocations import access_revoke
from .tokens import (
    DEFAULT_TOKEN_DAYS,
    LAST_USED_RESOLUTION_SECONDS,
    TokenIdentity,
    display_prefix,
    hash_secret,
    looks_like_token,
    new_cli_code,
    new_secret,
    secret_for_poll_token,
)

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


ORGANIZATION_SETTINGS = ["name", "max_token_days"]


@transaction.atomic(durable=True)
def organization_update(
    *, organization: Organization, name: str, actor: User, max_token_days: int | None = None
) -> Organization:
    """Rename, and set the longest lifetime new API tokens may have (tokens that already
    exist keep their expiry; revoke them to cut them short)."""
    require(actor, "organization.update", organization)
    before = snapshot(organization, ORGANIZATION_SETTINGS)
    organization.name = name.strip()
    if max_token_days is not None:
        organization.max_token_days = max_token_days
    organization.full_clean()
    organization.save(update_fields=[*ORGANIZATION_SETTINGS, "updated_at"])
    changes = changes_between(before, snapshot(organization, ORGANIZATION_SETTINGS))
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


def is_last_owner(membership: Membership) -> bool:
    """True when `membership` is its organization's only owner (owners stay locked until
    the transaction ends, so the answer holds for it)."""
    if membership.role != OrgRole.OWNER:
        return False
    return len(_lock_owners(membership.organization)) <= 1


def _ensure_not_last_owner(membership: Membership, *, leaving_role: bool) -> None:
    if membership.role != OrgRole.OWNER or not leaving_role:
        return
    if is_last_owner(membership):
        raise ValidationError(
            "An organization needs at least one owner. Make someone else an owner first."
        )


@transaction.atomic(durable=True)
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
    access_revoke(user=membership.user, organization=organization)
    audit(
        actor=actor, verb="member.role_change", target=membership, changes={"role": [before, role]}
    )
    return membership


@transaction.atomic(durable=True)
def membership_remove(*, membership: Membership, actor: User) -> None:
    """Remove a member, or let a member leave (when `actor` is the member). Their API
    tokens of this organization are revoked: they would not work without the
    membership, and must not come back to life if the person is invited again."""
    organization = membership.organization
    leaving = membership.user_id == actor.pk
    if not leaving:
        require(actor, "member.remove", organization)
        if membership.role == OrgRole.OWNER:
            require(actor, "member.manage_owners", organization)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _ensure_not_last_owner(membership, leaving_role=True)
    membership_delete(
        membership=membership, actor=actor, verb="member.leave" if leaving else "member.remove"
    )


def membership_delete(
    *, membership: Membership, actor: User, verb: str, changes: dict | None = None
) -> None:
    """The removal itself, for callers that already checked who may remove and that the
    organization keeps an owner (membership_remove, SSO sign-in): project roles go, API
    tokens of the organization are revoked, and the event is recorded."""
    organization = membership.organization
    ProjectMembership.objects.filter(organization=organization, user=membership.user).delete()
    revoked = (
        ApiToken.objects.filter(organization=organization, user=membership.user)
        .filter(revoked_at=None)
        .update(revoked_at=timezone.now())
    )
    changes = {**(changes or {}), "role": [membership.role, None]}
    if revoked:
        changes["unrevoked_api_tokens"] = [revoked, 0]
    audit(actor=actor, verb=verb, target=membership, organization=organization, changes=changes)
    membership.delete()
    membership.user.forget_roles()
    access_revoke(user=membership.user, organization=organization)


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


# --- Projects ------------------------------------------------------------------------

PROJECT_FIELDS = ["name", "description"]


def project_slug_taken(*, organization: Organization, slug: str) -> str | None:
    """Why `slug` cannot name a new project of `organization`, or None when it can."""
    if Project.objects.filter(organization=organization, slug=slug).exists():
        return f"A project with URL name “{slug}” already exists."
    return None


@transaction.atomic
def project_create(
    *, organization: Organization, name: str, slug: str = "", description: str = "", actor: User
) -> Project:
    """A project; a blank `slug` is derived from the name."""
    require(actor, "project.create", organization)
    slug = slug.strip() or slugify(name)[:50].strip("-")
    if not slug:
        raise ValidationError({"slug": "Choose a short name made of letters, digits and hyphens."})
    _check_slug(slug)
    if taken := project_slug_taken(organization=organization, slug=slug):
        raise ValidationError({"slug": taken})
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


@transaction.atomic(durable=True)
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


@transaction.atomic(durable=True)
def project_delete(*, project: Project, actor: User) -> None:
    require(actor, "project.delete", project)
    audit(
        actor=actor, verb="project.delete", target=project, changes={"name": [project.name, None]}
    )
    project.delete()


@transaction.atomic(durable=True)
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


@transaction.atomic(durable=True)
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
        access_revoke(user=pm.user, organization=pm.organization)
        audit(
            actor=actor,
            verb="project_member.role_change",
            target=pm,
            changes={"role": [before, role]},
        )
    return pm


@transaction.atomic(durable=True)
def project_member_remove(*, project_membership: ProjectMembership, actor: User) -> None:
    require(actor, "project.manage_members", project_membership.project)
    audit(
        actor=actor,
        verb="project_member.remove",
        target=project_membership,
        changes={"role": [project_membership.role, None]},
    )
    project_membership.delete()
    access_revoke(user=project_membership.user, organization=project_membership.organization)


# --- Users ---------------------------------------------------------------------------


@transaction.atomic(durable=True)
def user_update_profile(*, user: User, name: str) -> User:
    before = snapshot(user, ["name"])
    user.name = name.strip()
    user.full_clean(exclude=["password"])
    user.save(update_fields=["name"])
    changes = changes_between(before, snapshot(user, ["name"]))
    if changes:
        audit(actor=user, verb="user.update", target=user, changes=changes)
    return user


@transaction.atomic(durable=True)
def user_deactivate(*, user: User, actor: User) -> User:
    """Support action: the user can no longer sign in, and their sessions end at their
    next request (Django drops the session of an inactive user)."""
    if not user.is_active:
        return user
    user.is_active = False
    user.save(update_fields=["is_active"])
    for membership in user.memberships.select_related("organization"):
        access_revoke(user=user, organization=membership.organization)
    audit(actor=actor, verb="user.deactivate", target=user, changes={"is_active": [True, False]})
    return user


@transaction.atomic(durable=True)
def user_unlock(*, user: User, actor: User, request) -> None:  # type: ignore[no-untyped-def]
    """Support action: clear the failed-sign-in rate limit of this account."""
    from allauth.account.adapter import get_adapter

    # allauth keeps its per-account counter under a key of its own making; this is
    # the call it uses itself after a successful password reset.
    get_adapter()._delete_login_attempts_cached_email(request, email=user.email)
    audit(actor=actor, verb="user.unlock", target=user)


# --- Service accounts and API tokens -------------------------------------------------


@transaction.atomic(durable=True)
def service_account_create(
    *, organization: Organization, name: str, role: str, actor: User
) -> ServiceAccount:
    require(actor, "service_account.manage", organization)
    if role not in dict(SERVICE_ACCOUNT_ROLES):
        raise ValidationError({"role": "A service account can be an admin, a member or a viewer."})
    account = ServiceAccount(
        organization=organization, name=name.strip(), role=role, created_by=actor
    )
    account.full_clean()
    account.save()
    audit(
        actor=actor,
        verb="service_account.create",
        target=account,
        changes={"name": [None, account.name], "role": [None, role]},
    )
    return account


@transaction.atomic(durable=True)
def service_account_disable(*, service_account: ServiceAccount, actor: User) -> ServiceAccount:
    """Disable for good: its tokens are revoked, and it can no longer get new ones."""
    require(actor, "service_account.manage", service_account.organization)
    account = ServiceAccount.objects.select_for_update().get(pk=service_account.pk)
    if account.disabled_at is not None:
        raise ValidationError("This service account is already disabled.")
    now = timezone.now()
    account.disabled_at = now
    account.save(update_fields=["disabled_at"])
    revoked = account.tokens.filter(revoked_at=None).update(revoked_at=now)
    changes: dict[str, list] = {"disabled": [False, True]}
    if revoked:
        changes["unrevoked_api_tokens"] = [revoked, 0]
    audit(actor=actor, verb="service_account.disable", target=account, changes=changes)
    return account


def _check_token_days(organization: Organization, days: int) -> None:
    if not 1 <= days <= organization.max_token_days:
        raise ValidationError(
            {
                "days": f"Choose from 1 to {organization.max_token_days} days: "
                f"{organization.name} allows tokens to live at most "
                f"{organization.max_token_days} days."
            }
        )


def _issue_token(
    *,
    organization: Organization,
    actor: User,
    name: str,
    days: int,
    read_only: bool,
    token_hash: str,
    prefix: str,
    user: User | None = None,
    service_account: ServiceAccount | None = None,
    via: str = "console",
) -> ApiToken:
    _check_token_days(organization, days)
    holder_role = (
        service_account.role if service_account is not None else actor.org_role(organization)
    )
    token = ApiToken(
        organization=organization,
        user=user,
        service_account=service_account,
        name=name.strip(),
        prefix=prefix,
        token_hash=token_hash,
        # A viewer's token could not write anyway; saying so keeps it read-only should
        # its holder be promoted later.
        read_only=read_only or holder_role in READ_ONLY_ORG_ROLES,
        expires_at=timezone.now() + timedelta(days=days),
        created_by=actor,
    )
    token.full_clean()
    token.save()
    audit(
        actor=actor,
        verb="token.create",
        target=token,
        changes={
            "name": [None, token.name],
            "holder": [None, str(service_account or user)],
            "read_only": [None, token.read_only],
            "expires_at": [None, token.expires_at.isoformat(timespec="seconds")],
            "via": [None, via],
        },
    )
    return token


@transaction.atomic(durable=True)
def token_create(
    *,
    organization: Organization,
    actor: User,
    name: str,
    days: int,
    read_only: bool,
    service_account: ServiceAccount | None = None,
) -> tuple[ApiToken, str]:
    """A personal token of `actor` in `organization`, or a token of `service_account`.
    Returns the token and its secret: the secret is never stored, so show it now."""
    if service_account is None:
        require(actor, "token.manage_own", organization)
    else:
        require(actor, "service_account.manage", organization)
        if service_account.organization_id != organization.pk:
            raise ValidationError("Choose a service account of this organization.")
        service_account = ServiceAccount.objects.select_for_update().get(pk=service_account.pk)
        if service_account.disabled_at is not None:
            raise ValidationError("This service account is disabled: it cannot get new tokens.")
    secret = new_secret()
    token = _issue_token(
        organization=organization,
        actor=actor,
        name=name,
        days=days,
        read_only=read_only,
        token_hash=hash_secret(secret),
        prefix=display_prefix(secret),
        user=actor if service_account is None else None,
        service_account=service_account,
    )
    return token, secret


@transaction.atomic(durable=True)
def token_revoke(*, token: ApiToken, actor: User, by_support: bool = False) -> ApiToken:
    """Revoke a token: your own (token.manage_own), anyone's in the organization
    (token.manage_all), or, with `by_support`, any token from the support admin."""
    if by_support:
        if not (actor.is_active and actor.is_staff):
            raise PermissionDenied("Only support staff can do this.")
    elif token.user_id is not None and token.user_id == actor.pk:
        require(actor, "token.manage_own", token.organization)
    else:
        require(actor, "token.manage_all", token.organization)
    token = ApiToken.objects.select_for_update().select_related("organization").get(pk=token.pk)
    if token.revoked_at is not None:
        raise ValidationError("This token was already revoked.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit(actor=actor, verb="token.revoke", target=token)
    return token


# What one token lookup loads: the token, its organization, its person or service
# account (LEFT JOINs: one of the two is empty), under these prefixes of `.values()`.
_TOKEN_ROW_MODELS: dict[str, type[models.Model]] = {
    "": ApiToken,
    "organization__": Organization,
    "user__": User,
    "service_account__": ServiceAccount,
}
# Each model's columns, in the order from_db takes them.
_TOKEN_ROW_FIELDS = {
    prefix: [field.attname for field in model._meta.concrete_fields]
    for prefix, model in _TOKEN_ROW_MODELS.items()
}
_token_lookups = StatementCache(size=1)


def _token_lookup() -> QuerySet:
    """The token with `token_hash` (unique: no ordering), what it belongs to, and its
    person's role in its organization: one query instead of select_related plus the
    membership lookup, compiled once (this runs on every API call)."""
    role = Membership.objects.filter(
        user_id=OuterRef("user_id"), organization_id=OuterRef("organization_id")
    ).values("role")[:1]
    columns = [prefix + name for prefix, names in _TOKEN_ROW_FIELDS.items() for name in names]
    return (
        ApiToken.objects.filter(token_hash=Param("token_hash"))
        .order_by()
        .values(*columns, member_role=Subquery(role))[:1]
    )


def _instances(row: dict[str, Any], db: str) -> dict[str, Any]:
    """The row's model instances by prefix (None for the empty side of a LEFT JOIN)."""
    found: dict[str, Any] = {}
    for prefix, model in _TOKEN_ROW_MODELS.items():
        names = _TOKEN_ROW_FIELDS[prefix]
        values = [row[prefix + n] for n in names]
        found[prefix] = None if values[0] is None else model.from_db(db, names, values)
    return found


def authenticate_token(secret: str, *, ip: str | None) -> TokenIdentity | None:
    """The identity an API token secret stands for, or None.

    None when the secret is not one of ours, or its token is revoked or expired, or its
    person is deactivated or no longer a member of the token's organization, or its
    service account is disabled. Callers answer None with 401 and the same message
    whatever the reason. On success the token's last use (time and `ip`) is recorded,
    at most once a minute per token.

    The identity acts only inside `identity.organization`; check every permission with
    `accounts.permissions.token_may(identity, perm, obj)` (the JSON API turns a refusal
    on another organization's object into 404).
    """
    if not looks_like_token(secret):
        return None
    lookup = _token_lookups.get("token", _token_lookup)
    rows = lookup.rows(token_hash=hash_secret(secret))
    if not rows:
        return None
    found = _instances(rows[0], lookup.alias)
    token: ApiToken = found[""]
    if not token.is_active:
        return None
    token.organization = found["organization__"]
    principal: User | ServiceAccount
    user, account = found["user__"], found["service_account__"]
    if user is not None:
        principal = token.user = user
        role = rows[0]["member_role"]
        if not user.is_active or role is None:
            return None
        user.remember_org_role(token.organization, role)
    elif account is not None:
        principal = token.service_account = account
        if not account.is_active or account.organization_id != token.organization_id:
            return None
    else:  # the table's check constraint makes this unreachable
        return None
    _record_use(token, ip)
    return TokenIdentity(
        token=token,
        organization=token.organization,
        principal=principal,
        read_only=token.read_only,
    )


def _record_use(token: ApiToken, ip: str | None) -> None:
    now = timezone.now()
    stale = now - timedelta(seconds=LAST_USED_RESOLUTION_SECONDS)
    if token.last_used_at is not None and token.last_used_at > stale:
        return
    # Conditional, so concurrent requests with the same token write once.
    ApiToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at=None) | Q(last_used_at__lte=stale)
    ).update(last_used_at=now, last_used_ip=ip)
    token.last_used_at, token.last_used_ip = now, ip


# --- `raydeck login`: the CLI hand-off -------------------------------------------------


def cli_handoff_start(*, ip: str | None, user_agent: str) -> tuple[CliHandoff, str]:
    """Start a CLI sign-in; returns the hand-off (its `code` is for the person) and the
    poll token (for the CLI only; only its hash is kept)."""
    now = timezone.now()
    # Housekeeping: hand-offs are useless once expired; keep a day of them for support.
    CliHandoff.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
    poll_token = secrets.token_urlsafe(32)
    secret = secret_for_poll_token(poll_token)
    for _ in range(5):
        try:
            with transaction.atomic():
                handoff = CliHandoff.objects.create(
                    code=new_cli_code(),
                    poll_token_hash=hash_secret(poll_token),
                    token_hash=hash_secret(secret),
                    token_prefix=display_prefix(secret),
                    requested_ip=ip,
                    requested_user_agent=user_agent[:300],
                )
            return handoff, poll_token
        except IntegrityError:  # the code is taken (31^8 codes: it happens rarely)
            continue
    raise RuntimeError("Could not find a free one-time code.")


CLOSED_HANDOFF_MESSAGES = {
    CliHandoffStatus.CONFIRMED: "This sign-in was already confirmed.",
    CliHandoffStatus.DELIVERED: "This sign-in is complete: the CLI has its token.",
    CliHandoffStatus.DENIED: "This sign-in was denied.",
    CliHandoffStatus.EXPIRED: "This code has expired. Run `raydeck login` again.",
}


def _lock_pending_handoff(handoff: CliHandoff) -> CliHandoff:
    handoff = CliHandoff.objects.select_for_update().get(pk=handoff.pk)
    if handoff.status != CliHandoffStatus.PENDING:
        raise ValidationError(CLOSED_HANDOFF_MESSAGES[handoff.status])
    return handoff


@transaction.atomic(durable=True)
def cli_handoff_confirm(
    *, handoff: CliHandoff, organization: Organization, actor: User, read_only: bool = False
) -> ApiToken:
    """The person confirms the code: a personal token for `organization` is created now
    (with the hash made when the hand-off started), for the CLI to collect once."""
    require(actor, "token.manage_own", organization)
    handoff = _lock_pending_handoff(handoff)
    token = _issue_token(
        organization=organization,
        actor=actor,
        name=f"raydeck CLI ({timezone.now():%Y-%m-%d})",
        days=min(DEFAULT_TOKEN_DAYS, organization.max_token_days),
        read_only=read_only,
        token_hash=handoff.token_hash,
        prefix=handoff.token_prefix,
        user=actor,
        via="cli",
    )
    handoff.organization, handoff.user, handoff.token = organization, actor, token
    handoff.confirmed_at = timezone.now()
    handoff.save(update_fields=["organization", "user", "token", "confirmed_at"])
    audit(
        actor=actor,
        verb="cli_handoff.confirm",
        target=handoff,
        changes={"token": [None, str(token)], "requested_ip": [None, handoff.requested_ip]},
    )
    return token


@transaction.atomic(durable=True)
def cli_handoff_deny(*, handoff: CliHandoff, actor: User) -> CliHandoff:
    """The person did not start this sign-in: the CLI is told, and nothing is created."""
    handoff = _lock_pending_handoff(handoff)
    handoff.denied_at = timezone.now()
    handoff.save(update_fields=["denied_at"])
    audit(
        actor=actor,
        verb="cli_handoff.deny",
        target=handoff,
        changes={"requested_ip": [None, handoff.requested_ip]},
    )
    return handoff


@transaction.atomic(durable=True)
def cli_handoff_poll(*, poll_token: str) -> tuple[CliHandoff | None, str | None]:
    """What the CLI gets for its poll token: (None, None) for an unknown one; the
    hand-off and the API token secret the first time after confirmation (only then);
    otherwise the hand-off, whose `status` says why there is no secret."""
    handoff = (
        # Lock only the hand-off row: PostgreSQL refuses FOR UPDATE on the nullable side
        # of the outer joins that select_related would add.
        CliHandoff.objects.select_for_update(of=("self",))
        .select_related("organization", "token")
        .filter(poll_token_hash=hash_secret(poll_token))
        .first()
    )
    if handoff is None:
        return None, None
    status = handoff.status
    if status == CliHandoffStatus.CONFIRMED:
        handoff.delivered_at = timezone.now()
        handoff.save(update_fields=["delivered_at"])
        return handoff, secret_for_poll_token(poll_token)
    token = handoff.token
    if status == CliHandoffStatus.EXPIRED and token is not None and token.revoked_at is None:
        # Confirmed, never collected: nobody will ever hold this token's secret.
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit(actor=None, verb="token.revoke", target=token, actor_email="raydeck")
    return handoff, None
