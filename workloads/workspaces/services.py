"""What users ask of workspaces (create, start, stop, delete, a job from one) and how a
workspace follows its cluster (`workspace_sync`, run by a task on every change and by
beat).

Start creates a cluster; the head restores the files, and the workspace runs once the
head says they are back. Stop asks the head to save the files now and terminates the
cluster once it reports that save (or after STOP_SAVE_TIMEOUT if it cannot); the files
are also saved every few minutes while it runs. Every step is safe to run again: a worker
killed half-way leaves the state the next sync picks up.

A job from a running workspace (workspace_job_create) asks its head for a snapshot
through the orders: the head saves, zips what it kept into the cloud's storage and
answers in its report; the request waits for that answer, then submits the job.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.models import Project, User
from accounts.permissions import require
from clouds.models import Cloud
from clouds.providers.registry import files_location_for
from clusters.choices import FINAL_BUILD_STATES, BuildState, ClusterState, DesiredState
from clusters.models import Cluster, ComputeConfigVersion, ContainerImage, ImageBuild
from clusters.services.lifecycle import checked_choice, cluster_create, cluster_terminate
from workloads.jobs.models import Job
from workloads.jobs.services import job_definition, job_submit
from workloads.storage import working_dir_packed

from . import live
from .choices import ACTIVE_WORKSPACE_STATES, WorkspaceState
from .images import default_workspace_image
from .models import Workspace
from .tasks import enqueue_sync

# The head gets this long to save the files once asked to stop; then the cluster goes
# anyway (the page says when the files were last saved).
STOP_SAVE_TIMEOUT = timedelta(minutes=5)

# The fields of a workspace's choice: checked by checked_choice, not by the model.
CHOICE_FIELDS = ["project", "cloud", "compute_config", "image", "image_build"]


def _limits() -> dict[str, Any]:
    return settings.RAYDECK_WORKSPACE_FILES


def _changed(workspace: Workspace) -> None:
    """After commit: the head's orders follow the row, and the sync looks again."""
    live.forget_orders(workspace.cluster_id)
    enqueue_sync(workspace.pk)


# Not durable: the API's Idempotency-Key row commits in the same transaction.
@transaction.atomic
def workspace_create(
    *,
    project: Project,
    actor: User,
    name: str,
    cloud: Cloud,
    compute_config: ComputeConfigVersion | None = None,
    image: ContainerImage | None = None,
) -> Workspace:
    """A stopped workspace of `project`; its choice follows the rules of a cluster's
    (clusters.services.lifecycle.checked_choice), errors on the fields named alike. An
    image left blank is Raydeck's workspace image for the cloud where the kind has one
    (images.py): its build may still run when this returns."""
    require(actor, "workspace.manage", project)
    compute_config, image, image_build = _checked_choice(
        project=project, actor=actor, cloud=cloud, compute_config=compute_config, image=image
    )
    workspace = Workspace(
        organization_id=project.organization_id,
        project=project,
        name=name.strip(),
        cloud=cloud,
        compute_config=compute_config,
        image=image,
        image_build=image_build,
        created_by=actor,
    )
    workspace.files_location = files_location_for(cloud, str(workspace.uuid))
    if not workspace.files_location:
        raise ValidationError(
            {
                "cloud": f"{cloud.name} has no storage for a workspace's files: give it a "
                "log location (a bucket) first."
            }
        )
    workspace.full_clean(exclude=CHOICE_FIELDS)
    try:
        with transaction.atomic():
            workspace.save()
    except IntegrityError as exc:
        raise _name_taken(workspace) from exc
    audit(
        actor=actor,
        verb="workspace.create",
        target=workspace,
        changes={
            "name": [None, workspace.name],
            "cloud": [None, cloud.name],
            "image": [None, _image_label(image, image_build)],
        },
    )
    return workspace


