"""Reads of the clouds app, each scoped to the viewer."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from accounts.models import Organization, User

from .models import Cloud, CloudVerification


def cloud_list(*, organization: Organization, viewer: User) -> QuerySet[Cloud]:
    return Cloud.objects.visible_to(viewer).filter(organization=organization).order_by("name")


def cloud_verifications(*, cloud: Cloud, limit: int = 10) -> list[CloudVerification]:
    """The latest verifications with their checks, newest first (two queries)."""
    return list(
        cloud.verifications.select_related("requested_by")
        .prefetch_related(Prefetch("checks"))
        .order_by("-started_at", "-pk")[:limit]
    )
