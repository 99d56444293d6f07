"""Idle termination: what counts as idle and what the page says about it, the warning
before the end, keeping a cluster once, maximum uptime, and the dead-man's switch's
report. Reports go through the real shared cache; time moves through `now`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from clusters.choices import ClusterState, DesiredState, EventLevel, NodeRole, NodeState
from clusters.live import HeadReport, note_head_report
from clusters.services import agents, idle
from clusters.services.idle import cluster_idle_check, cluster_idleness, evaluate
from tests.conftest import client_for, fail_for_one
from tests.factories import ClusterFactory, NodeFactory

HOUR = timedelta(minutes=60)
IDLE = {
    "running_jobs": 0,
    "drivers": 0,
    "pending_demand": 0,
    "last_connection_at": None,
    "kernel_last_active_at": None,
}


def judge(activity, now, *, started=None, last_active=None, timeout=HOUR, report_age=1):
    report = None
    if activity is not None:
        report = HeadReport(at=now - timedelta(seconds=report_age), ray={}, activity=activity)
    return evaluate(
        state=ClusterState.RUNNING,
        started_at=started or now - 2 * HOUR,
        last_active_at=last_active,
        warned_at=None,
        extended_at=None,
        idle_timeout=timeout,
        max_uptime=None,
        report=report,
        now=now,
    )


@pytest.mark.parametrize(
    ("activity", "why_not"),
    [
        ({**IDLE, "running_jobs": 1}, "1 job running"),
        ({**IDLE, "running_jobs": 2, "drivers": 1}, "2 jobs running; 1 Ray driver connected"),
        ({**IDLE, "pending_demand": 3}, "3 resource requests pending"),
        ({**IDLE, "last_connection_at": "-120"}, "connection through the gateway 2 min ago"),
        ({**IDLE, "kernel_last_active_at": "-40"}, "Jupyter kernel active 40 s ago"),
        ({**IDLE, "running_jobs": None}, "Ray's jobs and demand are not known yet"),
        (None, "the head node has not reported its activity yet"),
    ],
)
def test_why_a_cluster_is_not_idle(activity, why_not) -> None:
    now = timezone.now()
    if activity:
        activity = {
            k: (now + timedelta(seconds=int(v))).isoformat() if isinstance(v, str) else v
            for k, v in activity.items()
        }
    state = judge(activity, now)
    assert not state.idle
    assert state.why_not == why_not
    assert state.headline(now) == f"Not idle: {why_not}."
    assert state.terminate_at is None


def test_a_stale_report_never_counts_as_idle() -> None:
    now = timezone.now()
    state = judge(IDLE, now, report_age=120)
    assert state.why_not == "the head node last reported 2 min ago"


def test_idle_counts_from_the_latest_use_and_says_when_it_ends() -> None:
    now = timezone.now()
    seven_ago = now - timedelta(minutes=7)
    state = judge({**IDLE, "last_connection_at": seven_ago.isoformat()}, now)
    assert state.idle and state.idle_since == seven_ago
    assert state.headline(now) == "Idle for 7 min."
    assert state.outlook(now) == (
        "Raydeck terminates it in 53 min unless it is used (idle timeout 60 min). "
        "Last use: connection through the gateway 7 min ago."
    )
    # A job seen 10 minutes ago (folded into last_active_at) is later than the start.
    state = judge(IDLE, now, last_active=now - timedelta(minutes=10))
    assert state.idle_since == now - timedelta(minutes=10)


# --- The sweep ---------------------------------------------------------------------------


@pytest.fixture
def running(tenant_a):
    started = timezone.now() - timedelta(minutes=61)
    cluster = ClusterFactory(
        project=tenant_a.project,
        cloud=tenant_a.cloud,
        name="idle",
        state=ClusterState.RUNNING,
        started_at=started,
    )
    NodeFactory(cluster=cluster, role=NodeRole.HEAD, state=NodeState.READY)
    return cluster


def report(cluster, activity, now) -> None:
    note_head_report(cluster.pk, {"pending_demand": []}, activity, now.timestamp())


def test_an_idle_cluster_is_warned_then_terminated_with_its_reason(running, tenant_a) -> None:
    now = timezone.now()
    report(running, IDLE, now)
    assert cluster_idle_check(cluster_id=running.pk, now=now) is False
    running.refresh_from_db()
    assert running.idle_warned_at == now
    warning = running.events.get(step="idle warning")
    assert warning.level == EventLevel.WARNING
    assert warning.message == (
        "Idle for 61 min (no job, driver, pending demand or connection): "
        "Raydeck terminates it in 5 min unless it is used or someone "
        "keeps it running."
    )
    # The page shows the banner with the button.
    page = client_for(tenant_a.member).get(
        reverse("cluster_detail", args=[tenant_a.org.slug, running.pk])
    )
    assert "Idle: this cluster will be terminated." in page.content.decode()
    assert "Keep it running" in page.content.decode()
    later = now + timedelta(minutes=5, seconds=1)
    report(running, IDLE, later)
    assert cluster_idle_check(cluster_id=running.pk, now=later) is True
    running.refresh_from_db()
    assert running.desired_state == DesiredState.TERMINATED
    reason = running.events.get(step="terminate requested").message
    assert reason.startswith("Terminated by Raydeck: idle for 66 min (idle timeout 60 min)")
    entry = AuditEvent.objects.get(verb="cluster.terminate", target_id=str(running.pk))
    assert entry.actor is None and entry.changes["reason"] == [None, reason]


def test_never_while_a_job_runs(running) -> None:
    now = timezone.now()
    for minute in range(0, 180, 10):
        moment = now + timedelta(minutes=minute)
        report(running, {**IDLE, "running_jobs": 1}, moment)
        assert cluster_idle_check(cluster_id=running.pk, now=moment) is False
    running.refresh_from_db()
    assert running.desired_state == DesiredState.RUNNING and running.idle_warned_at is None
    assert cluster_idleness(running, moment).why_not == "1 job running"


def test_use_after_the_warning_cancels_it(running) -> None:
    now = timezone.now()
    report(running, IDLE, now)
    cluster_idle_check(cluster_id=running.pk, now=now)
    report(running, {**IDLE, "drivers": 1}, now + timedelta(seconds=30))
    cluster_idle_check(cluster_id=running.pk, now=now + timedelta(seconds=30))
    running.refresh_from_db()
    assert running.idle_warned_at is None
    assert running.events.get(step="in use again").message == (
        "No longer idle (1 Ray driver connected): it keeps running."
    )


def test_keep_running_once_and_audited(running, tenant_a) -> None:
    now = timezone.now()
    report(running, IDLE, now)
    cluster_idle_check(cluster_id=running.pk, now=now)
    url = reverse("cluster_keep_running", args=[tenant_a.org.slug, running.pk])
    viewer = client_for(tenant_a.viewer)
    assert viewer.post(url).status_code == 403
    member = client_for(tenant_a.member)
    assert member.post(url).status_code == 302
    running.refresh_from_db()
    assert running.idle_extended_at is not None and running.idle_warned_at is None
    assert AuditEvent.objects.filter(verb="cluster.keep_running", actor=tenant_a.member).exists()
    # Idle time counts from the extension: no warning until the timeout passed again.
    report(running, IDLE, timezone.now())
    assert cluster_idle_check(cluster_id=running.pk) is False
    running.refresh_from_db()
    assert running.idle_warned_at is None
    # A second warning in the same run offers no second extension.
    later = timezone.now() + timedelta(minutes=56)
    report(running, IDLE, later)
    cluster_idle_check(cluster_id=running.pk, now=later)
    running.refresh_from_db()
    assert running.idle_warned_at == later
    member.post(url)
    running.refresh_from_db()
    assert running.idle_warned_at == later
    assert AuditEvent.objects.filter(verb="cluster.keep_running").count() == 1


def test_max_uptime_terminates_a_busy_cluster(running) -> None:
    version = running.compute_config
    version.max_uptime_minutes = 60
    version.save()
    now = timezone.now()
    report(running, {**IDLE, "running_jobs": 1}, now)
    cluster_idle_check(cluster_id=running.pk, now=now)
    assert "maximum uptime of 60 min" in running.events.get(step="idle warning").message
    later = now + timedelta(minutes=6)
    report(running, {**IDLE, "running_jobs": 1}, later)
    assert cluster_idle_check(cluster_id=running.pk, now=later) is True
    message = running.events.get(step="terminate requested").message
    assert message == "Terminated by Raydeck: the cluster reached its maximum uptime of 60 min."


def test_the_page_says_why_not_idle(running, tenant_a) -> None:
    now = timezone.now()
    two_min_ago = (now - timedelta(minutes=2)).isoformat()
    report(running, {**IDLE, "running_jobs": 1, "last_connection_at": two_min_ago}, now)
    page = client_for(tenant_a.viewer).get(
        reverse("cluster_detail", args=[tenant_a.org.slug, running.pk])
    )
    assert "Not idle: 1 job running; connection through the gateway 2 min ago." in (
        page.content.decode()
    )


def test_a_head_that_stopped_itself_is_reconciled(running) -> None:
    head = running.nodes.get(role=NodeRole.HEAD)
    node = agents.HeartbeatNode(
        pk=head.pk,
        cluster_id=running.pk,
        role=NodeRole.HEAD,
        state=NodeState.READY,
        desired_state=DesiredState.RUNNING,
        head_address=None,
        persisted_at=None,
    )
    reason = "control plane unreachable for 12 min while idle"
    answer = agents.node_heartbeat(
        node=node, body={"state": "stopped", "stopped_itself": {"reason": reason}}
    )
    assert answer["action"] == "stop"
    running.refresh_from_db()
    head.refresh_from_db()
    assert running.desired_state == DesiredState.TERMINATED
    assert running.events.get(step="stopped itself").message == f"Stopped itself: {reason}."
    assert head.state_reason == f"Stopped itself: {reason}."
    entry = AuditEvent.objects.get(verb="cluster.stopped_itself")
    assert entry.changes["reason"] == [None, reason]


def test_one_cluster_that_fails_its_check_does_not_keep_the_sweep_from_the_others(
    running, tenant_a, monkeypatch, caplog
) -> None:
    """Fault injected in-process: the check of one cluster raises."""
    other = ClusterFactory(
        project=tenant_a.project,
        cloud=tenant_a.cloud,
        name="idle-too",
        state=ClusterState.RUNNING,
        started_at=running.started_at,
    )
    NodeFactory(cluster=other, role=NodeRole.HEAD, state=NodeState.READY)
    now = timezone.now()
    for cluster in (running, other):
        report(cluster, IDLE, now)
    fail_for_one(monkeypatch, idle, "cluster_idle_check", key="cluster_id", pk=running.pk)
    idle.idle_sweep(now=now)
    other.refresh_from_db()
    assert other.idle_warned_at == now  # judged although the first one failed
    assert f"The idle check of cluster {running.pk} failed" in caplog.text

    # The database gone fails every cluster alike: the pass ends, and says so.
    def database_down(*, cluster_id, now=None):
        raise OperationalError("connection refused")

    monkeypatch.setattr(idle, "cluster_idle_check", database_down)
    with pytest.raises(OperationalError):
        idle.idle_sweep(now=now)
