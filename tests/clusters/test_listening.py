"""A healthy node is never declared lost because the web tier died (issue 13, defect 3).

The clock is time-machine's: the reconciler, the listening ticks and the heartbeats all
read the travelled time, so each boundary is checked to the fraction of a second. The
nodes are rows only (no instance: terminating one calls no cloud).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.core import checks
from django.core.cache import cache
from django.utils import timezone

from clouds.choices import CloudState
from clouds.models import Cloud
from clusters import live
from clusters.choices import ClusterState, DesiredState, NodeRole, NodeState
from clusters.models import Node
from clusters.services import reconcile
from tests.conftest import Tenant
from tests.factories import ClusterFactory, NodeFactory

pytestmark = pytest.mark.django_db

GRACE = 15.0  # RAYDECK_NODE_LOST_AFTER_SECONDS's default: 3 heartbeats of 5 s
T0 = timezone.now().replace(microsecond=0) + timedelta(days=1)


@pytest.fixture
def ticks() -> Iterator[None]:
    cache.delete_many([live.TICK_KEY, live.SINCE_KEY])
    yield
    cache.delete_many([live.TICK_KEY, live.SINCE_KEY])


@pytest.fixture
def head(tenant_a: Tenant, tmp_path: Path, settings, ticks) -> Node:
    """A running cluster's head, ready, whose last heartbeat was at T0."""
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    settings.RAYDECK_NODE_LOST_AFTER_SECONDS = GRACE
    Cloud.objects.filter(pk=tenant_a.cloud.pk).update(state=CloudState.ACTIVE)
    cluster = ClusterFactory(
        project=tenant_a.project,
        cloud=tenant_a.cloud,
        state=ClusterState.RUNNING,
        desired_state=DesiredState.RUNNING,
    )
    node = NodeFactory(
        cluster=cluster,
        role=NodeRole.HEAD,
        state=NodeState.READY,
        instance_id="",
        last_heartbeat_at=T0,
        ray_ports={"gcs": 1},
    )
    cache.set(live.heartbeat_key(node.pk), T0.timestamp())
    return node


def ticks_from(start: float, until: float) -> None:
    """The web tier ticking every tick interval from start to until (seconds from T0),
    the last tick exactly at until."""
    count = int((until - start) // live.tick_seconds())
    for n in range(count, -1, -1):
        live.tick(T0.timestamp() + until - n * live.tick_seconds())


def reconcile_at(node: Node, seconds: float) -> str:
    with time_machine.travel(T0 + timedelta(seconds=seconds), tick=False):
        reconcile.cluster_reconcile(cluster_id=node.cluster_id)
    node.refresh_from_db()
    return node.state


def test_the_web_tier_dying_never_makes_a_healthy_node_lost(head: Node) -> None:
    """The node heartbeats until T0; the web tier ticks until T0 + 2 s, then dies (so the
    node's next heartbeat is never heard). A reconcile at any moment after (the reported
    run terminated a healthy worker between 9 and 12 s) leaves it alone."""
    ticks_from(-60, 2)
    for tenth in range(20, 600, 5):
        assert reconcile_at(head, tenth / 10) == NodeState.READY, f"lost at {tenth / 10} s"


def test_a_node_silent_while_listening_is_lost_after_exactly_the_grace(head: Node) -> None:
    ticks_from(-60, GRACE)  # the last tick at T0 + GRACE: silence counts up to here
    assert reconcile_at(head, GRACE) == NodeState.READY  # silent for the grace: not yet
    live.tick(T0.timestamp() + GRACE + 0.5)
    assert reconcile_at(head, GRACE + 0.5) == NodeState.LOST


def test_listening_stops_after_a_gap_and_silence_counts_from_its_return(head: Node) -> None:
    ticks_from(-60, 0)
    gap = live.gap_seconds()
    assert live.listening(T0.timestamp() + gap).now
    assert not live.listening(T0.timestamp() + gap + 0.01).now
    # Back after a minute: the node gets the whole grace from then.
    back = 60.0
    live.tick(T0.timestamp() + back)
    ticks_from(back, back + GRACE)
    assert reconcile_at(head, back + GRACE) == NodeState.READY
    live.tick(T0.timestamp() + back + GRACE + 0.5)
    assert reconcile_at(head, back + GRACE + 0.5) == NodeState.LOST


def test_a_grace_without_margin_for_an_unnoticed_gap_is_refused(settings) -> None:
    from clusters.apps import check_node_lost_margin

    assert check_node_lost_margin() == []
    settings.RAYDECK_NODE_LOST_AFTER_SECONDS = 10  # a gap of 3.3 s + a 5 s heartbeat
    assert [m.id for m in check_node_lost_margin()] == ["raydeck.E001"]
    assert any(m.id == "raydeck.E001" for m in checks.run_checks())
