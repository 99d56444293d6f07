"""What counts as use of the cluster, as the head sees it: the signals that keep a cluster
from being idle, and how long it has been idle.

Signals come from two sides. In this process: the access gateway calls
`note_connection()` on every request it proxies (any thread). From Ray, once per
heartbeat: running jobs, connected drivers, pending resource demand and which nodes run
tasks or actors (see ray_status.Dashboard.activity). `IdleClock` folds them into "idle
since" for the whole cluster and for each worker node; the heartbeat carries the result
(`report`) and the dead-man's switch (deadman.py) uses the same clock.

Timestamps in the report are ISO 8601 in UTC; durations are seconds.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any


class Activity:
    """Signals noted in this process, safe to call from any thread."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_connection: float | None = None
        self._kernel_active: float | None = None
        self._other: dict[str, float] = {}  # "terminal", "ssh" -> last active
        self._open: dict[str, int] = {}  # "ssh" -> sessions open now (they count as now)

    def note_connection(self) -> None:
        """A request went through the access gateway just now."""
        now = self._clock()
        with self._lock:
            if self._last_connection is None or now > self._last_connection:
                self._last_connection = now

    def note_kernel_activity(self, at: float) -> None:
        """A Jupyter kernel was last active at `at` (epoch seconds)."""
        with self._lock:
            if self._kernel_active is None or at > self._kernel_active:
                self._kernel_active = at

    def note_activity(self, kind: str, at: float) -> None:
        """Someone used a Jupyter terminal ("terminal") or an SSH session ("ssh") at `at`."""
        with self._lock:
            if at > self._other.get(kind, 0.0):
                self._other[kind] = at

    def session_opened(self, kind: str) -> None:
        """A session ("ssh": a tunnel through the gateway) began; until it closes, it
        is activity at every look, however quiet its user is."""
        with self._lock:
            self._open[kind] = self._open.get(kind, 0) + 1

    def session_closed(self, kind: str) -> None:
        now = self._clock()
        with self._lock:
            self._open[kind] = max(0, self._open.get(kind, 0) - 1)
            self._other[kind] = max(now, self._other.get(kind, 0.0))

    def others(self) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            return {**self._other, **{kind: now for kind, n in self._open.items() if n}}

    @property
    def last_connection_at(self) -> datetime | None:
        with self._lock:
            at = self._last_connection
        return None if at is None else datetime.fromtimestamp(at, tz=UTC)

    @property
    def kernel_last_active_at(self) -> datetime | None:
        with self._lock:
            at = self._kernel_active
        return None if at is None else datetime.fromtimestamp(at, tz=UTC)

    def epochs(self) -> tuple[float | None, float | None]:
        """(last gateway connection, last kernel activity), epoch seconds."""
        with self._lock:
            return self._last_connection, self._kernel_active

    def latest_touch(self) -> float | None:
        """The latest gateway connection or kernel activity, epoch seconds."""
        with self._lock:
            stamps = [t for t in (self._last_connection, self._kernel_active) if t is not None]
        stamps += self.others().values()
        return max(stamps) if stamps else None


# The head's one instance: the gateway and the heartbeat share it.
ACTIVITY = Activity()


def note_connection() -> None:
    ACTIVITY.note_connection()


def __getattr__(name: str) -> Any:
    # `activity.last_connection_at` reads the shared instance's current value.
    if name in ("last_connection_at", "kernel_last_active_at"):
        return getattr(ACTIVITY, name)
    raise AttributeError(name)


def iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, tz=UTC).isoformat()


def busy_reasons(ray: dict[str, Any]) -> list[str]:
    """What in Ray's own state keeps the cluster busy now; ["unknown"] when the head's
    dashboard did not say (a cluster whose state is unknown is never idle)."""
    if "running_jobs" not in ray or "pending_demand" not in ray:
        return ["unknown"]
    reasons = []
    if ray.get("running_jobs"):
        reasons.append("jobs")
    if ray.get("running_drivers"):
        reasons.append("drivers")
    if ray.get("pending_demand"):
        reasons.append("demand")
    return reasons


class IdleClock:
    """Since when the cluster, and each worker node, has been idle (this process's view;
    a restarted agent starts counting again, which only ever delays termination)."""

    def __init__(self, activity: Activity = ACTIVITY, clock: Any = time.time) -> None:
        self.activity = activity
        self.clock = clock
        self.started = clock()
        self.busy_at: float | None = None  # Ray's own signals, last seen busy
        self.reasons: list[str] = ["unknown"]
        self.node_busy_at: dict[str, float] = {}
        self.node_seen_at: dict[str, float] = {}

    def observe(self, ray: dict[str, Any]) -> None:
        """Fold one look at Ray (the heartbeat's "ray" object of the head)."""
        now = self.clock()
        self.reasons = busy_reasons(ray)
        if self.reasons:
            self.busy_at = now
        nodes = ray.get("node_activity")
        if isinstance(nodes, dict):
            for name, busy in nodes.items():
                self.node_seen_at.setdefault(name, now)
                if busy:
                    self.node_busy_at[name] = now
            for gone in set(self.node_seen_at) - set(nodes):
                self.node_seen_at.pop(gone, None)
                self.node_busy_at.pop(gone, None)

    def idle_since(self) -> float:
        """Epoch seconds; now when busy at this moment."""
        if self.reasons:
            return self.clock()
        stamps = [self.started, self.busy_at, self.activity.latest_touch()]
        return max(s for s in stamps if s is not None)

    def idle_seconds(self) -> float:
        return max(0.0, self.clock() - self.idle_since())

    def node_idle_seconds(self) -> dict[str, float]:
        now = self.clock()
        return {
            name: round(now - max(seen, self.node_busy_at.get(name, seen)), 1)
            for name, seen in self.node_seen_at.items()
        }

    def report(self, ray: dict[str, Any]) -> dict[str, Any]:
        """The heartbeat's "activity" object."""
        demand = ray.get("pending_demand")
        connection, kernel = self.activity.epochs()
        return {
            "running_jobs": ray.get("running_jobs"),
            "drivers": ray.get("running_drivers"),
            "pending_demand": len(demand) if isinstance(demand, list) else None,
            "last_connection_at": iso(connection),
            "kernel_last_active_at": iso(kernel),
            **{f"{kind}_last_active_at": iso(at) for kind, at in self.activity.others().items()},
            "idle_seconds": round(self.idle_seconds(), 1),
            "nodes_idle_seconds": self.node_idle_seconds(),
        }
