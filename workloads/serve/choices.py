"""States of services and their versions, with the transitions each allows."""

from __future__ import annotations

from django.db import models


class ServiceState(models.TextChoices):
    DEPLOYING = "deploying", "Deploying"  # the first version is starting
    RUNNING = "running", "Running"  # one version serves everything
    ROLLING_OUT = "rolling_out", "Rolling out"  # traffic is moving to a new version
    TERMINATING = "terminating", "Terminating"
    TERMINATED = "terminated", "Terminated"
    FAILED = "failed", "Failed"  # the first version never became healthy


FINAL_SERVICE_STATES = frozenset({ServiceState.TERMINATED, ServiceState.FAILED})


class VersionState(models.TextChoices):
    STARTING = "starting", "Starting"  # its cluster and Serve apps are coming up
    HEALTHY = "healthy", "Healthy"
    UNHEALTHY = "unhealthy", "Unhealthy"  # failed health or its error rate: rolled back
    DRAINING = "draining", "Draining"  # no new requests; in-flight ones finish
    STOPPED = "stopped", "Stopped"  # its cluster is terminated
    FAILED = "failed", "Failed"  # its cluster or its Serve config never came up


# Versions whose cluster should run.
LIVE_VERSION_STATES = frozenset(
    {VersionState.STARTING, VersionState.HEALTHY, VersionState.DRAINING}
)
VERSION_TRANSITIONS: dict[str, frozenset[str]] = {
    VersionState.STARTING: frozenset(
        {VersionState.HEALTHY, VersionState.FAILED, VersionState.UNHEALTHY, VersionState.STOPPED}
    ),
    VersionState.HEALTHY: frozenset(
        {VersionState.UNHEALTHY, VersionState.DRAINING, VersionState.STOPPED}
    ),
    VersionState.DRAINING: frozenset({VersionState.STOPPED}),
    VersionState.UNHEALTHY: frozenset({VersionState.STOPPED}),
    VersionState.FAILED: frozenset({VersionState.STOPPED}),
    VersionState.STOPPED: frozenset(),
}


class EventLevel(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
