"""Who you are, which tenant you belong to, and what happened: users, organizations,
memberships, projects, invitations, service accounts and API tokens, single sign-on
(connections, group mappings, identities, domain claims), and the audit log."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from typing import Any, ClassVar, Self

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .choices import (
    CliHandoffStatus,
    InvitationStatus,
    OrgRole,
    ProjectRole,
    SsoProtocol,
    TokenStatus,
)
from .permissions import ORG_WIDE_ROLES, roles_granting
from .tokens import (
    CLI_HANDOFF_MINUTES,
    DEFAULT_MAX_TOKEN_DAYS,
    MAX_TOKEN_DAYS_CEILING,
)

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)
RESERVED_SLUGS = frozenset({"new", "admin", "api", "agent", "static", "accounts", "settings"})


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in to Raydeck; the email address is the login."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(
        default=False, help_text="Support staff: may sign in to the admin."
    )
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = self.email.strip().lower()

    @property
    def display_name(self) -> str:
        return self.name or self.email

    # Role lookups are cached on the instance: one query per request, not per check.
    def current_memberships(self) -> list[Membership]:
        """The user's memberships with their organizations, loaded once per request:
        the one query behind role checks, the organization in the URL and the switcher."""
        if "_membership_cache" not in self.__dict__:
            self._membership_cache = list(
                self.memberships.select_related(
                    "organization", "organization__sso_connection"
                ).order_by("organization__name")
            )
        return self._membership_cache

    def membership_in(self, org_slug: str) -> Membership | None:
        return next(
            (m for m in self.current_memberships() if m.organization.slug == org_slug), None
        )

    def org_role(self, organization: Organization) -> str | None:
        known: dict[int, str] = self.__dict__.get("_org_role_cache", {})
        if organization.pk in known:
            return known[organization.pk]
        return next(
            (m.role for m in self.current_memberships() if m.organization_id == organization.pk),
            None,
        )

    def remember_org_role(self, organization: Organization, role: str) -> None:
        """Record the role just read with other rows (an API token's lookup), so checks
        later in the request need no query of their own."""
        self.__dict__.setdefault("_org_role_cache", {})[organization.pk] = role

    def project_role(self, project: Project) -> str | None:
        cache: dict[int, str | None] = self.__dict__.setdefault("_project_role_cache", {})
        if project.pk not in cache:
            cache[project.pk] = (
                ProjectMembership.objects.filter(project=project, user=self)
                .values_list("role", flat=True)
                .first()
            )
        return cache[project.pk]

    def forget_roles(self) -> None:
        """Drop cached roles after a change in the same request."""
        self.__dict__.pop("_membership_cache", None)
        self.__dict__.pop("_org_role_cache", None)
        self.__dict__.pop("_project_role_cache", None)


class OrganizationQuerySet(models.QuerySet["Organization"]):
    def visible_to(self, user: User) -> Self:
        if not user.is_authenticated:
            return self.none()
        if isinstance(user, ServiceAccount):
            return self.filter(pk=user.organization_id) if user.is_active else self.none()
        return self.filter(memberships__user=user)


class Organization(models.Model):
    """A tenant: a company or team that owns projects, clouds and clusters."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    max_token_days = models.PositiveSmallIntegerField(
        "maximum API token lifetime (days)",
        default=DEFAULT_MAX_TOKEN_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_TOKEN_DAYS_CEILING)],
        help_text="New API tokens of this organization expire after at most this many days.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrganizationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def member_org_ids(user: User, roles: frozenset[str] | None = None) -> models.QuerySet:
    """Subquery of the organizations `user` belongs to (optionally with one of `roles`).
    A ServiceAccount (acting through an API token) belongs to its one organization."""
    if isinstance(user, ServiceAccount):
        held = user.is_active and (roles is None or user.role in roles)
        orgs = Organization.objects.filter(pk=user.organization_id if held else None)
        return orgs.values("pk")
    memberships = Membership.objects.filter(user=user)
    if roles is not None:
        memberships = memberships.filter(role__in=roles)
    return memberships.values("organization_id")


class OrgOwnedQuerySet(models.QuerySet):
    """Rows that carry `organization`: visible to the members of that organization."""

    def visible_to(self, user: User, organization: Organization | None = None) -> Self:
        if not user.is_authenticated:
            return self.none()
        rows = self.filter(organization_id__in=member_org_ids(user))
        return rows if organization is None else rows.filter(organization=organization)


