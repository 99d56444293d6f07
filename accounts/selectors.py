"""Reads for pages and exports: each takes the viewer and returns a scoped queryset."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import (
    AuditEvent,
    Invitation,
    Membership,
    Organization,
    Project,
    ProjectMembership,
    User,
)


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
