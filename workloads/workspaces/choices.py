"""A workspace's states and which may follow which."""

from django.db import models


class WorkspaceState(models.TextChoices):
    STOPPED = "stopped", "Stopped"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    FAILED = "failed", "Failed"


# A workspace has a cluster (or is getting or giving one back) in these states.
ACTIVE_WORKSPACE_STATES = frozenset(
    {WorkspaceState.STARTING, WorkspaceState.RUNNING, WorkspaceState.STOPPING}
)

WORKSPACE_TRANSITIONS: dict[str, frozenset[str]] = {
    WorkspaceState.STOPPED: frozenset({WorkspaceState.STARTING}),
    WorkspaceState.STARTING: frozenset(
        {WorkspaceState.RUNNING, WorkspaceState.STOPPING, WorkspaceState.FAILED}
    ),
    WorkspaceState.RUNNING: frozenset({WorkspaceState.STOPPING, WorkspaceState.FAILED}),
    WorkspaceState.STOPPING: frozenset({WorkspaceState.STOPPED, WorkspaceState.FAILED}),
    WorkspaceState.FAILED: frozenset({WorkspaceState.STARTING, WorkspaceState.STOPPED}),
}
