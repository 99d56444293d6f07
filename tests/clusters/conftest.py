"""Fixtures of the reconciler's tests against the real local cloud driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clouds.choices import CloudState
from clouds.models import Cloud
from clouds.providers.local import LocalProvider
from clouds.providers.registry import provider_for
from tests.conftest import Tenant


@pytest.fixture
def local_cloud(tenant_a: Tenant, tmp_path: Path, settings) -> Cloud:
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    Cloud.objects.filter(pk=tenant_a.cloud.pk).update(state=CloudState.ACTIVE)
    tenant_a.cloud.refresh_from_db()
    return tenant_a.cloud


@pytest.fixture
def provider(local_cloud: Cloud) -> Iterator[LocalProvider]:
    driver = provider_for(local_cloud)
    assert isinstance(driver, LocalProvider)
    yield driver
    for instance in driver.list_instances():  # no process outlives a test
        driver.terminate(instance_id=instance.instance_id)
