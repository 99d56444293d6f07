"""The reconciler: makes the cloud match each cluster's desired state.

Rules that keep it safe to run twice or be killed at any line:
- a Node row is written before its cloud call; the row's uuid tags the instance and
  keys the launch (EC2 ClientToken, GCE request_id, local folder), so a repeated launch
  returns the same instance;
- no row lock is held across a cloud call; one reconcile per cluster at a time is
  ensured by a lease in the shared cache, renewed while the run works and ending
  within seconds when its worker dies;
- long waits are not sleeps: the task re-enqueues itself with a countdown.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.audit import audit
from accounts.tokens import hash_secret
from clouds.choices import CloudState
from clouds.models import Cloud
from clouds.providers.base import (
    BootSpec,
    CloudError,
    CloudProvider,
    Instance,
    NodeSpec,
    PermanentCloudError,
    TransientCloudError,
    idempotency_key,
)
from clouds.providers.registry import provider_for

from .. import access, live
from ..agent_package import PROJECT_NAME
from ..choices import (
    ClusterState,
    DesiredState,
    EventLevel,
    NodeRole,
    NodeState,
)
from ..models import Cluster, Node
from .agents import PERSIST_EVERY_SECONDS
from .autoscale import cluster_autoscale, decide, group_target, workers_to_stop
from .events import record_event
from .readiness import is_ready, update_cluster_state

logger = logging.getLogger(__name__)

REQUEUE_STARTING = 2
REQUEUE_RUNNING = 15
REQUEUE_BACKOFF_MAX = 60


@dataclass(frozen=True)
class Outcome:
    """What the reconciler did, and when it wants to look again (None: not needed)."""

    summary: str
    requeue_in: int | None = None


# --- Tokens, boot specs, machine images ------------------------------------------------


def bootstrap_token(node: Node) -> str:
    """The one-time token in a node's boot script. Derived, not stored: a reconcile that
    crashed after the launch computes the same token again, so the instance it already
    started can still register. Only its hash is kept."""
    digest = salted_hmac("raydeck.bootstrap", f"{node.uuid}:{node.launch_attempt}").hexdigest()
    return f"rdb_{digest}"


def agent_url() -> str:
    return (settings.RAYDECK_AGENT_URL or settings.RAYDECK_BASE_URL).rstrip("/")


def agent_ca_bundle() -> str:
    """The PEM agents verify the control plane with (RAYDECK_AGENT_CA_BUNDLE), or ''."""
    path = settings.RAYDECK_AGENT_CA_BUNDLE
    return Path(path).read_text() if path else ""


def agent_index_url() -> str:
    """The simple package index (PEP 503) the control plane serves the agent from."""
    return agent_url() + "/agent/v1/simple/"


def boot_spec(cluster: Cluster, node: Node) -> BootSpec:
    """What the node's boot script needs (its provider writes the script)."""
    return BootSpec(
        node_id=node.uuid,
        cluster_id=cluster.uuid,
        control_plane_url=agent_url(),
        control_plane_ca=agent_ca_bundle(),
        bootstrap_token=bootstrap_token(node),
        agent_index_url=agent_index_url(),
        agent_package=PROJECT_NAME,
        ray_version=cluster.image.ray_version,
        image_uri=cluster.image_spec().image_uri,
        head=node.role == NodeRole.HEAD,
    )


def node_spec(cluster: Cluster, node: Node, image: str) -> NodeSpec:
    config = cluster.compute_config
    return NodeSpec(
        node_id=node.uuid,
        cluster_id=cluster.uuid,
        name=f"raydeck-{node.role}-{str(node.uuid)[:8]}",
        instance_type=node.instance_type,
        image=image,
        zone=config.zone,
        spot=bool(_group(cluster, node.group).get("spot")) if node.group else False,
        cpus=node.cpus,
        memory_mb=node.memory_mb,
    )


def machine_image(cluster: Cluster, provider: CloudProvider) -> str:
    """What the cluster's nodes boot (the provider says, from the image and the region)."""
    region = cluster.compute_config.region or cluster.cloud.region
    return provider.machine_image(image=cluster.image_spec(), region=region)


def _group(cluster: Cluster, name: str) -> dict:
    for group in cluster.compute_config.worker_groups:
        if group.get("name") == name:
            return group
    return {}


# --- Entry point -----------------------------------------------------------------------


