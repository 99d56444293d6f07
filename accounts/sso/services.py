"""Signing in through an organization's IdP, the same for SAML and OIDC.

A protocol view verifies the IdP's answer (signature, audience, expiry, replay, state),
finds the connection with `connection_for_app` and calls `sso_sign_in` with what the
IdP said about the person (`IdpClaims`). That one function, in one transaction:

- finds the identity by (connection, subject), never by email alone;
- on a first sign-in creates the user, or links an existing account with the same
  email only when the organization verified the email's domain (DomainClaim);
- applies the group mapping (accounts.models.SsoGroupMapping) to the organization role
  and mapped project roles, at every sign-in, removing what the IdP no longer grants;
- records every change as an audit event.

It returns whether the person may use the organization now; the view then signs them
in (accounts.sso.enforcement.sign_in_through) or shows why not. `sso_sign_in_preview`
answers the same question for the settings page's "test connection" without writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from allauth.account.models import EmailAddress
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from ..audit import audit
from ..choices import OrgRole, ProjectRole
from ..models import (
    DomainClaim,
    Membership,
    Organization,
    ProjectMembership,
    SsoConnection,
    SsoGroupMapping,
    SsoIdentity,
    User,
)
from ..services import is_last_owner, membership_delete

# A person in several mapped groups gets the strongest role.
ORG_ROLE_RANK: dict[str, int] = {
    OrgRole.VIEWER: 1,
    OrgRole.MEMBER: 2,
    OrgRole.ADMIN: 3,
    OrgRole.OWNER: 4,
}
PROJECT_ROLE_RANK: dict[str, int] = {
    ProjectRole.READER: 1,
    ProjectRole.WRITER: 2,
    ProjectRole.OWNER: 3,
}
MAX_GROUPS = 1000
MAX_SUBJECT_LENGTH = 512  # SsoIdentity.subject


class SsoRefused(Exception):
    """The IdP's answer was valid but nobody is signed in; the message is shown as is."""


@dataclass(frozen=True)
class IdpClaims:
    """What a verified IdP answer says about the person."""

    subject: str
    email: str
    name: str = ""
    groups: tuple[str, ...] = ()

    @classmethod
    def clean(cls, *, subject: Any, email: Any, name: Any = "", groups: Any = ()) -> IdpClaims:
        """Normalise values straight from an assertion or ID token (types unknown),
        refusing what cannot identify a person."""
        subject = subject.strip() if isinstance(subject, str) else ""
        if not subject or len(subject) > MAX_SUBJECT_LENGTH:
            raise SsoRefused("The identity provider sent no usable subject for this person.")
        email = email.strip().lower() if isinstance(email, str) else ""
        try:
            validate_email(email)
        except ValidationError:
            raise SsoRefused(
                "The identity provider sent no email address for this person. Ask your "
                "administrator to release the email attribute to Raydeck."
            ) from None
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list | tuple):
            groups = []
        clean_groups = tuple(
            sorted({g.strip() for g in groups[:MAX_GROUPS] if isinstance(g, str) and g.strip()})
        )
        name = name.strip()[:150] if isinstance(name, str) else ""
        return cls(subject=subject, email=email, name=name, groups=clean_groups)


@dataclass
class RoleDecision:
    """The roles the mapping gives a person: org role None means no access."""

    org_role: str | None
    # Every project named by a mapping of the connection -> the role there (or None).
    project_roles: dict[int, str | None] = field(default_factory=dict)
    matched_groups: tuple[str, ...] = ()


@dataclass
class SignInResult:
    user: User | None
    membership: Membership | None
    decision: RoleDecision
    # For the test page: what happened or would happen, in words.
    notes: list[str] = field(default_factory=list)

    @property
    def has_access(self) -> bool:
        return self.membership is not None


def connection_for_app(app: Any, *, organization_slug: str | None = None) -> SsoConnection:
    """The connection behind allauth's SocialApp `app`: the binding every sign-in checks.
    Refuses an app no connection owns, a disabled connection, and (given the slug in the
    URL) a connection of another organization."""
    connection = SsoConnection.objects.for_social_app(app).first()
    if connection is None or not connection.enabled:
        raise SsoRefused("Single sign-on is not set up for this organization.")
    if organization_slug is not None and connection.organization.slug != organization_slug:
        raise SsoRefused("Single sign-on is not set up for this organization.")
    return connection


