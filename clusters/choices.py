"""States, roles and the allowed transitions of clusters and nodes."""

from django.db import models


class DesiredState(models.TextChoices):
    RUNNING = "running", "Running"
    TERMINATED = "terminated", "Terminated"


class ClusterState(models.TextChoices):
    PENDING = "pending", "Pending"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    TERMINATING = "terminating", "Terminating"
    TERMINATED = "terminated", "Terminated"
    FAILED = "failed", "Failed"


FINAL_CLUSTER_STATES = frozenset({ClusterState.TERMINATED, ClusterState.FAILED})

# Which observed state may follow which. Anything not listed is a bug.
CLUSTER_TRANSITIONS: dict[str, frozenset[str]] = {
    ClusterState.PENDING: frozenset(
        {ClusterState.STARTING, ClusterState.TERMINATING, ClusterState.FAILED}
    ),
    ClusterState.STARTING: frozenset(
        {ClusterState.RUNNING, ClusterState.TERMINATING, ClusterState.FAILED}
    ),
    ClusterState.RUNNING: frozenset(
        {ClusterState.STARTING, ClusterState.TERMINATING, ClusterState.FAILED}
    ),
    ClusterState.TERMINATING: frozenset({ClusterState.TERMINATED, ClusterState.FAILED}),
    ClusterState.TERMINATED: frozenset({ClusterState.PENDING}),  # restart
    ClusterState.FAILED: frozenset(
        {ClusterState.TERMINATING, ClusterState.TERMINATED, ClusterState.PENDING}
    ),
}


class NodeRole(models.TextChoices):
    HEAD = "head", "Head"
    WORKER = "worker", "Worker"


class NodeState(models.TextChoices):
    PENDING = "pending", "Pending"  # row written, no cloud call yet
    LAUNCHING = "launching", "Launching"  # cloud call made, instance not confirmed
    BOOTING = "booting", "Booting"  # instance up, agent not registered yet
    REGISTERED = "registered", "Registered"  # agent registered, Ray starting
    READY = "ready", "Ready"  # Ray is up on this node
    TERMINATING = "terminating", "Terminating"
    TERMINATED = "terminated", "Terminated"
    LOST = "lost", "Lost"  # stopped heartbeating; being replaced
    FAILED = "failed", "Failed"


# A node is live from its row's first write until it is terminated, failed or lost: its
# cluster has its machine, or is getting it or giving it back. The one spelling of that
# list: here for Python, Node.objects.live() (and .staying()) for queries.
LIVE_NODE_STATES = frozenset(
    {
        NodeState.PENDING,
        NodeState.LAUNCHING,
        NodeState.BOOTING,
        NodeState.REGISTERED,
        NodeState.READY,
        NodeState.TERMINATING,
    }
)


class EventLevel(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class BuildState(models.TextChoices):
    """An image build's state (clusters.models.ImageBuild)."""

    QUEUED = "queued", "Queued"
    BUILDING = "building", "Building"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_BUILD_STATES = frozenset({BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED})