def _checked_choice(
    *,
    project: Project,
    actor: User,
    cloud: Cloud,
    compute_config: ComputeConfigVersion | None,
    image: ContainerImage | None,
) -> tuple[ComputeConfigVersion, ContainerImage | None, ImageBuild | None]:
    """(compute config, image, image build) of a workspace's choice: the rules of a
    cluster's (checked_choice), and an image left blank is Raydeck's workspace image for
    the cloud where the kind has one (images.py): no image yet while its build runs."""
    compute_config, checked_image = checked_choice(
        project=project, actor=actor, cloud=cloud, compute_config=compute_config, image=image
    )
    if image is not None:
        return compute_config, checked_image, None
    workspace_image, image_build = default_workspace_image(
        organization=project.organization, cloud=cloud, actor=actor
    )
    if workspace_image is None and image_build is None:  # the kind's built-in image serves
        return compute_config, checked_image, None
    return compute_config, workspace_image, image_build


def _name_taken(workspace: Workspace) -> ValidationError:
    return ValidationError(
        {"name": f"{workspace.project.name} already has a workspace named {workspace.name}."}
    )


class WorkspaceBusy(ValidationError):
    """A change refused because of the workspace's state, not its values (the API's 409)."""


# What workspace_update may change, as its messages name them.
WORKSPACE_SETTINGS = {"name": "name", "compute_config": "compute config", "image": "image"}


def why_no_settings_change(workspace: Workspace, what: str = "settings") -> str:
    """Why the workspace's `what` (its settings, or the one named) cannot change now (""
    when it can): its cluster is made from them at start, so only a workspace without
    one, stopped or failed, may change. The page shows it instead of the form."""
    if workspace.state in ACTIVE_WORKSPACE_STATES:
        return (
            f"Stop the workspace {workspace.name} first: its {what} cannot change while it "
            f"is {workspace.state}."
        )
    if workspace.start_when_built_by_id is not None:
        return (
            f"Cancel the start of {workspace.name} first: its {what} cannot change while "
            "that start waits for its image."
        )
    return ""


def _image_label(image: ContainerImage | None, build: ImageBuild | None) -> str | None:
    """What the audit calls a workspace's image: its name, or its build's while none."""
    if image is not None:
        return image.name
    if build is None:
        return None
    if build.state == BuildState.SUCCEEDED and build.image is not None:
        return build.image.name
    return f"{build.name} (build {build.get_state_display().lower()})"


def _image_identity(image: ContainerImage | None, build: ImageBuild | None) -> tuple[Any, Any]:
    """The image a start would use, or the build it waits for: equal means unchanged
    (a succeeded build and the image it made are the same choice)."""
    if image is None and build is not None and build.state == BuildState.SUCCEEDED:
        image = build.image
    return (image.pk if image else None, build.pk if image is None and build else None)