class Membership(models.Model):
    """A user's role in one organization."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=OrgRole.choices, default=OrgRole.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["organization", "user__email"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="one_membership_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class ProjectQuerySet(models.QuerySet["Project"]):
    def visible_to(self, user: User, organization: Organization | None = None) -> Self:
        """Owners and admins see every project of their organizations; everyone else
        sees the projects they were added to.

        With `organization`, the user's role there (cached on the user) picks the plain
        query for it, which the (organization, name) index serves: list pages stay fast
        with thousands of projects.
        """
        if not user.is_authenticated:
            return self.none()
        mine = project_ids_of(user)
        if organization is not None:
            role = user.org_role(organization)
            if role is None:
                return self.none()
            in_org = self.filter(organization=organization)
            return in_org if role in ORG_WIDE_ROLES else in_org.filter(pk__in=mine)
        return self.filter(
            Q(organization_id__in=member_org_ids(user, ORG_WIDE_ROLES))
            | Q(pk__in=mine, organization_id__in=member_org_ids(user))
        )


def project_ids_of(user: User) -> models.QuerySet:
    """Subquery of the projects `user` was added to (service accounts join none)."""
    if isinstance(user, ServiceAccount):
        return ProjectMembership.objects.none().values("project_id")
    return ProjectMembership.objects.filter(user=user).values("project_id")


class Project(models.Model):
    """A group of clusters and workloads inside an organization, with its own members."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="projects"
    )
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, validators=[slug_validator])
    description = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="project_slug_per_org")
        ]
        indexes = [models.Index(fields=["organization", "name"])]

    def __str__(self) -> str:
        return self.name


class ProjectOwnedQuerySet(models.QuerySet):
    """Rows that belong to a project: visible to whoever sees the project. Rows with no
    project (where the model allows it) belong to the whole organization."""

    def visible_to(self, user: User, organization: Organization | None = None) -> Self:
        if not user.is_authenticated:
            return self.none()
        projects = Project.objects.visible_to(user, organization).values("pk")
        rows = self.filter(organization_id__in=member_org_ids(user))
        if organization is not None:
            rows = rows.filter(organization=organization)
        return rows.filter(Q(project_id__in=projects) | Q(project_id=None))


class ProjectMembership(models.Model):
    """A user's role in one project (org owners and admins need none)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="project_memberships")
    role = models.CharField(max_length=16, choices=ProjectRole.choices, default=ProjectRole.WRITER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["user__email"]
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


def _invitation_expiry() -> Any:
    return timezone.now() + timedelta(days=settings.RAYDECK_INVITATION_DAYS)


class InvitationQuerySet(OrgOwnedQuerySet):
    def pending(self) -> Self:
        return self.filter(accepted_at=None, revoked_at=None, expires_at__gt=timezone.now())


class Invitation(models.Model):
    """An offer to join an organization (and optionally a project), sent by email."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=OrgRole.choices, default=OrgRole.MEMBER)
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="invitations"
    )
    project_role = models.CharField(
        max_length=16, choices=ProjectRole.choices, blank=True, default=""
    )
    # Part of the signed link; replaced on resend so that older links stop working.
    nonce = models.CharField(max_length=64, default=secrets.token_urlsafe, editable=False)
    invited_by = models.ForeignKey(
        User, null=True, on_delete=models.SET_NULL, related_name="invitations_sent"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(default=_invitation_expiry)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    # Not a column: the signed accept link, set by pages that list invitations for
    # their invitee (see invitation_token).
    token: str

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "email"],
                condition=Q(accepted_at=None, revoked_at=None),
                name="one_open_invitation_per_email",
            )
        ]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.organization}"

    @property
    def status(self) -> InvitationStatus:
        if self.accepted_at:
            return InvitationStatus.ACCEPTED
        if self.revoked_at:
            return InvitationStatus.REVOKED
        if self.expires_at <= timezone.now():
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING

    @property
    def is_open(self) -> bool:
        return self.status == InvitationStatus.PENDING


SERVICE_ACCOUNT_ROLES = [c for c in OrgRole.choices if c[0] != OrgRole.OWNER]


