"""Reads for Services' pages and API: always through `visible_to`, never a write."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.models import Organization, Project, User
from clouds.models import Cloud
from clusters.models import ComputeConfigVersion
from clusters.selectors import compute_configs_for_cluster_create

from . import live, metrics
from .choices import LIVE_VERSION_STATES, VersionState
from .models import Service, ServiceEvent, ServiceQuerySet, ServiceVersion


def services_for(viewer: Any, organization: Organization) -> ServiceQuerySet:
    return (
        Service.objects.visible_to(viewer, organization)
        .select_related("project", "cloud", "current_version")
        .order_by("-created_at", "-pk")
    )


def projects_for_deploy(viewer: User, organization: Organization) -> QuerySet[Project]:
    return Project.objects.visible_to(viewer, organization).order_by("name")


def clouds_for_deploy(viewer: User, organization: Organization) -> QuerySet[Cloud]:
    return Cloud.objects.visible_to(viewer).filter(organization=organization).order_by("name")


def compute_configs_for_deploy(
    viewer: User, organization: Organization
) -> QuerySet[ComputeConfigVersion]:
    """The latest version of each compute config the viewer sees in the organization."""
    return compute_configs_for_cluster_create(organization=organization, viewer=viewer)


def rollout_progress(service: Service) -> dict[str, Any] | None:
    """The rollout under way: the new version, each step and whether it is done, now or to
    come; None when no new version is on its way."""
    current = service.current_version
    candidate = (
        service.versions.filter(
            state__in=[VersionState.STARTING, VersionState.HEALTHY],
            number__gt=current.number if current else 0,
        )
        .order_by("-number")
        .first()
    )
    if candidate is None or current is None:
        return None
    index = service.rollout_step
    steps = [{"label": "starting", "status": "now" if index is None else "done"}]
    for i, weight in enumerate(service.canary_steps):
        if index is None:
            status = "next"
        else:
            status = "done" if i < index else "now" if i == index else "next"
        steps.append({"label": f"{weight}%", "status": status})
    return {
        "version": candidate.number,
        "from_version": current.number,
        "weight": candidate.weight,
        "pinned": service.pinned_weight,
        "steps": steps,
    }


def version_rows(service: Service) -> list[ServiceVersion]:
    return list(service.versions.select_related("cluster", "compute_config__config", "image"))


def service_events(service: Service, *, after: int | None = None) -> QuerySet[ServiceEvent]:
    events = service.events.select_related("version")
    return events.filter(pk__gt=after) if after is not None else events


def version_series(service: Service) -> list[dict[str, Any]]:
    """Per live (or recently live) version: its request rate, error rate and p50/p99 over
    time, from the heads' samples in the shared cache (empty when none)."""
    rows = []
    versions = service.versions.filter(cluster__isnull=False).order_by("number")
    for version in versions:
        samples = live.samples(version.cluster_id) if version.cluster_id else []
        if version.state not in LIVE_VERSION_STATES and not samples:
            continue
        rows.append({"version": version.number, "points": metrics.series(samples)})
    return rows
