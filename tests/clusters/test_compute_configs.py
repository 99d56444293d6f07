"""Compute configs are versioned: a change is a new version, clusters keep the one they
started with, the change is audited, and only those who may manage it can make it."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from accounts.models import AuditEvent
from clouds.models import Cloud
from clusters.services import configs, lifecycle
from tests.conftest import Tenant, activate

pytestmark = pytest.mark.django_db


@pytest.fixture
def cloud(tenant_a: Tenant) -> Cloud:
    return activate(tenant_a.cloud)


def test_a_change_is_a_new_version_and_clusters_keep_theirs(tenant_a: Tenant, cloud) -> None:
    first = lifecycle.cluster_create(
        project=tenant_a.project, actor=tenant_a.member, name="before", cloud=cloud
    )
    v1 = first.compute_config
    groups = [{**v1.worker_groups[0], "min": 1, "max": 4}]
    v2 = configs.compute_config_update(
        config=v1.config, actor=tenant_a.admin, head_cpus=2, worker_groups=groups
    )
    assert (v1.number, v2.number) == (1, 2) and v2.config == v1.config
    assert (v2.head_cpus, v2.worker_groups, v2.head_memory_mb) == (2, groups, v1.head_memory_mb)
    first.refresh_from_db()
    v1.refresh_from_db()
    assert first.compute_config == v1 and v1.head_cpus == 1  # untouched
    second = lifecycle.cluster_create(
        project=tenant_a.project, actor=tenant_a.member, name="after", cloud=cloud
    )
    assert second.compute_config == v2  # the default config's latest version
    entry = AuditEvent.objects.get(verb="compute_config.update")
    assert entry.actor == tenant_a.admin and entry.changes["version"] == [1, 2]
    assert entry.changes["head_cpus"] == [1.0, 2]

    # Saving without a change makes no version (and no audit entry).
    same = configs.compute_config_update(config=v1.config, actor=tenant_a.admin, head_cpus=2)
    assert same == v2 and v1.config.versions.count() == 2
    assert AuditEvent.objects.filter(verb="compute_config.update").count() == 1


def test_bad_changes_are_refused_and_save_nothing(
    tenant_a: Tenant, tenant_b: Tenant, cloud
) -> None:
    config = lifecycle.cluster_create(
        project=tenant_a.project, actor=tenant_a.member, name="c", cloud=cloud
    ).compute_config.config
    bad = [{"name": "w", "min": 3, "max": 1}]
    with pytest.raises(ValidationError, match="needs 0 <= min <= max"):
        configs.compute_config_update(config=config, actor=tenant_a.owner, worker_groups=bad)
    twice = [{"name": "w", "min": 0, "max": 1}, {"name": "w", "min": 0, "max": 1}]
    with pytest.raises(ValidationError, match="Two worker groups"):
        configs.compute_config_update(config=config, actor=tenant_a.owner, worker_groups=twice)
    with pytest.raises(ValidationError, match="cloud of this organization"):
        configs.compute_config_update(config=config, actor=tenant_a.owner, cloud=tenant_b.cloud)
    # An org-wide config: members and viewers may use it, not change it.
    for user in (tenant_a.member, tenant_a.viewer, tenant_b.owner):
        with pytest.raises(PermissionDenied):
            configs.compute_config_update(config=config, actor=user, head_cpus=4)
    assert config.versions.count() == 1