def decide_roles(connection: SsoConnection, groups: tuple[str, ...]) -> RoleDecision:
    mappings = list(SsoGroupMapping.objects.filter(connection=connection))
    in_groups = set(groups)
    matched = [m for m in mappings if m.idp_group in in_groups]
    org_role = connection.default_role or None
    for mapping in matched:
        if org_role is None or ORG_ROLE_RANK[mapping.org_role] > ORG_ROLE_RANK[org_role]:
            org_role = mapping.org_role
    project_roles: dict[int, str | None] = {m.project_id: None for m in mappings if m.project_id}
    for mapping in matched:
        if mapping.project_id is None:
            continue
        current = project_roles[mapping.project_id]
        if current is None or PROJECT_ROLE_RANK[mapping.project_role] > PROJECT_ROLE_RANK[current]:
            project_roles[mapping.project_id] = mapping.project_role
    if org_role is None:
        project_roles = dict.fromkeys(project_roles)
    return RoleDecision(
        org_role=org_role,
        project_roles=project_roles,
        matched_groups=tuple(sorted({m.idp_group for m in matched})),
    )


def email_domain(email: str) -> str:
    return email.rpartition("@")[2].lower()


def domain_verified_by(organization: Organization, email: str) -> bool:
    return (
        DomainClaim.objects.verified()
        .filter(organization=organization, domain=email_domain(email))
        .exists()
    )


def _find_account(
    connection: SsoConnection, claims: IdpClaims, *, for_update: bool
) -> tuple[SsoIdentity | None, User | None, bool]:
    """(identity, user, linkable): the identity for the subject if any, else the
    account with the claimed email and whether this organization may link it."""
    identities = SsoIdentity.objects.select_related("user")
    if for_update:
        identities = identities.select_for_update()
    identity = identities.filter(connection=connection, subject=claims.subject).first()
    if identity is not None:
        return identity, identity.user, True
    user = User.objects.filter(email__iexact=claims.email).first()
    if user is None:
        return None, None, True
    return None, user, domain_verified_by(connection.organization, claims.email)


ACCOUNT_EXISTS = (
    "An account with the address {email} already exists, and {org} has not verified the "
    "domain {domain}, so its identity provider cannot sign in to it. Sign in with your "
    "password, or ask an owner of {org} to verify the domain."
)


def sso_sign_in_preview(*, connection: SsoConnection, claims: IdpClaims) -> SignInResult:
    """What `sso_sign_in` would do for these claims, changing nothing (the settings
    page's "test connection")."""
    decision = decide_roles(connection, claims.groups)
    identity, user, linkable = _find_account(connection, claims, for_update=False)
    notes = []
    if identity is not None:
        notes.append(f"Known person: signs in as {user}.")
    elif user is None:
        notes.append(f"New person: an account for {claims.email} would be created.")
    elif linkable:
        notes.append(f"The existing account {user} would be linked (verified domain).")
    else:
        notes.append(
            ACCOUNT_EXISTS.format(
                email=claims.email, org=connection.organization, domain=email_domain(claims.email)
            )
        )
    if decision.org_role is None:
        notes.append("No access: the person is in no mapped group and there is no default role.")
    else:
        notes.append(f"Organization role: {OrgRole(decision.org_role).label}.")
    membership = (
        Membership.objects.filter(organization=connection.organization, user=user).first()
        if user is not None
        else None
    )
    return SignInResult(user=user, membership=membership, decision=decision, notes=notes)


@transaction.atomic
def sso_sign_in(*, connection: SsoConnection, claims: IdpClaims) -> SignInResult:
    """Find or create the person behind `claims`, apply the group mapping and record it.

    Raises SsoRefused (nothing written) when the account cannot be used: an existing
    account the organization may not link, a deactivated account, or a first sign-in
    that the mapping gives no access. A known person who lost access has their
    membership removed here and gets a result without access (the caller refuses).
    """
    organization = connection.organization
    decision = decide_roles(connection, claims.groups)
    identity, user, linkable = _find_account(connection, claims, for_update=True)
    if identity is None:
        if decision.org_role is None:
            raise SsoRefused(
                f"Your account at the identity provider has no access to {organization}: "
                "ask its administrator to add you to a group that does."
            )
        if user is not None and not linkable:
            raise SsoRefused(
                ACCOUNT_EXISTS.format(
                    email=claims.email, org=organization, domain=email_domain(claims.email)
                )
            )
        linked = SsoIdentity.objects.filter(connection=connection, user=user)
        if user is not None and linked.exists():
            raise SsoRefused(
                f"{user} is already linked to another identity at this identity provider."
            )
        user, created = _user_for_first_sign_in(connection, claims, user)
        identity = SsoIdentity.objects.create(
            organization=organization, connection=connection, subject=claims.subject, user=user
        )
        audit(
            actor=user,
            verb="sso.identity_create" if created else "sso.identity_link",
            target=identity,
            organization=organization,
            changes={"subject": [None, claims.subject], "email": [None, claims.email]},
        )
    if user is None or not user.is_active:
        raise SsoRefused("This account is deactivated. Contact your administrator.")
    identity.email = claims.email
    identity.groups = list(claims.groups)
    identity.last_login_at = timezone.now()
    identity.save(update_fields=["email", "groups", "last_login_at"])
    membership = _apply_roles(connection, user, decision)
    audit(
        actor=user,
        verb="sso.login" if membership is not None else "sso.login_refused",
        target=identity,
        organization=organization,
        changes={
            "groups": [None, list(claims.groups)],
            "role": [None, membership.role if membership is not None else None],
        },
    )
    return SignInResult(user=user, membership=membership, decision=decision)


