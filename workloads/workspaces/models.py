"""Workspaces: a persistent development environment whose clusters come and go."""

from __future__ import annotations

import uuid

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from accounts.models import Organization, Project, ProjectOwnedQuerySet, User
from clouds.models import Cloud
from clouds.providers.registry import traits_for
from clusters.choices import BuildState
from clusters.models import Cluster, ComputeConfigVersion, ContainerImage, ImageBuild

from .choices import WORKSPACE_TRANSITIONS, WorkspaceState


class InvalidTransition(Exception):
    """A state change the transition table does not allow."""


# A workspace's name is also its SSH host alias and a CLI argument: keep it plain.
WORKSPACE_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
workspace_name = RegexValidator(
    WORKSPACE_NAME,
    "Use 1 to 63 lowercase letters, digits and dashes, starting with a letter or digit.",
)


class Workspace(models.Model):
    """A named working environment of a project: a cluster with JupyterLab while it runs,
    and its files kept in the cloud's storage while it is stopped."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workspaces")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=63, validators=[workspace_name])
    cloud = models.ForeignKey(Cloud, on_delete=models.PROTECT, related_name="+")
    compute_config = models.ForeignKey(
        ComputeConfigVersion, on_delete=models.PROTECT, related_name="+"
    )
    # None while Raydeck's workspace image for its cloud is still being built (images.py).
    image = models.ForeignKey(
        ContainerImage, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The build of that image, kept so the page can say how it went.
    image_build = models.ForeignKey(
        ImageBuild, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who pressed Start while that build ran: the sweep starts it for them once it ends.
    start_when_built_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(
        max_length=16, choices=WorkspaceState.choices, default=WorkspaceState.STOPPED
    )
    state_reason = models.CharField(max_length=1000, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    # The cluster of the current run; none while stopped.
    cluster = models.ForeignKey(
        Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Where its files live between runs (a folder, s3:// or gs:// location).
    files_location = models.CharField(max_length=500)
    files_saved_at = models.DateTimeField(null=True, blank=True)
    files_count = models.PositiveIntegerField(default=0)
    files_bytes = models.BigIntegerField(default=0)
    files_skipped = models.JSONField(default=list, blank=True)  # [path, why] not saved
    files_error = models.CharField(max_length=500, blank=True)
    restored_at = models.DateTimeField(null=True, blank=True)  # files back on this run's head
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    packages_added = models.JSONField(default=list, blank=True)  # pip freeze lines vs image
    # The head's sshd (raydeck workspaces ssh): the account it lets in once it runs, or
    # why it cannot run (no sshd in the image); both empty until this run's head says.
    ssh_user = models.CharField(max_length=32, blank=True)
    ssh_unavailable = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProjectOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="workspace_name_per_project")
        ]
        indexes = [models.Index(fields=["organization", "state"])]

    def __str__(self) -> str:
        return self.name

    def move_to(self, state: str, reason: str = "") -> None:
        if state != self.state and state not in WORKSPACE_TRANSITIONS[self.state]:
            raise InvalidTransition(f"A {self.state} workspace cannot become {state}.")
        if state != self.state:
            self.state_changed_at = timezone.now()
        self.state = state
        self.state_reason = reason[:1000]

    @property
    def image_wait_explained(self) -> str:
        """Why this workspace cannot start for want of its image ("" when it has one, or
        its image is built): what the page, the API and a refused start say."""
        build = self.image_build
        if self.image_id is not None or build is None or build.state == BuildState.SUCCEEDED:
            return ""
        if not build.is_final:
            then = (
                "it starts once the image is built"
                if self.start_when_built_by_id
                else "Start now and it starts once the image is built"
            )
            return (
                f"Its image {build.name} is still building ({build.get_state_display().lower()}"
                f"{': ' + build.step if build.step else ''}); {then}."
            )
        why = f": {build.error}" if build.error else "."
        return (
            f"Its image {build.name} could not be built (build {build.get_state_display().lower()}"
            f"{why}) Choose another image in its settings, or save them with the image "
            "left blank to build it again."
        )

    @property
    def no_sshd_explained(self) -> str:
        """What the page and the API say when this run's head has no sshd ("" when it
        has one, or has not said yet)."""
        if not self.ssh_unavailable:
            return ""
        return (
            f"This workspace's head has no SSH server ({self.ssh_unavailable}), so "
            "raydeck workspaces ssh, sync and VS Code cannot reach it. "
            + traits_for(self.cloud.kind).sshd_advice()
        )

    @property
    def badge_class(self) -> str:
        """The cluster badge colour that reads the same (console.css)."""
        return {
            WorkspaceState.STOPPED: "cluster-terminated",
            WorkspaceState.STARTING: "cluster-starting",
            WorkspaceState.RUNNING: "cluster-running",
            WorkspaceState.STOPPING: "cluster-terminating",
            WorkspaceState.FAILED: "cluster-failed",
        }[WorkspaceState(self.state)]


class SshKey(models.Model):
    """A person's SSH public key, which the sshd of the workspaces they may use accepts."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=100)
    public_key = models.TextField()  # "<type> <base64>", normalized
    fingerprint = models.CharField(max_length=100)  # SHA256:… as ssh-keygen -l prints it
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["user", "fingerprint"], name="ssh_key_once_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"
