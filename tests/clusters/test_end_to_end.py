"""A cluster on the local cloud with real Ray, from "create" to nothing.

Real parts throughout: the local driver starts real processes, each runs the real
raydeck-agent, which registers over HTTP with this test's live server and starts real
Ray. The reconciler is driven by calling it from the test (Celery's own behaviour is
covered in test_faults.py).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from clouds.choices import CloudState
from clouds.models import Cloud
from clouds.providers.base import ray_temp_dir
from clouds.providers.registry import local_root, provider_for
from clusters.choices import ClusterState, NodeRole, NodeState
from clusters.models import Cluster
from clusters.services import lifecycle, reconcile
from tests.clusters.ray_http import ray_dashboard
from tests.conftest import make_tenant

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]
DEADLINE_SECONDS = 150


def drive(cluster: Cluster, until: set[str], deadline: float) -> Cluster:
    """Run the reconciler the way the task does (polls, not sleeps) until a state."""
    while time.monotonic() < deadline:
        outcome = reconcile.cluster_reconcile(cluster_id=cluster.pk)
        cluster.refresh_from_db()
        if cluster.state in until:
            return cluster
        time.sleep(min(outcome.requeue_in or 1, 1))
    events = "\n".join(f"{e.step}: {e.message}" for e in cluster.events.all())
    logs = "\n".join(f"{n.role}: {n.log_tail[-2000:]}" for n in cluster.nodes.all())
    raise AssertionError(f"cluster stuck in {cluster.state}\n{events}\n{logs}")


def ray_node_count(cluster: Cluster) -> int:
    body = ray_dashboard(cluster, "/nodes?view=summary")
    summary = body.get("data", {}).get("summary", [])
    return sum(1 for node in summary if node.get("raylet", {}).get("state") == "ALIVE")


def processes_with(marker: str) -> list[int]:
    """Pids whose environment names this cluster: nothing of it may survive."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash")
def test_create_run_and_terminate_a_two_node_cluster(live_server, settings, tmp_path) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("ray")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    cluster = lifecycle.cluster_create(
        project=tenant.project, actor=tenant.member, name="e2e", cloud=tenant.cloud
    )
    config = cluster.compute_config
    config.worker_groups = [{**config.worker_groups[0], "min": 1}]
    config.save()
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        cluster = drive(cluster, {ClusterState.RUNNING, ClusterState.FAILED}, deadline)
        assert cluster.state == ClusterState.RUNNING, cluster.state_reason
        nodes = list(cluster.nodes.all())
        assert {(n.role, n.state) for n in nodes} == {
            (NodeRole.HEAD, NodeState.READY),
            (NodeRole.WORKER, NodeState.READY),
        }
        assert all(n.registered_at and n.credential_hash for n in nodes)
        # Ray itself sees both nodes (the worker joined the head).
        while ray_node_count(cluster) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert ray_node_count(cluster) == 2
        steps = list(cluster.events.values_list("step", flat=True))
        for step in ("queued", "instance up", "agent registered", "ray started", "ready"):
            assert step in steps
    finally:
        lifecycle.cluster_terminate(cluster=cluster, actor=None)
        cluster = drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 60)
    assert cluster.state == ClusterState.TERMINATED
    provider = provider_for(cluster.cloud)
    assert not [i for i in provider.list_instances(cluster_id=cluster.uuid) if i.is_live]
    for _ in range(20):  # init reaps the killed group within a second or two
        if not processes_with(str(cluster.uuid)):
            break
        time.sleep(0.5)
    assert processes_with(str(cluster.uuid)) == []
    # Nothing of the nodes is left on the machine but their logs, in the cloud's log
    # folder: the agent's copies of its own and Ray's logs, and each node's boot log.
    root = local_root(cluster.cloud)
    assert sorted(p.name for p in root.iterdir()) == ["logs"]
    for node in nodes:
        assert not Path(ray_temp_dir(node.uuid)).exists()
        logs = root / "logs" / str(cluster.uuid) / str(node.uuid)
        assert "registered as" in (logs / "agent.log").read_text()
        assert "registered as" in (logs / "boot.log").read_text()
        assert (logs / "ray" / "raylet.out").stat().st_size > 0