class ServiceAccount(models.Model):
    """An identity of an organization for automation: it has an organization role (never
    owner) and API tokens, and no password, email or project roles."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="service_accounts"
    )
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=16, choices=SERVICE_ACCOUNT_ROLES, default=OrgRole.MEMBER)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    disabled_at = models.DateTimeField(null=True, blank=True)

    objects = OrgOwnedQuerySet.as_manager()

    # Seen by accounts.permissions.has_perm as a Principal, like a User.
    is_authenticated = True

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=Q(disabled_at=None),
                name="service_account_name_per_org",
                violation_error_message="A service account with this name already exists.",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def display_name(self) -> str:
        """How events and pages name it beside people."""
        return f"Service account {self.name}"

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    def org_role(self, organization: Organization) -> str | None:
        return self.role if organization.pk == self.organization_id else None

    def project_role(self, project: Project) -> str | None:
        return None


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def visible_to(self, user: User, organization: Organization | None = None) -> Self:
        """Everyone sees their own tokens; owners and admins (token.manage_all) see every
        token of their organization, service accounts' included."""
        if not user.is_authenticated:
            return self.none()
        if organization is not None:
            role = user.org_role(organization)
            if role is None:
                return self.none()
            rows = self.filter(organization=organization)
            if role in roles_granting("token.manage_all"):
                return rows
            if isinstance(user, ServiceAccount):  # through its own token: its own tokens
                return rows.filter(service_account=user)
            return rows.filter(user=user)
        return self.filter(
            Q(organization_id__in=member_org_ids(user, roles_granting("token.manage_all")))
            | Q(user=user, organization_id__in=member_org_ids(user))
        )

    def active(self) -> Self:
        return self.filter(revoked_at=None, expires_at__gt=timezone.now())


class ApiToken(models.Model):
    """A secret for the JSON API and the CLI, acting inside one organization as a person
    or as a service account; only its SHA-256 is stored."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_tokens"
    )
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens"
    )
    service_account = models.ForeignKey(
        ServiceAccount, null=True, blank=True, on_delete=models.CASCADE, related_name="tokens"
    )
    name = models.CharField(max_length=100)
    # The first characters of the secret ("rdk_" and 6 more), to tell tokens apart.
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    read_only = models.BooleanField(default=False)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, service_account__isnull=True)
                | Q(user__isnull=True, service_account__isnull=False),
                name="api_token_belongs_to_a_user_or_a_service_account",
            )
        ]
        indexes = [models.Index(fields=["organization", "user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def status(self) -> TokenStatus:
        if self.revoked_at:
            return TokenStatus.REVOKED
        if self.expires_at <= timezone.now():
            return TokenStatus.EXPIRED
        return TokenStatus.ACTIVE

    @property
    def is_active(self) -> bool:
        return self.status == TokenStatus.ACTIVE

    @property
    def holder(self) -> User | ServiceAccount | None:
        return self.user if self.user_id else self.service_account


def _cli_handoff_expiry() -> Any:
    return timezone.now() + timedelta(minutes=CLI_HANDOFF_MINUTES)


class CliHandoff(models.Model):
    """A `raydeck login` in progress: the CLI holds the poll token, the person types or
    follows the one-time code in the browser and confirms; the CLI then collects an API
    token once. Neither the poll token nor the API token is stored, only their hashes."""

    code = models.CharField(max_length=16, unique=True)
    poll_token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The hash and display prefix of the API token this hand-off will deliver (see
    # accounts.tokens.secret_for_poll_token).
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=16)
    # Where the CLI asked from, shown to the person who confirms.
    requested_ip = models.GenericIPAddressField(null=True, blank=True)
    requested_user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(default=_cli_handoff_expiry, db_index=True)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    token = models.ForeignKey(
        ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)
    denied_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"CLI sign-in {self.code}"

    @property
    def status(self) -> CliHandoffStatus:
        if self.delivered_at:
            return CliHandoffStatus.DELIVERED
        if self.denied_at:
            return CliHandoffStatus.DENIED
        if self.expires_at <= timezone.now():
            return CliHandoffStatus.EXPIRED
        if self.confirmed_at:
            return CliHandoffStatus.CONFIRMED
        return CliHandoffStatus.PENDING


class AuditEvent(models.Model):
    """One recorded action: who did what to which object, from where, and what changed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="audit_events",
        help_text="Empty for events that belong to a person, not a tenant (sign-ins).",
    )
    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    # Kept as text so the trail survives the actor's deletion.
    actor_email = models.CharField(max_length=254, blank=True)
    verb = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    # The request (or the task it enqueued) that made the change, as in the logs.
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["organization", "verb", "-created_at"]),
            models.Index(fields=["actor", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.actor_email or 'system'} {self.verb} {self.target_repr}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "time": self.created_at.isoformat(),
            "organization": self.organization.slug if self.organization is not None else None,
            "actor": self.actor_email or None,
            "verb": self.verb,
            "target": {"type": self.target_type, "id": self.target_id, "repr": self.target_repr},
            "changes": self.changes,
            "ip": self.ip,
            "user_agent": self.user_agent,
        }