def _user_for_first_sign_in(
    connection: SsoConnection, claims: IdpClaims, existing: User | None
) -> tuple[User, bool]:
    if existing is not None:
        return existing, False
    user = User.objects.create_user(email=claims.email, password=None, name=claims.name)
    # The address counts as verified (for invitations and password resets) only when
    # the organization proved it owns the domain; otherwise its IdP could claim anyone's.
    EmailAddress.objects.create(
        user=user,
        email=user.email,
        primary=True,
        verified=domain_verified_by(connection.organization, claims.email),
    )
    audit(
        actor=user,
        verb="user.create_sso",
        target=user,
        organization=connection.organization,
        changes={"email": [None, user.email], "name": [None, user.name]},
    )
    return user, True


def _apply_roles(
    connection: SsoConnection, user: User, decision: RoleDecision
) -> Membership | None:
    """Make the person's roles match the decision; return the membership left (None:
    no access). The break-glass owner's roles are never changed by the IdP, and the
    organization's last owner is never demoted by it."""
    organization = connection.organization
    membership = (
        Membership.objects.select_for_update().filter(organization=organization, user=user).first()
    )
    if connection.break_glass_user_id == user.pk and membership is not None:
        return membership
    why = {"groups": [None, list(decision.matched_groups)]}
    if membership is None:
        if decision.org_role is None:
            return None
        membership = Membership.objects.create(
            organization=organization, user=user, role=decision.org_role
        )
        audit(
            actor=user,
            verb="sso.member_add",
            target=membership,
            changes={**why, "role": [None, membership.role]},
        )
    elif membership.role != decision.org_role:
        if is_last_owner(membership):
            audit(
                actor=user,
                verb="sso.member_keep_last_owner",
                target=membership,
                changes={**why, "role": [membership.role, decision.org_role]},
            )
        elif decision.org_role is None:
            membership_delete(membership=membership, actor=user, verb="sso.member_remove")
            return None
        else:
            before = membership.role
            membership.role = decision.org_role
            membership.save(update_fields=["role", "updated_at"])
            audit(
                actor=user,
                verb="sso.member_role_change",
                target=membership,
                changes={**why, "role": [before, membership.role]},
            )
    _apply_project_roles(organization, user, decision)
    user.forget_roles()
    return membership


def _apply_project_roles(organization: Organization, user: User, decision: RoleDecision) -> None:
    if not decision.project_roles:
        return
    current = {
        pm.project_id: pm
        for pm in ProjectMembership.objects.select_for_update().filter(
            organization=organization, user=user, project_id__in=list(decision.project_roles)
        )
    }
    for project_id, role in decision.project_roles.items():
        pm = current.get(project_id)
        if role is None and pm is not None:
            audit(
                actor=user,
                verb="sso.project_member_remove",
                target=pm,
                organization=organization,
                changes={"role": [pm.role, None]},
            )
            pm.delete()
        elif role is not None and pm is None:
            pm = ProjectMembership.objects.create(
                organization=organization, project_id=project_id, user=user, role=role
            )
            audit(
                actor=user,
                verb="sso.project_member_add",
                target=pm,
                organization=organization,
                changes={"role": [None, role]},
            )
        elif role is not None and pm is not None and pm.role != role:
            before = pm.role
            pm.role = role
            pm.save(update_fields=["role"])
            audit(
                actor=user,
                verb="sso.project_member_role_change",
                target=pm,
                organization=organization,
                changes={"role": [before, role]},
            )
