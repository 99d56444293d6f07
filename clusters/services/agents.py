"""What node agents report: registration and heartbeats.

Heartbeats are the hot path (thousands of nodes every few seconds), so a steady one
costs no SQL at all:
- who sends it: each web process keeps a table of every live node, keyed by the hash of
  its credential (the node, its state, its cluster's desired state and head address),
  reloaded in one query once it is RAYDECK_AGENT_CACHE_SECONDS old. A credential the
  table does not know (a node registered since, or no node at all) is looked up in the
  database, so the credential is still checked on every request; a node that is gone,
  or a cluster being terminated, shows within that many seconds;
- that it is alive, and how busy it is: one write to the shared cache per batch
  (clusters/live.py: read by the reconciler, and by the cluster page, so its CPU /
  memory / GPU bars are seconds old, not up to a minute);
- the row: written only when something changes (state, Ray resources, a log tail) or
  once a minute as a liveness lease. State changes are written at once; the rest is
  batched per process and flushed in one UPDATE every RAYDECK_AGENT_WRITE_BEHIND_SECONDS.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import FloatField, QuerySet
from django.db.models.functions import Cast, Extract
from django.utils import timezone
from raydeck_agent.config import SYSTEM_LOG_SOURCES

from accounts.tokens import hash_secret, new_secret
from clouds.providers.base import ray_temp_dir
from clouds.providers.registry import log_location_for
from kit.metrics import HEARTBEATS

from .. import head_orders, live
from ..access import heartbeat_access, ray_token, registration_access
from ..certificates import CertificateRefused, head_certificate
from ..choices import LIVE_NODE_STATES, ClusterState, DesiredState, EventLevel, NodeRole, NodeState
from ..models import Cluster, Node
from ..tasks import enqueue_reconcile
from .events import record_event
from .idle import cluster_stopped_itself
from .readiness import update_cluster_state

PERSIST_EVERY_SECONDS = 60
LOG_TAIL_LINES = 200


def system_lines(tail: list[Any]) -> list[str]:
    """The lines of a heartbeat's log tail that come from Raydeck's or Ray's own logs
    ("[source] text" with a source of SYSTEM_LOG_SOURCES). The agent sends nothing else;
    this guards against an older or altered one, since what the user's code prints must
    never reach the control plane's database."""
    kept = []
    for line in tail:
        text = str(line)
        source, sep, _ = text[1:].partition("] ")
        if text.startswith("[") and sep and source in SYSTEM_LOG_SOURCES:
            kept.append(text)
    return kept


AGENT_STATES = {"starting", "ready", "failed", "stopping", "stopped"}


class AgentAuthError(Exception):
    """The token is unknown, used, or belongs to a node that is gone."""


class AgentRequestError(Exception):
    """The body is not what the agent API expects."""


@dataclass(frozen=True)
class Registration:
    credential: str
    node: Node
    cluster: Cluster
    certificate: str | None = None  # a head's gateway certificate (PEM chain), if it sent a CSR


def head_address_for(cluster: Cluster) -> str | None:
    head = cluster.nodes.filter(role=NodeRole.HEAD, state=NodeState.READY).first()
    if head is None or not head.ray_ports.get("gcs"):
        return None
    return f"{head.private_address}:{head.ray_ports['gcs']}"


def bootstrap_token_checked(token: str) -> str:
    """`token`, if it is a bootstrap token not used yet (node_register checks it again
    under a lock); AgentAuthError otherwise, before anything reads the body."""
    unused = Node.objects.filter(
        bootstrap_token_hash=hash_secret(token), bootstrap_used_at__isnull=True
    )
    if not unused.exists():
        raise AgentAuthError("This bootstrap token is unknown or was already used.")
    return token


