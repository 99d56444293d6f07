"""A service on the local cloud with real Ray Serve behind real HAProxy, from the first
deploy through a rolling upgrade under steady traffic to a bad release rolled back.

Real parts throughout: the local driver starts real nodes running the real agent, which
deploys the Serve config through Ray's Serve REST API on the head; HAProxy (Debian's
package) routes by weight and checks the query token; the test's client sends real
HTTP requests. One service (and its clusters) serves every phase, to keep the test short;
the reconciler and the orchestrator are driven from the test (conftest.Driver) as Celery
would run them.
"""

from __future__ import annotations

import time

import pytest

from clouds.providers.registry import provider_for
from clusters.choices import ClusterState
from workloads.serve.choices import ServiceState, VersionState
from workloads.serve.services import deploy

from .conftest import (
    Driver,
    Traffic,
    echo_config,
    local_tenant,
    needs_haproxy,
    query,
    terminate_and_wait,
    wait_for,
    wait_serving,
)

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True), needs_haproxy]
START_SECONDS = 240  # a cluster up and its Serve app running
UPGRADE_SECONDS = 300  # a second cluster up, three traffic steps, a drain
STEP_SECONDS = 6


def test_deploy_upgrade_and_roll_back_behind_haproxy(live_server, settings, tmp_path) -> None:
    tenant = local_tenant(live_server, settings, tmp_path, "serve")
    deployed = deploy.service_deploy(
        project=tenant.project,
        actor=tenant.member,
        name="echo",
        serve_config=echo_config("v1"),
        cloud=tenant.cloud,
        step_seconds=STEP_SECONDS,
        # v3's errors must roll it back; a slow first p99 of v2 next to other Ray
        # clusters on a 2-core machine must not (test_rollout_judgement.py judges that).
        max_latency_ratio=100,
    )
    service, token = deployed.service, deployed.token
    assert token
    driver = Driver(service)
    driver.start()
    traffic = None
    try:
        # v1: up, behind the endpoint, and only with the token.
        url = wait_serving(service, token, START_SECONDS, "v1 to serve")
        assert query(url, None) == "HTTP 401"
        assert query(url, "rds_not-the-token") == "HTTP 401"

        # v2 under steady traffic: no request fails, v2 ends with all of it, v1's
        # cluster is terminated.
        traffic = Traffic(url=url, token=token)
        traffic.start()
        v2 = deploy.service_deploy(
            project=tenant.project,
            actor=tenant.member,
            name="echo",
            serve_config=echo_config("v2"),
        ).version
        v1 = service.versions.get(number=1)
        wait_for(
            lambda: v1.__class__.objects.get(pk=v1.pk).state == VersionState.STOPPED,
            time.monotonic() + UPGRADE_SECONDS,
            "v1 to be replaced",
            service,
        )
        time.sleep(2)
        assert traffic.failures == [], traffic.outcomes
        assert traffic.outcomes["v1"] > 0 and traffic.outcomes["v2"] > 0
        assert query(url, token) == "v2"
        v2.refresh_from_db()
        assert (v2.state, v2.weight) == (VersionState.HEALTHY, 100)
        steps = [e.message for e in service.events.filter(step="traffic step")]
        assert [s.split(" takes ")[1].split("%")[0] for s in steps] == ["10", "50", "100"]
        v1.refresh_from_db()
        wait_for(
            lambda: (
                v1.cluster.__class__.objects.get(pk=v1.cluster_id).state == ClusterState.TERMINATED
            ),
            time.monotonic() + 60,
            "v1's cluster to be terminated",
            service,
        )

        # v3 raises on every request: rolled back by itself; only its canary share
        # failed, and the event says why.
        traffic.outcomes.clear()
        traffic.failures.clear()
        v3 = deploy.service_deploy(
            project=tenant.project,
            actor=tenant.member,
            name="echo",
            serve_config=echo_config("v3", fail=True),
        ).version
        wait_for(
            lambda: (
                v3.__class__.objects.get(pk=v3.pk).state
                in (VersionState.UNHEALTHY, VersionState.STOPPED)
            ),
            time.monotonic() + UPGRADE_SECONDS,
            "v3 to be rolled back",
            service,
        )
        time.sleep(2)
        v3.refresh_from_db()
        assert v3.state_reason.startswith("Rolled back"), v3.state_reason
        rolled = service.events.get(step="rolled back", version=v3)
        assert "failed" in rolled.message and "requests" in rolled.message, rolled.message
        served = sum(traffic.outcomes.values())
        # v3 never had more than its first step's share (10 %) of the traffic.
        assert len(traffic.failures) <= 0.2 * served + 5, traffic.outcomes
        assert set(traffic.failures) <= {"HTTP 500"}, traffic.outcomes
        assert query(url, token) == "v2"
        service.refresh_from_db()
        assert service.current_version_id == v2.pk
        assert service.state == ServiceState.RUNNING
    finally:
        if traffic is not None:
            traffic.stop()
        terminate_and_wait(service, tenant.member)
        driver.stop()
    assert driver.errors == []
    provider = provider_for(tenant.cloud)
    assert not [i for i in provider.list_instances() if i.is_live]
    assert query(url, token).startswith("error")  # the endpoint is gone
