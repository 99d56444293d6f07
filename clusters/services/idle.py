"""Idle termination: a running cluster that nobody uses stops on its own, and says why.

Idle means: no running Ray job or driver, no job of Raydeck's running or queued on it
(the workloads say, `register_in_use_reasons`), no pending resource demand, and no Jupyter
kernel activity or connection through the access gateway in the last few minutes
(RECENT_SHARE of the idle timeout, at most RECENT_MAX), as the head last reported.
A cluster whose head has not reported recently is never idle: Raydeck does not
terminate what it cannot see. Idle time counts from the latest use (or start, or the
user's extension); after `idle_timeout_minutes` the cluster is terminated, and the
maximum uptime terminates it regardless of use. A warning event (and the page's banner)
always comes at least WARN_MAX / WARN_SHARE of the timeout before, during which a user
may keep it running once per run.

`evaluate` decides (pure); `cluster_idleness` is what the cluster page shows;
`idle_sweep` (beat) folds the head's reports into the row, warns and terminates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.models import User
from accounts.permissions import require
from kit.sweeps import each

from ..choices import ClusterState, DesiredState, EventLevel, NodeState
from ..live import HeadReport, busy_at, head_report, parse_time
from ..models import Cluster, Node
from ..tasks import enqueue_reconcile
from .events import record_event
from .lifecycle import cluster_terminate

WARN_MAX = timedelta(minutes=5)
WARN_SHARE = 0.2
RECENT_MAX = timedelta(minutes=5)
RECENT_SHARE = 0.5

# Owners of clusters that stop them their own way when idle (a workspace saves its files
# first): each returns True when it took the cluster over. Registered from AppConfig.ready.
IdleStopper = Callable[[Cluster, str], bool]
_idle_stoppers: list[IdleStopper] = []


def register_idle_stopper(stopper: IdleStopper) -> None:
    if stopper not in _idle_stoppers:
        _idle_stoppers.append(stopper)


def any_idle_stopper_took(cluster: Cluster, reason: str) -> bool:
    return any(stop(cluster, reason) for stop in _idle_stoppers)


# Workloads whose own records keep a cluster in use (a job handed to the head counts
# before Ray reports it, and while it waits in the cluster's queue): each returns why
# the cluster is busy, or nothing. Registered from AppConfig.ready.
InUseReasons = Callable[[Cluster], list[str]]
_in_use_reasons: list[InUseReasons] = []


def register_in_use_reasons(reasons: InUseReasons) -> None:
    if reasons not in _in_use_reasons:
        _in_use_reasons.append(reasons)


def workload_reasons(cluster: Cluster) -> list[str]:
    return [reason for reasons in _in_use_reasons for reason in reasons(cluster)]


@dataclass(frozen=True)
class Idleness:
    """Whether a cluster counts as idle now, why not, and when it will be terminated."""

    applies: bool  # False: not running, so nothing counts
    idle: bool = False
    reasons: list[str] = field(default_factory=list)  # why it is not idle
    idle_since: datetime | None = None
    terminate_at: datetime | None = None
    cause: str = ""  # "idle" or "max uptime": what terminate_at is for
    warn_at: datetime | None = None
    warned: bool = False
    can_extend: bool = False
    last_use: str = ""  # "connection through the gateway 7 min ago", when idle
    idle_timeout: timedelta = timedelta(0)

    @property
    def why_not(self) -> str:
        return "; ".join(self.reasons)

    def headline(self, now: datetime) -> str:
        """What the cluster page says, at this moment."""
        if not self.applies:
            return ""
        if not self.idle:
            return f"Not idle: {self.why_not}."
        return f"Idle for {minutes(now - (self.idle_since or now))}."

    def outlook(self, now: datetime) -> str:
        if not self.applies or self.terminate_at is None:
            return ""
        left = minutes(self.terminate_at - now, up=True)
        if self.cause == "max uptime":
            return f"Reaches its maximum uptime in {left}: terminated then, whatever runs."
        last = f" Last use: {self.last_use}." if self.last_use else ""
        return (
            f"Raydeck terminates it in {left} unless it is used (idle timeout "
            f"{minutes(self.idle_timeout)}).{last}"
        )


def ago(moment: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 60:
        return f"{math.floor(seconds)} s ago"
    return f"{math.floor(seconds / 60)} min ago"


def minutes(delta: timedelta, *, up: bool = False) -> str:
    """ "45 s", "7 min": elapsed time rounds down, time left (`up`) rounds up."""
    seconds = max(0.0, delta.total_seconds())
    whole = math.ceil if up else math.floor
    if seconds < 120:
        return f"{whole(seconds)} s"
    return f"{whole(seconds / 60)} min"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def warn_lead(timeout: timedelta) -> timedelta:
    return min(WARN_MAX, timeout * WARN_SHARE)


def report_reasons(
    report: HeadReport | None, now: datetime
) -> tuple[list[str], dict[str, datetime]]:
    """Why the report says the cluster is busy, and the moments of its touch signals."""
    if report is None:
        return ["the head node has not reported its activity yet"], {}
    if not report.is_fresh(now):
        return [f"the head node last reported {ago(report.at, now)}"], {}
    activity = report.activity
    if not isinstance(activity, dict):
        return ["the head node does not report its activity"], {}
    reasons = []
    jobs, drivers, demand = (activity.get(k) for k in ("running_jobs", "drivers", "pending_demand"))
    if not isinstance(jobs, int) or not isinstance(drivers, int) or not isinstance(demand, int):
        reasons.append("Ray's jobs and demand are not known yet")
    if isinstance(jobs, int) and jobs:
        reasons.append(f"{_plural(jobs, 'job', 'jobs')} running")
    if isinstance(drivers, int) and drivers:
        reasons.append(f"{_plural(drivers, 'Ray driver', 'Ray drivers')} connected")
    if isinstance(demand, int) and demand:
        reasons.append(f"{_plural(demand, 'resource request', 'resource requests')} pending")
    touches = {}
    for key, label in (
        ("last_connection_at", "connection through the gateway"),
        ("kernel_last_active_at", "Jupyter kernel active"),
        ("terminal_last_active_at", "Jupyter terminal used"),
        ("ssh_last_active_at", "SSH session active"),
    ):
        moment = parse_time(activity.get(key))
        if moment is not None:
            touches[label] = min(moment, now)
    return reasons, touches


def evaluate(
    *,
    state: str,
    started_at: datetime | None,
    last_active_at: datetime | None,
    warned_at: datetime | None,
    extended_at: datetime | None,
    idle_timeout: timedelta,
    max_uptime: timedelta | None,
    report: HeadReport | None,
    now: datetime,
    in_use: Sequence[str] = (),
) -> Idleness:
    if state != ClusterState.RUNNING or started_at is None:
        return Idleness(applies=False, idle_timeout=idle_timeout)
    reasons, touches = report_reasons(report, now)
    reasons += in_use
    recent = min(RECENT_MAX, idle_timeout * RECENT_SHARE)
    for label, moment in touches.items():
        if now - moment < recent:
            reasons.append(f"{label} {ago(moment, now)}")
    extended = extended_at if extended_at and extended_at >= started_at else None
    lead = warn_lead(idle_timeout)
    idle_since = None
    terminate_at: datetime | None = None
    cause = ""
    last_use = ""
    if not reasons:
        moments = [started_at, last_active_at, extended, *touches.values()]
        idle_since = max(m for m in moments if m is not None)
        terminate_at, cause = idle_since + idle_timeout, "idle"
        if touches and max(touches.values()) == idle_since:
            label = max(touches, key=lambda k: touches[k])
            last_use = f"{label} {ago(idle_since, now)}"
    if max_uptime is not None:
        uptime_end = started_at + max_uptime
        if terminate_at is None or uptime_end < terminate_at:
            terminate_at, cause = uptime_end, "max uptime"
    warned = warned_at is not None and warned_at >= started_at
    if terminate_at is not None and warned and warned_at is not None:
        terminate_at = max(terminate_at, warned_at + lead)  # the warning always comes first
    return Idleness(
        applies=True,
        idle=not reasons,
        reasons=reasons,
        idle_since=idle_since,
        terminate_at=terminate_at,
        cause=cause,
        warn_at=terminate_at - lead if terminate_at else None,
        warned=warned,
        can_extend=warned and cause == "idle" and extended is None,
        last_use=last_use,
        idle_timeout=idle_timeout,
    )


def _timeouts(cluster: Cluster) -> tuple[timedelta, timedelta | None]:
    config = cluster.compute_config
    uptime = config.max_uptime_minutes
    return (
        timedelta(minutes=config.idle_timeout_minutes),
        timedelta(minutes=uptime) if uptime else None,
    )


def cluster_idleness(cluster: Cluster, now: datetime | None = None) -> Idleness:
    """What the cluster page shows: the row as the last sweep left it, plus the latest
    report (so the page is right between sweeps)."""
    now = now or timezone.now()
    idle_timeout, max_uptime = _timeouts(cluster)
    last_active = _latest(cluster.last_active_at, busy_at(cluster.pk))
    return evaluate(
        state=cluster.state,
        started_at=cluster.started_at,
        last_active_at=last_active,
        warned_at=cluster.idle_warned_at,
        extended_at=cluster.idle_extended_at,
        idle_timeout=idle_timeout,
        max_uptime=max_uptime,
        report=head_report(cluster.pk),
        now=now,
        in_use=workload_reasons(cluster),
    )


def _latest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return max(known) if known else None


# --- The sweep --------------------------------------------------------------------------


def idle_sweep(now: datetime | None = None) -> int:
    """Check every running cluster; returns how many it asked to terminate."""
    ids = Cluster.objects.filter(
        state=ClusterState.RUNNING, desired_state=DesiredState.RUNNING
    ).values_list("pk", flat=True)
    asked: list[int] = []

    def check(pk: int) -> None:
        if cluster_idle_check(cluster_id=pk, now=now):
            asked.append(pk)

    each(ids, check, what="The idle check of cluster")
    return len(asked)


@transaction.atomic
def cluster_idle_check(*, cluster_id: int, now: datetime | None = None) -> bool:
    """Fold the latest use into the row, warn before terminating, terminate when due.
    True when it asked for the cluster to be terminated."""
    now = now or timezone.now()
    cluster = (
        Cluster.objects.select_for_update(of=("self",))
        .select_related("compute_config")
        .filter(pk=cluster_id)
        .first()
    )
    if cluster is None or cluster.state != ClusterState.RUNNING:
        return False
    if cluster.desired_state != DesiredState.RUNNING:
        return False
    report = head_report(cluster.pk)
    folded = _latest(cluster.last_active_at, busy_at(cluster.pk))
    if folded != cluster.last_active_at:
        cluster.last_active_at = folded
        cluster.save(update_fields=["last_active_at", "updated_at"])
    idle_timeout, max_uptime = _timeouts(cluster)
    state = evaluate(
        state=cluster.state,
        started_at=cluster.started_at,
        last_active_at=cluster.last_active_at,
        warned_at=cluster.idle_warned_at,
        extended_at=cluster.idle_extended_at,
        idle_timeout=idle_timeout,
        max_uptime=max_uptime,
        report=report,
        now=now,
        in_use=workload_reasons(cluster),
    )
    in_window = state.warn_at is not None and now >= state.warn_at
    if state.warned and not state.idle and not (state.cause == "max uptime" and in_window):
        cluster.idle_warned_at = None
        cluster.save(update_fields=["idle_warned_at", "updated_at"])
        record_event(
            cluster, "in use again", f"No longer idle ({state.why_not}): it keeps running."
        )
        return False
    if state.terminate_at is None or not in_window:
        return False
    if not state.warned:
        cluster.idle_warned_at = now
        cluster.save(update_fields=["idle_warned_at", "updated_at"])
        ends = max(state.terminate_at, now + warn_lead(idle_timeout))
        record_event(
            cluster,
            "idle warning",
            _warning(state, ends, max_uptime, now),
            level=EventLevel.WARNING,
        )
        return False
    if now < state.terminate_at:
        return False
    reason = _termination_reason(state, idle_timeout, max_uptime, now)
    if not any_idle_stopper_took(cluster, reason):
        cluster_terminate(cluster=cluster, actor=None, reason=reason)
    return True


def _warning(state: Idleness, ends: datetime, max_uptime: timedelta | None, now: datetime) -> str:
    left = minutes(ends - now, up=True)
    if state.cause == "max uptime":
        return (
            f"The cluster reaches its maximum uptime of {minutes(max_uptime or timedelta())}"
            f": Raydeck terminates it in {left}, whatever runs on it."
        )
    idle_for = minutes(now - (state.idle_since or now))
    return (
        f"Idle for {idle_for} (no job, driver, pending demand or connection): Raydeck "
        f"terminates it in {left} unless it is used or someone keeps it running."
    )


def _termination_reason(
    state: Idleness, idle_timeout: timedelta, max_uptime: timedelta | None, now: datetime
) -> str:
    if state.cause == "max uptime":
        return (
            f"Terminated by Raydeck: the cluster reached its maximum uptime of "
            f"{minutes(max_uptime or timedelta())}."
        )
    idle_for = minutes(now - (state.idle_since or now))
    return (
        f"Terminated by Raydeck: idle for {idle_for} (idle timeout "
        f"{minutes(idle_timeout)}): no running job or driver, no pending demand, no "
        "Jupyter kernel activity or connection through the gateway."
    )


# --- What users and agents do -------------------------------------------------------------


@transaction.atomic(durable=True)
def cluster_keep_running(*, cluster: Cluster, actor: User) -> Cluster:
    """Postpone an idle termination once per run: idle time counts again from now."""
    require(actor, "cluster.update", cluster.project)
    cluster = (
        Cluster.objects.select_for_update().select_related("compute_config").get(pk=cluster.pk)
    )
    state = cluster_idleness(cluster)
    if not state.warned or state.cause != "idle":
        raise ValidationError("Only a cluster about to be terminated for being idle can be kept.")
    if not state.can_extend:
        raise ValidationError("This cluster was already kept running once since it started.")
    now = timezone.now()
    cluster.idle_extended_at, cluster.idle_warned_at = now, None
    cluster.save(update_fields=["idle_extended_at", "idle_warned_at", "updated_at"])
    timeout = minutes(timedelta(minutes=cluster.compute_config.idle_timeout_minutes))
    record_event(
        cluster,
        "kept running",
        f"{actor.display_name} kept the cluster running: "
        f"idle time counts from now, for {timeout} more.",
    )
    audit(
        actor=actor,
        verb="cluster.keep_running",
        target=cluster,
        changes={"idle_extended_at": [None, now.isoformat()]},
    )
    return cluster


@transaction.atomic
def cluster_stopped_itself(*, node_pk: int, report: dict[str, Any]) -> None:
    """The head stopped Ray on its own while the control plane was unreachable (the
    agent's dead-man's switch). Record why, and terminate what is left."""
    node = Node.objects.select_related("cluster").get(pk=node_pk)
    cluster = Cluster.objects.select_for_update().get(pk=node.cluster_id)
    reason = str(report.get("reason") or "control plane unreachable while idle")[:300]
    if cluster.desired_state == DesiredState.TERMINATED:
        return
    message = f"Stopped itself: {reason}."
    cluster.desired_state = DesiredState.TERMINATED
    cluster.save(update_fields=["desired_state", "updated_at"])
    # Ray is stopped on them: they are on their way out, and say why (_drive_down keeps
    # the reason of a node already terminating).
    cluster.nodes.live().update(
        state=NodeState.TERMINATING, state_reason=message, state_changed_at=timezone.now()
    )
    record_event(cluster, "stopped itself", message, node=node, level=EventLevel.WARNING)
    changes = {"desired_state": ["running", "terminated"], "reason": [None, reason]}
    audit(actor=None, verb="cluster.stopped_itself", target=cluster, changes=changes)
    enqueue_reconcile(cluster.pk)
