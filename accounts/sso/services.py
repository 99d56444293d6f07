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

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from ..audit import audit, changes_between, snapshot
from ..choices import OrgRole, ProjectRole, SsoProtocol
from ..models import (
    DomainClaim,
    Membership,
    Organization,
    Project,
    ProjectMembership,
    SsoConnection,
    SsoGroupMapping,
    SsoIdentity,
    User,
)
from ..permissions import require
from ..services.members import is_last_owner, membership_delete
from .oidc.documents import forget_idp_documents
from .saml_idp import SAML_PROVIDER, saml_app_settings

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
    Refuses an app no connection owns and (given the slug in the URL) a connection of
    another organization. A switched-off connection is still returned, for the owners'
    "test connection": finish_sso_sign_in refuses real sign-ins through it."""
    connection = SsoConnection.objects.for_social_app(app).first()
    if connection is None:
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


@transaction.atomic(durable=True)
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


# --- Settings (the SSO page; owners only) ---------------------------------------------


@dataclass(frozen=True)
class SamlIdp:
    """An IdP as the SAML settings form describes it (already validated)."""

    entity_id: str
    sso_url: str
    x509cert: str  # base64 DER, one line
    metadata_url: str = ""


SAML_CONNECTION_FIELDS = ["email_attribute", "name_attribute", "groups_attribute"]


@transaction.atomic(durable=True)
def saml_connection_save(
    *,
    organization: Organization,
    actor: User,
    idp: SamlIdp,
    email_attribute: str = "",
    name_attribute: str = "",
    groups_attribute: str = "groups",
) -> SsoConnection:
    """Create the organization's SAML connection (off until an owner switches it on),
    or change its IdP. An organization with an OIDC connection must remove it first."""
    from allauth.socialaccount.models import SocialApp
    from django.contrib.sites.models import Site

    require(actor, "sso.manage", organization)
    settings = saml_app_settings(
        entity_id=idp.entity_id,
        sso_url=idp.sso_url,
        x509cert=idp.x509cert,
        metadata_url=idp.metadata_url,
    )
    connection = (
        SsoConnection.objects.select_for_update()
        .select_related("social_app")
        .filter(organization=organization)
        .first()
    )
    if connection is not None and connection.protocol != SsoProtocol.SAML:
        raise ValidationError("Remove the OpenID Connect connection before adding SAML.")
    if connection is None:
        app = SocialApp.objects.create(
            provider=SAML_PROVIDER,
            # State stashed for one organization's sign-in is only found by the same one.
            provider_id=f"saml-{organization.slug}",
            name=organization.name,
            client_id=organization.slug,
            settings=settings,
        )
        connection = SsoConnection(
            organization=organization,
            protocol=SsoProtocol.SAML,
            social_app=app,
            created_by=actor,
        )
        before: dict[str, Any] = {}
    else:
        app = connection.social_app
        before = {**snapshot(connection, SAML_CONNECTION_FIELDS), **_idp_snapshot(app.settings)}
        app.settings = settings
        app.save(update_fields=["settings"])
    # allauth finds apps of this site only.
    app.sites.add(Site.objects.get_current())
    connection.email_attribute = email_attribute.strip()
    connection.name_attribute = name_attribute.strip()
    connection.groups_attribute = groups_attribute.strip()
    connection.full_clean()
    connection.save()
    after = {**snapshot(connection, SAML_CONNECTION_FIELDS), **_idp_snapshot(app.settings)}
    audit(
        actor=actor,
        verb="sso.connection_create" if not before else "sso.connection_update",
        target=connection,
        changes=changes_between(before, after),
    )
    return connection


def _idp_snapshot(app_settings: dict) -> dict[str, Any]:
    idp = app_settings.get("idp", {})
    return {
        "idp_entity_id": idp.get("entity_id"),
        "idp_sso_url": idp.get("sso_url"),
        "idp_certificate_sha256": cert_fingerprint(idp.get("x509cert", "")),
        "idp_metadata_url": app_settings.get("raydeck_metadata_url") or None,
    }


def cert_fingerprint(cert_b64: str) -> str | None:
    if not cert_b64:
        return None
    digest = hashlib.sha256(base64.b64decode(cert_b64)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


ACCESS_FIELDS = ["enabled", "default_role", "enforce_sso", "break_glass_user"]


@transaction.atomic(durable=True)
def sso_connection_set_access(
    *,
    connection: SsoConnection,
    actor: User,
    enabled: bool,
    default_role: str,
    enforce_sso: bool,
    break_glass_user: User | None,
    actor_signed_in_through: bool,
) -> SsoConnection:
    """Who gets in: on/off, the default role, and whether SSO is required (with the
    one owner who may still use a password). Requiring SSO from a session that would
    lose the organization at once is refused: sign in through the IdP first, or name
    yourself the break-glass owner."""
    organization = connection.organization
    require(actor, "sso.manage", organization)
    connection = SsoConnection.objects.select_for_update().get(pk=connection.pk)
    if break_glass_user is not None and (
        Membership.objects.filter(
            organization=organization, user=break_glass_user, role=OrgRole.OWNER
        ).first()
        is None
    ):
        raise ValidationError({"break_glass_user": "Choose an owner of this organization."})
    if enforce_sso and not enabled:
        raise ValidationError({"enforce_sso": "Switch single sign-on on to require it."})
    if (
        enforce_sso
        and not actor_signed_in_through
        and (break_glass_user is None or break_glass_user.pk != actor.pk)
    ):
        raise ValidationError(
            {
                "enforce_sso": "You would lose access yourself: sign in with single sign-on "
                "first (use “Test connection”, then sign in), or make yourself the "
                "break-glass owner."
            }
        )
    before = snapshot(connection, ACCESS_FIELDS)
    connection.enabled = enabled
    connection.default_role = default_role
    connection.enforce_sso = enforce_sso
    connection.break_glass_user = break_glass_user
    connection.full_clean()
    connection.save(update_fields=[*ACCESS_FIELDS, "updated_at"])
    changes = changes_between(before, snapshot(connection, ACCESS_FIELDS))
    if changes:
        audit(actor=actor, verb="sso.access_update", target=connection, changes=changes)
    return connection


@transaction.atomic(durable=True)
def sso_group_mapping_create(
    *,
    connection: SsoConnection,
    actor: User,
    idp_group: str,
    org_role: str,
    project: Project | None = None,
    project_role: str = "",
) -> SsoGroupMapping:
    organization = connection.organization
    require(actor, "sso.manage", organization)
    if project is not None and project.organization_id != organization.pk:
        raise ValidationError({"project": "Choose a project of this organization."})
    mapping = SsoGroupMapping(
        organization=organization,
        connection=connection,
        idp_group=idp_group.strip(),
        org_role=org_role,
        project=project,
        project_role=project_role if project is not None else "",
    )
    if project is not None and not mapping.project_role:
        mapping.project_role = ProjectRole.WRITER
    mapping.full_clean()
    mapping.save()
    audit(
        actor=actor,
        verb="sso.mapping_create",
        target=mapping,
        changes={
            "idp_group": [None, mapping.idp_group],
            "org_role": [None, mapping.org_role],
            "project": [None, str(project) if project else None],
            "project_role": [None, mapping.project_role or None],
        },
    )
    return mapping


@transaction.atomic(durable=True)
def sso_group_mapping_delete(*, mapping: SsoGroupMapping, actor: User) -> None:
    """Takes effect at each person's next sign-in, like every mapping change."""
    require(actor, "sso.manage", mapping.organization)
    audit(
        actor=actor,
        verb="sso.mapping_delete",
        target=mapping,
        organization=mapping.organization,
        changes={"idp_group": [mapping.idp_group, None], "org_role": [mapping.org_role, None]},
    )
    mapping.delete()