def cluster_reconcile(*, cluster_id: int, holder: str | None = None) -> Outcome:
    """Run one reconciliation pass, unless another run holds this cluster's lease.

    `holder` is the Celery task id: a task redelivered after its worker was killed
    has the same id and takes its own lease back at once, instead of waiting for it
    to expire. The lease is renewed while the pass runs and ends within seconds of its
    holder's death (live.holding_lease).
    """
    with live.holding_lease(cluster_id, holder or uuid.uuid4().hex) as held:
        if not held:
            return Outcome("another reconcile is running")
        return _reconcile(cluster_id)


def _reconcile(cluster_id: int) -> Outcome:
    cluster = (
        Cluster.objects.select_related("cloud", "compute_config", "image", "project")
        .filter(pk=cluster_id)
        .first()
    )
    if cluster is None:
        return Outcome("cluster deleted")
    if cluster.desired_state == DesiredState.TERMINATED or cluster.state == ClusterState.FAILED:
        return _drive_down(cluster)
    if cluster.is_final:
        return Outcome("nothing to do")
    return _drive_up(cluster)


# --- Up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """What a pass (or the sweep's triage) reads of a cluster before it acts: its live
    nodes, the shared cache's latest heartbeat of each, whether the control plane was
    listening, and the head's latest report. Read at once, so the rules below judge one
    moment; reread after anything the pass changed."""

    nodes: list[Node]
    beats: dict[int, datetime | None]
    heard: live.Listening
    report: live.HeadReport | None
    now: datetime

    @property
    def staying(self) -> list[Node]:
        return [n for n in self.nodes if n.state != NodeState.TERMINATING]


def look_at(cluster: Cluster) -> Look:
    nodes = list(cluster.nodes.live())
    return _look(
        nodes,
        live.liveness(_ready_pks(nodes)),
        live.head_report(cluster.pk),
        live.listening(),
        timezone.now(),
    )


def _ready_pks(nodes: list[Node]) -> list[int]:
    return [n.pk for n in nodes if n.state == NodeState.READY]


def _look(
    nodes: list[Node],
    liveness: dict[int, tuple[datetime | None, dict | None]],
    report: live.HeadReport | None,
    heard: live.Listening,
    now: datetime,
) -> Look:
    """A Look from what was read (for one cluster, or for all of them by the sweep)."""
    beats = {n.pk: liveness[n.pk][0] for n in nodes if n.pk in liveness}
    return Look(nodes=nodes, beats=beats, heard=heard, report=report, now=now)


def work_for(cluster: Cluster, look: Look, *, public_addresses: bool) -> str | None:
    """Why a running cluster needs a pass now, or None when it is steady: every node ready
    and heard from, as many as the config and the autoscaler want, and nothing the
    autoscaler would change. The same rules as the pass's steps, so a steady cluster is
    one the pass would leave as it is."""
    if cluster.state != ClusterState.RUNNING or cluster.desired_state != DesiredState.RUNNING:
        return f"the cluster is {cluster.state}"
    if any(n.state != NodeState.READY for n in look.nodes):
        return "nodes are changing"
    if any(_lost(n, look) for n in look.nodes):
        return "a node is silent"
    if _missing(cluster, look.staying):
        return "nodes are missing"
    if not is_ready(cluster, look.staying):
        return "the cluster is not ready"
    if public_addresses and any(
        n.role == NodeRole.HEAD and not n.public_address for n in look.nodes
    ):
        return "the head's public address is unknown"
    decision = decide(cluster, look.nodes, look.report, look.now)
    if decision is not None and decision.acts_on(cluster):
        return "the autoscaler would act"
    return None


def _drive_up(cluster: Cluster) -> Outcome:
    provider = provider_for(cluster.cloud)
    look = look_at(cluster)
    if work_for(cluster, look, public_addresses=provider.public_addresses) is None:
        # Steady: nothing to lock or write. The sweep looks again (RAYDECK_SWEEP_SECONDS).
        return Outcome(ClusterState.RUNNING)
    # Liveness first, so a node found lost is replaced in this same pass.
    failure = _check_timeouts_and_liveness(cluster, provider, look)
    if failure:
        return _fail(cluster, failure)
    if cluster.state == ClusterState.RUNNING:
        # Only the nodes are read again: the step above may have ended some.
        cluster_autoscale(cluster, look.now, nodes=list(cluster.nodes.live()))
    for node in workers_to_stop(cluster):
        _terminate_instance(cluster, node, provider, NodeState.TERMINATED, node.state_reason)
    _plan_nodes(cluster)
    requeue: int | None = None
    to_launch = list(cluster.nodes.filter(state__in=[NodeState.PENDING, NodeState.LAUNCHING]))
    image = ""
    if to_launch:
        try:
            image = machine_image(cluster, provider)
        except TransientCloudError as exc:
            record_event(
                cluster,
                "cloud call",
                f"The cloud is busy, retrying: {exc.user_message}",
                level=EventLevel.WARNING,
            )
            return Outcome("waiting for the cloud", REQUEUE_BACKOFF_MAX // 4)
        except PermanentCloudError as exc:
            return _fail(cluster, f"No machine image to boot: {exc.user_message}")
    for node in to_launch:
        try:
            _launch(cluster, node, provider, image)
        except TransientCloudError as exc:
            record_event(
                cluster,
                "cloud call",
                f"The cloud is busy, retrying: {exc.user_message}",
                node=node,
                level=EventLevel.WARNING,
            )
            requeue = min(REQUEUE_BACKOFF_MAX, 5 * (node.launch_attempt + 1))
        except PermanentCloudError as exc:
            _mark_node(node, NodeState.FAILED, exc.user_message)
            return _fail(cluster, f"Could not launch the {node.role} node: {exc.user_message}")
    _learn_head_address(cluster, provider)
    update_cluster_state(cluster)
    if requeue is not None:
        return Outcome("waiting for the cloud", requeue)
    cluster.refresh_from_db(fields=["state"])
    return Outcome(
        cluster.state,
        REQUEUE_RUNNING if cluster.state == ClusterState.RUNNING else REQUEUE_STARTING,
    )


@transaction.atomic
def _plan_nodes(cluster: Cluster) -> None:
    """Write the Node rows the config asks for (before any cloud call)."""
    cluster = (
        Cluster.objects.select_for_update().select_related("compute_config").get(pk=cluster.pk)
    )
    if cluster.state == ClusterState.PENDING:
        cluster.move_to(ClusterState.STARTING)
        cluster.save()
        record_event(cluster, "starting", "Raydeck is starting the cluster's nodes.")
    for role, group, count in _missing(cluster, list(cluster.nodes.staying())):
        for _ in range(count):
            _new_node(cluster, role, group)


def _missing(cluster: Cluster, staying: list[Node]) -> list[tuple[str, str, int]]:
    """(role, group, how many) of the nodes the config and the autoscaler want that
    `staying` (the live nodes not being terminated) lacks."""
    missing: list[tuple[str, str, int]] = []
    if not any(n.role == NodeRole.HEAD for n in staying):
        missing.append((NodeRole.HEAD, "", 1))
    have = Counter(n.group for n in staying if n.role == NodeRole.WORKER)
    for group in cluster.compute_config.worker_groups:
        lacking = group_target(cluster, group) - have[group["name"]]
        if lacking > 0:
            missing.append((NodeRole.WORKER, group["name"], lacking))
    return missing


def _new_node(cluster: Cluster, role: str, group: str) -> Node:
    config = cluster.compute_config
    if role == NodeRole.HEAD:
        size = (config.head_instance_type, config.head_cpus, config.head_memory_mb)
    else:
        spec = _group(cluster, group)
        size = (
            spec.get("instance_type", ""),
            float(spec.get("cpus", 1)),
            int(spec.get("memory_mb", 1024)),
        )
    node = Node.objects.create(
        organization_id=cluster.organization_id,
        cluster=cluster,
        role=role,
        group=group,
        instance_type=size[0],
        cpus=size[1],
        memory_mb=size[2],
    )
    node.bootstrap_token_hash = hash_secret(bootstrap_token(node))
    node.save(update_fields=["bootstrap_token_hash"])
    record_event(
        cluster,
        "node planned",
        f"A {role} node{f' ({group})' if group else ''} will be launched.",
        node=node,
    )
    return node


def _launch(cluster: Cluster, node: Node, provider: CloudProvider, image: str) -> None:
    """The idempotent launch of one node: the same key on every retry."""
    if node.state == NodeState.PENDING:
        Node.objects.filter(pk=node.pk, state=NodeState.PENDING).update(
            state=NodeState.LAUNCHING, launched_at=timezone.now(), state_changed_at=timezone.now()
        )
        node.refresh_from_db()
    started = timezone.now()
    instance = provider.launch(
        node=node_spec(cluster, node, image),
        boot_script=provider.boot_script(boot_spec(cluster, node)),
        idempotency_key=idempotency_key(node.uuid, node.launch_attempt),
    )
    with transaction.atomic():
        updated = Node.objects.filter(pk=node.pk, state=NodeState.LAUNCHING).update(
            instance_id=instance.instance_id,
            state=NodeState.BOOTING,
            state_changed_at=timezone.now(),
            private_address=instance.private_address or "",
            public_address=instance.public_address or "",
        )
        if updated:
            record_event(
                cluster,
                "instance up",
                f"Instance {instance.instance_id} is up.",
                node=node,
                since=started,
            )


def _learn_head_address(cluster: Cluster, provider: CloudProvider) -> None:
    """The head's public address, where its cloud gives one: a launch often answers
    before the cloud has assigned it, so ask again until it shows (it is what users
    reach, and what the gateway's certificate names)."""
    if not provider.public_addresses:
        return
    head = (
        cluster.nodes.filter(role=NodeRole.HEAD, public_address="")
        .exclude(instance_id="")
        .filter(state__in=[NodeState.BOOTING, NodeState.REGISTERED, NodeState.READY])
        .first()
    )
    if head is None:
        return
    try:
        instance = provider.describe(instance_id=head.instance_id)
    except TransientCloudError:
        return  # the next pass asks again
    if instance is not None and instance.public_address:
        Node.objects.filter(pk=head.pk).update(public_address=instance.public_address)
        access.gateway_changed(cluster.pk)  # its certificate lacks the address: re-issued


def _mark_node(node: Node, state: str, reason: str = "") -> None:
    node.set_state(state, reason)
    if state in (NodeState.TERMINATED, NodeState.FAILED):
        node.terminated_at = timezone.now()
    node.save(update_fields=["state", "state_reason", "state_changed_at", "terminated_at"])


def last_seen(node: Node, cached: datetime | None) -> datetime | None:
    """The latest heartbeat: the cache has it within seconds (`cached`, read for all the
    cluster's nodes at once), the row within a minute."""
    if cached and (node.last_heartbeat_at is None or cached > node.last_heartbeat_at):
        return cached
    return node.last_heartbeat_at


def _row_slack(cached: datetime | None) -> timedelta:
    """How far the row's heartbeat may lag when the cache has none for the node: the row
    is written about once a minute, and the cache loses every entry when Redis restarts.
    Without this slack, the first reconcile after a restart (the sweep enqueues every
    cluster at once) takes each healthy node that has not heartbeated since for lost."""
    if cached is not None:
        return timedelta(0)
    return timedelta(seconds=PERSIST_EVERY_SECONDS + settings.RAYDECK_HEARTBEAT_SECONDS)


# How long a node may stay in each step before it fails, and what it failed to do.
STEP_LIMITS: dict[str, tuple[str, str]] = {
    NodeState.LAUNCHING: ("RAYDECK_LAUNCH_TIMEOUT_SECONDS", "get an instance"),
    NodeState.BOOTING: (
        "RAYDECK_REGISTER_TIMEOUT_SECONDS",
        "register its agent after the instance started",
    ),
    NodeState.REGISTERED: ("RAYDECK_READY_TIMEOUT_SECONDS", "start Ray"),
}


def _overdue(node: Node, now: datetime) -> str | None:
    """Why a node stuck in its step fails (None: within its limit, or in no timed step)."""
    if node.state not in STEP_LIMITS:
        return None
    setting, step = STEP_LIMITS[node.state]
    limit = getattr(settings, setting)
    if (now - node.state_changed_at).total_seconds() <= limit:
        return None
    return f"The {node.role} node did not {step} within {max(1, round(limit / 60))} min."


def _lost(node: Node, look: Look) -> bool:
    """A ready node silent for longer than allowed. Silence counts only while we
    listened: not before listening resumed, not after the last tick (the web tier may
    have died since)."""
    if node.state != NodeState.READY or not look.heard.now:
        return False
    cached = look.beats.get(node.pk)
    seen = last_seen(node, cached)
    return seen is not None and look.heard.silence(
        seen, look.now
    ) > live.node_lost_after() + _row_slack(cached)


def _check_timeouts_and_liveness(
    cluster: Cluster, provider: CloudProvider, look: Look
) -> str | None:
    """Fail nodes stuck in a step; mark silent nodes lost (and terminate them). Returns a
    reason when the whole cluster must fail."""
    for node in look.nodes:
        reason = _overdue(node, look.now)
        if reason:
            advice = _advice(node.state)  # of the step it was stuck in
            _terminate_instance(cluster, node, provider, NodeState.FAILED, reason)
            return f"{reason} {advice}"
        if _lost(node, look):
            seen = last_seen(node, look.beats.get(node.pk)) or look.now  # heard from once
            reason = f"No heartbeat for {int((look.now - seen).total_seconds())} s."
            record_event(
                cluster,
                "node lost",
                f"The {node.role} node stopped responding. {reason}",
                node=node,
                level=EventLevel.WARNING,
            )
            _terminate_instance(cluster, node, provider, NodeState.LOST, reason)
            if node.role == NodeRole.HEAD:
                return "The head node stopped responding; the Ray cluster is gone."
    return None


def _advice(state: str) -> str:
    if state == NodeState.LAUNCHING:
        return "The cloud may lack capacity: try another zone or instance type."
    if state == NodeState.BOOTING:
        return "Check that nodes can reach Raydeck's address (RAYDECK_AGENT_URL)."
    return "Open the node's log tail to see why Ray did not start."


def _terminate_instance(
    cluster: Cluster, node: Node, provider: CloudProvider, final_state: str, reason: str
) -> None:
    if node.instance_id:
        try:
            provider.terminate(instance_id=node.instance_id)
        except CloudError as exc:
            record_event(
                cluster,
                "cloud call",
                f"Could not terminate {node.instance_id} yet: {exc.user_message}",
                node=node,
                level=EventLevel.WARNING,
            )
            return  # stays in its state; the next pass tries again
    _mark_node(node, final_state, reason)


def _fail(cluster: Cluster, reason: str) -> Outcome:
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if locked.state != ClusterState.FAILED:
            locked.move_to(ClusterState.FAILED, reason)
            locked.desired_state = DesiredState.TERMINATED
            locked.save()
            record_event(locked, "failed", reason, level=EventLevel.ERROR)
    return _drive_down(locked)


# --- Down ------------------------------------------------------------------------------


def _drive_down(cluster: Cluster) -> Outcome:
    """Terminate every instance of the cluster; done when the cloud reports nothing left."""
    if cluster.state not in (
        ClusterState.FAILED,
        ClusterState.TERMINATING,
        ClusterState.TERMINATED,
    ):
        with transaction.atomic():
            locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
            locked.move_to(ClusterState.TERMINATING)
            locked.save()
            record_event(locked, "terminating", "Stopping Ray and terminating the nodes.")
        cluster = locked
    provider = provider_for(cluster.cloud)
    # What the agent last said ("Ray head is up: …") is over: it must not linger
    # beside a terminated node. A node already terminating keeps the reason it was
    # given (e.g. the head stopped itself).
    Node.objects.filter(cluster=cluster).live().exclude(state=NodeState.TERMINATING).update(
        state=NodeState.TERMINATING, state_reason="", state_changed_at=timezone.now()
    )
    try:
        # Ask the cloud, not our rows: an instance whose launch answer was lost has no
        # instance id here, but it carries this cluster's tag. And every instance not
        # gone, not only live ones: one whose agent stopped on its own still holds a
        # disk (a folder, a Ray temp dir and ports on the local cloud).
        left = [i for i in provider.list_instances(cluster_id=cluster.uuid) if not i.is_gone]
        for instance in left:
            provider.terminate(instance_id=instance.instance_id)
        still_left = [i for i in provider.list_instances(cluster_id=cluster.uuid) if not i.is_gone]
    except TransientCloudError as exc:
        record_event(
            cluster,
            "cloud call",
            f"Retrying termination: {exc.user_message}",
            level=EventLevel.WARNING,
        )
        return Outcome("terminating", REQUEUE_STARTING * 3)
    except PermanentCloudError as exc:
        record_event(
            cluster,
            "cloud call",
            f"Could not terminate: {exc.user_message}",
            level=EventLevel.ERROR,
        )
        return Outcome("terminating", REQUEUE_BACKOFF_MAX)
    if still_left:
        return Outcome("terminating", REQUEUE_STARTING)
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        now = timezone.now()
        locked.nodes.filter(state=NodeState.TERMINATING).update(
            state=NodeState.TERMINATED, terminated_at=now, state_changed_at=now
        )
        if locked.state == ClusterState.TERMINATING:
            terminating_since = locked.state_changed_at  # move_to resets it
            locked.move_to(ClusterState.TERMINATED)
            locked.save()
            record_event(locked, "terminated", "Every node is terminated.", since=terminating_since)
        elif locked.state == ClusterState.FAILED and not locked.terminated_at:
            locked.terminated_at = now
            locked.save(update_fields=["terminated_at"])
    return Outcome(locked.state)


# --- Sweeps ----------------------------------------------------------------------------


def clusters_needing_reconcile() -> list[int]:
    """Every cluster the beat sweep enqueues: each one not final that is not steady
    (work_for), and each failed one not yet cleaned up. So work lost with a broker or a
    worker is picked up again, while a steady cluster costs the sweep no task: it is
    judged here, with every cluster's nodes, heartbeats and head report read in bulk."""
    clusters = list(Cluster.objects.live().select_related("cloud", "compute_config"))
    nodes: dict[int, list[Node]] = {c.pk: [] for c in clusters}
    for node in Node.objects.live().filter(cluster__in=Cluster.objects.live()):
        nodes.setdefault(node.cluster_id, []).append(node)
    beats = live.liveness([pk for group in nodes.values() for pk in _ready_pks(group)])
    reports = live.head_reports([c.pk for c in clusters])
    heard, now = live.listening(), timezone.now()
    public: dict[int, bool] = {}
    needing = []
    for cluster in clusters:
        if cluster.cloud_id not in public:
            public[cluster.cloud_id] = provider_for(cluster.cloud).public_addresses
        look = _look(nodes.get(cluster.pk, []), beats, reports.get(cluster.pk), heard, now)
        if work_for(cluster, look, public_addresses=public[cluster.cloud_id]) is not None:
            needing.append(cluster.pk)
    return needing + list(
        Cluster.objects.filter(state=ClusterState.FAILED, terminated_at=None).values_list(
            "pk", flat=True
        )
    )


LEAK_STEP = "leaked instance terminated"


def orphans_sweep() -> int:
    """Terminate instances tagged for an active cloud that no live Node claims, live or
    not (a stopped one still holds what a terminate releases)."""
    terminated = 0
    grace = timedelta(seconds=settings.RAYDECK_ORPHAN_GRACE_SECONDS)
    for cloud in Cloud.objects.filter(state=CloudState.ACTIVE):
        provider = provider_for(cloud)
        try:
            instances = [i for i in provider.list_instances() if not i.is_gone]
        except CloudError as exc:
            logger.warning("Orphan sweep of cloud %s failed: %s", cloud.pk, exc.user_message)
            continue
        claimed = set(
            Node.objects.filter(cluster__cloud=cloud).live().values_list("uuid", flat=True)
        )
        for instance in instances:
            if instance.node_id in claimed:
                continue
            if instance.launched_at and timezone.now() - instance.launched_at < grace:
                continue  # a launch may still be writing its row
            try:
                provider.terminate(instance_id=instance.instance_id)
            except CloudError as exc:
                logger.warning(
                    "Could not terminate leaked %s: %s", instance.instance_id, exc.user_message
                )
                continue
            terminated += 1
            _record_leak(cloud, instance)
    return terminated


@transaction.atomic
def _record_leak(cloud: Cloud, instance: Instance) -> None:
    """The cluster's timeline says so (when the tag names one of this cloud's clusters),
    and the organization's audit log always does."""
    cluster = (
        Cluster.objects.filter(uuid=instance.cluster_id, cloud=cloud).first()
        if instance.cluster_id
        else None
    )
    message = (
        f"Instance {instance.instance_id} was running without a node record and was terminated."
    )
    if cluster is not None:
        record_event(cluster, LEAK_STEP, message, level=EventLevel.WARNING)
    else:
        logger.warning(
            "Leaked instance %s of unknown cluster %s terminated",
            instance.instance_id,
            instance.cluster_id,
        )
    audit(
        actor=None,
        actor_email="raydeck",
        verb="cloud.leaked_instance_terminated",
        target=cluster or cloud,
        organization=cloud.organization,
        changes={
            "instance_id": [instance.instance_id, None],
            "cluster": [str(instance.cluster_id or ""), None],
        },
    )
