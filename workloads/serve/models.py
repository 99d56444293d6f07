"""Services: Ray Serve apps behind a stable endpoint, one cluster per version."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization, Project, ProjectOwnedQuerySet, User
from clouds.models import Cloud
from clusters.models import Cluster, ComputeConfigVersion, ContainerImage, guaranteed_workers

from .choices import (
    FINAL_SERVICE_STATES,
    LIVE_VERSION_STATES,
    VERSION_TRANSITIONS,
    EventLevel,
    ServiceState,
    VersionState,
)
from .serve_config import replica_spread

DEFAULT_CANARY_STEPS = [10, 50, 100]


def default_canary_steps() -> list[int]:
    return list(DEFAULT_CANARY_STEPS)


class InvalidTransition(Exception):
    """A version was asked to move to a state its current one does not lead to."""


class ServiceQuerySet(ProjectOwnedQuerySet):
    def live(self) -> ServiceQuerySet:
        return self.exclude(state__in=FINAL_SERVICE_STATES)


class Service(models.Model):
    """A Serve app that runs until stopped, behind a stable endpoint and query tokens."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="services")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.SlugField(max_length=63)
    cloud = models.ForeignKey(Cloud, on_delete=models.PROTECT, related_name="services")
    state = models.CharField(
        max_length=16, choices=ServiceState.choices, default=ServiceState.DEPLOYING
    )
    state_reason = models.CharField(max_length=1000, blank=True)
    # The router (clouds/providers/): where users send requests, and what the provider
    # needs to find its endpoint again (HAProxy's folder, the ALB's ARNs, the URL map).
    endpoint_url = models.CharField(max_length=300, blank=True)
    router_ref = models.JSONField(default=dict, blank=True)
    # How a new version takes over: traffic percentages, each held for step_seconds while
    # its error rate stays under max_error_rate and its p99 under max_latency_ratio times
    # the old version's (plus a small allowance).
    canary_steps = models.JSONField(default=default_canary_steps)
    step_seconds = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(86400)]
    )
    max_error_rate = models.FloatField(
        default=0.05, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    max_latency_ratio = models.FloatField(
        default=3.0, validators=[MinValueValidator(1.0), MaxValueValidator(100.0)]
    )
    # The version that serves everything outside a rollout (None before the first is up).
    current_version = models.ForeignKey(
        "ServiceVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The rollout under way: which step (index into canary_steps) since when, and a
    # weight a person pinned (manual canary: the rollout holds there until unpinned).
    rollout_step = models.SmallIntegerField(null=True, blank=True)
    step_started_at = models.DateTimeField(null=True, blank=True)
    pinned_weight = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(100)]
    )
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    terminated_at = models.DateTimeField(null=True, blank=True)

    objects = ServiceQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["organization", "-created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"],
                condition=~Q(state__in=["terminated", "failed"]),
                name="live_service_name_per_project",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_SERVICE_STATES


class ServiceToken(models.Model):
    """A query token of a service, stored as its SHA-256; several live at once (rotation)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=12)  # shown, so a person can tell tokens apart
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.service_id}"


class ServiceVersionQuerySet(models.QuerySet["ServiceVersion"]):
    def live(self) -> ServiceVersionQuerySet:
        return self.filter(state__in=LIVE_VERSION_STATES)


class ServiceVersion(models.Model):
    """One deploy of a service: its Serve config on a cluster of its own, and its share
    of the traffic (weight, 0-100) at the router."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    serve_config = models.JSONField()
    config_hash = models.CharField(max_length=64)
    compute_config = models.ForeignKey(
        ComputeConfigVersion, on_delete=models.PROTECT, related_name="+"
    )
    image = models.ForeignKey(ContainerImage, on_delete=models.PROTECT, related_name="+")
    cluster = models.OneToOneField(
        Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="service_version"
    )
    weight = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    state = models.CharField(
        max_length=16, choices=VersionState.choices, default=VersionState.STARTING
    )
    state_reason = models.CharField(max_length=1000, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    applications = models.JSONField(default=dict, blank=True)  # health per Serve app
    drain_started_at = models.DateTimeField(null=True, blank=True)
    # Whether the head's "serve" port speaks TLS, as the head last reported (its agent's
    # serve gate does; agents from before that release, which a cluster keeps from its
    # boot, speak plain HTTP): the load balancer reaches the version the same way.
    # Versions from before this field are plain (migration 0002); a new one's head
    # reports before the version is healthy, and so before the load balancer names it.
    head_tls = models.BooleanField(default=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ServiceVersionQuerySet.as_manager()

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["service", "number"], name="version_number_per_service")
        ]
        indexes = [models.Index(fields=["cluster", "state"])]

    def __str__(self) -> str:
        return f"v{self.number}"

    @property
    def replica_spread(self) -> dict[str, dict[str, int]]:
        """The per-node replica caps Raydeck adds to this version's config (serve_config.py)."""
        return replica_spread(
            self.serve_config, guaranteed_workers(self.compute_config.worker_groups)
        )

    def move_to(self, state: str, reason: str = "") -> None:
        """Change state per VERSION_TRANSITIONS; the caller saves and records the event."""
        if state == self.state:
            return
        if state not in VERSION_TRANSITIONS[self.state]:
            raise InvalidTransition(f"A version cannot go from {self.state} to {state}.")
        self.state, self.state_reason = state, reason
        self.state_changed_at = timezone.now()


class ServiceEvent(models.Model):
    """One step in a service's life (a version starting, a traffic step, a rollback and
    why), shown on its page as a timeline."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="events")
    version = models.ForeignKey(
        ServiceVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    level = models.CharField(max_length=8, choices=EventLevel.choices, default=EventLevel.INFO)
    step = models.CharField(max_length=48)
    message = models.CharField(max_length=1000)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["service", "created_at"])]

    def __str__(self) -> str:
        return f"{self.step}: {self.message}"
