"""Compute configs, images, clusters, their nodes and the events of their lives."""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any, Self

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization, Project, ProjectOwnedQuerySet, User
from clouds.models import Cloud
from clouds.providers.base import ImageSpec

from .choices import (
    CLUSTER_TRANSITIONS,
    FINAL_BUILD_STATES,
    FINAL_CLUSTER_STATES,
    LIVE_NODE_STATES,
    BuildState,
    ClusterState,
    DesiredState,
    EventLevel,
    NodeRole,
    NodeState,
)


class InvalidTransition(Exception):
    """A state change the transition table does not allow."""


class ComputeConfig(models.Model):
    """A named, versioned description of a cluster's machines (org-wide or per project)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="compute_configs"
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="compute_configs"
    )
    name = models.CharField(max_length=100)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProjectOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="config_name_per_org")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def latest(self) -> ComputeConfigVersion:
        return self.versions.order_by("-number").first()  # type: ignore[return-value]


def default_worker_groups() -> list[dict[str, Any]]:
    return []


DEFAULT_DOWNSCALE_DELAY_SECONDS = 300  # a worker idle this long is removed (down to min)
DOWNSCALE_DELAY_RANGE = (5, 24 * 60 * 60)
MAX_WORKERS_PER_GROUP = 1000


def downscale_delay(group: dict[str, Any]) -> int:
    return int(group.get("downscale_delay_seconds", DEFAULT_DOWNSCALE_DELAY_SECONDS))


MAX_WORKER_GROUPS = 20
# Ray's head runs the GCS, the dashboard and a raylet: below this it does not start.
MIN_HEAD_MEMORY_MB = 512
# What a worker group holds, and what a missing key means (filled_worker_groups fills
# them in; the reconciler and autoscaler read them).
WORKER_GROUP_DEFAULTS: dict[str, Any] = {
    "name": "",
    "instance_type": "",
    "cpus": 1.0,
    "memory_mb": 1024,
    "gpus": 0,
    "min": 0,
    "max": 0,
    "spot": False,
    "downscale_delay_seconds": DEFAULT_DOWNSCALE_DELAY_SECONDS,
}


def worker_group_errors(groups: Any) -> dict[str, list[str]]:
    """The one set of rules for worker groups, as messages keyed "worker_groups" (the
    list) or "worker_groups.<position>" (from 0): at most MAX_WORKER_GROUPS; each an
    object with a unique name of 1 to 64 characters, cpus > 0, memory_mb > 0, gpus >= 0,
    whole numbers 0 <= min <= max <= MAX_WORKERS_PER_GROUP, and a downscale delay in
    DOWNSCALE_DELAY_RANGE seconds."""
    if not isinstance(groups, list):
        return {"worker_groups": ["Worker groups must be a list."]}
    errors: dict[str, list[str]] = {}
    if len(groups) > MAX_WORKER_GROUPS:
        errors["worker_groups"] = [f"Use at most {MAX_WORKER_GROUPS} worker groups."]
    names: set[str] = set()

    def number(group: dict[str, Any], key: str, low: float) -> float | None:
        value = group.get(key, WORKER_GROUP_DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            return None
        return float(value)

    for i, group in enumerate(groups):
        found = errors.setdefault(f"worker_groups.{i}", [])
        if not isinstance(group, dict):
            found.append(f"Worker group {i + 1} must be an object.")
            continue
        name = str(group.get("name", "")).strip()
        label = f"Worker group {name or i + 1}"
        if not name or len(name) > 64:
            found.append(f"Worker group {i + 1} needs a name of 1 to 64 characters.")
        elif name in names:
            found.append(f"Two worker groups are named {name}.")
        names.add(name)
        cpus = number(group, "cpus", 0)
        if cpus is None or cpus <= 0:
            found.append(f"{label}: cpus must be a number above 0.")
        if number(group, "memory_mb", 1) is None:
            found.append(f"{label}: memory_mb must be a number above 0.")
        if number(group, "gpus", 0) is None:
            found.append(f"{label}: gpus must be 0 or more.")
        low, high = group.get("min", 0), group.get("max", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            found.append(f"{label}: min and max must be whole numbers.")
        elif not 0 <= low <= high <= MAX_WORKERS_PER_GROUP:
            found.append(f"{label}: needs 0 <= min <= max <= {MAX_WORKERS_PER_GROUP}.")
        delay = group.get("downscale_delay_seconds", DEFAULT_DOWNSCALE_DELAY_SECONDS)
        first, last = DOWNSCALE_DELAY_RANGE
        if isinstance(delay, bool) or not isinstance(delay, int) or not first <= delay <= last:
            found.append(
                f"{label}: downscale_delay_seconds must be a whole number of seconds "
                f"from {first} to {last}."
            )
    return {key: messages for key, messages in errors.items() if messages}


def filled_worker_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Valid worker groups with every key of WORKER_GROUP_DEFAULTS, so that two lists
    that mean the same compare equal (older rows may lack keys added since)."""
    return [
        {
            **WORKER_GROUP_DEFAULTS,
            **{k: v for k, v in group.items() if k in WORKER_GROUP_DEFAULTS},
            "name": str(group["name"]).strip(),
            "instance_type": str(group.get("instance_type") or "")[:64],
        }
        for group in groups
    ]


