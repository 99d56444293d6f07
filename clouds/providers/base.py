"""The one interface every cloud driver implements, and the types that cross it.

Drivers take plain values (no Django models) so they can be tested and reused on
their own; `clouds.providers.registry.provider_for(cloud)` builds the right one.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

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
    # PEM: the CAs the agent verifies control_plane_url's certificate with; blank: the
    # node's system CAs.
    control_plane_ca: str = ""
    # The cluster's container image (AWS, GCP): the node pulls it and runs the agent, and
    # so Ray, inside it. Blank: the agent and Ray run in the machine's own Python.
    image_uri: str = ""
    head: bool = False  # the head runs Prometheus (boot.py installs it where it can)


@dataclass(frozen=True)
class FirewallSpec:
    """What a cloud's firewall lets through (aws_firewall.py, gcp_firewall.py): every
    port between the cloud's own nodes, and from outside only `gateway_port` (TCP, the
    head's access gateway) from `gateway_cidrs`."""

    gateway_port: int
    gateway_cidrs: tuple[str, ...] = ()


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
    gpus: float = 0


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

    @property
    def is_gone(self) -> bool:
        """Nothing of it is left to release: only then is a terminate done. A stopped
        instance (its agent exited on its own) still holds a disk, a local folder, ports."""
        return self.state == InstanceState.TERMINATED


@dataclass(frozen=True)
class CheckResult:
    """One verification step: what was checked, whether it passed, and what to do."""

    name: str
    passed: bool
    message: str
    # What the step changed in the customer's cloud ("" for nothing): the verification's
    # audit event records it.
    change: str = ""


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


# --- Object storage: working directories and archived logs in the cloud's own bucket.

STORAGE_FOLDER = "raydeck-storage"  # under the cloud's log location: <location>/<folder>/<key>
STORAGE_URL_SECONDS = 15 * 60  # how long a signed upload or download URL is good for
_STORAGE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")


@dataclass(frozen=True)
class SignedUrl:
    """Lets whoever holds it do one thing (`method`) to one object until `expires_at`,
    without credentials. The request must carry `headers` (they are part of the
    signature)."""

    method: str
    url: str
    expires_at: datetime
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the cloud's storage, as passed to the provider
    size: int


def check_storage_key(key: str) -> str:
    """`key` if it is a plain relative path (no `..`, no leading `/`, no odd
    characters), else ValueError: keys come from Raydeck, never straight from a user."""
    if len(key) > 512 or not _STORAGE_KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"Not a storage key: {key!r}")
    return key


def split_bucket_location(location: str, scheme: str) -> tuple[str, str]:
    """`s3://bucket/prefix` (or gs://) → (bucket, prefix without slashes)."""
    rest = location.strip()[len(scheme) :] if location.startswith(scheme) else ""
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


# The log page's read of a stored log from the browser: a verification step of its own.
CHECK_LOG_CORS = "Log bucket CORS"
LOG_CORS_NOT_CHECKED = "Not checked: the log bucket could not be reached."


@dataclass(frozen=True)
class BrowserRead:
    """What the console's log page asks of the log bucket from the console's origin
    (static/console/console.js): a GET of a signed URL with a Range header, whose
    Content-Range and Content-Length it may read. Unless one of the bucket's CORS rules
    allows that, the browser refuses the answer."""

    origin: str
    method: str = "GET"
    request_headers: tuple[str, ...] = ("Range",)
    exposed_headers: tuple[str, ...] = ("Content-Range", "Content-Length")
    max_age_seconds: int = 3600  # how long a browser may keep a preflight's answer

    def allowed_by(
        self,
        *,
        origins: list[str],
        methods: list[str],
        request_headers: list[str],
        exposed_headers: list[str],
    ) -> bool:
        """Whether one CORS rule with these lists allows the read ("*" matches anything
        in an origin, a method or a request header; header names are case-blind)."""
        exposed = {h.lower() for h in exposed_headers}
        return (
            any(_wildcard_match(o, self.origin) for o in origins)
            and any(m == "*" or m.upper() == self.method for m in methods)
            and all(
                any(_wildcard_match(allowed, header) for allowed in request_headers)
                for header in self.request_headers
            )
            and all(h.lower() in exposed for h in self.exposed_headers)
        )


def _wildcard_match(pattern: str, value: str) -> bool:
    parts = (re.escape(part) for part in pattern.lower().split("*"))
    return re.fullmatch(".*".join(parts), value.lower()) is not None


def storage_root(location: str, scheme: str) -> tuple[str, str]:
    """The bucket of a log location such as `s3://bucket/prefix` ("" when it names none)
    and the name prefix, ending in /, of the cloud's storage in it."""
    bucket, prefix = split_bucket_location(location, scheme)
    return bucket, "".join(f"{p}/" for p in (prefix, STORAGE_FOLDER) if p)


