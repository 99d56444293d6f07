"""Live data: what the clusters app keeps in the shared cache (Redis) rather than in rows.

Every key of it is written and read here, and nowhere else. Each is worth keeping only
while it is fresh; PostgreSQL stays the source of truth, so an emptied cache (a Redis
restart, an expired entry) costs at most a delay, never a wrong decision. For each key
(all under `raydeck:`): who writes it, who reads it, how long it is kept, and what a
reader does when it is missing ("fails open": goes on as if nothing restricted it).

- `hb:{node}`, `usage:{node}`: the latest heartbeat (epoch seconds) and CPU / memory /
  GPU use. Written by heartbeats, in batches (note_heartbeats); read by the reconciler
  (last_heartbeat) and the cluster page (liveness). Kept 1 h. Fails open: the row's
  last_heartbeat_at and usage, written about once a minute, with that minute as slack
  before a node counts as lost.
- `head-report:{cluster}`: what the head last said of its cluster's use (pending demand,
  jobs, drivers, idle workers). Written by the head's heartbeats (note_head_report); read
  by the autoscaler and the idle check (head_report). Kept 24 h. Fails closed: no
  autoscaling decision, and the cluster never counts as idle (Raydeck does not act on
  what it cannot see).
- `busy-at:{cluster}`: the latest heartbeat that said the cluster was in use. Written
  with the report; read by the idle check and sweep (busy_at). Kept 24 h. Missing: the
  row's last_active_at, into which the idle sweep folds it.
- `demand-kick:{cluster}`: that a report with pending demand has just asked the
  autoscaler to look (note_head_report, an add). Kept 5 s. Missing: one more reconcile.
- `listening:tick`, `listening:since`: that a web process is listening for heartbeats,
  and since when without a gap. Written by each web process's ticker thread (tick,
  start_ticking) while its database answers too; read by the reconciler (listening).
  Kept for ever. Fails open: with no tick at all, nodes are judged by their heartbeats
  alone.
- `reconcile-queued:{cluster}`: the one follow-up reconcile waiting in the queue (task
  id, when due). Claimed by clusters.tasks.enqueue_reconcile (claim_follow_up), released
  by that task as it starts (release_follow_up). Kept its countdown + 30 s. Fails open:
  a second follow-up may wait, which is harmless (the lease runs one at a time).
- `reconcile:{cluster}`: the lease of the reconcile running now (holding_lease). Kept
  LEASE_SECONDS (10 s), renewed by a thread of the holder every few seconds while it
  works, so a killed holder's lease ends within seconds. Fails open: a second run may
  start (reconciling is idempotent).

A cache that cannot be reached is an error for every reader and writer here (Django's
Redis backend raises), except the ticker thread, which logs and stops ticking: which is
then the truth, nobody is heard. None of these fails open on an outage: a request that
needs one answers 503 with Retry-After (kit/outages.py: agents retry, backing off), and a
reconcile task fails and is retried by the next sweep.

Not here, because they are caches of rows or of remote answers, refilled from their
source and kept beside it: the clusters' access keys (clusters/access.py), revoked
tokens (accounts/revocations.py), OIDC discovery and keys (accounts/sso/oidc.py), rate
limits (kit/ratelimit.py); and the autoscaler's "said once per 10 min" marker
(clusters/services/autoscale.py), which only keeps an event from repeating.

This module imports nothing of the clusters app: the heartbeat path, the reconciler,
the selectors and the tasks all use it, and it uses only the cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)


# --- Heartbeats: that a node is alive, and how busy --------------------------------------

HEARTBEAT_KEEP_SECONDS = 60 * 60


def heartbeat_key(node_pk: int) -> str:
    return f"raydeck:hb:{node_pk}"


def usage_key(node_pk: int) -> str:
    return f"raydeck:usage:{node_pk}"


def note_heartbeats(batch: dict[int, dict[str, Any]]) -> None:
    """{node pk: {"at": epoch seconds, "usage": {...}}}, in one write (the heartbeat
    path batches them: clusters/services/agents.py)."""
    values: dict[str, Any] = {}
    for pk, fields in batch.items():
        values[heartbeat_key(pk)] = fields["at"]
        if fields.get("usage"):
            values[usage_key(pk)] = fields["usage"]
    cache.set_many(values, timeout=HEARTBEAT_KEEP_SECONDS)


def last_heartbeat(node_pk: int) -> datetime | None:
    """The node's latest heartbeat, or None when the cache has none."""
    value = cache.get(heartbeat_key(node_pk))
    return datetime.fromtimestamp(value, tz=UTC) if value else None


