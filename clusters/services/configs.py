"""Compute configs: create one (its first version) and change it (every change that
changes something is a new version). Versions are never changed once saved, since
clusters keep the version they were created with."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.audit import audit, changes_between, snapshot
from accounts.models import Organization, Project, User
from accounts.permissions import require
from clouds.models import Cloud

from ..models import (
    DEFAULT_DOWNSCALE_DELAY_SECONDS,
    MAX_WORKERS_PER_GROUP,
    ComputeConfig,
    ComputeConfigVersion,
)

MAX_WORKER_GROUPS = 20


def clean_worker_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worker groups as the reconciler and autoscaler read them: {"name", "instance_type",
    "cpus", "memory_mb", "gpus", "min", "max", "spot", "downscale_delay_seconds"}, with
    errors keyed by the group's position. The model's validate_worker_groups checks the
    rest when the version is cleaned."""
    if len(groups) > MAX_WORKER_GROUPS:
        raise ValidationError({"worker_groups": f"Use at most {MAX_WORKER_GROUPS} groups."})
    cleaned, names = [], set()
    for i, group in enumerate(groups):
        name = str(group.get("name", "")).strip()
        where = f"worker_groups.{i}"
        if not name or len(name) > 64:
            raise ValidationError({where: "Give each group a name of 1 to 64 characters."})
        if name in names:
            raise ValidationError({where: f"Two groups are named {name}."})
        names.add(name)
        low, high = int(group.get("min", 0)), int(group.get("max", 0))
        if not 0 <= low <= high <= MAX_WORKERS_PER_GROUP:
            raise ValidationError(
                {where: f"Need 0 <= min <= max <= {MAX_WORKERS_PER_GROUP} (got {low} and {high})."}
            )
        cpus, memory_mb = float(group.get("cpus", 1)), int(group.get("memory_mb", 1024))
        if cpus <= 0 or memory_mb <= 0:
            raise ValidationError({where: "CPUs and memory must be more than zero."})
        cleaned.append(
            {
                "name": name,
                "instance_type": str(group.get("instance_type") or "")[:64],
                "cpus": cpus,
                "memory_mb": memory_mb,
                "min": low,
                "max": high,
                "gpus": group.get("gpus", 0),
                "spot": bool(group.get("spot", False)),
                "downscale_delay_seconds": group.get(
                    "downscale_delay_seconds", DEFAULT_DOWNSCALE_DELAY_SECONDS
                ),
            }
        )
    return cleaned


@transaction.atomic
def compute_config_create(
    *,
    organization: Organization,
    project: Project | None,
    actor: User,
    name: str,
    cloud: Cloud,
    region: str = "",
    zone: str = "",
    head_instance_type: str = "",
    head_cpus: float = 1,
    head_memory_mb: int = 2048,
    worker_groups: list[dict[str, Any]] | None = None,
    idle_timeout_minutes: int = 60,
    max_uptime_minutes: int | None = None,
) -> ComputeConfig:
    """A new compute config of the organization (or of one project) and its version 1.
    Organization-wide configs need compute_config.manage on the organization (owners,
    admins); a project's, on the project (its writers too)."""
    require(actor, "compute_config.manage", project or organization)
    if project is not None and project.organization_id != organization.pk:
        raise ValidationError({"project": "Choose a project of this organization."})
    if cloud.organization_id != organization.pk:
        raise ValidationError({"cloud": "Choose a cloud of this organization."})
    config = ComputeConfig(organization=organization, project=project, name=name.strip(),
                           created_by=actor)  # fmt: skip
    config.full_clean(exclude=["organization", "project"], validate_constraints=False)
    try:
        with transaction.atomic():
            config.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"name": f"A compute config named {config.name} already exists."}
        ) from exc
    version = ComputeConfigVersion(
        organization=organization,
        config=config,
        number=1,
        cloud=cloud,
        region=region or cloud.region,
        zone=zone or (cloud.zones or [""])[0],
        head_instance_type=head_instance_type,
        head_cpus=head_cpus,
        head_memory_mb=head_memory_mb,
        worker_groups=clean_worker_groups(worker_groups or []),
        idle_timeout_minutes=idle_timeout_minutes,
        max_uptime_minutes=max_uptime_minutes,
        created_by=actor,
    )
    version.full_clean(exclude=["organization", "config", "cloud"])
    version.save()
    audit(actor=actor, verb="compute_config.create", target=config,
          changes={"name": [None, config.name], "cloud": [None, cloud.name]})  # fmt: skip
    return config


# What a version holds (the rest of the row says who made it and when).
VERSIONED_FIELDS = ("cloud", "region", "zone", "head_instance_type", "head_cpus",
                    "head_memory_mb", "worker_groups", "idle_timeout_minutes",
                    "max_uptime_minutes")  # fmt: skip


@transaction.atomic
def compute_config_update(
    *, config: ComputeConfig, actor: User, **changes: Any
) -> ComputeConfigVersion:
    """Save `changes` as the config's next version; the latest one when nothing changes.
    Clusters already created keep the version they were created with."""
    require(actor, "compute_config.manage", config)
    unknown = set(changes) - set(VERSIONED_FIELDS)
    if unknown:
        raise ValueError(f"Not a compute config setting: {', '.join(sorted(unknown))}")
    config = ComputeConfig.objects.select_for_update().get(pk=config.pk)
    latest = config.latest
    values = {name: getattr(latest, name) for name in VERSIONED_FIELDS}
    values.update(changes)
    if values == {name: getattr(latest, name) for name in VERSIONED_FIELDS}:
        return latest
    if values["cloud"].organization_id != config.organization_id:
        raise ValidationError({"cloud": "Choose a cloud of this organization."})
    version = ComputeConfigVersion(
        organization_id=config.organization_id, config=config, number=latest.number + 1,
        created_by=actor, **values,
    )  # fmt: skip
    version.full_clean()
    version.save()
    audit(actor=actor, verb="compute_config.update", target=config,
          changes={"version": [latest.number, version.number],
                   **changes_between(snapshot(latest, VERSIONED_FIELDS),
                                     snapshot(version, VERSIONED_FIELDS))})  # fmt: skip
    return version
