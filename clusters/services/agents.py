"""What node agents report: registration and heartbeats.

Heartbeats are the hot path (thousands of nodes every few seconds), so each one is a
cache write; the database row is written only when something changes (state, Ray
resources) or once a minute as a liveness lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from ..choices import ClusterState, DesiredState, EventLevel, NodeRole, NodeState
from ..models import Cluster, Node, hash_secret, new_secret
from .events import record_event

PERSIST_EVERY_SECONDS = 60
LOG_TAIL_LINES = 200
AGENT_STATES = {"starting", "ready", "failed", "stopping"}


class AgentAuthError(Exception):
    """The token is unknown, used, or belongs to a node that is gone."""


class AgentRequestError(Exception):
    """The body is not what the agent API expects."""


def _hb_key(node_pk: int) -> str:
    return f"raydeck:hb:{node_pk}"


def cached_heartbeat(node_pk: int) -> datetime | None:
    value = cache.get(_hb_key(node_pk))
    return datetime.fromtimestamp(value, tz=UTC) if value else None


@dataclass(frozen=True)
class Registration:
    credential: str
    node: Node
    cluster: Cluster


def head_address_for(cluster: Cluster) -> str | None:
    head = cluster.nodes.filter(role=NodeRole.HEAD, state=NodeState.READY).first()
    if head is None or not head.ray_ports.get("gcs"):
        return None
    return f"{head.private_address}:{head.ray_ports['gcs']}"


@transaction.atomic
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
    record_event(node.cluster, "agent registered",
                 f"The {node.role} node's agent registered from {node.private_address}.",
                 node=node, since=previous)  # fmt: skip
    return Registration(credential=credential, node=node, cluster=node.cluster)


def registration_answer(registration: Registration) -> dict[str, Any]:
    node, cluster = registration.node, registration.cluster
    return {
        "credential": registration.credential,
        "cluster_id": str(cluster.uuid),
        "node_id": str(node.uuid),
        "role": node.role,
        "heartbeat_interval": settings.RAYDECK_HEARTBEAT_SECONDS,
        "log_location": cluster.cloud.log_location,
        "ray": {
            "num_cpus": node.cpus,
            "memory_mb": node.memory_mb,
            "head_address": None if node.role == NodeRole.HEAD else head_address_for(cluster),
            # On the node, not here; short, because Ray puts Unix sockets under it.
            "temp_dir": f"/tmp/raydeck/{str(node.uuid)[:8]}",  # noqa: S108
        },
    }


def node_for_credential(credential: str) -> Node:
    node = (
        Node.objects.select_related("cluster")
        .filter(credential_hash=hash_secret(credential))
        .exclude(state__in=[NodeState.TERMINATED, NodeState.FAILED, NodeState.LOST])
        .first()
    )
    if node is None:
        raise AgentAuthError("Unknown node credential.")
    return node


def node_heartbeat(*, node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Record one heartbeat; answer with what the node should do."""
    state = body.get("state", "starting")
    if state not in AGENT_STATES:
        raise AgentRequestError(f"state must be one of {sorted(AGENT_STATES)}.")
    now = timezone.now()
    cache.set(_hb_key(node.pk), now.timestamp(), timeout=3600)
    ray = body.get("ray") if isinstance(body.get("ray"), dict) else {}
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tail = body.get("log_tail")
    changed = _apply_state(node, state, str(body.get("message", ""))[:1000])
    persist = (
        changed
        or node.last_heartbeat_at is None
        or ((now - node.last_heartbeat_at).total_seconds() >= PERSIST_EVERY_SECONDS)
    )
    fields: dict[str, Any] = {}
    if isinstance(tail, list):
        fields["log_tail"] = "\n".join(str(line)[:500] for line in tail[-LOG_TAIL_LINES:])
    if ray and (changed or ray.get("resources_total") != node.resources.get("resources_total")):
        fields["resources"] = ray
    if persist:
        fields.update(last_heartbeat_at=now, usage=usage)
        if ray:
            fields["resources"] = ray
    if fields:
        Node.objects.filter(pk=node.pk).update(**fields)
    cluster = node.cluster
    stop = cluster.desired_state == DesiredState.TERMINATED or node.state in (
        NodeState.TERMINATING,
        NodeState.TERMINATED,
        NodeState.LOST,
    )
    return {
        "action": "stop" if stop else "run",
        "head_address": head_address_for(cluster) if node.role == NodeRole.WORKER else None,
        "heartbeat_interval": settings.RAYDECK_HEARTBEAT_SECONDS,
    }


def _apply_state(node: Node, reported: str, message: str) -> bool:
    """Move the node when the agent reports progress; True when the row changed."""
    target = {"ready": NodeState.READY, "failed": NodeState.FAILED}.get(reported)
    if target is None or node.state == target:
        return False
    if node.state not in (NodeState.REGISTERED, NodeState.READY, NodeState.BOOTING):
        return False
    with transaction.atomic():
        locked = Node.objects.select_for_update().select_related("cluster").get(pk=node.pk)
        if locked.state == target:
            return False
        since = locked.state_changed_at
        locked.set_state(target, message)
        if target == NodeState.READY:
            locked.ready_at = timezone.now()
        locked.save(update_fields=["state", "state_reason", "state_changed_at", "ready_at"])
        cluster = locked.cluster
        if target == NodeState.READY:
            record_event(cluster, "ray started", f"Ray is up on the {locked.role} node.",
                         node=locked, since=since)  # fmt: skip
        else:
            record_event(cluster, "ray failed", f"Ray did not start on the {locked.role} "
                         f"node: {message}", node=locked, level=EventLevel.ERROR)  # fmt: skip
        node.state = locked.state
        if cluster.state in (ClusterState.STARTING, ClusterState.RUNNING):
            from .lifecycle import enqueue_reconcile

            enqueue_reconcile(cluster)
    return True
