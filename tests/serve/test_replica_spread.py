"""Serve replicas spread over the worker nodes where the compute config allows: a version
whose cluster always has two workers, and a deployment of two replicas, gets Raydeck's
`max_replicas_per_node` (serve_config.replica_spread), and Ray places the replicas on
two different nodes, at least one a worker (Ray may use the head as the other); the
service page says what Raydeck set.

Real parts: the local cloud's nodes (a head and two workers) running the real agent,
Ray Serve deploying the config the head's orders carry, HAProxy in front (the query
answers through the endpoint); where the replicas run is asked of Serve's REST API on
the head, with the cluster's Ray token, as `serve status` would.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from clusters import access
from clusters.choices import NodeRole
from tests.factories import ComputeConfigVersionFactory
from workloads.serve.services import deploy

from ..conftest import client_for
from .conftest import (
    Driver,
    echo_config,
    local_tenant,
    needs_haproxy,
    terminate_and_wait,
    wait_for,
    wait_serving,
)

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True), needs_haproxy]
START_SECONDS = 540  # three nodes up and two replicas running (a busy 2-core machine)


def _serve_details(version: Any) -> dict[str, Any]:
    """Serve's own account of its applications, from the head's dashboard."""
    head = version.cluster.nodes.get(role=NodeRole.HEAD)
    request = urllib.request.Request(
        f"http://127.0.0.1:{head.ray_ports['dashboard']}/api/serve/applications/",
        headers={"Authorization": f"Bearer {access.ray_token(version.cluster)}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.load(response)


def test_two_replicas_land_on_two_nodes(live_server, settings, tmp_path) -> None:
    tenant = local_tenant(live_server, settings, tmp_path, "spread")
    group = {"name": "serve", "instance_type": "local", "cpus": 1, "memory_mb": 1024}
    config = ComputeConfigVersionFactory(
        cloud=tenant.cloud,
        head_cpus=1,
        worker_groups=[{**group, "min": 2, "max": 2}],
    )
    serve_config = {
        **echo_config("v1"),
        "deployments": [{"name": "Echo", "num_replicas": 2}],
    }
    deployed = deploy.service_deploy(
        project=tenant.project,
        actor=tenant.member,
        name="spread",
        serve_config=serve_config,
        cloud=tenant.cloud,
        compute_config=config,
    )
    service, token = deployed.service, deployed.token
    driver = Driver(service)
    driver.start()
    try:
        wait_serving(service, token, START_SECONDS, "the service to serve")
        version = service.versions.select_related("cluster").get()
        workers = set(
            version.cluster.nodes.filter(role=NodeRole.WORKER).values_list("pk", flat=True)
        )
        assert len(workers) == 2

        def replicas() -> list[dict[str, Any]]:
            app = _serve_details(version)["applications"]["default"]
            running = app["deployments"]["Echo"]["replicas"]
            return [r for r in running if r["state"] == "RUNNING"]

        wait_for(lambda: len(replicas()) == 2, time.monotonic() + 60, "2 replicas", service)
        details = _serve_details(version)
        deployment = details["applications"]["default"]["deployments"]["Echo"]
        assert deployment["deployment_config"]["max_replicas_per_node"] == 1
        nodes = {r["node_id"] for r in replicas()}
        assert len(nodes) == 2, replicas()  # never both on one node
        # Ray counts the head as a node too: at most one replica is there, so a lost
        # worker always leaves one serving (the head runs Serve's proxy in any case).
        head_node = details["controller_info"]["node_id"]  # the controller runs on the head
        assert nodes - {head_node}, (head_node, replicas())

        page = client_for(tenant.member).get(f"/o/{tenant.org.slug}/services/{service.pk}/")
        assert "default/Echo: at most 1 replica per node" in page.content.decode()
    finally:
        terminate_and_wait(service, tenant.member)
        driver.stop()
    assert driver.errors == []