@transaction.atomic(durable=True)
def workspace_update(*, workspace: Workspace, actor: User, **changes: Any) -> Workspace:
    """Change a stopped (or failed) workspace's settings: any of `name`, `compute_config`
    (None: the cloud's default) and `image` (None: Raydeck's workspace image, as on
    create); those left out stay. The choice follows a create's rules; the next start
    makes its cluster from them. A running one is refused (WorkspaceBusy, on each field
    given); a refusal writes nothing, and so does a change that changes nothing."""
    require(actor, "workspace.manage", workspace.project)
    unknown = set(changes) - set(WORKSPACE_SETTINGS)
    if unknown:
        raise TypeError(f"Not a workspace setting: {', '.join(sorted(unknown))}")
    # Locked like a start, which reads these settings to make the cluster.
    workspace = Workspace.objects.select_for_update().get(pk=workspace.pk)
    refusals = {
        field: why_no_settings_change(workspace, label)
        for field, label in WORKSPACE_SETTINGS.items()
        if field in changes
    }
    if any(refusals.values()):
        raise WorkspaceBusy(refusals)
    before = {
        "name": workspace.name,
        "compute_config": str(workspace.compute_config),
        "image": _image_label(workspace.image, workspace.image_build),
    }
    changed: dict[str, list[Any]] = {}
    if "name" in changes and changes["name"].strip() != workspace.name:
        workspace.name = changes["name"].strip()
        changed["name"] = [before["name"], workspace.name]
        workspace.full_clean(exclude=CHOICE_FIELDS)  # the name's rules; uniqueness: the save
    if "compute_config" in changes or "image" in changes:
        config = changes.get("compute_config", workspace.compute_config)
        if "image" in changes:
            config, image, build = _checked_choice(
                project=workspace.project,
                actor=actor,
                cloud=workspace.cloud,
                compute_config=config,
                image=changes["image"],
            )
        else:  # the image stays; the config must still go with it
            config, _ = checked_choice(
                project=workspace.project,
                actor=actor,
                cloud=workspace.cloud,
                compute_config=config,
                image=workspace.image,
            )
            image, build = workspace.image, workspace.image_build
        if config.pk != workspace.compute_config_id:
            workspace.compute_config = config
            changed["compute_config"] = [before["compute_config"], str(config)]
        if _image_identity(image, build) != _image_identity(workspace.image, workspace.image_build):
            workspace.image, workspace.image_build = image, build
            changed["image"] = [before["image"], _image_label(image, build)]
    if not changed:
        return workspace
    try:
        with transaction.atomic():
            workspace.save(
                update_fields=["name", "compute_config", "image", "image_build", "updated_at"]
            )
    except IntegrityError as exc:
        raise _name_taken(workspace) from exc
    audit(actor=actor, verb="workspace.update", target=workspace, changes=changed)
    return workspace


def cluster_name(workspace: Workspace) -> str:
    return f"workspace-{workspace.name}"


@transaction.atomic(durable=True)
def workspace_start(*, workspace: Workspace, actor: User) -> Workspace:
    """Create the workspace's cluster; the head restores its files before it runs. While
    its image still builds, remember the start: the sweep makes it once the build ends
    (workspace_start_when_built)."""
    require(actor, "workspace.manage", workspace.project)
    workspace = Workspace.objects.select_for_update().get(pk=workspace.pk)
    if workspace.state in ACTIVE_WORKSPACE_STATES:
        raise ValidationError(f"The workspace {workspace.name} is already {workspace.state}.")
    build = workspace.image_build
    if workspace.image is None and build is not None and not build.is_final:
        _pending_start(
            workspace,
            starts_for=actor,
            actor=actor,
            reason=f"Starts once its image {build.name} is built.",
            verb="workspace.start",
            changes={"waiting_for_image": [None, build.name]},
        )
        return workspace
    if waiting := workspace.image_wait_explained:
        raise ValidationError(f"{workspace.name} cannot start. {waiting}")
    if workspace.image is None and build is not None:
        workspace.image = build.image  # built: from now on its image
    workspace.start_when_built_by = None
    try:
        cluster = cluster_create(
            project=workspace.project,
            actor=actor,
            name=cluster_name(workspace),
            cloud=workspace.cloud,
            compute_config=workspace.compute_config,
            image=workspace.image,
        )
    except ValidationError as exc:
        raise ValidationError(
            f"Could not start a cluster for {workspace.name}: {' '.join(exc.messages)}"
        ) from exc
    workspace.move_to(WorkspaceState.STARTING, "Starting a cluster and restoring the files.")
    workspace.cluster = cluster
    workspace.restored_at = None
    workspace.stop_requested_at = None
    workspace.files_error = ""
    workspace.ssh_user = workspace.ssh_unavailable = ""  # the new head says again
    workspace.save()
    audit(
        actor=actor,
        verb="workspace.start",
        target=workspace,
        changes={"cluster": [None, cluster.name]},
    )
    transaction.on_commit(lambda: _changed(workspace))
    return workspace


