"""A steady running cluster (every node ready and heard from, as many as wanted, nothing
for the autoscaler to do) costs the reconciler no lock and no write, and the beat sweep
judges every cluster in bulk and enqueues only those with work. No cloud is called:
the clusters here are rows on the tenant's local cloud."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clusters import live
from clusters.choices import ClusterState, DesiredState, NodeRole, NodeState
from clusters.models import ComputeConfigVersion
from clusters.services import reconcile
from tests.factories import ClusterFactory, NodeFactory

pytestmark = pytest.mark.django_db

CPU = {
    "name": "cpu",
    "cpus": 2,
    "memory_mb": 2048,
    "min": 1,
    "max": 3,
    "downscale_delay_seconds": 30,
}


def running_cluster(tenant, name: str, *, workers: int = 1):
    """A running cluster with a ready head and `workers` ready workers, all just heard."""
    cluster = ClusterFactory(
        project=tenant.project, cloud=tenant.cloud, name=name, state=ClusterState.RUNNING
    )
    version: ComputeConfigVersion = cluster.compute_config
    version.worker_groups = [CPU]
    version.save()
    nodes = [NodeFactory(cluster=cluster, role=NodeRole.HEAD, state=NodeState.READY)] + [
        NodeFactory(cluster=cluster, role=NodeRole.WORKER, group="cpu", state=NodeState.READY)
        for _ in range(workers)
    ]
    live.note_heartbeats({n.pk: {"at": time.time()} for n in nodes})
    return cluster, nodes


def report(cluster, demand: list, idle: dict[str, float] | None = None) -> None:
    activity = {"running_jobs": 0, "drivers": 0, "pending_demand": len(demand)}
    if idle is not None:
        activity["nodes_idle_seconds"] = idle
    live.note_head_report(
        cluster.pk,
        {"pending_demand": demand, "resources_total": {"CPU": 3.0}},
        activity,
        time.time(),
    )


def test_a_steady_cluster_is_passed_without_a_lock_a_write_or_a_requeue(tenant_a) -> None:
    cluster, _ = running_cluster(tenant_a, "steady")
    report(cluster, [])
    events = cluster.events.count()
    with CaptureQueriesContext(connection) as queries:
        outcome = reconcile.cluster_reconcile(cluster_id=cluster.pk)
    sql = [q["sql"] for q in queries.captured_queries]
    assert outcome.requeue_in is None  # the sweep looks again
    assert not any("FOR UPDATE" in q or q.startswith(("UPDATE", "INSERT")) for q in sql), sql
    assert len(sql) <= 3, sql  # the cluster, its nodes (and nothing per node)
    assert cluster.events.count() == events


def test_the_sweep_enqueues_only_clusters_with_work(tenant_a) -> None:
    steady, _ = running_cluster(tenant_a, "steady")
    quiet, _ = running_cluster(tenant_a, "no-report")  # no report: no autoscaling, steady
    report(steady, [])

    silent, nodes = running_cluster(tenant_a, "silent")
    worker = nodes[1]
    long_ago = timezone.now() - timedelta(minutes=10)
    type(worker).objects.filter(pk=worker.pk).update(last_heartbeat_at=long_ago)
    live.note_heartbeats({worker.pk: {"at": long_ago.timestamp()}})

    short, _ = running_cluster(tenant_a, "short", workers=0)  # min 1, none there
    busy, _ = running_cluster(tenant_a, "busy")
    report(busy, [{"CPU": 2.0}] * 3)  # more than its one worker takes: two more come
    idle, nodes = running_cluster(tenant_a, "idle", workers=2)
    type(nodes[1]).objects.filter(pk__in=[n.pk for n in nodes]).update(
        ready_at=timezone.now() - timedelta(hours=1)
    )
    report(idle, [], idle={str(nodes[1].uuid): 60.0})  # past the 30 s delay, above min

    booting, nodes = running_cluster(tenant_a, "booting")
    type(nodes[1]).objects.filter(pk=nodes[1].pk).update(state=NodeState.BOOTING)
    starting = ClusterFactory(
        project=tenant_a.project, cloud=tenant_a.cloud, state=ClusterState.STARTING
    )
    ending, _ = running_cluster(tenant_a, "ending")
    type(ending).objects.filter(pk=ending.pk).update(desired_state=DesiredState.TERMINATED)
    failed = ClusterFactory(
        project=tenant_a.project, cloud=tenant_a.cloud, state=ClusterState.FAILED
    )

    needing = set(reconcile.clusters_needing_reconcile())
    assert needing == {c.pk for c in (silent, short, busy, idle, booting, starting, ending, failed)}
    assert not {steady.pk, quiet.pk} & needing

    # What the sweep found, a pass acts on: the idle worker goes, two workers are added.
    reconcile.cluster_reconcile(cluster_id=idle.pk)
    assert idle.nodes.filter(state=NodeState.TERMINATED).count() == 1
    reconcile.cluster_reconcile(cluster_id=busy.pk)
    busy.refresh_from_db()
    assert busy.desired_workers == {"cpu": 3}
    assert busy.nodes.filter(role=NodeRole.WORKER).count() == 3


def test_the_sweep_reads_in_bulk_whatever_the_number_of_clusters(tenant_a) -> None:
    for i in range(3):
        running_cluster(tenant_a, f"few-{i}", workers=2)
    with CaptureQueriesContext(connection) as few:
        reconcile.clusters_needing_reconcile()
    for i in range(9):
        running_cluster(tenant_a, f"more-{i}", workers=2)
    with CaptureQueriesContext(connection) as many:
        reconcile.clusters_needing_reconcile()
    assert len(many) == len(few)