def no_storage_error(example: str) -> PermanentCloudError:
    return PermanentCloudError(
        "This cloud has no log location, and Raydeck keeps working "
        f"directories and job logs there: set it (such as {example}) on the cloud's page.",
        kind=PermanentErrorKind.INVALID_REQUEST,
    )


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

    # Whether its nodes get a public address (the cloud's node_addresses setting); the
    # reconciler asks `describe` for one a launch did not answer yet.
    public_addresses: bool

    def launch(self, *, node: NodeSpec, boot_script: str, idempotency_key: str) -> Instance:
        """Start the node, or return the instance already started for this node."""
        ...

    def terminate(self, *, instance_id: str) -> None:
        """Stop and delete the instance; a missing instance is not an error."""
        ...

    def list_instances(self, *, cluster_id: uuid.UUID | None = None) -> list[Instance]:
        """Live and recently ended instances tagged for this cloud (and cluster); any
        that still holds something (a stopped VM's disk, a local node's folder) is not
        `is_gone` until a terminate has released it."""
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
        """Checks that this cloud is usable, each with a message to act on. Read-only,
        but for what the console needs of the log bucket (a CORS rule), which a check
        may add and then names in its `change`."""
        ...

    def ensure_firewall(self) -> None:
        """Create the cloud's firewall rules (FirewallSpec), or bring them in line;
        idempotent. Launches call it; a cloud without a firewall of its own does nothing."""
        ...

    def remove_firewall(self) -> None:
        """Remove the cloud's firewall rules (the cloud is deleted); none is not an error."""
        ...

    def remove_builds(self) -> None:
        """Remove what the cloud's image builds keep per cloud (the cloud is deleted: on
        AWS its CodeBuild project, ECR repository and build log group); none is fine."""
        ...

    # Object storage (keys pass `check_storage_key`; a cloud without a place for them
    # raises PermanentCloudError saying what to set).

    def upload_url(self, *, key: str, size: int, sha256: str, expires_in: int) -> SignedUrl:
        """A PUT of exactly `size` bytes to `key`; where the cloud can check it, only a
        body whose SHA-256 (hex) is `sha256` is accepted."""
        ...

    def download_url(self, *, key: str, expires_in: int) -> SignedUrl:
        """A GET of the object at `key`."""
        ...

    def object_size(self, *, key: str) -> int | None:
        """The object's size in bytes, or None when there is none at `key`."""
        ...

    def list_objects(self, *, prefix: str) -> list[StoredObject]:
        """The objects whose keys start with `prefix`, in key order."""
        ...

    def object_uri(self, *, key: str) -> str:
        """How the cloud's own nodes read the object (a Ray runtime_env URI: s3://, gs://,
        file://), with the nodes' own identity rather than a signed URL that expires."""
        ...

    def router(self) -> ServiceRouter:
        """The load balancer kind this cloud puts in front of services."""
        ...


# --- service routers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One version of a service at its router: where its Serve proxy listens and its share
    of new requests (0-100). A draining backend takes no new requests; those in flight
    finish."""

    name: str  # stable for the version, e.g. "v3"
    address: str
    port: int
    weight: int
    draining: bool = False
    instance: str = ""  # the head's instance id in its cloud (GCP: zone/name)
    # The head's "serve" port speaks TLS (its agent's serve gate does), so an ALB or a URL
    # map reaches it over HTTPS; a head booted with an agent from before that speaks plain
    # HTTP, and its load balancer must too. HAProxy stays on loopback and ignores it.
    tls: bool = True


@dataclass(frozen=True)
class Endpoint:
    """A service's stable address, and what the router needs to find it again (stored
    by the caller, handed back on every call)."""

    url: str
    ref: dict[str, Any]


@dataclass(frozen=True)
class EndpointCertificate:
    """A service endpoint's TLS certificate for its own names, signed by the installation's
    CA (clusters/certificates.py), which the CLI, the SDK and the console's download
    already trust: PEM leaf, the chain above it, and the leaf's private key."""

    certificate_pem: str
    chain_pem: str
    private_key_pem: str


# Signs an EndpointCertificate for these names (DNS names or IP addresses).
EndpointSigner = Callable[[list[str]], EndpointCertificate]
# A router asks for a new certificate once its endpoint's has less than this to live.
ENDPOINT_RENEW_BEFORE_SECONDS = 30 * 24 * 60 * 60


def router_service_id(ref: dict[str, Any]) -> uuid.UUID:
    """The service a cloud router's `ref` is for (its resources are named after it)."""
    try:
        return uuid.UUID(str(ref.get("service_id")))
    except ValueError:
        raise PermanentCloudError(
            "This service's endpoint record is damaged (it names no service).",
            kind=PermanentErrorKind.INVALID_REQUEST,
        ) from None


class ServiceRouter(Protocol):
    """The load balancer in front of a service's versions, in the data plane (HAProxy on
    the local cloud, an ALB on AWS, a URL map on GCP). HAProxy checks the service's query
    tokens itself; an ALB or URL map cannot, and each version's head does (the cloud
    kind's `heads_check_service_tokens`). Every call is idempotent: it states the whole
    desired state."""

    def ensure_endpoint(
        self, *, service_id: uuid.UUID, ref: dict[str, Any], sign: EndpointSigner | None = None
    ) -> Endpoint:
        """Create the endpoint, or find (and if need be restart) the one `ref` names. A
        router that serves HTTPS gets its certificate from `sign`, for the endpoint's own
        name, when it has none or its own is about to end (required there)."""
        ...

    def set_backends(self, *, ref: dict[str, Any], backends: list[Backend]) -> None:
        """Route to exactly these backends with these weights; others are removed."""
        ...

    def set_token_hashes(self, *, ref: dict[str, Any], token_hashes: list[str]) -> None:
        """Admit requests whose bearer token's SHA-256 (hex) is one of these, only."""
        ...

    def in_flight(self, *, ref: dict[str, Any], backend: str) -> int:
        """Requests the backend is still serving (0 when unknown or gone)."""
        ...

    def remove(self, *, ref: dict[str, Any]) -> None:
        """Delete the endpoint and everything made for it; missing is not an error."""
        ...
