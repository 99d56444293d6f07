"""kill -9 of the Celery worker in the middle of a rolling upgrade: a new worker resumes
the rollout where the rows say it was, with no second cluster for any version, one HAProxy
for the endpoint, and the router's weights converging on the new version, while a client
keeps sending requests that all succeed.

Real parts: `celery worker` and `celery beat` processes on a private redis-server and the
test database (tests/clusters/test_faults.py's harness), real Ray Serve on the local cloud
and Debian's HAProxy. PostgreSQL only (the workers share the test database).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from clouds.providers.registry import local_root
from clusters.models import Cluster
from tests.clusters.test_faults import Faults, faults  # noqa: F401 - the fixture
from workloads.serve.choices import ServiceState, VersionState
from workloads.serve.models import Service, ServiceVersion
from workloads.serve.services import deploy

from .conftest import Traffic, echo_config, needs_haproxy, query, wait_for

pytestmark = [pytest.mark.ray, needs_haproxy]
START_SECONDS = 240
STEP_SECONDS = 8


def haproxy_processes(service: Service) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"haproxy" in cmdline and str(service.uuid).encode() in cmdline:
                found.append(int(entry.name))
    return found


def router_weights(service: Service) -> dict[str, tuple[int, bool]]:
    state = json.loads(
        (local_root(service.cloud) / "routers" / str(service.uuid) / "router.json").read_text()
    )
    return {name: (e["weight"], e["draining"]) for name, e in state["backends"].items()}


def test_killed_worker_mid_rollout_resumes_it(faults: Faults) -> None:  # noqa: F811
    tenant = faults.tenant
    deployed = deploy.service_deploy(
        project=tenant.project,
        actor=tenant.member,
        name="steady",
        serve_config=echo_config("v1"),
        cloud=tenant.cloud,
        step_seconds=STEP_SECONDS,
        # What this test judges is the resumed rollout, not latency: next to other Ray
        # clusters on a 2-core machine a just-started version's p99 can be many times
        # the warm one's, which would (rightly) roll it back.
        max_latency_ratio=100,
    )
    service, token = deployed.service, deployed.token
    assert token
    faults.start_beat()
    worker = faults.start_worker("serve-a")
    traffic = None
    try:
        wait_for(
            lambda: Service.objects.get(pk=service.pk).state == ServiceState.RUNNING,
            time.monotonic() + START_SECONDS,
            "v1 to serve",
            service,
        )
        service.refresh_from_db()
        url = service.endpoint_url + "/"
        wait_for(lambda: query(url, token) == "v1", time.monotonic() + 30, "v1 answers", service)
        traffic = Traffic(url=url, token=token, per_second=10)
        traffic.start()
        v2 = deploy.service_deploy(
            project=tenant.project,
            actor=tenant.member,
            name="steady",
            serve_config=echo_config("v2"),
        ).version
        # Killed once v2 has its first share of the traffic: mid-rollout.
        wait_for(
            lambda: Service.objects.get(pk=service.pk).rollout_step == 0,
            time.monotonic() + START_SECONDS,
            "the first traffic step",
            service,
        )
        worker.kill_group()
        faults.say("worker killed mid-rollout")
        killed_at = time.monotonic()
        time.sleep(STEP_SECONDS + 2)  # nobody advances it meanwhile: it stays at its step
        service.refresh_from_db()
        assert service.rollout_step == 0
        faults.start_worker("serve-b")
        v1 = service.versions.get(number=1)
        wait_for(
            lambda: ServiceVersion.objects.get(pk=v1.pk).state == VersionState.STOPPED,
            time.monotonic() + 180,
            "the rollout to finish after the restart",
            service,
        )
        resumed_in = time.monotonic() - killed_at
        faults.say(f"rollout finished {resumed_in:.0f} s after the kill")
        time.sleep(2)
        assert traffic.failures == [], traffic.outcomes
        assert query(url, token) == "v2"
        v2.refresh_from_db()
        assert (v2.state, v2.weight) == (VersionState.HEALTHY, 100)
        # One cluster per version, one router, no weight left behind.
        assert Cluster.objects.filter(service_version__service=service).count() == 2
        assert len(haproxy_processes(service)) == 1
        wait_for(
            lambda: router_weights(service) == {"v2": (100, False)},
            time.monotonic() + 30,
            "v1 to leave the router",
            service,
        )
        steps = list(service.events.filter(step="traffic step").values_list("message", flat=True))
        assert len(steps) == 3, steps  # each step once: none repeated by the new worker
    finally:
        if traffic is not None:
            traffic.stop()
        deploy.service_terminate(service=service, actor=tenant.member)
        wait_for(
            lambda: Service.objects.get(pk=service.pk).state == ServiceState.TERMINATED,
            time.monotonic() + 90,
            "the service to terminate",
            service,
        )
        faults.clusters = list(Cluster.objects.filter(service_version__service=service))
        faults.finish()
    assert haproxy_processes(service) == []
