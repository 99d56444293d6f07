"""What the head node last said about its cluster's use: pending demand, jobs, drivers,
gateway connections, which workers are idle. Kept in the shared cache, never in rows:
heartbeats are the hot path, and the autoscaler and the idle check only ever need the
latest report. A report lost with the cache only delays decisions (no report: nothing
is removed and nothing counts as idle)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache

REPORT_KEY = "raydeck:head-report:{}"
BUSY_KEY = "raydeck:busy-at:{}"  # the latest heartbeat that said the cluster was in use
KICK_KEY = "raydeck:demand-kick:{}"
KEEP_SECONDS = 24 * 60 * 60
KICK_EVERY_SECONDS = 5


@dataclass(frozen=True)
class HeadReport:
    at: datetime
    ray: dict[str, Any]
    activity: dict[str, Any] | None

    @property
    def demand(self) -> list[dict[str, float]]:
        demand = self.ray.get("pending_demand")
        return [d for d in demand if isinstance(d, dict)] if isinstance(demand, list) else []

    @property
    def cpus(self) -> float:
        total = self.ray.get("resources_total")
        value = total.get("CPU") if isinstance(total, dict) else None
        return float(value) if isinstance(value, int | float) else 0.0

    def node_idle_seconds(self, node_uuid: str) -> float | None:
        nodes = (self.activity or {}).get("nodes_idle_seconds")
        value = nodes.get(node_uuid) if isinstance(nodes, dict) else None
        return float(value) if isinstance(value, int | float) else None

    def is_fresh(self, now: datetime) -> bool:
        """Recent enough to act on: within three heartbeats."""
        return now - self.at <= timedelta(seconds=3 * settings.RAYDECK_HEARTBEAT_SECONDS + 2)


def busy_now(activity: dict[str, Any] | None) -> bool:
    """Jobs, drivers or demand right now, or a report that cannot tell."""
    if not isinstance(activity, dict):
        return True
    values = [activity.get(k) for k in ("running_jobs", "drivers", "pending_demand")]
    return any(not isinstance(v, int) or v > 0 for v in values)


def note_head_report(cluster_id: int, ray: dict[str, Any], activity: Any, now: float) -> None:
    """Called by each heartbeat of a head node whose Ray answered."""
    activity = activity if isinstance(activity, dict) else None
    values: dict[str, Any] = {REPORT_KEY.format(cluster_id): (now, ray, activity)}
    if busy_now(activity):
        values[BUSY_KEY.format(cluster_id)] = now
    cache.set_many(values, timeout=KEEP_SECONDS)
    if ray.get("pending_demand") and cache.add(KICK_KEY.format(cluster_id), 1,
                                               KICK_EVERY_SECONDS):  # fmt: skip
        from ..tasks import schedule_reconcile

        # Demand waits for workers: the autoscaler (in the reconciler) looks now.
        schedule_reconcile(cluster_id, 0, sooner_wins=True)


def head_report(cluster_id: int) -> HeadReport | None:
    value = cache.get(REPORT_KEY.format(cluster_id))
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    at, ray, activity = value
    return HeadReport(at=datetime.fromtimestamp(at, tz=UTC), ray=ray or {}, activity=activity)


def busy_at(cluster_id: int) -> datetime | None:
    value = cache.get(BUSY_KEY.format(cluster_id))
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int | float) else None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