# Not durable: the idle check stops a workspace inside its own transaction.
@transaction.atomic
def workspace_stop(*, workspace: Workspace, actor: User | None, reason: str = "") -> Workspace:
    """Save the files, then terminate the cluster (asking again changes nothing). A start
    still waiting for the image's build is called off instead."""
    if actor is not None:
        require(actor, "workspace.manage", workspace.project)
    workspace = Workspace.objects.select_for_update().get(pk=workspace.pk)
    who = actor.display_name if actor else "Raydeck"
    if workspace.start_when_built_by_id is not None and workspace.state not in (
        ACTIVE_WORKSPACE_STATES
    ):
        build = workspace.image_build
        _pending_start(
            workspace,
            starts_for=None,
            actor=actor,
            reason=f"{who} called off the start that waited for its image.",
            verb="workspace.start.cancel",
            changes={"waiting_for_image": [build.name if build else None, None]},
        )
        return workspace
    if workspace.state not in (WorkspaceState.STARTING, WorkspaceState.RUNNING):
        return workspace
    workspace.move_to(WorkspaceState.STOPPING, reason or f"{who} stopped it: saving the files.")
    # After any save reported so far, whatever the head's clock said: only a save the
    # stop asks for counts as the stop's (see _apply_report).
    now = timezone.now()
    saved = workspace.files_saved_at
    workspace.stop_requested_at = max(now, saved + timedelta(microseconds=1)) if saved else now
    workspace.save()
    changes: dict[str, Any] = {"state": ["running", "stopping"]}
    if reason:
        changes["reason"] = [None, reason]
    audit(actor=actor, verb="workspace.stop", target=workspace, changes=changes)
    transaction.on_commit(lambda: _changed(workspace))
    return workspace


@transaction.atomic(durable=True)
def workspace_delete(*, workspace: Workspace, actor: User) -> None:
    """Remove a stopped workspace. Its saved files stay at its files location."""
    require(actor, "workspace.manage", workspace.project)
    workspace = Workspace.objects.select_for_update().get(pk=workspace.pk)
    if workspace.state in ACTIVE_WORKSPACE_STATES:
        raise ValidationError(f"Stop the workspace {workspace.name} before deleting it.")
    audit(
        actor=actor,
        verb="workspace.delete",
        target=workspace,
        changes={
            "name": [workspace.name, None],
            "files_location": [workspace.files_location, None],
        },
    )
    workspace.delete()


# --- A job from the workspace --------------------------------------------------------------

# How long a request waits for the head to save and pack the files (a heartbeat or two,
# then the zip); under the web server's timeout.
SNAPSHOT_WAIT_SECONDS = 25.0


def workspace_job_create(
    *,
    workspace: Workspace,
    actor: User,
    entrypoint: str,
    name: str = "",
    max_retries: int = 1,
    timeout_seconds: int | None = None,
) -> Job:
    """A job that runs `entrypoint` as the workspace does: its files as they are now
    (saved and zipped by its head: the job's working dir), its image and compute config,
    and the packages added in it (pip). The job's own rules are checked before the head
    is asked anything; the request then waits for the head (SNAPSHOT_WAIT_SECONDS at
    most) outside any transaction. Refusals name their field; a refused request writes
    nothing."""
    require(actor, "job.submit", workspace.project)
    entrypoint = (entrypoint or "").strip()
    arguments: dict[str, Any] = {
        "project": workspace.project,
        "actor": actor,
        "name": (name or "").strip()
        or f"{workspace.name}: {entrypoint}"[: Job._meta.get_field("name").max_length],
        "entrypoint": entrypoint,
        "cloud": workspace.cloud,
        "compute_config": workspace.compute_config,
        "image": workspace.image,
        "max_retries": max_retries,
        "timeout_seconds": timeout_seconds,
    }
    with transaction.atomic():  # its checks lock the choice's rows; released at once
        job_definition(**arguments)
    cluster_id = workspace.cluster_id
    if (refusal := why_no_job(workspace)) or cluster_id is None:
        raise ValidationError({"workspace": refusal})
    packed = _snapshot(workspace, cluster_id)
    working_dir = working_dir_packed(
        project=workspace.project,
        cloud=workspace.cloud,
        sha256=packed["sha256"],
        size=packed["size"],
        actor=actor,
    )
    with transaction.atomic(durable=True):
        job = job_submit(**arguments, working_dir=working_dir, pip=packed["packages"] or None)
        audit(
            actor=actor,
            verb="workspace.job_create",
            target=workspace,
            changes={"job": [None, str(job.uuid)], "packages": [None, len(packed["packages"])]},
        )
    return job


