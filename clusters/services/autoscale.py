"""Autoscaling: the number of workers each group should have, from what the head reports.

`plan` decides (pure, fast to test); `cluster_autoscale` runs inside the reconciler's
pass, under its lease and with the cluster's row locked, writes the desired count per
group and marks the workers to remove, and the same pass then plans and launches
(_plan_nodes) or terminates them. Heartbeats only write the head's report to the cache,
so concurrent heartbeats never race a decision, and a launch is only ever planned as a
Node row counted by the next decision.

Up: every pending resource request (a task, an actor, a placement group bundle) is
packed first onto workers still arriving (launching, or ready so recently that the
report may predate them), then onto workers this decision adds, in the first group that
fits it and is below its max. Down: with no pending demand, a ready worker that the head
reports idle for its group's downscale delay is removed, down to the group's min.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from ..choices import ClusterState, DesiredState, EventLevel, NodeRole, NodeState
from ..live import HeadReport, head_report
from ..models import Cluster, Node, downscale_delay
from .events import record_event

MIB = 1 << 20
SETTLE_SECONDS = 20  # a report may not yet count a worker that became ready this recently
NOTE_KEY = "raydeck:autoscale-note:{}"
NOTE_SECONDS = 10 * 60  # the same "cannot fit" message is recorded once per this long


@dataclass(frozen=True)
class Group:
    name: str
    capacity: dict[str, float]
    min: int
    max: int
    delay: int

    @classmethod
    def from_config(cls, group: dict[str, Any]) -> Group:
        capacity = {
            "CPU": float(group.get("cpus", 1)),
            "GPU": float(group.get("gpus", 0)),
            "memory": float(group.get("memory_mb", 1024)) * MIB,
        }
        capacity.update({str(k): float(v) for k, v in (group.get("resources") or {}).items()})
        return cls(
            name=str(group["name"]),
            capacity=capacity,
            min=int(group.get("min", 0)),
            max=int(group.get("max", 0)),
            delay=downscale_delay(group),
        )

    def fits(self, shape: dict[str, float]) -> bool:
        return _fits(self.capacity, shape)


@dataclass(frozen=True)
class Worker:
    pk: int
    group: str
    arriving: bool  # not yet (surely) counted in the head's report
    idle_seconds: float | None  # as the head reports; None: unknown, never removed


@dataclass
class Plan:
    add: Counter[str] = field(default_factory=Counter)
    remove: dict[int, str] = field(default_factory=dict)  # worker pk -> why
    messages: list[str] = field(default_factory=list)  # one event each
    waiting: str = ""  # demand no group can take, said once in a while


def _fits(free: dict[str, float], shape: dict[str, float]) -> bool:
    return all(free.get(k, 0.0) + 1e-9 >= v for k, v in shape.items() if v > 0 and _counts(k))


def _counts(resource: str) -> bool:
    # object_store_memory is sized by Ray itself; node:<ip> markers are not capacity.
    return resource != "object_store_memory" and not resource.startswith("node:")


def _take(free: dict[str, float], shape: dict[str, float]) -> None:
    for k, v in shape.items():
        if _counts(k):
            free[k] = free.get(k, 0.0) - v


def describe(shapes: list[dict[str, float]]) -> str:
    """The sum of what waits: "2 CPU pending", "1 GPU, 8 CPU pending"."""
    total: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    for shape in shapes:
        for k, v in shape.items():
            if k in ("CPU", "GPU"):
                total[k] += v
    parts = [f"{_num(total[k])} {k}" for k in ("GPU", "CPU") if total[k]]
    if not parts:
        count = len(shapes)
        return f"{count} resource request{'s' if count != 1 else ''} pending"
    return ", ".join(parts) + " pending"


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def plan(
    *,
    groups: list[Group],
    workers: list[Worker],
    demand: list[dict[str, float]],
    cluster_cpus: float,
) -> Plan:
    result = Plan()
    live = Counter(w.group for w in workers)
    by_name = {g.name: g for g in groups}
    # Arriving workers first: what they will bring is already on its way.
    bins: list[tuple[str, dict[str, float]]] = [
        (w.group, dict(by_name[w.group].capacity))
        for w in workers
        if w.arriving and w.group in by_name
    ]
    placed_new: dict[str, list[dict[str, float]]] = {}
    unfit: list[dict[str, float]] = []
    at_max: Counter[str] = Counter()
    largest_first = sorted(demand, key=lambda s: (-s.get("GPU", 0), -s.get("CPU", 0)))
    for shape in largest_first:
        target = next((free for _, free in bins if _fits(free, shape)), None)
        if target is not None:
            _take(target, shape)
            continue
        fitting = [g for g in groups if g.fits(shape)]
        if not fitting:
            unfit.append(shape)
            continue
        group = next((g for g in fitting if live[g.name] + result.add[g.name] < g.max), None)
        if group is None:
            at_max[fitting[0].name] += 1
            continue
        result.add[group.name] += 1
        free = dict(group.capacity)
        _take(free, shape)
        bins.append((group.name, free))
        placed_new.setdefault(group.name, []).append(shape)
    for name, count in result.add.items():
        result.messages.append(
            f"Added {count} worker{'s' if count != 1 else ''} of group {name}: "
            f"{describe(placed_new[name])}, the cluster has {_num(cluster_cpus)} CPU."
        )
    notes = []
    if unfit:
        notes.append(
            f"No worker group fits {describe(unfit)} (largest request: "
            f"{_shape(unfit[0])}); it waits."
        )
    for name, count in at_max.items():
        notes.append(
            f"Group {name} is at its maximum of {by_name[name].max} "
            f"worker{'s' if by_name[name].max != 1 else ''}; "
            f"{count} request{'s' if count != 1 else ''} wait."
        )
    result.waiting = " ".join(notes)
    if demand:
        return result  # never remove a worker while anything waits
    for group in groups:
        spare = live[group.name] - group.min
        idle = sorted(
            (
                w
                for w in workers
                if w.group == group.name
                and w.idle_seconds is not None
                and not w.arriving
                and w.idle_seconds >= group.delay
            ),
            key=lambda w: -(w.idle_seconds or 0),
        )
        for worker in idle[: max(0, spare)]:
            result.remove[worker.pk] = (
                f"idle for {_seconds(worker.idle_seconds or 0)} "
                f"(downscale delay {_seconds(group.delay)})"
            )
        removed = min(len(idle), max(0, spare))
        if removed:
            left = live[group.name] - removed
            result.messages.append(
                f"Removed {removed} worker{'s' if removed != 1 else ''} of group {group.name}: "
                f"idle for at least {_seconds(group.delay)}, {left} left (min {group.min})."
            )
    return result


def _shape(shape: dict[str, float]) -> str:
    return ", ".join(f"{k}: {_num(v)}" for k, v in sorted(shape.items()) if _counts(k))


def _seconds(value: float) -> str:
    if value < 120:
        return f"{math.floor(value)} s"
    return f"{math.floor(value / 60)} min"


# --- Applying a plan --------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What the autoscaler would do now: its plan, and the desired workers per group."""

    plan: Plan
    desired: dict[str, int]

    def acts_on(self, cluster: Cluster) -> bool:
        """Whether applying it changes or says anything (else there is nothing to lock)."""
        waiting = self.plan.waiting
        return bool(
            self.plan.remove
            or self.plan.messages
            or self.desired != (cluster.desired_workers or {})
            or (waiting and cache.get(NOTE_KEY.format(cluster.pk)) != waiting)
        )