@transaction.atomic(durable=True)
def node_register(*, bootstrap_token: str, body: dict[str, Any]) -> Registration:
    """Exchange the one-time bootstrap token for this node's credential."""
    node = (
        Node.objects.select_for_update()
        .select_related("cluster")
        .filter(bootstrap_token_hash=hash_secret(bootstrap_token))
        .first()
    )
    if node is None or node.bootstrap_used_at is not None:
        raise AgentAuthError("This bootstrap token is unknown or was already used.")
    if str(body.get("node_id", "")) != str(node.uuid):
        raise AgentAuthError("This bootstrap token belongs to another node.")
    if node.state not in (NodeState.PENDING, NodeState.LAUNCHING, NodeState.BOOTING):
        raise AgentAuthError("This node is no longer expected to start.")
    ports = body.get("ports") or {}
    if not isinstance(ports, dict) or not all(isinstance(v, int) for v in ports.values()):
        raise AgentRequestError("ports must map names to port numbers.")
    credential = new_secret("rdn")
    now = timezone.now()
    previous = node.state_changed_at
    node.bootstrap_used_at = now
    node.credential_hash = hash_secret(credential)
    node.registered_at = now
    node.private_address = str(body.get("address", ""))[:200]
    node.ray_ports = {str(k)[:32]: int(v) for k, v in ports.items()}
    node.instance_id = node.instance_id or str(body.get("instance_id", ""))[:200]
    node.last_heartbeat_at = now
    node.set_state(NodeState.REGISTERED)
    node.save()
    certificate = None
    csr = body.get("csr")
    if node.role == NodeRole.HEAD and csr is not None:
        if not isinstance(csr, str):
            raise AgentRequestError("csr must be a PEM certificate signing request.")
        try:  # refused: the whole registration rolls back and the token stays unused
            certificate = head_certificate(node=node, csr_pem=csr)
        except CertificateRefused as exc:
            raise AgentRequestError(str(exc)) from None
    record_event(
        node.cluster,
        "agent registered",
        f"The {node.role} node's agent registered from {node.private_address}.",
        node=node,
        since=previous,
    )
    return Registration(
        credential=credential, node=node, cluster=node.cluster, certificate=certificate
    )


def registration_answer(registration: Registration) -> dict[str, Any]:
    node, cluster = registration.node, registration.cluster
    answer: dict[str, Any] = {
        "credential": registration.credential,
        "cluster_id": str(cluster.uuid),
        "node_id": str(node.uuid),
        "role": node.role,
        "heartbeat_interval": settings.RAYDECK_HEARTBEAT_SECONDS,
        "deadman_seconds": settings.RAYDECK_DEADMAN_SECONDS,
        "log_location": log_location_for(cluster.cloud),
        "ray": {
            "num_cpus": node.cpus,
            "memory_mb": node.memory_mb,
            "head_address": None if node.role == NodeRole.HEAD else head_address_for(cluster),
            "temp_dir": ray_temp_dir(node.uuid),  # on the node, not here
            # Every node's Ray runs with RAY_AUTH_MODE=token and this secret.
            "auth_token": ray_token(cluster),
        },
    }
    if node.role == NodeRole.HEAD:
        answer["access"] = registration_access(cluster)  # the gateway's key
        if registration.certificate is not None:
            answer["access"]["certificate"] = registration.certificate
    return answer


# --- Who is heartbeating: the live-node table -------------------------------------------

STOP_STATES = (NodeState.TERMINATING, NodeState.TERMINATED, NodeState.LOST)
_UNKNOWN: Any = object()  # a row's resources this process has not read yet
RELOAD_SLICE, RELOAD_PAUSE = 250, 0.0002  # rows, seconds


@dataclass(slots=True, eq=False)
class HeartbeatNode:
    """What a heartbeat needs of its node's row and cluster, as of the last load."""

    pk: int
    cluster_id: int
    role: str
    state: str
    desired_state: str  # the cluster's
    head_address: str | None  # the cluster's head, for workers
    persisted_at: float | None  # the row's last_heartbeat_at, epoch seconds
    resources_total: Any = _UNKNOWN  # the row's resources["resources_total"]


def _node_rows(**filters: Any) -> QuerySet[Node, tuple]:
    # PostgreSQL sends last_heartbeat_at as epoch seconds: half the cost of datetimes.
    seen: Any = "last_heartbeat_at"
    if connection.vendor == "postgresql":
        seen = Cast(Extract("last_heartbeat_at", "epoch"), FloatField())
    return (
        Node.objects.filter(**filters)
        .live()
        .exclude(credential_hash="")
        .order_by()
        .values_list(
            "credential_hash", "pk", "cluster_id", "role", "state", "cluster__desired_state", seen
        )
    )


def _epoch(value: float | datetime | None) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else value