def why_no_job(workspace: Workspace) -> str:
    """Why no job can be made from the workspace now ("" when one can): only a running
    head packs its files. The page shows it instead of the form."""
    if workspace.state == WorkspaceState.RUNNING and workspace.cluster_id is not None:
        return ""
    if workspace.state == WorkspaceState.STOPPED and workspace.files_saved_at is None:
        return (
            f"The workspace {workspace.name} has no saved files yet: start it, work in it, "
            "then create the job."
        )
    if workspace.state == WorkspaceState.STARTING:
        return f"The workspace {workspace.name} is starting: create the job once it runs."
    return (
        f"The workspace {workspace.name} is {workspace.state}: start it first; its running "
        "head packs its files for the job as they are."
    )


def _snapshot(workspace: Workspace, cluster_id: int) -> dict[str, Any]:
    """Ask the head to save and zip the files now, and wait for its answer."""
    token = live.ask_snapshot(cluster_id)
    live.forget_orders(cluster_id)  # the next heartbeat's orders carry the ask
    deadline = time.monotonic() + SNAPSHOT_WAIT_SECONDS
    while (packed := live.packed(token)) is None:
        if time.monotonic() > deadline:
            raise ValidationError(
                {
                    "workspace": f"The head of {workspace.name} did not pack its files within "
                    f"{SNAPSHOT_WAIT_SECONDS:.0f} s; try again in a moment."
                }
            )
        time.sleep(0.25)
    if packed.get("error"):
        raise ValidationError(
            {"workspace": f"The head could not pack the files for a job: {packed['error']}"}
        )
    return packed


def _packed_report(value: Any) -> dict[str, Any] | None:
    """The head's answer to a snapshot (untrusted input), in the shape _snapshot reads."""
    if not isinstance(value, dict) or not isinstance(value.get("for"), str):
        return None
    packed: dict[str, Any] = {"for": value["for"][:64], "error": _text(value.get("error"), 300)}
    size, packages = value.get("size"), value.get("packages")
    if not packed["error"]:
        if not isinstance(size, int) or not isinstance(packages, list):
            packed["error"] = "its answer made no sense"
        packed["sha256"] = _text(value.get("sha256"), 64)
        packed["size"] = size
        packed["packages"] = [_text(p, 200) for p in packages or [] if isinstance(p, str)][:500]
    return packed


# --- Following the cluster ----------------------------------------------------------------


def _save_done(workspace: Workspace) -> bool:
    return (
        workspace.stop_requested_at is not None
        and workspace.files_saved_at is not None
        and workspace.files_saved_at >= workspace.stop_requested_at
    )