def decide(
    cluster: Cluster, nodes: list[Node], report: HeadReport | None, now: datetime
) -> Decision | None:
    """The decision for a running cluster whose live nodes are `nodes` (pure but for the
    report, which the caller reads): None without worker groups or a fresh report."""
    groups = [Group.from_config(g) for g in cluster.compute_config.worker_groups]
    if not groups or report is None or not report.is_fresh(now):
        return None
    workers = [n for n in nodes if n.role == NodeRole.WORKER and n.state != NodeState.TERMINATING]
    settled = now - timedelta(seconds=SETTLE_SECONDS)
    result = plan(
        groups=groups,
        workers=[
            Worker(
                pk=n.pk,
                group=n.group,
                arriving=n.state != NodeState.READY or (n.ready_at or now) > settled,
                idle_seconds=report.node_idle_seconds(str(n.uuid)),
            )
            for n in workers
        ],
        demand=report.demand,
        cluster_cpus=report.cpus,
    )
    live = Counter(n.group for n in workers)
    desired = dict(cluster.desired_workers or {})
    for name, count in result.add.items():
        desired[name] = live[name] + count
    removed = Counter(n.group for n in workers if n.pk in result.remove)
    for name, count in removed.items():
        desired[name] = live[name] - count
    return Decision(plan=result, desired=desired)


def cluster_autoscale(
    cluster: Cluster, now: datetime | None = None, nodes: list[Node] | None = None
) -> Plan | None:
    """One decision for a running cluster with a fresh report from its head; called by
    the reconciler (which holds the cluster's lease) before it plans nodes. `nodes`, the
    cluster's live nodes as the pass read them, let a decision that changes nothing end
    without locking the row; one that acts is taken again under the lock."""
    now = now or timezone.now()
    report = head_report(cluster.pk)
    if nodes is not None:
        unlocked = decide(cluster, nodes, report, now)
        if unlocked is None or not unlocked.acts_on(cluster):
            return unlocked.plan if unlocked else None
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if locked.desired_state != DesiredState.RUNNING or locked.state != ClusterState.RUNNING:
            return None
        nodes = list(locked.nodes.staying().filter(role=NodeRole.WORKER))
        decision = decide(locked, nodes, report, now)
        if decision is None:
            return None
        result = decision.plan
        for node in nodes:
            if node.pk in result.remove:
                node.set_state(NodeState.TERMINATING, f"Autoscaler: {result.remove[node.pk]}.")
                node.save(update_fields=["state", "state_reason", "state_changed_at"])
        if decision.desired != (locked.desired_workers or {}):
            locked.desired_workers = decision.desired
            locked.save(update_fields=["desired_workers", "updated_at"])
        for message in result.messages:
            record_event(locked, "autoscaler", message)
        note_key = NOTE_KEY.format(cluster.pk)
        if result.waiting and cache.get(note_key) != result.waiting:
            cache.set(note_key, result.waiting, NOTE_SECONDS)
            record_event(locked, "autoscaler", result.waiting, level=EventLevel.WARNING)
    return result


def group_target(cluster: Cluster, group: dict[str, Any]) -> int:
    """How many workers of `group` the cluster should have now: the autoscaler's wish,
    within the group's min and max (min when it has none)."""
    low, high = int(group.get("min", 0)), int(group.get("max", 0))
    wanted = (cluster.desired_workers or {}).get(group["name"], low)
    return max(low, min(high, int(wanted)))


def workers_to_stop(cluster: Cluster) -> list[Node]:
    """Workers the autoscaler removed: the reconciler terminates their instances."""
    return list(cluster.nodes.filter(role=NodeRole.WORKER, state=NodeState.TERMINATING))