def guaranteed_workers(groups: list[dict[str, Any]]) -> int:
    """Worker nodes a cluster of valid `groups` always has (each group's min), whatever
    the autoscaler does."""
    return sum(int(group.get("min", 0)) for group in groups)


def validate_worker_groups(groups: Any) -> None:
    """The field's validator: worker_group_errors as one list of messages."""
    errors = worker_group_errors(groups)
    if errors:
        raise ValidationError([m for messages in errors.values() for m in messages])


# What a version holds (the rest of the row says who made it and when).
VERSIONED_FIELDS = (
    "cloud",
    "region",
    "zone",
    "head_instance_type",
    "head_cpus",
    "head_memory_mb",
    "worker_groups",
    "idle_timeout_minutes",
    "max_uptime_minutes",
)


class ComputeConfigVersion(models.Model):
    """One saved state of a compute config. Never changed once clusters use it."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    config = models.ForeignKey(ComputeConfig, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    cloud = models.ForeignKey(Cloud, on_delete=models.PROTECT, related_name="compute_versions")
    region = models.CharField(max_length=64, blank=True)
    zone = models.CharField(max_length=64, blank=True)
    # Head: an instance type on AWS/GCP; on the local cloud, CPUs and memory.
    head_instance_type = models.CharField(max_length=64, blank=True)
    head_cpus = models.FloatField(default=1, validators=[MinValueValidator(0)])
    head_memory_mb = models.PositiveIntegerField(default=2048)
    # [{"name", "instance_type", "cpus", "memory_mb", "gpus", "min", "max", "spot",
    #   "downscale_delay_seconds"}]
    worker_groups = models.JSONField(
        default=default_worker_groups, blank=True, validators=[validate_worker_groups]
    )
    idle_timeout_minutes = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 60)]
    )
    max_uptime_minutes = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["config", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["config", "number"], name="one_number_per_version")
        ]

    def __str__(self) -> str:
        return f"{self.config.name} v{self.number}"

    def clean(self) -> None:
        """A head is a machine: it needs some CPU and enough memory for Ray's own
        processes (GCS, dashboard, raylet), or the cluster never starts."""
        errors: dict[str, str] = {}
        if self.head_cpus is not None and self.head_cpus <= 0:
            errors["head_cpus"] = "A head needs more than 0 CPUs."
        if self.head_memory_mb is not None and self.head_memory_mb < MIN_HEAD_MEMORY_MB:
            errors["head_memory_mb"] = (
                f"A head needs at least {MIN_HEAD_MEMORY_MB} MB of memory for Ray's own processes."
            )
        if errors:
            raise ValidationError(errors)


AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# PEP 440 as Ray's releases use it: 2.40.0, 2.10.0rc1, 3.0.0.dev0.
RAY_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
NO_SPACES = re.compile(r"^\S*$")


class ContainerImageQuerySet(models.QuerySet):
    def available(self) -> Self:
        """Images not deleted (a deleted image stays only for its ended clusters)."""
        return self.filter(deleted_at=None)

    def visible_to(self, user: User, organization: Organization) -> Self:
        """The organization's own images and the built-in ones, to its members; deleted
        ones never."""
        if not user.is_authenticated or user.org_role(organization) is None:
            return self.none()
        return self.available().filter(Q(organization=organization) | Q(organization=None))


class ContainerImage(models.Model):
    """What runs on the nodes: a container image (AWS/GCP) or a Python environment (local).
    Rows without an organization are the built-in defaults everyone may use."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="images"
    )
    name = models.CharField(max_length=100)
    # Set: a container image, offered for AWS and GCP clusters; blank: a Python
    # environment, offered for the local cloud (clusters/selectors.py).
    image_uri = models.CharField(
        "image URI",
        max_length=300,
        blank=True,
        validators=[RegexValidator(NO_SPACES, "An image URI has no spaces.")],
    )
    ray_version = models.CharField(
        "Ray version",
        max_length=32,
        validators=[RegexValidator(RAY_VERSION, "Give a Ray version such as 2.40.0.")],
    )
    # Local cloud: the Python that runs the agent and Ray (blank = Raydeck's own).
    python_executable = models.CharField(max_length=300, blank=True)
    # AWS: the machine image nodes boot, per region ({"us-east-1": "ami-…"}); a region
    # without one boots the installation's default (RAYDECK_AWS_AMI_PARAMETER).
    aws_amis = models.JSONField("AWS AMIs", default=dict, blank=True)
    # GCP: a boot image or image family URL; blank boots RAYDECK_GCP_IMAGE.
    gcp_image = models.CharField(
        "GCP boot image",
        max_length=300,
        blank=True,
        validators=[RegexValidator(NO_SPACES, "A GCP image URL has no spaces.")],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when deleted while ended clusters still name it: they keep showing what they
    # ran; nothing else sees it (clusters/services/images.py).
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A built image: the cloud whose registry holds it (only its clusters may run it), and
    # the revision new clusters get (clusters keep the one they started with).
    cloud = models.ForeignKey(
        Cloud, null=True, blank=True, editable=False, on_delete=models.CASCADE, related_name="+"
    )
    build = models.ForeignKey(
        "ImageBuild",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    objects = ContainerImageQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=Q(deleted_at=None),
                name="image_name_per_org",
            ),
            # The one above never applies to built-in rows (NULL organization: SQL takes
            # NULLs for distinct), so two first cluster creates at once made two. A partial
            # index on the built-in rows alone works on PostgreSQL and SQLite alike.
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(organization=None, deleted_at=None),
                name="built_in_image_name",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def built_in(self) -> bool:
        return self.organization_id is None

    def spec(self) -> ImageSpec:
        """The image as plain values, for the cloud providers (they read what they run)."""
        return ImageSpec(
            name=self.name,
            ray_version=self.ray_version,
            image_uri=self.image_uri,
            python_executable=self.python_executable,
            aws_amis=dict(self.aws_amis) if isinstance(self.aws_amis, dict) else {},
            gcp_image=self.gcp_image,
        )

    def clean(self) -> None:
        """A container image (image URI, with AWS AMIs and a GCP image for the machines
        under it) or a local Python environment (a Python executable): not both, since
        the cluster form offers images by that difference. An organization's own image
        must name one of the two (a built-in one may stand for Raydeck's own Python)."""
        errors: dict[str, str] = {}
        amis = self.aws_amis
        if not isinstance(amis, dict) or not all(
            isinstance(region, str)
            and AWS_REGION.match(region)
            and isinstance(ami, str)
            and AMI_ID.match(ami)
            for region, ami in amis.items()
        ):
            example = '{"us-east-1": "ami-0123456789abcdef0"}'
            errors["aws_amis"] = f"Give one AMI per region, e.g. {example}."
        python = self.python_executable
        if python and (not python.startswith("/") or any(c in python for c in "\n\r\t\0")):
            errors["python_executable"] = (
                "Give the Python's absolute path on the machine, e.g. /opt/ray/bin/python3."
            )
        if self.image_uri:
            if python:
                errors["python_executable"] = (
                    "A Python executable is for the local cloud, whose images have no image "
                    "URI. Clear one of the two."
                )
        else:
            if amis and "aws_amis" not in errors:
                errors["aws_amis"] = (
                    "AMIs are for container images on AWS: give an image URI too, or clear them."
                )
            if self.gcp_image:
                errors["gcp_image"] = (
                    "A GCP boot image is for container images on GCP: give an image URI too, "
                    "or clear it."
                )
            if self.organization_id is not None and not python:
                errors[NON_FIELD_ERRORS] = (
                    "Give an image URI (a container image, for AWS and GCP clusters) or a "
                    "Python executable (for clusters on the local cloud)."
                )
        if errors:
            raise ValidationError(errors)


class ClusterQuerySet(ProjectOwnedQuerySet):
    def live(self) -> ClusterQuerySet:
        return self.exclude(state__in=FINAL_CLUSTER_STATES)


class Cluster(models.Model):
    """A Ray cluster: what the user asked for (desired_state) and what is (state)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="clusters")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    cloud = models.ForeignKey(Cloud, on_delete=models.PROTECT, related_name="clusters")
    compute_config = models.ForeignKey(
        ComputeConfigVersion, on_delete=models.PROTECT, related_name="clusters"
    )
    image = models.ForeignKey(ContainerImage, on_delete=models.PROTECT, related_name="clusters")
    # The revision of a built image the cluster started with: its nodes keep running it
    # when the image is built again.
    image_build = models.ForeignKey(
        "ImageBuild", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING
    )
    state = models.CharField(
        max_length=16, choices=ClusterState.choices, default=ClusterState.PENDING, db_index=True
    )
    state_reason = models.CharField(max_length=1000, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    head_address = models.CharField(max_length=200, blank=True)
    dashboard_port = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)  # last time it became running
    terminated_at = models.DateTimeField(null=True, blank=True)
    # Autoscaling: how many workers of each group the cluster should have (min if absent).
    desired_workers = models.JSONField(default=dict, blank=True)
    # Idle termination (services/idle.py): the latest use seen, the warning before the
    # termination, and the one extension a user may ask for per run.
    last_active_at = models.DateTimeField(null=True, blank=True)
    idle_warned_at = models.DateTimeField(null=True, blank=True)
    idle_extended_at = models.DateTimeField(null=True, blank=True)

    objects = ClusterQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["project", "-created_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"],
                condition=~Q(state__in=["terminated", "failed"]),
                name="live_cluster_name_per_project",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_CLUSTER_STATES

    def image_spec(self) -> ImageSpec:
        """What its nodes run: the image, at the revision the cluster started with when
        the image is built (clusters/services/builds.py)."""
        spec = self.image.spec()
        build = self.image_build
        if build is None:
            return spec
        return dataclasses.replace(
            spec,
            image_uri=spec.image_uri and build.image_uri,
            python_executable=build.python_executable or spec.python_executable,
        )

    def move_to(self, state: str, reason: str = "") -> str:
        """Change the observed state per the transition table; returns the old state.
        The caller saves (and records the event) in the same transaction."""
        if state == self.state:
            return state
        if state not in CLUSTER_TRANSITIONS[self.state]:
            raise InvalidTransition(f"A cluster cannot go from {self.state} to {state}.")
        old, self.state, self.state_reason = self.state, state, reason
        self.state_changed_at = timezone.now()
        if state == ClusterState.RUNNING:
            self.started_at = self.state_changed_at
        if state in FINAL_CLUSTER_STATES:
            self.terminated_at = self.state_changed_at
        return old


class NodeQuerySet(models.QuerySet["Node"]):
    def live(self) -> NodeQuerySet:
        """Nodes in LIVE_NODE_STATES: not terminated, failed or lost."""
        return self.filter(state__in=LIVE_NODE_STATES)

    def staying(self) -> NodeQuerySet:
        """Live nodes not being terminated: the ones a cluster counts toward its size."""
        return self.live().exclude(state=NodeState.TERMINATING)


class Node(models.Model):
    """One machine (or local process group) of a cluster. The row is written before the
    cloud call; its uuid tags the instance and keys the launch, so nothing launches twice."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="nodes")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    role = models.CharField(max_length=8, choices=NodeRole.choices)
    group = models.CharField(max_length=64, blank=True)
    instance_type = models.CharField(max_length=64, blank=True)
    cpus = models.FloatField(default=1)
    memory_mb = models.PositiveIntegerField(default=1024)
    launch_attempt = models.PositiveSmallIntegerField(default=0)
    instance_id = models.CharField(max_length=200, blank=True, db_index=True)
    state = models.CharField(max_length=16, choices=NodeState.choices, default=NodeState.PENDING)
    state_reason = models.CharField(max_length=1000, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    private_address = models.CharField(max_length=200, blank=True)
    # The cloud's public address of the instance (AWS/GCP clouds with public addresses);
    # blank: none, users reach the node at its private address.
    public_address = models.CharField(max_length=200, blank=True)
    ray_ports = models.JSONField(default=dict, blank=True)
    resources = models.JSONField(default=dict, blank=True)  # what Ray reports it has
    usage = models.JSONField(default=dict, blank=True)  # latest CPU/memory/GPU use
    log_tail = models.TextField(blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # One-time token in the boot script, exchanged at registration for the credential.
    bootstrap_token_hash = models.CharField(max_length=64, blank=True)
    bootstrap_used_at = models.DateTimeField(null=True, blank=True)
    credential_hash = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)

    objects = NodeQuerySet.as_manager()

    class Meta:
        ordering = ["role", "group", "created_at"]
        indexes = [models.Index(fields=["cluster", "state"])]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster"],
                # Not LIVE_NODE_STATES, spelled out: a migration keeps it as written.
                condition=Q(role="head") & ~Q(state__in=["terminated", "failed", "lost"]),
                name="one_live_head_per_cluster",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} {str(self.uuid)[:8]} of {self.cluster_id}"

    def set_state(self, state: str, reason: str = "") -> None:
        self.state, self.state_reason = state, reason
        self.state_changed_at = timezone.now()


class ClusterEvent(models.Model):
    """One step or transition in a cluster's life, shown on its page as a timeline."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="events")
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    level = models.CharField(max_length=8, choices=EventLevel.choices, default=EventLevel.INFO)
    step = models.CharField(max_length=48)
    message = models.CharField(max_length=1000)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["cluster", "created_at"])]

    def __str__(self) -> str:
        return f"{self.step}: {self.message}"


class ClusterAccessKey(models.Model):
    """The key pair that signs a cluster's access tokens (clusters/access.py): the head's
    gateway checks them with the public key; the private key is kept encrypted."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, related_name="access_key")
    public_key = models.TextField()  # PEM, SubjectPublicKeyInfo
    private_key_encrypted = models.TextField()  # PEM, PKCS8, sealed by kit/crypto.py
    # Every token of this cluster issued before this time is refused ("revoke all").
    not_before = models.DateTimeField(null=True, blank=True)
    # The secret Ray's own ports require (RAY_AUTH_MODE=token), sealed by kit/crypto.py:
    # only the cluster's agents get it (the gateway adds it when it forwards).
    ray_token_encrypted = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"access key of {self.cluster_id}"


class CertificateAuthority(models.Model):
    """The installation's own issuing CA (clusters/certificates.py), made at first use:
    it signs the head gateways' short-lived certificates. One row; its key is sealed by
    kit/crypto.py. An operator-supplied intermediate CA (RAYDECK_CA_CERT_FILE) replaces
    it and is never stored here."""

    name = models.CharField(max_length=32, unique=True, default="installation")
    certificate_pem = models.TextField()
    private_key_encrypted = models.TextField()  # PEM, PKCS8, sealed by kit/crypto.py
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"certificate authority {self.name}"


class GatewayCertificate(models.Model):
    """What a head's gateway certificate is made of: the public key of the head's CSR
    (its private key never leaves the node) and the names it may have; renewals sign the
    same key and names again. `not_after` is the latest certificate's end."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="gateway_certificate")
    public_key_pem = models.TextField()
    names = models.JSONField(default=list)  # DNS names and IP addresses, as signed
    serial = models.CharField(max_length=64)
    not_after = models.DateTimeField()
    renewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"gateway certificate of {self.node_id}"


class ImageBuildQuerySet(models.QuerySet):
    def visible_to(self, user: User, organization: Organization) -> Self:
        """The organization's builds, to its members."""
        if not user.is_authenticated or user.org_role(organization) is None:
            return self.none()
        return self.filter(organization=organization)


class ImageBuild(models.Model):
    """One build of an image from a spec, in a cloud's data plane; a succeeded build is a
    revision of its image (clusters/services/builds.py)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    cloud = models.ForeignKey(Cloud, on_delete=models.CASCADE, related_name="+")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # The image it makes: set when it builds a new revision of an existing image, or once
    # a first build succeeds (nothing half-built is offered to clusters).
    image = models.ForeignKey(
        ContainerImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="builds"
    )
    name = models.CharField("image name", max_length=100)
    spec = models.JSONField()  # normalized (clusters/image_specs.py)
    spec_hash = models.CharField(max_length=64, db_index=True)
    ray_version = models.CharField(max_length=32)
    state = models.CharField(
        max_length=16, choices=BuildState.choices, default=BuildState.QUEUED, db_index=True
    )
    step = models.CharField(max_length=300, blank=True)  # the current, or the failed, step
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)  # the last lines, as of the latest poll
    log_location = models.CharField(max_length=500, blank=True)  # kept after the build
    external_id = models.CharField(max_length=300, blank=True)  # the cloud's id for it
    image_uri = models.CharField(max_length=500, blank=True)  # the result, by digest
    python_executable = models.CharField(max_length=300, blank=True)  # local: its env
    revision = models.PositiveIntegerField(null=True, blank=True)
    reused_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ImageBuildQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["cloud", "spec_hash", "state"], name="build_by_spec")]

    def __str__(self) -> str:
        return f"{self.name} build {str(self.uuid)[:8]}"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_BUILD_STATES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()