@transaction.atomic
def workspace_sync(*, workspace_id: int, now: datetime | None = None) -> str:
    """Move the workspace along with its cluster and the head's reports; returns its
    state. Idempotent: beat runs it for every active workspace."""
    now = now or timezone.now()
    workspace = Workspace.objects.select_for_update().filter(pk=workspace_id).first()
    if workspace is None or workspace.state not in ACTIVE_WORKSPACE_STATES:
        return workspace.state if workspace else "gone"
    cluster = (
        Cluster.objects.filter(pk=workspace.cluster_id).first() if workspace.cluster_id else None
    )
    before = (workspace.state, workspace.cluster_id)
    if workspace.state == WorkspaceState.STOPPING:
        _sync_stopping(workspace, cluster, now)
    elif cluster is None or cluster.is_final:
        ended = cluster.state_reason if cluster else "its cluster was removed"
        if workspace.state == WorkspaceState.STARTING:
            workspace.move_to(WorkspaceState.FAILED, f"The cluster did not start: {ended}")
        else:
            workspace.move_to(WorkspaceState.STOPPING)
            workspace.move_to(
                WorkspaceState.STOPPED,
                f"Its cluster ended ({ended}); files last saved {_when(workspace.files_saved_at)}.",
            )
        workspace.cluster = None
    elif workspace.state == WorkspaceState.STARTING:
        if workspace.files_error and workspace.restored_at is None:
            workspace.state_reason = f"Restoring the files failed: {workspace.files_error}"
        if cluster.state == ClusterState.RUNNING and workspace.restored_at is not None:
            workspace.move_to(WorkspaceState.RUNNING)
    if (workspace.state, workspace.cluster_id) != before:
        workspace.save()
        if workspace.state in (WorkspaceState.STOPPED, WorkspaceState.FAILED):
            audit(
                actor=None,
                verb=f"workspace.{workspace.state}",
                target=workspace,
                changes={
                    "state": [before[0], workspace.state],
                    "reason": [None, workspace.state_reason],
                },
            )
        cluster_id = before[1]
        transaction.on_commit(lambda: live.forget_orders(cluster_id))
    return workspace.state


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "never"


def _sync_stopping(workspace: Workspace, cluster: Cluster | None, now: datetime) -> None:
    if cluster is None or cluster.is_final:
        saved = _save_done(workspace)
        workspace.move_to(
            WorkspaceState.STOPPED,
            "Stopped; its files were saved."
            if saved
            else f"Stopped; its files were last saved {_when(workspace.files_saved_at)}.",
        )
        workspace.cluster = None
        return
    if cluster.desired_state == DesiredState.TERMINATED:
        return  # asked already: wait for it to end
    asked_at = workspace.stop_requested_at or now
    if _save_done(workspace):
        reason = f"The workspace {workspace.name} stopped: its files are saved."
    elif cluster.state != ClusterState.RUNNING or workspace.restored_at is None:
        reason = f"The workspace {workspace.name} stopped before its files were restored."
    elif now - asked_at > STOP_SAVE_TIMEOUT:
        reason = (
            f"The workspace {workspace.name} stopped: the head did not save the files within "
            f"{int(STOP_SAVE_TIMEOUT.total_seconds() // 60)} min; they were last saved "
            f"{_when(workspace.files_saved_at)}."
        )
        workspace.state_reason = reason
        workspace.save(update_fields=["state_reason", "updated_at"])
    else:
        return  # the head is saving: its report moves this on
    cluster_terminate(cluster=cluster, actor=None, reason=reason)


def workspaces_waiting_for_image() -> list[int]:
    """Stopped workspaces someone started while their image built, whose build ended."""
    return list(
        Workspace.objects.filter(
            state__in=(WorkspaceState.STOPPED, WorkspaceState.FAILED),
            start_when_built_by__isnull=False,
            image_build__state__in=FINAL_BUILD_STATES,
        ).values_list("pk", flat=True)
    )


def workspace_start_when_built(*, workspace_id: int) -> None:
    """The start someone asked for while the image built (the sweep's; safe to run
    twice: the start clears the request in its own transaction, and a refusal is
    recorded only while the request still stands)."""
    workspace = Workspace.objects.filter(pk=workspace_id).first()
    if workspace is None or workspace.start_when_built_by is None:
        return
    try:
        workspace_start(workspace=workspace, actor=workspace.start_when_built_by)
    except (ValidationError, PermissionDenied) as exc:
        with transaction.atomic():
            locked = Workspace.objects.select_for_update().get(pk=workspace.pk)
            if locked.start_when_built_by_id is None or locked.state in ACTIVE_WORKSPACE_STATES:
                return
            reason = f"It did not start: {' '.join(getattr(exc, 'messages', [str(exc)]))}"
            _pending_start(
                locked,
                starts_for=None,
                actor=None,
                reason=reason,
                verb="workspace.start.refused",
                changes={"reason": [None, reason]},
            )


