"""Changing a compute config: every save that changes something is a new version, so a
cluster keeps exactly the machines it started with."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.audit import audit, changes_between, snapshot
from accounts.models import User
from accounts.permissions import require

from ..models import ComputeConfig, ComputeConfigVersion

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
