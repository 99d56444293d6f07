"""Reads of the clouds app, each scoped to the viewer."""

from __future__ import annotations

from django.db.models import F, Prefetch, Q, QuerySet

from accounts.models import Organization, Project, User

from .models import Cloud, CloudVerification, DefaultCloud


def cloud_list(*, organization: Organization, viewer: User) -> QuerySet[Cloud]:
    return Cloud.objects.visible_to(viewer).filter(organization=organization).order_by("name")


def cloud_verifications(*, cloud: Cloud, limit: int = 10) -> list[CloudVerification]:
    """The latest verifications with their checks, newest first (two queries)."""
    return list(
        cloud.verifications.select_related("requested_by")
        .prefetch_related(Prefetch("checks"))
        .order_by("-started_at", "-pk")[:limit]
    )


def default_cloud(*, organization: Organization, project: Project | None = None) -> Cloud | None:
    """The cloud preferred for requests of `project` (None: the organization's own
    preference only), set by services.default_cloud_set."""
    row = DefaultCloud.objects.filter(organization=organization, project=project)
    found = row.select_related("cloud").first()
    return found.cloud if found else None


def preferred_cloud(*, project: Project) -> Cloud | None:
    """The cloud a request of `project` that names none prefers: the project's
    preference, else its organization's, if the project may launch there."""
    rows = (
        DefaultCloud.objects.filter(organization_id=project.organization_id)
        .filter(Q(project=project) | Q(project__isnull=True))
        .select_related("cloud")
        .order_by(F("project").asc(nulls_last=True))
    )
    for row in rows:
        if row.cloud.open_to(project):
            return row.cloud
    return None
