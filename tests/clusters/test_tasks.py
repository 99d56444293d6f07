"""The reconcile task's follow-ups: one chain per cluster, however it is enqueued; and a
change someone asks for is taken ahead of the follow-ups waiting in the queue."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from unittest import mock

import pytest
from django.conf import settings
from django.core.cache import cache

from clusters import live, tasks
from clusters.choices import ClusterState, DesiredState, NodeRole, NodeState
from clusters.services import agents
from clusters.services.reconcile import Outcome
from tests.conftest import Tenant
from tests.factories import ClusterFactory, NodeFactory


@pytest.fixture
def cluster_id() -> Iterator[int]:
    pk = random.randrange(10**9, 2 * 10**9)  # keys of no real cluster; the cache may be shared
    yield pk
    cache.delete(live.QUEUED_KEY.format(pk))


@pytest.fixture
def sent() -> Iterator[list[dict]]:
    """Every reconcile_cluster message sent (not run)."""
    calls: list[dict] = []
    with mock.patch.object(
        tasks.reconcile_cluster, "apply_async", side_effect=lambda **kw: calls.append(kw)
    ):
        yield calls


def run(cluster_id: int, task_id: str, requeue_in: int | None) -> None:
    """The task as a worker runs it, around a reconcile that asks for `requeue_in`."""
    outcome = Outcome("starting", requeue_in)
    with mock.patch("clusters.services.reconcile.cluster_reconcile", return_value=outcome):
        tasks.reconcile_cluster.apply(kwargs={"cluster_id": cluster_id}, task_id=task_id)


def test_a_reconcile_enqueued_directly_does_not_start_a_second_chain(cluster_id, sent) -> None:
    assert tasks.enqueue_reconcile(cluster_id, follow_up=True, countdown=15)
    follow_up = sent[0]["task_id"]
    run(cluster_id, "agent-reported-ready", requeue_in=15)  # enqueue_reconcile's task
    assert len(sent) == 1  # the waiting follow-up continues the chain
    run(cluster_id, follow_up, requeue_in=15)
    assert len(sent) == 2 and sent[1]["countdown"] == 15
    assert tasks.enqueue_reconcile(cluster_id, follow_up=True) is False  # the sweep: one is waiting


def test_a_sooner_follow_up_takes_over_and_the_later_one_ends(cluster_id, sent) -> None:
    assert tasks.enqueue_reconcile(cluster_id, follow_up=True, countdown=15)
    later = sent[0]["task_id"]
    run(cluster_id, "user-asked-to-terminate", requeue_in=2)
    assert [m["countdown"] for m in sent] == [15, 2]
    sooner = sent[1]["task_id"]
    run(cluster_id, sooner, requeue_in=2)
    assert len(sent) == 3
    run(cluster_id, later, requeue_in=15)  # runs once, continues nothing
    assert len(sent) == 3


def test_the_sweep_enqueues_when_nothing_waits(cluster_id, sent) -> None:
    assert tasks.enqueue_reconcile(cluster_id, follow_up=True)
    assert not tasks.enqueue_reconcile(cluster_id, follow_up=True)
    run(cluster_id, sent[0]["task_id"], requeue_in=None)  # done: no follow-up
    assert tasks.enqueue_reconcile(cluster_id, follow_up=True)
    assert len(sent) == 2


def test_pending_demand_asks_the_autoscaler_once_per_kick(tenant_a: Tenant, sent) -> None:
    """A head heartbeat with pending demand enqueues a reconcile now (the autoscaler looks
    at once), one per KICK_EVERY_SECONDS however many heartbeats repeat the demand."""
    cluster = ClusterFactory(
        project=tenant_a.project, cloud=tenant_a.cloud, state=ClusterState.RUNNING
    )
    head = NodeFactory(cluster=cluster, role=NodeRole.HEAD, state=NodeState.READY)
    node = agents.HeartbeatNode(
        pk=head.pk,
        cluster_id=cluster.pk,
        role=NodeRole.HEAD,
        state=NodeState.READY,
        desired_state=DesiredState.RUNNING,
        head_address=None,
        persisted_at=None,
    )
    demand = {"state": "ready", "ray": {"pending_demand": [{"CPU": 2.0}]}}
    try:
        agents.node_heartbeat(node=node, body={"state": "ready", "ray": {"pending_demand": []}})
        assert sent == []  # no demand: nothing to look at
        for _ in range(3):
            agents.node_heartbeat(node=node, body=demand)
        assert [(m["kwargs"], m["countdown"]) for m in sent] == [({"cluster_id": cluster.pk}, 0)]
        report = live.head_report(cluster.pk)
        assert report is not None and report.demand == [{"CPU": 2.0}]
    finally:
        agents.flush_heartbeats()
        cache.delete_many([live.KICK_KEY.format(cluster.pk), live.QUEUED_KEY.format(cluster.pk)])


@pytest.mark.django_db
def test_a_change_goes_to_the_changes_queue_and_a_follow_up_to_the_default_one(
    cluster_id, sent, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.enqueue_reconcile(cluster_id)  # a create, a terminate, a report
    assert tasks.enqueue_reconcile(cluster_id, follow_up=True, countdown=15)
    assert [m.get("queue") for m in sent] == [settings.CHANGES_QUEUE, None]


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")
def test_a_worker_takes_a_change_before_the_backlog_of_follow_ups() -> None:
    """On real Redis, with the broker settings a deployment runs: 30 follow-ups of running
    clusters wait, then someone terminates a cluster. A worker consuming the queues as
    every worker does takes the terminate's reconcile first, not after the backlog.
    (A key prefix of this test's own keeps its messages away from any other worker.)"""
    from console.celery import app

    prefix = {"global_keyprefix": f"raydeck-test-{uuid.uuid4().hex}:"}
    taken: list[int] = []
    with app.connection_for_write(transport_options=prefix) as conn:
        for follow_up in range(30):
            tasks.reconcile_cluster.apply_async(kwargs={"cluster_id": follow_up}, connection=conn)
        tasks.reconcile_cluster.apply_async(
            kwargs={"cluster_id": 10**9}, queue=settings.CHANGES_QUEUE, connection=conn
        )

        def take(body: object, message) -> None:  # type: ignore[no-untyped-def]
            taken.append(body[1]["cluster_id"])  # type: ignore[index]
            message.ack()

        queues = list(app.amqp.queues.values())
        with conn.Consumer(queues, callbacks=[take], prefetch_count=1, accept=["json"]):
            conn.drain_events(timeout=5)
        client = conn.default_channel.client
        for queue in queues:
            client.delete(queue.name)  # prefixed by the client
    assert taken == [10**9]