def _head_addresses(**filters: Any) -> dict[int, str]:
    """cluster id -> "address:gcs port" of its ready head (see head_address_for)."""
    heads = (
        Node.objects.filter(role=NodeRole.HEAD, state=NodeState.READY, **filters)
        .order_by("-created_at")
        .values_list("cluster_id", "private_address", "ray_ports")
    )
    return {cid: f"{address}:{ports['gcs']}" for cid, address, ports in heads if ports.get("gcs")}


def _resources_totals(pks: list[int]) -> dict[int, Any]:
    rows = Node.objects.filter(pk__in=pks).values_list("pk", "resources")
    return {pk: (resources or {}).get("resources_total") for pk, resources in rows}


def _snapshot(row: tuple, heads: dict[int, str]) -> HeartbeatNode:
    _, pk, cid, role, state, desired, seen = row
    head = heads.get(cid) if role == NodeRole.WORKER else None
    return HeartbeatNode(
        pk=pk,
        cluster_id=cid,
        role=role,
        state=state,
        desired_state=desired,
        head_address=head,
        persisted_at=_epoch(seen),
    )


class LiveNodes:
    """This process's table of live nodes by credential hash. Reloaded whole, in three
    queries, by the first request that finds it older than the TTL; the others go on
    with the old table meanwhile (never one older than three TTLs)."""

    def __init__(self) -> None:
        self.nodes: dict[str, HeartbeatNode] = {}
        self.loaded_at = float("-inf")
        self.lock = threading.Lock()
        self.clock = time.monotonic  # tests move it

    def get(self, digest: str, ttl: float) -> HeartbeatNode | None:
        age = self.clock() - self.loaded_at
        if age >= ttl and self.lock.acquire(blocking=age >= 3 * ttl):
            try:
                if self.clock() - self.loaded_at >= ttl:
                    self.reload()
            finally:
                self.lock.release()
        return self.nodes.get(digest)

    def reload(self) -> None:
        started = self.clock()
        heads = _head_addresses()
        old = self.nodes
        fresh: dict[str, HeartbeatNode] = {}
        unknown: list[int] = []
        for count, row in enumerate(_node_rows()):
            if count % RELOAD_SLICE == RELOAD_SLICE - 1:
                # Let this process's request threads in: without a pause they would wait
                # for the GIL's switch interval, again and again, while the table loads.
                time.sleep(RELOAD_PAUSE)
            fresh[row[0]] = node = _snapshot(row, heads)
            before = old.get(row[0])
            if before is None or before.pk != node.pk:
                unknown.append(node.pk)
                continue
            # What this process wrote (or queued) is newer than what it just read.
            node.resources_total = before.resources_total
            if before.persisted_at and (node.persisted_at or 0) < before.persisted_at:
                node.persisted_at = before.persisted_at
        if unknown:
            totals = _resources_totals(unknown)
            for node in fresh.values():
                if node.resources_total is _UNKNOWN and node.pk in totals:
                    node.resources_total = totals[node.pk]
        self.nodes = fresh
        self.loaded_at = started

    def remember(self, digest: str, node: HeartbeatNode) -> None:
        self.nodes[digest] = node

    def clear(self) -> None:
        self.nodes, self.loaded_at = {}, float("-inf")


_live_nodes = LiveNodes()


def node_for_credential(credential: str) -> HeartbeatNode:
    """The live node this credential belongs to; AgentAuthError for any other token."""
    digest = hash_secret(credential)
    ttl = settings.RAYDECK_AGENT_CACHE_SECONDS
    if ttl > 0:
        node = _live_nodes.get(digest, ttl)
        if node is not None and node.state in LIVE_NODE_STATES:
            return node
    rows = list(_node_rows(credential_hash=digest))
    if not rows:
        raise AgentAuthError("Unknown node credential.")
    node = _snapshot(rows[0], _head_addresses(cluster_id=rows[0][2]))
    node.resources_total = _resources_totals([node.pk]).get(node.pk)
    if ttl > 0:
        _live_nodes.remember(digest, node)
    return node


# --- Writing the rows: at once for state changes, batched for the rest -----------------


