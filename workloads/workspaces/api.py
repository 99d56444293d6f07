"""JSON API of workspaces: create, list, get, change (PATCH), start, stop, delete, a
JupyterLab link, SSH access (the CLI's tunnel) and a job from the workspace.
Ids are the workspace's UUID; ids in a body are resolved through `visible_to` like a
cluster's (clusters.api.choice_of); the console's services check the rules and write."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.urls import reverse
from ninja import Field, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status

from accounts import api_context as context
from accounts.api_idempotency import idempotent
from accounts.models import Organization, Project
from clusters import access
from clusters.api import CLOUD_WHEN_ABSENT, choice_of, config_and_image_of
from kit.api.errors import ApiError, invalid, validation_details
from kit.api.handlers import answers
from kit.api.pagination import PageParams, page_of
from kit.api.schema import Changes, Out
from kit.keyset import keyset_page
from workloads.jobs.api import JobOut, job_out
from workloads.jobs.services import MAX_RETRIES, MAX_TIMEOUT_SECONDS

from . import selectors
from .models import WORKSPACE_NAME, Workspace
from .services import (
    WorkspaceBusy,
    workspace_create,
    workspace_delete,
    workspace_job_create,
    workspace_start,
    workspace_stop,
    workspace_update,
)
from .ssh_keys import workspace_ssh_access

router = Router(tags=["workspaces"])


class WorkspaceIn(Schema):
    name: str = Field(min_length=1, max_length=63, pattern=WORKSPACE_NAME)
    project: str = Field(description="The project's slug.")
    cloud: str | None = Field(None, description=CLOUD_WHEN_ABSENT)
    compute_config: str | None = Field(
        None, description="A compute config's id (its latest version); absent: the default."
    )
    image: str | None = Field(None, description="An image's id; absent: Raydeck's default.")


class WorkspaceChanges(Changes):
    """Only the fields sent change; the next start uses them."""

    name: str | None = Field(None, min_length=1, max_length=63, pattern=WORKSPACE_NAME)
    compute_config: str | None = Field(
        None, description="A compute config's id (its latest version) of the workspace's cloud."
    )
    image: str | None = Field(
        None, description="An image's id; null: Raydeck's workspace image, as on create."
    )


class FilesOut(Out):
    location: str
    saved_at: datetime | None
    count: int
    bytes: int
    skipped: list[list[str]]
    error: str


class ImageBuildStateOut(Out):
    id: str
    state: str
    error: str
    waiting: str = Field(description="Why it cannot start yet; empty once it can.")
    url: str = Field(description="The build's page, with its log.")


class WorkspaceOut(Out):
    id: str
    name: str
    project: str
    cloud: str
    compute_config: str
    compute_config_version: int
    image: str | None = Field(description="Null while its image is still being built.")
    image_build: ImageBuildStateOut | None = Field(
        description="The build of Raydeck's workspace image it got (image left blank)."
    )
    state: str
    state_reason: str
    cluster: str | None = Field(description="The current run's cluster id; null when stopped.")
    files: FilesOut
    packages_added: list[str]
    created_by: str | None
    created_at: datetime
    url: str


class WorkspaceFilters(PageParams):
    project: str = Field("", description="A project's slug.")


class LinkOut(Out):
    url: str = Field(description="Opens JupyterLab once, within 5 minutes.")


class SshAccessOut(Out):
    url: str = Field(description="The gateway's WebSocket tunnel to the workspace's sshd.")
    token: str = Field(description="Send as `Authorization: Bearer`; opens it within 5 minutes.")
    expires_at: datetime
    user: str = Field(description="The account to log in as.")


class WorkspaceJobIn(Schema):
    entrypoint: str = Field(max_length=10_000, description="The command, e.g. python train.py.")
    name: str = Field("", max_length=100, description="Absent: the workspace's name and command.")
    max_retries: int = Field(1, ge=-(2**31), le=2**31, description=f"0 to {MAX_RETRIES}.")
    timeout_seconds: int | None = Field(
        None, ge=-(2**31), le=2**31, description=f"1 to {MAX_TIMEOUT_SECONDS}; null: none."
    )


def _image_build_out(workspace: Workspace) -> dict[str, Any] | None:
    build = workspace.image_build
    if build is None:
        return None
    return {
        "id": str(build.uuid),
        "state": build.state,
        "error": build.error,
        "waiting": workspace.image_wait_explained,
        "url": context.console_url(
            reverse("image_build_detail", args=[workspace.organization.slug, build.pk])
        ),
    }


def workspace_out(workspace: Workspace) -> dict[str, Any]:
    org_slug = workspace.organization.slug
    return {
        "id": str(workspace.uuid),
        "name": workspace.name,
        "project": workspace.project.slug,
        "cloud": str(workspace.cloud_id),
        "compute_config": str(workspace.compute_config.config_id),
        "compute_config_version": workspace.compute_config.number,
        "image": str(workspace.image_id) if workspace.image_id else None,
        "image_build": _image_build_out(workspace),
        "state": workspace.state,
        "state_reason": workspace.state_reason,
        "cluster": str(workspace.cluster.uuid) if workspace.cluster else None,
        "files": {
            "location": workspace.files_location,
            "saved_at": workspace.files_saved_at,
            "count": workspace.files_count,
            "bytes": workspace.files_bytes,
            "skipped": workspace.files_skipped,
            "error": workspace.files_error,
        },
        "packages_added": workspace.packages_added,
        "created_by": workspace.created_by.email if workspace.created_by else None,
        "created_at": workspace.created_at,
        "url": context.console_url(reverse("workspace_detail", args=[org_slug, workspace.pk])),
    }


def _rows(request: HttpRequest, org: Organization) -> Any:
    return Workspace.objects.visible_to(context.viewer(request), org).select_related(
        "organization", "project", "cluster", "compute_config", "image_build", "created_by"
    )


def _workspace(request: HttpRequest, org: Organization, id: str, perm: str) -> Workspace:
    workspace = context.one_or_404(_rows(request, org), "workspace", uuid=context.uuid_id(id))
    context.require(request, perm, workspace)
    return workspace


def _refused(exc: ValidationError) -> ApiError:
    return ApiError(409, " ".join(exc.messages))


@router.get("/orgs/{org}/workspaces", response=answers(page_of(WorkspaceOut)))
def workspace_list(request: HttpRequest, org: str, page: Query[WorkspaceFilters]) -> dict[str, Any]:
    """Workspaces the token sees, newest first."""
    organization = context.organization(request, org)
    rows = _rows(request, organization)
    if page.project:
        rows = rows.filter(project__slug=page.project)
    items, cursor = keyset_page(rows, page, ["-created_at", "-pk"])
    return {"items": [workspace_out(w) for w in items], "next_cursor": cursor}


@router.post("/orgs/{org}/workspaces", response=answers({201: WorkspaceOut}))
@decorate_view(idempotent)
def workspace_create_endpoint(request: HttpRequest, org: str, body: WorkspaceIn) -> Status:
    """Create a stopped workspace; start it to get its cluster and JupyterLab."""
    organization = context.organization(request, org)
    project = (
        Project.objects.visible_to(context.viewer(request), organization)
        .filter(slug=body.project)
        .first()
    )
    if project is None:
        raise invalid("project", f"No project “{body.project}” here.")
    context.require(request, "workspace.manage", project)
    cloud, version, image = choice_of(
        request,
        organization,
        project,
        cloud=body.cloud,
        compute_config=body.compute_config,
        image=body.image,
    )
    workspace = workspace_create(
        project=project,
        actor=context.actor(request),
        name=body.name,
        cloud=cloud,
        compute_config=version,
        image=image,
    )
    return Status(
        201, workspace_out(_workspace(request, organization, str(workspace.uuid), "project.view"))
    )


@router.get("/orgs/{org}/workspaces/{id}", response=answers(WorkspaceOut))
def workspace_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    return workspace_out(_workspace(request, organization, id, "project.view"))


@router.patch("/orgs/{org}/workspaces/{id}", response=answers(WorkspaceOut, 409))
def workspace_update_endpoint(
    request: HttpRequest, org: str, id: str, body: WorkspaceChanges
) -> dict[str, Any]:
    """Change a stopped (or failed) workspace's name, compute config or image (only the
    fields sent); its next start uses them. 409 while it has a cluster (stop it first)."""
    organization = context.organization(request, org)
    workspace = _workspace(request, organization, id, "workspace.manage")
    sent = body.dict(exclude_unset=True)
    for name in ("name", "compute_config"):
        if name in sent and sent[name] is None:
            raise invalid(name, "Leave the field out to keep its value; null is not one.")
    version, image = config_and_image_of(
        request, organization, compute_config=sent.get("compute_config"), image=sent.get("image")
    )
    changes: dict[str, Any] = {k: v for k, v in sent.items() if k == "name"}
    if "compute_config" in sent:
        changes["compute_config"] = version
    if "image" in sent:
        changes["image"] = image
    try:
        workspace_update(workspace=workspace, actor=context.actor(request), **changes)
    except WorkspaceBusy as exc:
        raise ApiError(409, " ".join(exc.messages), details=validation_details(exc)) from exc
    return workspace_out(_workspace(request, organization, id, "project.view"))


@router.post("/orgs/{org}/workspaces/{id}/start", response=answers({202: WorkspaceOut}, 409))
def workspace_start_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """Start a stopped (or failed) workspace: a new cluster, its files restored. While
    its image is still building the start waits for it (`image_build.waiting` says so)."""
    organization = context.organization(request, org)
    workspace = _workspace(request, organization, id, "workspace.manage")
    try:
        workspace_start(workspace=workspace, actor=context.actor(request))
    except ValidationError as exc:
        raise _refused(exc) from exc
    return Status(202, workspace_out(_workspace(request, organization, id, "project.view")))


@router.post("/orgs/{org}/workspaces/{id}/stop", response=answers({202: WorkspaceOut}))
def workspace_stop_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """Save the files, then terminate the cluster; asking again changes nothing. A start
    still waiting for the image's build is called off instead."""
    organization = context.organization(request, org)
    workspace = _workspace(request, organization, id, "workspace.manage")
    workspace_stop(workspace=workspace, actor=context.actor(request))
    return Status(202, workspace_out(_workspace(request, organization, id, "project.view")))


