"""When a cluster is running: one rule, applied by the reconciler's pass and by the
heartbeat that reports its head (or a last worker) ready, which moves the cluster at once
rather than through a reconcile task's round trip (enqueue, pickup, pass)."""

from __future__ import annotations

from collections import Counter

from django.db import transaction

from ..choices import ClusterState, EventLevel, NodeRole, NodeState
from ..models import Cluster, Node
from .events import record_event


@transaction.atomic
def update_cluster_state(cluster: Cluster) -> None:
    """STARTING -> RUNNING once ready, RUNNING -> STARTING when a node it needs is gone."""
    cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
    nodes = list(cluster.nodes.staying())
    head = next((n for n in nodes if n.role == NodeRole.HEAD), None)
    ready = is_ready(cluster, nodes)
    if ready and cluster.state == ClusterState.STARTING and head is not None:
        cluster.head_address = f"{head.private_address}:{head.ray_ports.get('gcs', '')}"
        cluster.dashboard_port = head.ray_ports.get("dashboard")
        cluster.move_to(ClusterState.RUNNING)
        cluster.save()
        record_event(
            cluster,
            "ready",
            f"The cluster is running with {len(nodes)} node(s).",
            since=cluster.created_at if not cluster.terminated_at else None,
        )
    elif not ready and cluster.state == ClusterState.RUNNING:
        cluster.move_to(ClusterState.STARTING, "Replacing nodes.")
        cluster.save()
        record_event(
            cluster, "starting", "Some nodes are being replaced.", level=EventLevel.WARNING
        )


def is_ready(cluster: Cluster, staying: list[Node]) -> bool:
    """Ready: the head and each group's min. Workers the autoscaler adds join a running
    cluster without making it "starting" again."""
    head = next((n for n in staying if n.role == NodeRole.HEAD), None)
    ready_workers = Counter(
        n.group for n in staying if n.role == NodeRole.WORKER and n.state == NodeState.READY
    )
    return (
        head is not None
        and head.state == NodeState.READY
        and all(
            ready_workers[g["name"]] >= int(g.get("min", 0))
            for g in cluster.compute_config.worker_groups
        )
    )