class Batch:
    """Values per node (the latest of each wins), handed to `write` together: at once
    when nothing was written for `delay` seconds, so a quiet installation sees no lag;
    otherwise by the first request after `delay`, so a busy one writes once per delay
    instead of once per heartbeat. A write that fails puts its values back."""

    def __init__(self, write: Callable[[dict[int, dict[str, Any]]], None]) -> None:
        self.write = write
        self.pending: dict[int, dict[str, Any]] = {}
        self.written_at = float("-inf")
        self.lock = threading.Lock()  # guards `pending`
        self.writing = threading.Lock()  # one write at a time

    def add(self, pk: int, fields: dict[str, Any], delay: float) -> None:
        with self.lock:
            self.pending.setdefault(pk, {}).update(fields)
        if time.monotonic() - self.written_at >= delay and self.writing.acquire(blocking=False):
            try:
                self._flush()
            finally:
                self.writing.release()

    def flush(self) -> int:
        with self.writing:
            return self._flush()

    def _flush(self) -> int:
        with self.lock:
            batch, self.pending = self.pending, {}
        self.written_at = time.monotonic()
        if batch:
            try:
                self.write(batch)
            except BaseException:
                with self.lock:
                    for pk, newer in self.pending.items():
                        batch.setdefault(pk, {}).update(newer)
                    self.pending = batch
                raise
        return len(batch)


