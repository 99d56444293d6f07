"""Reads for pages and exports: each takes the viewer and returns a scoped queryset."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from .choices import TokenStatus
from .models import (
    ApiToken,
    AuditEvent,
    CliHandoff,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMembership,
    ServiceAccount,
    User,
)
from .permissions import (
    PROJECT_READ,
    PROJECT_ROLE_PERMISSIONS,
    READ_ONLY_ORG_ROLES,
    roles_granting,
)
from .tokens import normalize_cli_code


def membership_list(*, organization: Organization, viewer: User) -> QuerySet[Membership]:
    return (
        Membership.objects.visible_to(viewer)
        .filter(organization=organization)
        .select_related("user")
        .order_by("user__email")
    )


def invitation_list(*, organization: Organization, viewer: User) -> QuerySet[Invitation]:
    return (
        Invitation.objects.visible_to(viewer)
        .filter(organization=organization, accepted_at=None, revoked_at=None)
        .select_related("project", "invited_by")
        .order_by("-created_at")
    )


def invitations_for(user: User) -> QuerySet[Invitation]:
    """Open invitations addressed to one of the user's verified email addresses."""
    from allauth.account.models import EmailAddress

    emails = EmailAddress.objects.filter(user=user, verified=True).values("email")
    return (
        Invitation.objects.pending()
        .filter(email__in=emails)
        .exclude(organization__memberships__user=user)
        .select_related("organization", "project")
    )


def project_list(*, organization: Organization, viewer: User, query: str = "") -> QuerySet[Project]:
    """Projects the viewer may see, each with its member count (a correlated subquery,
    so only the rows of the page are counted)."""
    projects = Project.objects.visible_to(viewer, organization)
    if query:
        projects = projects.filter(Q(name__icontains=query) | Q(slug__icontains=query))
    member_count = (
        ProjectMembership.objects.filter(project=OuterRef("pk"))
        .order_by()
        .values("project")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return projects.annotate(
        member_count=Coalesce(Subquery(member_count, output_field=IntegerField()), 0)
    ).order_by("name", "pk")


def project_members(*, project: Project, viewer: User) -> QuerySet[ProjectMembership]:
    return (
        ProjectMembership.objects.visible_to(viewer)
        .filter(project=project)
        .select_related("user")
        .order_by("user__email")
    )


def people_holding(*, perm: str, project: Project) -> QuerySet[User]:
    """The active people who hold `perm` on `project`, by the role table (the same answer
    as `has_perm` for each of them): for what a cluster must know without asking, such
    as whose SSH keys a workspace's head accepts."""
    by_org_role = Q(
        memberships__organization_id=project.organization_id,
        memberships__role__in=roles_granting(perm),
    )
    project_roles = [r for r, perms in PROJECT_ROLE_PERMISSIONS.items() if perm in perms]
    members = Membership.objects.filter(
        organization_id=project.organization_id, user=OuterRef("pk")
    )
    if perm not in PROJECT_READ:  # viewers never write, whatever their project role
        members = members.exclude(role__in=READ_ONLY_ORG_ROLES)
    by_project_role = Q(
        project_memberships__project=project, project_memberships__role__in=project_roles
    ) & Q(Exists(members))
    return User.objects.filter(by_org_role | by_project_role, is_active=True).distinct()


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def audit_event_list(
    *, organization: Organization, viewer: User, filters: dict[str, Any] | None = None
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.visible_to(viewer).filter(organization=organization)
    filters = filters or {}
    if filters.get("actor"):
        events = events.filter(actor_email__icontains=filters["actor"])
    if filters.get("verb"):
        events = events.filter(verb__startswith=filters["verb"])
    if filters.get("since"):
        events = events.filter(created_at__gte=_day_start(filters["since"]))
    if filters.get("until"):
        events = events.filter(created_at__lt=_day_start(filters["until"]) + timedelta(days=1))
    return events.order_by("-created_at", "-pk")


def security_events_of(user: User, limit: int = 10) -> QuerySet[AuditEvent]:
    """The user's own recent sign-ins and account changes (events of no organization)."""
    return AuditEvent.objects.filter(
        Q(actor=user) | Q(actor_email=user.email), organization=None
    ).order_by("-created_at")[:limit]


# --- API tokens and service accounts ----------------------------------------------------


def token_list(
    *,
    organization: Organization,
    viewer: User,
    mine: bool = False,
    query: str = "",
    status: str = "",
    kind: str = "",
) -> QuerySet[ApiToken]:
    """Tokens of `organization` the viewer may see (their own; everyone's for owners and
    admins), newest first. `mine` keeps the viewer's personal tokens only; `query`
    matches the name, the prefix, the person's email or the service account's name;
    `kind` is "personal" or "service"."""
    tokens = ApiToken.objects.visible_to(viewer, organization)
    if mine:
        tokens = tokens.filter(user=viewer)
    if query:
        tokens = tokens.filter(
            Q(name__icontains=query)
            | Q(prefix__startswith=query)
            | Q(user__email__icontains=query)
            | Q(service_account__name__icontains=query)
        )
    now = timezone.now()
    if status == TokenStatus.ACTIVE:
        tokens = tokens.filter(revoked_at=None, expires_at__gt=now)
    elif status == TokenStatus.EXPIRED:
        tokens = tokens.filter(revoked_at=None, expires_at__lte=now)
    elif status == TokenStatus.REVOKED:
        tokens = tokens.exclude(revoked_at=None)
    if kind == "personal":
        tokens = tokens.filter(service_account=None)
    elif kind == "service":
        tokens = tokens.exclude(service_account=None)
    return tokens.select_related("user", "service_account", "created_by").order_by(
        "-created_at", "-pk"
    )


def service_account_list(*, organization: Organization, viewer: User) -> QuerySet[ServiceAccount]:
    """Service accounts of the organization, enabled first, each with its number of
    active tokens."""
    active_tokens = (
        ApiToken.objects.active()
        .filter(service_account=OuterRef("pk"))
        .order_by()
        .values("service_account")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        ServiceAccount.objects.visible_to(viewer)
        .filter(organization=organization)
        .select_related("created_by")
        .annotate(
            active_token_count=Coalesce(Subquery(active_tokens, output_field=IntegerField()), 0)
        )
        .order_by(F("disabled_at").asc(nulls_first=True), "name", "pk")
    )


def cli_handoff_by_code(code: str) -> CliHandoff | None:
    """The hand-off a person's one-time code names (in any state), or None."""
    code = normalize_cli_code(code)
    if not code:
        return None
    return CliHandoff.objects.filter(code=code).first()