class IdempotencyKey(models.Model):
    """The first successful answer to a create sent through the JSON API with an
    `Idempotency-Key` header: a retry by the same token with the same key and body gets
    this answer again instead of creating twice (see accounts/api_idempotency.py)."""

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of the method, path and body: the same key with another request is refused.
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response_body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["token", "key"], name="one_idempotency_key_per_token")
        ]
        indexes = [models.Index(fields=["token", "created_at"])]

    def __str__(self) -> str:
        return f"{self.key} ({self.token_id})"


class AccessRevocation(models.Model):
    """Credentials for an organization's resources that were issued to a person before
    `revoked_at` no longer count (set when their membership or a role of theirs there
    changes). Read by the clusters' access gateways through their heartbeats."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    revoked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="one_revocation_per_user")
        ]
        indexes = [models.Index(fields=["organization", "revoked_at"])]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.organization_id} before {self.revoked_at}"


# --- Single sign-on -------------------------------------------------------------------
#
# How the pieces fit (both protocols):
#   SsoConnection   one per organization: its IdP, bound to exactly one allauth SocialApp
#                   (SAML or OIDC), who gets in and with which role, enforcement.
#   SsoGroupMapping IdP group -> organization role (and optionally a project role),
#                   applied at every sign-in.
#   SsoIdentity     (connection, subject) -> User: the only way an IdP reaches a user.
#   DomainClaim     an email domain the organization proved it owns (DNS TXT): routes
#                   "Sign in with SSO" and is the only reason an IdP's email may be linked
#                   to an account that already exists.
# Protocol views (accounts/sso/saml.py, the OIDC callback) verify the response, then
# hand (connection, subject, email, name, groups) to accounts.sso.services.sso_sign_in,
# which does just-in-time membership, group mapping and audit for both.


class SsoConnectionQuerySet(OrgOwnedQuerySet):
    def for_social_app(self, app: Any) -> Self:
        """The connection bound to allauth's `app` (the check every login makes: an app
        without a connection, or with a disabled one, lets nobody in)."""
        return self.filter(social_app=app).select_related("organization", "social_app")


class SsoConnection(models.Model):
    """An organization's identity provider (SAML or OIDC): at most one per organization,
    bound to exactly one allauth SocialApp, plus who gets in with which role.

    - `social_app` holds the protocol settings in allauth's shape. SAML: provider "saml",
      client_id = the organization's slug (the /accounts/saml/<slug>/... URLs),
      provider_id "saml-<slug>", settings {"idp": {...}, "advanced": {...}}. OIDC:
      provider "openid_connect", provider_id "oidc-<slug>", client_id/secret of the
      IdP's client. Every login looks the connection up from the app it came through
      (`SsoConnection.objects.for_social_app(app)`) and refuses when there is none,
      it is disabled, or it belongs to another organization than the URL says.
    - `default_role` is the organization role of anyone the IdP lets in who is in no
      mapped group; empty means such people get no access (and lose it at their next
      sign-in). Roles are set by the IdP at every sign-in (see SsoGroupMapping).
    - `groups_attribute`: the SAML attribute / OIDC claim that lists the person's groups.
    - `enforce_sso`: members may use this organization only from a session signed in
      through this connection; `break_glass_user` (an owner) may still use a password.
    """

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="sso_connection"
    )
    protocol = models.CharField(max_length=8, choices=SsoProtocol.choices)
    social_app = models.OneToOneField(
        "socialaccount.SocialApp", on_delete=models.PROTECT, related_name="raydeck_connection"
    )
    enabled = models.BooleanField(
        default=False, help_text="People can sign in through this identity provider."
    )
    default_role = models.CharField(
        max_length=16,
        choices=[c for c in OrgRole.choices if c[0] != OrgRole.OWNER],
        blank=True,
        default=OrgRole.MEMBER,
        help_text="The role of people in no mapped group. Empty: they get no access.",
    )
    groups_attribute = models.CharField(
        "groups attribute or claim",
        max_length=200,
        blank=True,
        default="groups",
        help_text="The SAML attribute or OIDC claim that lists the person's groups.",
    )
    email_attribute = models.CharField(
        max_length=200,
        blank=True,
        help_text="The SAML attribute holding the email (empty: common names, then the "
        "NameID when it is an email address). OIDC uses the email claim.",
    )
    name_attribute = models.CharField(
        max_length=200,
        blank=True,
        help_text="The SAML attribute holding the display name (empty: common names).",
    )
    enforce_sso = models.BooleanField(
        "require single sign-on",
        default=False,
        help_text="Members cannot use a password for this organization.",
    )
    break_glass_user = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="One owner who may still sign in with a password when SSO is required.",
    )
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SsoConnectionQuerySet.as_manager()

    class Meta:
        ordering = ["organization"]
        constraints = [
            models.CheckConstraint(
                condition=Q(enforce_sso=False) | Q(enabled=True),
                name="sso_enforced_only_when_enabled",
                violation_error_message="Single sign-on can only be required while it is on.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_protocol_display()} for {self.organization}"


class SsoGroupMapping(models.Model):
    """IdP group -> organization role, and optionally a role in one project.

    Applied at every sign-in through the connection: the person's organization role is
    the highest `org_role` among their mapped groups (else the connection's default
    role); in each project named by any mapping of the connection, their project role
    is the highest mapped one, or none (projects no mapping names are left alone)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(
        SsoConnection, on_delete=models.CASCADE, related_name="group_mappings"
    )
    idp_group = models.CharField("IdP group", max_length=255)
    org_role = models.CharField(max_length=16, choices=OrgRole.choices, default=OrgRole.MEMBER)
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    project_role = models.CharField(
        max_length=16, choices=ProjectRole.choices, blank=True, default=""
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["idp_group", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "idp_group", "project"],
                name="one_mapping_per_group_and_project",
                nulls_distinct=False,
                violation_error_message="This group already has a mapping for this project.",
            ),
            models.CheckConstraint(
                condition=Q(project__isnull=True, project_role="")
                | Q(project__isnull=False) & ~Q(project_role=""),
                name="sso_mapping_project_role_with_project",
                violation_error_message="Give a project role together with its project.",
            ),
        ]

    def __str__(self) -> str:
        target = f", {self.project}: {self.project_role}" if self.project_id else ""
        return f"{self.idp_group} → {self.org_role}{target}"


