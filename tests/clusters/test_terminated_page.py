"""A terminated cluster's page shows what is over as over: no head address, no agent
message ("Ray head is up") under a terminated node, and how long termination took."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from clusters.choices import ClusterState, DesiredState, NodeRole, NodeState
from clusters.models import ClusterEvent
from clusters.services.reconcile import cluster_reconcile
from tests.conftest import Tenant, activate, client_for
from tests.factories import ClusterFactory, NodeFactory


def test_a_terminated_cluster_shows_nothing_of_its_running_days(db: None, tenant_a: Tenant) -> None:
    """The real reconciler on the local cloud (no instance of this cluster is live)."""
    activate(tenant_a.cloud)
    cluster = ClusterFactory(
        project=tenant_a.project,
        cloud=tenant_a.cloud,
        state=ClusterState.TERMINATING,
        desired_state=DesiredState.TERMINATED,
        head_address="10.9.8.7:6379",
        state_changed_at=timezone.now() - timedelta(seconds=42),
    )
    NodeFactory(
        cluster=cluster,
        role=NodeRole.HEAD,
        state=NodeState.READY,
        private_address="10.9.8.7",
        state_reason="Ray head is up: GCS 10.9.8.7:6379, dashboard 10.9.8.7:8265",
    )
    cluster_reconcile(cluster_id=cluster.pk)
    cluster.refresh_from_db()
    assert cluster.state == ClusterState.TERMINATED

    terminated = ClusterEvent.objects.get(cluster=cluster, step="terminated")
    assert terminated.duration_ms is not None and terminated.duration_ms >= 42_000
    page = (
        client_for(tenant_a.member)
        .get(f"/o/{tenant_a.org.slug}/clusters/{cluster.pk}/")
        .content.decode()
    )
    assert "Ray head is up" not in page
    assert "10.9.8.7" not in page
    assert "took 0 ms" not in page