@router.delete("/orgs/{org}/workspaces/{id}", response=answers({204: None}, 409))
def workspace_delete_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """Delete a stopped workspace (its saved files stay at their location)."""
    organization = context.organization(request, org)
    workspace = _workspace(request, organization, id, "workspace.manage")
    try:
        workspace_delete(workspace=workspace, actor=context.actor(request))
    except ValidationError as exc:
        raise _refused(exc) from exc
    return Status(204, None)


@router.post("/orgs/{org}/workspaces/{id}/jupyter", response=answers(LinkOut, 409))
def workspace_jupyter(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """A link that opens the workspace's JupyterLab through its cluster's gateway."""
    organization = context.organization(request, org)
    workspace = _workspace(request, organization, id, "project.view")
    context.require(request, "cluster.access", workspace.project)
    if not selectors.jupyter_ready(workspace) or workspace.cluster is None:
        raise ApiError(409, "JupyterLab opens once the workspace is running.")
    try:
        url = access.open_app(user=context.actor(request), cluster=workspace.cluster, app="jupyter")
    except ValidationError as exc:
        raise _refused(exc) from exc
    return {"url": url}


@router.post("/orgs/{org}/workspaces/{id}/ssh", response=answers(SshAccessOut, 409))
def workspace_ssh(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """What `raydeck workspaces ssh` needs: the tunnel through the cluster's gateway to
    the workspace's sshd, a short-lived token for it and the account to log in as."""
    organization = context.organization(request, org)
    workspace = _workspace(request, organization, id, "project.view")
    context.require(request, selectors.SSH_PERMISSION, workspace.project)
    try:
        return workspace_ssh_access(workspace=workspace, user=context.actor(request))
    except ValidationError as exc:
        raise _refused(exc) from exc


@router.post("/orgs/{org}/workspaces/{id}/jobs", response=answers({201: JobOut}))
def workspace_job(request: HttpRequest, org: str, id: str, body: WorkspaceJobIn) -> Status:
    """Submit a job from a running workspace: its files as they are now (its head saves
    and zips them; this waits for that, some seconds), its image, compute config and the
    packages added in it. Not idempotent: each call packs the files again."""
    organization = context.organization(request, org)
    workspace = _workspace(request, organization, id, "project.view")
    context.require(request, "job.submit", workspace.project)
    job = workspace_job_create(
        workspace=workspace,
        actor=context.actor(request),
        entrypoint=body.entrypoint,
        name=body.name,
        max_retries=body.max_retries,
        timeout_seconds=body.timeout_seconds,
    )
    return Status(201, job_out(job, organization))
