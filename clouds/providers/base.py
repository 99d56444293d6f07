"""The one interface every cloud driver implements, and the types that cross it.

Drivers take plain values (no Django models) so they can be tested and reused on
their own; `clouds.providers.registry.provider_for(cloud)` builds the right one.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# Tags (AWS) / labels (GCP) / metadata (local) on every instance Raydeck launches.
TAG_CLOUD = "raydeck-cloud"
TAG_CLUSTER = "raydeck-cluster"
TAG_NODE = "raydeck-node"


class InstanceState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeSpec:
    """What to launch for one Node row. `node_id` is the Node's UUID: it becomes the
    `raydeck-node` tag and the source of the idempotency key."""

    node_id: uuid.UUID
    cluster_id: uuid.UUID
    name: str
    instance_type: str  # EC2 instance type, GCE machine type, or "local"
    image: str = ""  # AMI id, GCE image URL; local: the Python executable
    zone: str = ""
    spot: bool = False
    cpus: float = 1.0  # local only: what Ray is told the node has
    memory_mb: int = 1024  # local only
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BootSpec:
    """What a node's boot script needs, as plain values the caller (the reconciler) fills
    in: who the node is, where its agent registers, and where it installs the agent from."""

    node_id: uuid.UUID
    cluster_id: uuid.UUID
    control_plane_url: str  # RAYDECK_URL: where the agent registers and heartbeats
    bootstrap_token: str
    agent_index_url: str  # a PEP 503 index that serves `agent_package`
    agent_package: str
    ray_version: str  # installed at boot where the machine image has no Ray


@dataclass(frozen=True)
class ImageSpec:
    """A cluster's image as plain values: each kind of cloud reads the fields it runs."""

    name: str
    ray_version: str = ""
    image_uri: str = ""  # a container image (AWS, GCP)
    python_executable: str = ""  # a Python environment (local); blank: the default
    aws_amis: dict[str, str] = field(default_factory=dict)  # region -> AMI id
    gcp_image: str = ""  # a GCE image or image family URL


@dataclass(frozen=True)
class MachineSize:
    instance_type: str
    cpus: float
    memory_mb: int


@dataclass(frozen=True)
class DefaultMachines:
    """What a new organization's default compute config asks for on a kind of cloud: the
    head, and one worker group that scales from zero."""

    head: MachineSize
    worker: MachineSize


@dataclass(frozen=True)
class BuiltInImage:
    """The image every organization gets for a kind of cloud (name and container image)."""

    name: str
    image_uri: str


@dataclass(frozen=True)
class Instance:
    """One machine (or local process group) as the cloud reports it."""

    instance_id: str
    state: InstanceState
    node_id: uuid.UUID | None
    cluster_id: uuid.UUID | None
    instance_type: str = ""
    private_address: str | None = None
    public_address: str | None = None
    launched_at: datetime | None = None

    @property
    def is_live(self) -> bool:
        return self.state in (InstanceState.PENDING, InstanceState.RUNNING)


@dataclass(frozen=True)
class CheckResult:
    """One verification step: what was checked, whether it passed, and what to do."""

    name: str
    passed: bool
    message: str


class CloudError(Exception):
    """A failed cloud call. `user_message` is safe to show and says what to do."""

    def __init__(self, user_message: str, *, detail: str = "") -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.detail = detail


class TransientCloudError(CloudError):
    """Throttling, 5xx, timeouts: the same call may succeed later (retry with backoff)."""


class PermanentErrorKind(enum.StrEnum):
    CAPACITY = "capacity"
    QUOTA = "quota"
    PERMISSION = "permission"
    INVALID_IMAGE = "invalid_image"
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"


class PermanentCloudError(CloudError):
    """Retrying will not help until the user changes something."""

    def __init__(self, user_message: str, *, kind: PermanentErrorKind, detail: str = "") -> None:
        super().__init__(user_message, detail=detail)
        self.kind = kind


def instance_tags(*, cloud_id: uuid.UUID, node: NodeSpec) -> dict[str, str]:
    """The user's labels, then Raydeck's ownership tags, which no label can override."""
    return {
        **node.labels,
        TAG_CLOUD: str(cloud_id),
        TAG_CLUSTER: str(node.cluster_id),
        TAG_NODE: str(node.node_id),
    }


RAY_TEMP_ROOT = "/tmp/raydeck"  # noqa: S108 - on the node; Ray puts Unix sockets under it


def ray_temp_dir(node_id: uuid.UUID) -> str:
    """Ray's temp folder on a node: short, because Ray's Unix socket paths must fit in 107
    bytes. The local driver removes it when the node is terminated."""
    return f"{RAY_TEMP_ROOT}/{str(node_id)[:8]}"


def idempotency_key(node_id: uuid.UUID, attempt: int = 0) -> str:
    """The key a launch of this node carries (EC2 ClientToken, GCE request_id). A new
    `attempt` is only used after the previous instance is known to be gone."""
    return str(uuid.uuid5(node_id, f"launch-{attempt}"))


class CloudProvider(Protocol):
    """What Raydeck needs from a place where nodes run.

    Every driver also inherits its kind's `CloudTraits` (kinds.py): the questions that
    need no credentials (default machines, which images it runs, built-in image), which
    pages ask through `registry.traits_for(kind)` without building a driver.
    """

    def launch(self, *, node: NodeSpec, boot_script: str, idempotency_key: str) -> Instance:
        """Start the node, or return the instance already started for this node."""
        ...

    def terminate(self, *, instance_id: str) -> None:
        """Stop and delete the instance; a missing instance is not an error."""
        ...

    def list_instances(self, *, cluster_id: uuid.UUID | None = None) -> list[Instance]:
        """Live and recently ended instances tagged for this cloud (and cluster)."""
        ...

    def describe(self, *, instance_id: str) -> Instance | None:
        """The instance, or None when the cloud no longer knows it."""
        ...

    def default_image(self) -> str:
        """What a node boots when its cluster's image names nothing for this place (an
        AMI id, a GCE image URL, a Python executable). PermanentCloudError if none."""
        ...

    def machine_image(self, *, image: ImageSpec, region: str) -> str:
        """What the nodes of a cluster with `image` boot in `region`: the image's own
        choice for this place, else `default_image()`. A PermanentCloudError says what to
        set when there is neither."""
        ...

    def boot_script(self, boot: BootSpec) -> str:
        """The script a new node runs first: it starts the agent (installing it, and Ray,
        where the machine needs them)."""
        ...

    def verify(self) -> list[CheckResult]:
        """Read-only checks that this cloud is usable, each with a message to act on."""
        ...
