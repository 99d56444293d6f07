"""The reconciler against the real local cloud driver (real processes; no stand-in):
crash safety, timeouts, lost nodes, termination and the orphan sweep.

The node processes here run the real boot script; the agent inside may or may not
get far (these tests do not need Ray to start), so they assert on instances, rows and
events rather than on Ray.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from accounts.models import AuditEvent
from clouds.models import Cloud
from clouds.providers.base import PermanentCloudError, PermanentErrorKind
from clouds.providers.local import LocalProvider
from clusters import live
from clusters.choices import ClusterState, DesiredState, NodeRole, NodeState
from clusters.models import Cluster, ClusterEvent, Node
from clusters.services import lifecycle, reconcile
from tests.conftest import Tenant

pytestmark = pytest.mark.django_db


def new_cluster(tenant: Tenant, cloud: Cloud, workers: int = 0) -> Cluster:
    cluster = lifecycle.cluster_create(
        project=tenant.project, actor=tenant.member, name="c1", cloud=cloud
    )
    if workers:
        version = cluster.compute_config
        version.worker_groups = [{**version.worker_groups[0], "min": workers}]
        version.save()
    return cluster


def live_instances(provider: LocalProvider, cluster: Cluster) -> list:
    return provider.list_instances(cluster_id=cluster.uuid)


def test_nodes_are_planned_then_launched_once(tenant_a, local_cloud, provider) -> None:
    cluster = new_cluster(tenant_a, local_cloud, workers=1)
    outcome = reconcile.cluster_reconcile(cluster_id=cluster.pk)
    assert outcome.requeue_in is not None
    nodes = list(cluster.nodes.order_by("role"))
    assert [n.role for n in nodes] == [NodeRole.HEAD, NodeRole.WORKER]
    assert all(n.state == NodeState.BOOTING and n.instance_id for n in nodes)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)  # again: nothing new
    assert cluster.nodes.count() == 2
    assert len(live_instances(provider, cluster)) == 2
    steps = list(cluster.events.values_list("step", flat=True))
    assert steps[:2] == ["queued", "starting"] and steps.count("instance up") == 2


class Crash(Exception):
    """Stands for a worker killed at this line."""


def test_killed_after_the_row_and_again_after_the_cloud_call(
    tenant_a, local_cloud, provider, monkeypatch
) -> None:
    cluster = new_cluster(tenant_a, local_cloud, workers=1)
    real_launch = LocalProvider.launch

    def crash_before_cloud(self, **kwargs):
        raise Crash

    monkeypatch.setattr(LocalProvider, "launch", crash_before_cloud)
    with pytest.raises(Crash):
        reconcile.cluster_reconcile(cluster_id=cluster.pk)
    assert cluster.nodes.count() == 2 and not live_instances(provider, cluster)
    cache.clear()  # the dead worker's lease would expire on its own

    def crash_after_cloud(self, **kwargs):
        real_launch(self, **kwargs)
        raise Crash  # the instance exists, the answer is lost

    monkeypatch.setattr(LocalProvider, "launch", crash_after_cloud)
    with pytest.raises(Crash):
        reconcile.cluster_reconcile(cluster_id=cluster.pk)
    cache.clear()
    monkeypatch.setattr(LocalProvider, "launch", real_launch)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    instances = live_instances(provider, cluster)
    assert len(instances) == 2
    assert {i.node_id for i in instances} == set(cluster.nodes.values_list("uuid", flat=True))


def test_a_node_stuck_booting_fails_the_cluster_and_is_cleaned_up(
    tenant_a, local_cloud, provider, settings
) -> None:
    cluster = new_cluster(tenant_a, local_cloud)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    Node.objects.filter(cluster=cluster).update(
        state_changed_at=timezone.now()
        - timedelta(seconds=settings.RAYDECK_REGISTER_TIMEOUT_SECONDS + 5)
    )
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    cluster.refresh_from_db()
    assert cluster.state == ClusterState.FAILED
    assert (
        "did not register its agent after the instance started within 5 min" in cluster.state_reason
    )
    assert "RAYDECK_AGENT_URL" in cluster.state_reason  # what to do next
    assert not [i for i in live_instances(provider, cluster) if i.is_live]


def test_permanent_cloud_error_fails_with_the_clouds_message(
    tenant_a, local_cloud, provider, monkeypatch
) -> None:
    cluster = new_cluster(tenant_a, local_cloud)

    def no_capacity(self, **kwargs):
        raise PermanentCloudError(
            "No capacity for m5.large in us-east-1a: try another zone.",
            kind=PermanentErrorKind.CAPACITY,
        )

    monkeypatch.setattr(LocalProvider, "launch", no_capacity)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    cluster.refresh_from_db()
    assert cluster.state == ClusterState.FAILED
    assert "try another zone" in cluster.state_reason
    assert cluster.events.filter(step="failed", level="error").exists()


def test_a_silent_node_is_marked_lost_and_replaced(tenant_a, local_cloud, provider) -> None:
    cluster = new_cluster(tenant_a, local_cloud, workers=1)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    long_ago = timezone.now() - timedelta(minutes=5)
    Node.objects.filter(cluster=cluster).update(
        state=NodeState.READY, last_heartbeat_at=long_ago, ray_ports={"gcs": 1}
    )
    Cluster.objects.filter(pk=cluster.pk).update(state=ClusterState.RUNNING)
    worker = cluster.nodes.get(role=NodeRole.WORKER)
    Node.objects.filter(pk=cluster.nodes.get(role=NodeRole.HEAD).pk).update(
        last_heartbeat_at=timezone.now()
    )
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    worker.refresh_from_db()
    assert worker.state == NodeState.LOST
    replacement = cluster.nodes.get(role=NodeRole.WORKER, state=NodeState.BOOTING)
    assert replacement.pk != worker.pk
    assert cluster.events.filter(step="node lost", node=worker).exists()


def test_a_node_silent_only_in_an_emptied_cache_is_not_lost(
    tenant_a, local_cloud, provider
) -> None:
    """Redis restarted: no heartbeat in the cache, and the row is written about once a
    minute. The node is judged by the row with that slack, not taken for lost at once."""
    cluster = new_cluster(tenant_a, local_cloud)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    head = cluster.nodes.get()
    written = timezone.now() - timedelta(seconds=40)
    Node.objects.filter(pk=head.pk).update(
        state=NodeState.READY, last_heartbeat_at=written, ray_ports={"gcs": 1}
    )
    Cluster.objects.filter(pk=cluster.pk).update(state=ClusterState.RUNNING)
    key = live.heartbeat_key(head.pk)
    cache.delete(key)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    head.refresh_from_db()
    assert head.state == NodeState.READY
    cache.set(key, written.timestamp())  # the cache's own last heartbeat is as old: lost
    try:
        reconcile.cluster_reconcile(cluster_id=cluster.pk)
    finally:
        cache.delete(key)
    head.refresh_from_db()
    assert head.state == NodeState.LOST


def test_terminate_leaves_no_process_and_is_final(tenant_a, local_cloud, provider) -> None:
    cluster = new_cluster(tenant_a, local_cloud, workers=1)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    lifecycle.cluster_terminate(cluster=cluster, actor=tenant_a.member)
    for _ in range(5):
        if reconcile.cluster_reconcile(cluster_id=cluster.pk).requeue_in is None:
            break
    cluster.refresh_from_db()
    assert (
        cluster.state == ClusterState.TERMINATED
        and cluster.desired_state == DesiredState.TERMINATED
    )
    assert not [i for i in live_instances(provider, cluster) if i.is_live]
    assert set(cluster.nodes.values_list("state", flat=True)) == {NodeState.TERMINATED}


def test_orphan_sweep_terminates_an_instance_no_node_claims(
    tenant_a, local_cloud, provider, settings
) -> None:
    settings.RAYDECK_ORPHAN_GRACE_SECONDS = 0
    cluster = new_cluster(tenant_a, local_cloud)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    head = cluster.nodes.get()
    Node.objects.filter(pk=head.pk).update(state=NodeState.TERMINATED)  # the row "forgot" it
    assert reconcile.orphans_sweep() == 1
    assert not [i for i in live_instances(provider, cluster) if i.is_live]
    assert ClusterEvent.objects.filter(cluster=cluster, step="leaked instance terminated").exists()
    assert AuditEvent.objects.filter(
        verb="cloud.leaked_instance_terminated", target_id=str(cluster.pk)
    ).exists()


def test_unverified_cloud_is_refused(tenant_a: Tenant) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="not verified"):
        lifecycle.cluster_create(
            project=tenant_a.project, actor=tenant_a.member, name="x", cloud=tenant_a.cloud
        )


# --- Silence while the web tier was down (clusters/live.py) --------------------------


@pytest.fixture
def ticks() -> Iterator[None]:
    cache.delete_many([live.TICK_KEY, live.SINCE_KEY])
    yield
    cache.delete_many([live.TICK_KEY, live.SINCE_KEY])


def _silent_head(tenant_a: Tenant, local_cloud: Cloud, silent_for: timedelta) -> Node:
    cluster = new_cluster(tenant_a, local_cloud)
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    head = cluster.nodes.get()
    seen = timezone.now() - silent_for
    Node.objects.filter(pk=head.pk).update(
        state=NodeState.READY, last_heartbeat_at=seen, ray_ports={"gcs": 1}
    )
    Cluster.objects.filter(pk=cluster.pk).update(state=ClusterState.RUNNING)
    cache.set(live.heartbeat_key(head.pk), seen.timestamp())
    return head


def test_no_node_is_lost_while_the_web_tier_is_not_listening(
    tenant_a, local_cloud, provider, ticks
) -> None:
    """The web tier was down for two minutes (a slow deploy): every node went silent with
    it. Nothing is judged while it is down, and after it is back each node gets the full
    grace to heartbeat again before it is taken for lost."""
    head = _silent_head(tenant_a, local_cloud, timedelta(minutes=2))
    now = time.time()
    live.tick(now - 120)  # the last tick before the web tier went down
    reconcile.cluster_reconcile(cluster_id=head.cluster_id)
    head.refresh_from_db()
    assert head.state == NodeState.READY  # nobody listening: silence says nothing

    live.tick(now - 2)  # back 2 s ago: listening since then
    assert live.listening(now).since.timestamp() == pytest.approx(now - 2)
    reconcile.cluster_reconcile(cluster_id=head.cluster_id)
    head.refresh_from_db()
    assert head.state == NodeState.READY  # 2 s of silence while listening: within grace

    cache.set(live.SINCE_KEY, now - 60)  # a minute of listening, still no heartbeat
    reconcile.cluster_reconcile(cluster_id=head.cluster_id)
    head.refresh_from_db()
    assert head.state == NodeState.LOST


def test_listening_without_a_gap_keeps_its_start(ticks) -> None:
    now = time.time()
    live.tick(now - 30)
    for seconds_ago in (27, 24, 21, 18, 15, 12, 9, 6, 3, 0):
        live.tick(now - seconds_ago)
    assert live.listening(now) == live.Listening(
        now=True,
        since=datetime.fromtimestamp(now - 30, tz=UTC),
        last=datetime.fromtimestamp(now, tz=UTC),
    )
    assert not live.listening(now + 60).now
    assert live.listening(now + 60).since is None


def test_an_emptied_cache_judges_no_node_until_a_web_process_ticks(settings, ticks) -> None:
    """Redis restarted: the ticks and the heartbeats are gone. The nodes' last heartbeats
    are then only their rows' (older): judged at once, healthy nodes would be lost."""
    settings.RAYDECK_LISTENING_TICKS = True
    now = time.time()
    live.tick(now - 30)
    live.tick(now - 1)
    cache.delete_many([live.TICK_KEY, live.SINCE_KEY])
    assert not live.listening(now).now
    live.tick(now)
    assert live.listening(now + 1) == live.Listening(
        now=True,
        since=datetime.fromtimestamp(now, tz=UTC),
        last=datetime.fromtimestamp(now, tz=UTC),
    )


def test_each_web_process_ticks_once_started(settings, ticks) -> None:
    settings.RAYDECK_LISTENING_TICKS = True
    try:
        for _ in range(3):
            live.start_ticking()
        threads = [t for t in threading.enumerate() if t.name == "raydeck-listening"]
        assert len(threads) == 1
        deadline = time.monotonic() + 5
        while cache.get(live.TICK_KEY) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.listening().now and live.listening().since is not None
    finally:
        live.stop_ticking()
        for thread in threads:
            thread.join(timeout=5)