def _pending_start(
    workspace: Workspace,
    *,
    starts_for: User | None,
    actor: User | None,
    reason: str,
    verb: str,
    changes: dict[str, Any],
) -> None:
    """Set (or clear, with `starts_for` None) the start waiting for the image's build,
    said on the page and audited as `actor`'s (Raydeck's when None)."""
    workspace.start_when_built_by = starts_for
    workspace.state_reason = reason[:1000]
    workspace.save(update_fields=["start_when_built_by", "state_reason", "updated_at"])
    audit(actor=actor, verb=verb, target=workspace, changes=changes)


def workspaces_to_sync() -> list[int]:
    return list(
        Workspace.objects.filter(state__in=ACTIVE_WORKSPACE_STATES).values_list("pk", flat=True)
    )


# --- The head's reports --------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    if not isinstance(value, (int, float)) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def workspace_report(*, cluster_id: int, report: Any) -> None:
    """Fold what the head says about its workspace (untrusted input) into the row; a
    report that changes nothing writes nothing."""
    if not isinstance(report, dict):
        return
    if packed := _packed_report(report.get("snapshot")):
        live.keep_packed(cluster_id, packed)
    fields: dict[str, Any] = {}
    restored = _time(report.get("restored_at"))
    if restored is not None:
        fields["restored_at"] = restored
    saved = report.get("saved")
    if isinstance(saved, dict):
        asked = _text(saved.get("for"), 64)
        at = _time(saved.get("at"))
        if at is not None:
            fields["files_saved_at"] = at
            fields["_save_for"] = asked
        for key, field in (("files", "files_count"), ("bytes", "files_bytes")):
            value = saved.get(key)
            if isinstance(value, int) and value >= 0:
                fields[field] = min(value, 2**62)
        skipped = saved.get("skipped")
        if isinstance(skipped, list):
            fields["files_skipped"] = [
                [_text(item[0], 300), _text(item[1], 100)]
                for item in skipped[:50]
                if isinstance(item, list) and len(item) == 2
            ]
    fields["files_error"] = _text(report.get("error"), 500)
    ssh = report.get("ssh")
    if isinstance(ssh, dict):
        fields["ssh_user"] = _text(ssh.get("user"), 32)
        fields["ssh_unavailable"] = _text(ssh.get("unavailable"), 200)
    packages = report.get("packages_added")
    if isinstance(packages, list):
        fields["packages_added"] = [_text(p, 200) for p in packages[:500] if isinstance(p, str)]
    if not live.report_changed(cluster_id, fields):
        return
    _apply_report(cluster_id, fields)


@transaction.atomic
def _apply_report(cluster_id: int, fields: dict[str, Any]) -> None:
    workspace = (
        Workspace.objects.select_for_update()
        .filter(cluster_id=cluster_id, state__in=ACTIVE_WORKSPACE_STATES)
        .first()
    )
    if workspace is None:
        return
    asked = fields.pop("_save_for", None)
    changed = []
    for name, value in fields.items():
        stop_at = workspace.stop_requested_at
        if name == "files_saved_at" and stop_at:
            # The save the stop asked for counts as done at the stop (whatever the head's
            # clock says); one started before it does not.
            if asked == live.save_token(stop_at):
                value = max(value, stop_at)
            else:
                value = min(value, stop_at - timedelta(microseconds=1))
        if getattr(workspace, name) != value:
            setattr(workspace, name, value)
            changed.append(name)
    if changed:
        workspace.save(update_fields=[*changed, "updated_at"])
        transaction.on_commit(lambda: enqueue_sync(workspace.pk))


def stop_for_idle(cluster: Cluster, reason: str) -> bool:
    """The idle check's hook (clusters.services.idle): an idle workspace's cluster is
    stopped as the workspace, saving its files first. True when it was a workspace's."""
    workspace = Workspace.objects.filter(
        cluster_id=cluster.pk, state__in=ACTIVE_WORKSPACE_STATES
    ).first()
    if workspace is None:
        return False
    workspace_stop(workspace=workspace, actor=None, reason=reason)
    return True