def liveness(node_pks: list[int]) -> dict[int, tuple[datetime | None, dict | None]]:
    """{node pk: (latest heartbeat, latest usage)} from the shared cache, in one read;
    None where the cache has nothing (not yet, or it restarted)."""
    if not node_pks:
        return {}
    found = cache.get_many([k for pk in node_pks for k in (heartbeat_key(pk), usage_key(pk))])
    result: dict[int, tuple[datetime | None, dict | None]] = {}
    for pk in node_pks:
        stamp, usage = found.get(heartbeat_key(pk)), found.get(usage_key(pk))
        result[pk] = (
            datetime.fromtimestamp(stamp, tz=UTC) if stamp else None,
            usage if isinstance(usage, dict) else None,
        )
    return result


# --- Head reports: what the head last said about its cluster's use ------------------------
# Pending demand, jobs, drivers, gateway connections, which workers are idle. Only ever
# the latest is needed (by the autoscaler and the idle check), and heartbeats are the
# hot path: so never rows. A report lost with the cache only delays decisions.

REPORT_KEY = "raydeck:head-report:{}"
BUSY_KEY = "raydeck:busy-at:{}"  # the latest heartbeat that said the cluster was in use
KICK_KEY = "raydeck:demand-kick:{}"
REPORT_KEEP_SECONDS = 24 * 60 * 60
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


def note_head_report(cluster_id: int, ray: dict[str, Any], activity: Any, now: float) -> bool:
    """Keep the report of a head node whose Ray answered (each of its heartbeats). True
    when it shows pending demand and the autoscaler should look now: at most once per
    KICK_EVERY_SECONDS per cluster, however many heartbeats say so."""
    activity = activity if isinstance(activity, dict) else None
    values: dict[str, Any] = {REPORT_KEY.format(cluster_id): (now, ray, activity)}
    if busy_now(activity):
        values[BUSY_KEY.format(cluster_id)] = now
    cache.set_many(values, timeout=REPORT_KEEP_SECONDS)
    return bool(ray.get("pending_demand")) and cache.add(
        KICK_KEY.format(cluster_id), 1, KICK_EVERY_SECONDS
    )


def head_report(cluster_id: int) -> HeadReport | None:
    return _report_of(cache.get(REPORT_KEY.format(cluster_id)))


def head_reports(cluster_ids: list[int]) -> dict[int, HeadReport | None]:
    """Many clusters' latest head reports in one read of the cache (the sweep's triage)."""
    found = cache.get_many([REPORT_KEY.format(pk) for pk in cluster_ids])
    return {pk: _report_of(found.get(REPORT_KEY.format(pk))) for pk in cluster_ids}


def _report_of(value: Any) -> HeadReport | None:
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    at, ray, activity = value
    return HeadReport(at=datetime.fromtimestamp(at, tz=UTC), ray=ray or {}, activity=activity)


def busy_at(cluster_id: int) -> datetime | None:
    value = cache.get(BUSY_KEY.format(cluster_id))
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int | float) else None


