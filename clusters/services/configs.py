"""Compute configs: create one (its first version) and change it (every change that
changes something is a new version). Versions are never changed once saved, since
clusters keep the version they were created with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.audit import audit, changes_between, snapshot
from accounts.models import Organization, Project, User
from accounts.permissions import require
from clouds.models import Cloud

from ..models import (
    VERSIONED_FIELDS,
    ComputeConfig,
    ComputeConfigVersion,
    filled_worker_groups,
    worker_group_errors,
)


def clean_worker_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worker groups as the reconciler and autoscaler read them: every key of
    WORKER_GROUP_DEFAULTS (missing ones filled in, others dropped), checked by the
    model's rules with errors keyed by the group's position."""
    errors = worker_group_errors(groups)
    if errors:
        raise ValidationError(errors)
    return filled_worker_groups(groups)


# Not durable: the API's Idempotency-Key row commits in the same transaction.
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
    # Every problem in one answer: the name, the head, the settings and each worker
    # group, so a person fixes the form once.
    errors: dict[str, list[Any]] = {}
    config = ComputeConfig(
        organization=organization, project=project, name=name.strip(), created_by=actor
    )
    _collect(
        errors,
        lambda: config.full_clean(exclude=["organization", "project"], validate_constraints=False),
    )
    if (
        config.name
        and ComputeConfig.objects.filter(organization=organization, name=config.name).exists()
    ):
        errors.setdefault("name", []).append(
            f"A compute config named {config.name} already exists."
        )
    groups = worker_groups or []
    group_errors = {k: v for k, v in worker_group_errors(groups).items() if v}
    errors.update(group_errors)
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
        worker_groups=[] if group_errors else filled_worker_groups(groups),
        idle_timeout_minutes=idle_timeout_minutes,
        max_uptime_minutes=max_uptime_minutes,
        created_by=actor,
    )
    _collect(errors, lambda: version.full_clean(exclude=["organization", "config", "cloud"]))
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            config.save()
    except IntegrityError as exc:  # created by another request since the check
        raise ValidationError(
            {"name": f"A compute config named {config.name} already exists."}
        ) from exc
    version.config = config
    version.save()
    audit(
        actor=actor,
        verb="compute_config.create",
        target=config,
        changes={"name": [None, config.name], "cloud": [None, cloud.name]},
    )
    return config


@transaction.atomic(durable=True)
def compute_config_update(
    *, config: ComputeConfig, actor: User, **changes: Any
) -> ComputeConfigVersion:
    """Save `changes` as the config's next version; the latest one when nothing changes.
    Clusters already created keep the version they were created with."""
    require(actor, "compute_config.manage", config)
    unknown = set(changes) - set(VERSIONED_FIELDS)
    if unknown:
        raise ValueError(f"Not a compute config setting: {', '.join(sorted(unknown))}")
    errors: dict[str, list[Any]] = {}
    if "worker_groups" in changes:
        # Errors keyed by the group's position, as on create, and the full shape.
        group_errors = {k: v for k, v in worker_group_errors(changes["worker_groups"]).items() if v}
        errors.update(group_errors)
        if not group_errors:
            changes["worker_groups"] = filled_worker_groups(changes["worker_groups"])
    config = ComputeConfig.objects.select_for_update().get(pk=config.pk)
    latest = config.latest
    current = {name: getattr(latest, name) for name in VERSIONED_FIELDS}
    values = {**current, **changes}
    if not errors and _comparable(values) == _comparable(current):
        return latest
    if values["cloud"].organization_id != config.organization_id:
        errors.setdefault("cloud", []).append("Choose a cloud of this organization.")
    if errors:
        values["worker_groups"] = []  # checked above; the rest is checked below
    version = ComputeConfigVersion(
        organization_id=config.organization_id,
        config=config,
        number=latest.number + 1,
        created_by=actor,
        **values,
    )
    _collect(errors, version.full_clean)
    if errors:
        raise ValidationError(errors)
    version.save()
    audit(
        actor=actor,
        verb="compute_config.update",
        target=config,
        changes={
            "version": [latest.number, version.number],
            **changes_between(
                snapshot(latest, VERSIONED_FIELDS), snapshot(version, VERSIONED_FIELDS)
            ),
        },
    )
    return version


def _collect(errors: dict[str, list[Any]], check: Callable[[], None]) -> None:
    """Run a check, adding its field errors to `errors` instead of stopping at them."""
    try:
        check()
    except ValidationError as exc:
        exc.update_error_dict(errors)


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    """A version's settings with its worker groups filled in: a form that sends back
    every key changes nothing about a version stored with fewer."""
    return {**values, "worker_groups": filled_worker_groups(values["worker_groups"])}