# --- Removing the connection --------------------------------------------------------------


@dataclass(frozen=True)
class RemovalImpact:
    """What removing an organization's connection changes, for the confirmation page
    (and the audit event)."""

    identities: int  # SsoIdentity links that go
    mappings: int  # group mappings that go
    members_without_password: int  # members who must set a password by email
    verified_domains: int  # domain claims that stay


def members_without_password(organization: Organization) -> QuerySet[User]:
    """The organization's members who cannot sign in with a password (people the IdP
    created never had one). They can still set one through "Forgot password"."""
    return User.objects.filter(memberships__organization=organization, is_active=True).filter(
        Q(password__startswith=UNUSABLE_PASSWORD_PREFIX) | Q(password="")
    )


def sso_connection_removal_impact(connection: SsoConnection) -> RemovalImpact:
    organization = connection.organization
    return RemovalImpact(
        identities=SsoIdentity.objects.filter(connection=connection).count(),
        mappings=SsoGroupMapping.objects.filter(connection=connection).count(),
        members_without_password=members_without_password(organization).count(),
        verified_domains=DomainClaim.objects.verified().filter(organization=organization).count(),
    )


ENFORCED_REFUSAL = (
    "Single sign-on is required for this organization. Switch “Require single sign-on” "
    "off under “Who gets in” first, then remove the connection."
)
ACTOR_CANNOT_SIGN_IN = (
    "You have no password yourself, so you could not sign in once single sign-on is "
    "gone. Set a password for your account first (Account → Password), then remove "
    "the connection."
)