def parse_time(value: Any) -> datetime | None:
    """A time in a head report's activity (ISO 8601; UTC when it names no zone)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- Listening: whether the control plane has been able to hear heartbeats ---------------
# A node is lost when it has been silent while we were listening. When the web tier
# itself is down (a restart, a slow deploy, a crash, its database gone), every node goes
# silent at once, and the reconciler, which runs in the workers, would otherwise take
# every live node for lost and terminate it. So each web process ticks while it can hear
# heartbeats (start_ticking, from console/wsgi.py), and the reconciler counts a node's
# silence only while listening was continuous: from the later of its last heartbeat and
# when listening last resumed, up to the last tick (never up to "now", which may be
# seconds into an outage nobody has noticed yet).
#
# One setting, RAYDECK_NODE_LOST_AFTER_SECONDS (the grace), and what follows from it:
# - a gap of more than grace/3 between ticks means listening stopped (gap_seconds); each
#   web process ticks twice as often (tick_seconds), so one late tick is no gap;
# - a gap shorter than that may hide lost heartbeats: a node's counted silence then
#   includes the gap and its next heartbeat, at most gap + one heartbeat interval. The
#   grace exceeds that by LOST_MARGIN_SECONDS at least (checked by listening_margin, a
#   system check of the clusters app), so a short outage never makes a node lost.

TICK_KEY = "raydeck:listening:tick"
SINCE_KEY = "raydeck:listening:since"
LOST_MARGIN_SECONDS = 2.0


def node_lost_after() -> timedelta:
    """How long a node may be silent, while the control plane listened, before it is lost."""
    return timedelta(seconds=settings.RAYDECK_NODE_LOST_AFTER_SECONDS)


def gap_seconds() -> float:
    """No tick for longer than this: nobody is listening (and a tick after it starts a
    new stretch of listening)."""
    return float(settings.RAYDECK_NODE_LOST_AFTER_SECONDS) / 3


def tick_seconds() -> float:
    return gap_seconds() / 2


def listening_margin() -> float:
    """Seconds by which the grace exceeds the longest silence an unnoticed gap can cause
    a healthy node (the gap, then one heartbeat interval). Must be LOST_MARGIN_SECONDS or
    more."""
    return (
        float(settings.RAYDECK_NODE_LOST_AFTER_SECONDS)
        - gap_seconds()
        - float(settings.RAYDECK_HEARTBEAT_SECONDS)
    )


def tick(now: float | None = None) -> None:
    """Say that this web process is listening; after a gap, that listening resumed now."""
    now = time.time() if now is None else now
    previous = cache.get(TICK_KEY)
    if previous is None or now - float(previous) > gap_seconds():
        cache.set(SINCE_KEY, now, timeout=None)
    cache.set(TICK_KEY, now, timeout=None)


@dataclass(frozen=True)
class Listening:
    now: bool  # False: no web process has ticked lately, so no node can be judged
    since: datetime | None  # silence before this says nothing about a node
    last: datetime | None = None  # the last tick: silence after it says nothing either

    def silence(self, seen: datetime, now: datetime) -> timedelta:
        """How long a node last heard at `seen` has been silent while we listened."""
        start = max(seen, self.since) if self.since is not None else seen
        return (self.last or now) - start


def listening(now: float | None = None) -> Listening:
    """Whether the control plane is listening, since when without a gap, and its last
    tick. With no tick recorded: where web processes tick, the cache was emptied (Redis
    restarted, and the heartbeats went with it), so nobody is judged until one ticks
    again; where they do not (tests without web processes), no restriction."""
    now = time.time() if now is None else now
    found = cache.get_many([TICK_KEY, SINCE_KEY])
    last, since = found.get(TICK_KEY), found.get(SINCE_KEY)
    if last is None:
        return Listening(now=not settings.RAYDECK_LISTENING_TICKS, since=None)
    if now - float(last) > gap_seconds():
        return Listening(now=False, since=None)
    return Listening(
        now=True,
        since=datetime.fromtimestamp(float(since or last), tz=UTC),
        last=datetime.fromtimestamp(float(last), tz=UTC),
    )


_started_in: int | None = None
_lock = threading.Lock()
_stop = threading.Event()


def start_ticking() -> None:
    """Start this process's ticking thread, once per process (gunicorn forks workers
    after loading the application, and threads do not survive a fork: so this is
    called on each request and starts the thread in the process that serves it)."""
    global _started_in
    pid = os.getpid()
    if _started_in == pid or not settings.RAYDECK_LISTENING_TICKS:
        return
    with _lock:
        if _started_in == pid:
            return
        _started_in = pid
        _stop.clear()
        threading.Thread(target=_tick_forever, name="raydeck-listening", daemon=True).start()


def start_ticking_after_fork() -> None:
    """start_ticking for a child process just forked (os.register_at_fork): the lock
    may have been held by a thread that the fork did not copy."""
    global _lock, _started_in
    _lock, _started_in = threading.Lock(), None
    start_ticking()


def stop_ticking() -> None:
    """Stop this process's ticking thread (tests)."""
    global _started_in
    with _lock:
        _stop.set()
        _started_in = None


def _tick_forever() -> None:
    deaf = False  # logged once per outage, not every tick
    while not _stop.is_set():
        try:
            # Heartbeats need the database too (credentials, states): without it nothing
            # is heard, so nothing is ticked, and nodes are not blamed for the silence.
            _database_answers()
            tick()
            if deaf:
                logger.warning("The web tier hears heartbeats again.")
            deaf = False
        except Exception:  # the ticks stop, which is the truth
            if not deaf:
                logger.warning("The web tier cannot hear heartbeats.", exc_info=True)
            deaf = True
        _stop.wait(tick_seconds())


