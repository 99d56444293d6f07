"""A traffic step passes on figures, not on time alone: while the service is busy, a new
version's step holds until its head has reported enough requests to judge it (a head's
counters lag behind the traffic by seconds), says so once, and rolls the version back when
the figures never come. A quiet service's steps pass on time.

No Ray: the samples are what the two versions' heads would have reported (live.py, in
Redis); the rows are a real rollout's, on the local cloud (no router call is made while a
step holds or rolls back to the same weights)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from tests.api.conftest import verified
from tests.conftest import Tenant
from workloads.serve import live
from workloads.serve.choices import ServiceState, VersionState
from workloads.serve.models import Service, ServiceVersion
from workloads.serve.services import deploy, rollout

pytestmark = pytest.mark.django_db


def _report(version: ServiceVersion, *counts: tuple[float, int, int]) -> None:
    """The head's samples: (seconds ago, cumulative requests, cumulative errors)."""
    now = time.time()
    cache.set(
        live.SAMPLES_KEY.format(version.cluster_id),
        [
            (now - ago, {"default": {"requests": r, "errors": e, "buckets": {"+Inf": r}}})
            for ago, r, e in counts
        ],
    )


def _rollout_in_step(tenant: Tenant, *, held: float) -> tuple[Service, Any, Any]:
    """v1 serves; v2 is healthy and took the first step (10 %) `held` seconds ago."""
    verified(tenant)
    first = deploy.service_deploy(
        project=tenant.project,
        actor=tenant.member,
        name="echo",
        serve_config={"import_path": "echo_app:build"},
        cloud=tenant.cloud,
        step_seconds=6,
    )
    service, v1 = first.service, first.version
    ServiceVersion.objects.filter(pk=v1.pk).update(state=VersionState.HEALTHY, weight=100)
    Service.objects.filter(pk=service.pk).update(current_version=v1, state=ServiceState.RUNNING)
    v2 = deploy.service_deploy(
        project=tenant.project,
        actor=tenant.member,
        name="echo",
        serve_config={"import_path": "echo_app:build", "args": {"v": 2}},
    ).version
    ServiceVersion.objects.filter(pk=v1.pk).update(weight=90)
    ServiceVersion.objects.filter(pk=v2.pk).update(state=VersionState.HEALTHY, weight=10)
    Service.objects.filter(pk=service.pk).update(
        state=ServiceState.ROLLING_OUT,
        rollout_step=0,
        step_started_at=timezone.now() - timedelta(seconds=held),
    )
    cache.delete_many([live.SAMPLES_KEY.format(v.cluster_id) for v in (v1, v2)])
    return service, v1, v2


def _held_events(service: Service) -> list[str]:
    return list(service.events.filter(step="traffic held").values_list("message", flat=True))


def test_a_busy_service_holds_the_step_until_the_new_version_reports(tenant_a: Tenant) -> None:
    service, v1, v2 = _rollout_in_step(tenant_a, held=20)
    _report(v1, (50, 0, 0), (1, 400, 0))  # 400 requests in the last 50 s
    _report(v2, (30, 0, 0), (1, 3, 0))  # 3: its counters have not caught up

    for _ in range(2):
        assert rollout._move_traffic(service.pk)
    v2.refresh_from_db()
    service.refresh_from_db()
    assert (v2.weight, service.rollout_step) == (10, 0)  # held at the first step
    assert _held_events(service) == [
        "v2 has reported 3 of the 10 requests a step needs to judge it: v2 stays at 10% "
        "until they arrive."
    ]

    # Its figures arrive: 8 errors in 40 requests, over the 5 % limit and over twice v1's
    # rate, so the step that waited for them rolls it back instead of moving on.
    _report(v2, (30, 0, 0), (1, 40, 8))
    assert rollout._move_traffic(service.pk)
    v2.refresh_from_db()
    assert v2.weight == 0 and v2.state_reason.startswith("Rolled back"), v2.state_reason
    assert "failed 8 of 40 requests" in v2.state_reason


def test_figures_that_never_arrive_roll_the_new_version_back(tenant_a: Tenant) -> None:
    service, v1, v2 = _rollout_in_step(tenant_a, held=6 + rollout.EVIDENCE_WAIT_SECONDS + 1)
    _report(v1, (50, 0, 0), (1, 400, 0))
    assert rollout._move_traffic(service.pk)
    v2.refresh_from_db()
    service.refresh_from_db()
    assert v2.weight == 0 and v2.state_reason.startswith("Rolled back"), v2.state_reason
    assert "v2 has reported 0 of the 10 requests" in v2.state_reason
    assert "figures do not arrive" in v2.state_reason
    assert service.current_version_id == v1.pk
    assert service.versions.get(pk=v1.pk).weight == 100


def test_a_quiet_service_passes_its_steps_on_time(tenant_a: Tenant) -> None:
    service, v1, v2 = _rollout_in_step(tenant_a, held=7)
    _report(v1, (50, 0, 0), (1, 4, 0))  # 4 requests in the last minute
    assert rollout._move_traffic(service.pk)
    v2.refresh_from_db()
    service.refresh_from_db()
    assert (v2.weight, service.rollout_step) == (50, 1)
    assert _held_events(service) == []