@transaction.atomic(durable=True)
def sso_connection_remove(*, connection: SsoConnection, actor: User) -> RemovalImpact:
    """Remove the organization's SSO connection: its allauth app, its group mappings
    and every SsoIdentity link through it. Members keep their accounts, memberships and
    roles, and sign in with a password (or another method) from now on; verified domain
    claims stay (they do nothing without a connection, and let a new one link the same
    accounts at once).

    Refused (ValidationError, nothing changed) while SSO is required: switching that off
    is its own, deliberate step, because it lets members back in with a password. Also
    refused when the acting owner has no usable password, so the organization never
    loses the one owner who is known to be able to sign in after this."""
    from allauth.socialaccount.models import SocialApp

    organization = connection.organization
    require(actor, "sso.manage", organization)
    connection = (
        SsoConnection.objects.select_for_update()
        .select_related("social_app", "organization")
        .get(pk=connection.pk)
    )
    if connection.enforce_sso:
        raise ValidationError(ENFORCED_REFUSAL)
    actor = User.objects.get(pk=actor.pk)  # the password as it is now, not as the session saw it
    if not actor.has_usable_password():
        raise ValidationError(ACTOR_CANNOT_SIGN_IN)
    impact = sso_connection_removal_impact(connection)
    without_password = list(members_without_password(organization).values_list("pk", flat=True))
    app = connection.social_app
    audit(
        actor=actor,
        verb="sso.connection_remove",
        target=connection,
        organization=organization,
        changes={
            "protocol": [connection.protocol, None],
            "enabled": [connection.enabled, None],
            "idp": [_idp_name(app), None],
            "identities": [impact.identities, 0],
            "group_mappings": [impact.mappings, 0],
            "members_without_password": [impact.members_without_password, None],
            "verified_domains_kept": [impact.verified_domains, impact.verified_domains],
        },
    )
    SsoGroupMapping.objects.filter(connection=connection).delete()
    SsoIdentity.objects.filter(connection=connection).delete()
    connection.delete()
    SocialApp.objects.filter(pk=app.pk).delete()
    if without_password:
        from ..tasks import send_sso_removed_emails

        send_sso_removed_emails.delay_on_commit(
            organization_id=organization.pk, user_ids=without_password
        )
    if connection.protocol == SsoProtocol.OIDC:
        issuer = app.settings.get("server_url", "")
        transaction.on_commit(lambda: forget_idp_documents(app_id=app.pk, issuer=issuer))
    return impact


def sso_removal_notify(*, organization_id: int, user_ids: list[int]) -> int:
    """Email each of `user_ids` who is still a member of the organization and still has
    no password how to set one (after `sso_connection_remove`). Returns how many."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return 0
    from ..emails import send_sso_removed_email

    people = members_without_password(organization).filter(pk__in=user_ids).order_by("pk")
    sent = 0
    for user in people:
        send_sso_removed_email(user=user, organization=organization)
        sent += 1
    return sent


def _idp_name(app: Any) -> str | None:
    """The IdP as the audit log names it: the SAML entity id or the OIDC issuer."""
    return app.settings.get("idp", {}).get("entity_id") or app.settings.get("server_url") or None


@transaction.atomic
def sso_identities_release(*, user: User, email: str) -> int:
    """The person just proved they control `email` (a password reset or an email
    confirmation): identities an IdP attached to their account without its
    organization having verified the email's domain are dropped, so that IdP can no
    longer sign in as them. (Otherwise an IdP could create an account for someone
    else's address before they sign up, and keep a way into it once they adopt it.)"""
    if email.strip().lower() != user.email.lower():
        return 0  # another address of theirs proves nothing about this one
    released = 0
    for identity in SsoIdentity.objects.select_related("organization").filter(user=user):
        if domain_verified_by(identity.organization, user.email):
            continue
        audit(
            actor=user,
            verb="sso.identity_release",
            target=identity,
            organization=identity.organization,
            changes={"subject": [identity.subject, None], "reason": [None, "email_proven"]},
        )
        identity.delete()
        released += 1
    return released