def _database_answers() -> None:
    """SELECT 1 on this thread's own connection; a broken one is closed (the next tick
    opens another), and the error raised."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        with contextlib.suppress(Exception):
            connection.close()
        raise


# --- The reconcile queue: one follow-up waiting per cluster, one run at a time ------------
# Follow-ups (the reconciler polling, the beat sweep, a demand kick) claim the cluster's
# queue key before they are sent, so at most one waits; the key holds the waiting task's
# id and only that task releases it, so a reconcile enqueued directly (a user's request,
# an agent's report) runs at once without starting a second chain of follow-ups.
# clusters.tasks.enqueue_reconcile is the one caller of claim_follow_up.

QUEUED_KEY = "raydeck:reconcile-queued:{}"
QUEUED_SLACK_SECONDS = 30
LEASE_KEY = "raydeck:reconcile:{}"
LEASE_SECONDS = 10  # a dead holder's lease ends within this
LEASE_RENEW_SECONDS = LEASE_SECONDS / 3  # a live holder's thread renews it this often


def _waiting(key: str) -> tuple[str, float] | None:
    """(task id, when due) of the follow-up waiting, if any."""
    value = cache.get(key)
    return value if isinstance(value, tuple) and len(value) == 2 else None


def claim_follow_up(cluster_id: int, task_id: str, countdown: float, *, sooner_wins: bool) -> bool:
    """Whether the follow-up `task_id`, due in `countdown` seconds, may be sent: when no
    other waits. With `sooner_wins`, one waiting to run more than a second later is taken
    over: it still runs (once) when due, but no longer continues the chain."""
    key = QUEUED_KEY.format(cluster_id)
    due = time.time() + countdown
    timeout = countdown + QUEUED_SLACK_SECONDS
    if cache.add(key, (task_id, due), timeout):
        return True
    waiting = _waiting(key)
    if not sooner_wins or (waiting is not None and waiting[1] <= due + 1):
        return False
    cache.set(key, (task_id, due), timeout)
    return True


def release_follow_up(cluster_id: int, task_id: str) -> None:
    """Each reconcile task as it starts: if it was the follow-up waiting, a new one may
    queue."""
    key = QUEUED_KEY.format(cluster_id)
    waiting = _waiting(key)
    if waiting is not None and waiting[0] == task_id:
        cache.delete(key)


def take_lease(cluster_id: int, holder: str) -> bool:
    """The cluster's reconcile lease for `holder` (a Celery task id: a task redelivered
    after its worker was killed takes its own lease back at once). False while another
    holds it; a lease whose holder is really gone expires after LEASE_SECONDS."""
    key = LEASE_KEY.format(cluster_id)
    if not cache.add(key, holder, LEASE_SECONDS) and cache.get(key) != holder:
        return False
    cache.set(key, holder, LEASE_SECONDS)
    return True


def renew_lease(cluster_id: int, holder: str) -> None:
    """Another LEASE_SECONDS for `holder`, if it still holds the lease."""
    key = LEASE_KEY.format(cluster_id)
    if cache.get(key) == holder:
        cache.set(key, holder, LEASE_SECONDS)


def release_lease(cluster_id: int, holder: str) -> None:
    key = LEASE_KEY.format(cluster_id)
    if cache.get(key) == holder:
        cache.delete(key)


@contextlib.contextmanager
def holding_lease(cluster_id: int, holder: str) -> Iterator[bool]:
    """Hold the cluster's lease for the block (True), or not at all (False: another
    holds it). A thread renews it every LEASE_RENEW_SECONDS while the block runs, however
    long a cloud call takes; when the holder dies (kill -9, a lost machine), renewing
    stops and the lease ends within LEASE_SECONDS, so the next reconcile is not held up."""
    if not take_lease(cluster_id, holder):
        yield False
        return
    done = threading.Event()
    keeper = threading.Thread(
        target=_keep_lease, args=(cluster_id, holder, done), name="raydeck-lease", daemon=True
    )
    keeper.start()
    try:
        yield True
    finally:
        done.set()
        keeper.join(LEASE_RENEW_SECONDS)
        release_lease(cluster_id, holder)


def _keep_lease(cluster_id: int, holder: str, done: threading.Event) -> None:
    while not done.wait(LEASE_RENEW_SECONDS):
        try:
            renew_lease(cluster_id, holder)
        except Exception:  # the cache is down: the lease lapses, a rerun is harmless
            logger.warning("Could not renew the reconcile lease of %s.", cluster_id, exc_info=True)