class SsoIdentity(models.Model):
    """A person as one connection's IdP knows them: (connection, subject) -> user.

    The subject is the SAML NameID (or subject-id attribute) or the OIDC `sub`. The same
    subject from two organizations' IdPs is two identities, and two users unless a
    verified domain linked both to one existing account."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(
        SsoConnection, on_delete=models.CASCADE, related_name="identities"
    )
    subject = models.CharField(max_length=512)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="sso_identities")
    # What the IdP said last time, for the members page and support.
    email = models.EmailField(blank=True)
    groups = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    objects = OrgOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-last_login_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "subject"], name="one_identity_per_subject"
            ),
            models.UniqueConstraint(
                fields=["connection", "user"], name="one_identity_per_user_and_connection"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.organization}"


def _domain_verification_token() -> str:
    return f"raydeck-verification={secrets.token_urlsafe(24)}"


class DomainClaimQuerySet(OrgOwnedQuerySet):
    def verified(self) -> Self:
        return self.exclude(verified_at=None)


class DomainClaim(models.Model):
    """An email domain an organization says it owns, proven by a DNS TXT record holding
    `verification_token` at the domain. Only a verified claim routes "Sign in with SSO"
    for the domain, and only a verified claim lets the organization's IdP sign in to
    an account that already exists with an address at the domain. One organization at
    most holds a verified claim on a domain."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="domain_claims"
    )
    domain = models.CharField(max_length=253)
    verification_token = models.CharField(
        max_length=80, default=_domain_verification_token, editable=False
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainClaimQuerySet.as_manager()

    class Meta:
        ordering = ["domain"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "domain"], name="one_claim_per_org_and_domain"
            ),
            models.UniqueConstraint(
                fields=["domain"],
                condition=Q(verified_at__isnull=False),
                name="one_verified_claim_per_domain",
                violation_error_message="Another organization has verified this domain.",
            ),
        ]

    def __str__(self) -> str:
        return self.domain

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None