def _write_rows(batch: dict[int, dict[str, Any]]) -> None:
    if connection.vendor != "postgresql":
        for pk, fields in batch.items():
            Node.objects.filter(pk=pk).update(**fields)
        return
    ids = list(batch)
    values: dict[str, list[Any]] = {c: [] for c in ROW_COLUMNS}
    for pk in ids:
        fields = batch[pk]
        values["last_heartbeat_at"].append(fields.get("last_heartbeat_at"))
        for name in ("usage", "resources"):
            value = fields.get(name)
            values[name].append(None if value is None else json.dumps(value))
        values["log_tail"].append(fields.get("log_tail"))
    # One statement for the whole batch; a column without a value keeps its own.
    sql = (
        f"UPDATE {Node._meta.db_table} AS n SET "  # noqa: S608 (the model's table)
        "last_heartbeat_at = COALESCE(v.at, n.last_heartbeat_at), "
        "usage = COALESCE(v.usage::jsonb, n.usage), "
        "resources = COALESCE(v.resources::jsonb, n.resources), "
        "log_tail = COALESCE(v.log_tail, n.log_tail) "
        "FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[]) "
        "AS v(id, at, usage, resources, log_tail) WHERE n.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids, *(values[c] for c in ROW_COLUMNS)])


ROW_COLUMNS = ("last_heartbeat_at", "usage", "resources", "log_tail")
LIVENESS_BATCH_SECONDS = 0.25  # far below RAYDECK_NODE_LOST_AFTER_SECONDS
_liveness = Batch(live.note_heartbeats)
_rows = Batch(_write_rows)


def flush_heartbeats() -> int:
    """Write what this process has batched, now (tests, shutdown). Returns the rows."""
    _liveness.flush()
    return _rows.flush()


@atexit.register
def _flush_at_exit() -> None:
    # A gunicorn worker that stops (restart, deploy) leaves nothing batched behind.
    with contextlib.suppress(Exception):
        flush_heartbeats()


def forget_nodes() -> None:
    """Drop this process's table of live nodes (tests)."""
    _live_nodes.clear()


def _persist(node: HeartbeatNode, fields: dict[str, Any], *, now: bool) -> None:
    delay = settings.RAYDECK_AGENT_WRITE_BEHIND_SECONDS
    if now or delay <= 0:
        Node.objects.filter(pk=node.pk).update(**fields)
    else:
        _rows.add(node.pk, fields, delay)


def node_heartbeat(*, node: HeartbeatNode, body: dict[str, Any]) -> dict[str, Any]:
    """Record one heartbeat; answer with what the node should do."""
    state = body.get("state", "starting")
    if not isinstance(state, str) or state not in AGENT_STATES:  # a list is unhashable
        raise AgentRequestError(f"state must be one of {sorted(AGENT_STATES)}.")
    HEARTBEATS.inc()  # the heartbeat path's one metric (kit/metrics.py)
    now = time.time()
    ray: dict[str, Any] = body["ray"] if isinstance(body.get("ray"), dict) else {}
    usage: dict[str, Any] = body["usage"] if isinstance(body.get("usage"), dict) else {}
    _liveness.add(node.pk, {"at": now, "usage": usage}, LIVENESS_BATCH_SECONDS)
    tail = body.get("log_tail")
    changed = _apply_state(node, state, str(body.get("message", ""))[:1000])
    persist = (
        changed or node.persisted_at is None or now - node.persisted_at >= PERSIST_EVERY_SECONDS
    )
    fields: dict[str, Any] = {}
    if isinstance(tail, list):
        kept = system_lines(tail[-LOG_TAIL_LINES:])
        fields["log_tail"] = "\n".join(line[:500] for line in kept)
    if ray and (changed or ray.get("resources_total") != node.resources_total):
        fields["resources"] = ray
    if persist:
        fields.update(last_heartbeat_at=datetime.fromtimestamp(now, tz=UTC), usage=usage)
        if ray:
            fields["resources"] = ray
    if fields:
        _persist(node, fields, now=changed)
        if persist:
            node.persisted_at = now
        if "resources" in fields:
            node.resources_total = ray.get("resources_total")
    if (
        node.role == NodeRole.HEAD
        and ray
        and live.note_head_report(node.cluster_id, ray, body.get("activity"), now)
    ):
        # Demand waits for workers: the autoscaler (in the reconciler) looks now.
        enqueue_reconcile(node.cluster_id, follow_up=True, sooner_wins=True)
    if node.role == NodeRole.HEAD and "reports" in body:
        head_orders.deliver_reports(node.cluster_id, body["reports"])
    stopped_itself = body.get("stopped_itself")
    if isinstance(stopped_itself, dict) and node.role == NodeRole.HEAD:
        cluster_stopped_itself(node_pk=node.pk, report=stopped_itself)
    stop = (
        node.desired_state == DesiredState.TERMINATED
        or node.state in STOP_STATES
        or state == "stopped"
    )
    answer: dict[str, Any] = {
        "action": "stop" if stop else "run",
        "head_address": node.head_address if node.role == NodeRole.WORKER else None,
        "heartbeat_interval": settings.RAYDECK_HEARTBEAT_SECONDS,
        "deadman_seconds": settings.RAYDECK_DEADMAN_SECONDS,
    }
    if node.role == NodeRole.HEAD:
        # Revocations for the gateway: within one heartbeat interval (5 s) of the change.
        # And a new certificate when the one it serves ends soon or lacks a name.
        answer["access"] = heartbeat_access(
            node.cluster_id, node.pk, body.get("certificate_expires")
        )
        if not stop:
            orders = head_orders.collect_orders(node.cluster_id)
            if orders:
                answer["orders"] = orders
            answer["heartbeat_interval"] = head_orders.heartbeat_seconds(node.cluster_id, orders)
    return answer


def _apply_state(node: HeartbeatNode, reported: str, message: str) -> bool:
    """Move the node when the agent reports progress; True when the row changed."""
    target = {"ready": NodeState.READY, "failed": NodeState.FAILED}.get(reported)
    movable = (NodeState.REGISTERED, NodeState.READY, NodeState.BOOTING)
    if target is None or node.state == target or node.state not in movable:
        return False
    with transaction.atomic():
        locked = Node.objects.select_for_update().select_related("cluster").get(pk=node.pk)
        if locked.state == target or locked.state not in movable:
            node.state = locked.state  # the snapshot was behind the row
            return False
        since = locked.state_changed_at
        locked.set_state(target, message)
        if target == NodeState.READY:
            locked.ready_at = timezone.now()
        locked.save(update_fields=["state", "state_reason", "state_changed_at", "ready_at"])
        cluster = locked.cluster
        if target == NodeState.READY:
            record_event(
                cluster,
                "ray started",
                f"Ray is up on the {locked.role} node.",
                node=locked,
                since=since,
            )
        else:
            record_event(
                cluster,
                "ray failed",
                f"Ray did not start on the {locked.role} node: {message}",
                node=locked,
                level=EventLevel.ERROR,
            )
        node.state = locked.state
        if target == NodeState.READY and cluster.state == ClusterState.STARTING:
            # Running now, in this transaction (the cluster's row is locked with the
            # node's), not after a reconcile task's round trip: the pass still follows.
            update_cluster_state(cluster)
        if cluster.state in (ClusterState.STARTING, ClusterState.RUNNING):
            enqueue_reconcile(cluster.pk)
    return True
