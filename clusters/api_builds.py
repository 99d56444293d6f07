"""JSON API of image builds: start one from a spec, follow it (state, step, the last
lines of its log, the whole log), cancel it. The services in clusters/services/builds.py
hold every rule; a build of another organization is a 404."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status

from accounts import api_context as context
from accounts.api_idempotency import idempotent
from accounts.models import Organization
from kit.api.handlers import answers
from kit.api.pagination import PageParams, page_of
from kit.api.schema import Out
from kit.keyset import keyset_page

from . import selectors
from .api import _org_cloud
from .models import ImageBuild
from .services.builds import build_log, image_build_cancel, image_build_start

router = Router()


class BuildIn(Schema):
    name: str = Field(
        min_length=1,
        max_length=100,
        description="The image it makes: a new name makes a new image once the build "
        "succeeds; the name of an image built on this cloud builds its next revision.",
    )
    cloud: str = Field(description="The id of the cloud whose data plane builds it.")
    spec: dict[str, Any] = Field(
        description="base (ray, or a full image reference), requirements, debian_packages, "
        "env, post_build; or a containerfile instead of the four lists."
    )


class BuildOut(Out):
    id: str
    name: str
    cloud: str
    image: str | None = Field(description="The image it made (once succeeded).")
    revision: int | None
    state: str = Field(description="queued, building, succeeded, failed or cancelled.")
    step: str = Field(description="The step running now, or the one that failed.")
    error: str
    log_tail: str
    log_location: str = Field(description="Where the log is kept after the build.")
    image_uri: str = Field(description="The image by digest, once succeeded.")
    python_executable: str = Field(description="Local cloud: the environment its nodes run.")
    spec: dict[str, Any]
    spec_hash: str
    reused_from: str | None = Field(description="The build whose identical result it reuses.")
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None


class LogOut(Out):
    id: str
    state: str
    log: str


def build_out(build: ImageBuild) -> dict[str, Any]:
    return {
        "id": str(build.pk),
        "name": build.name,
        "cloud": str(build.cloud_id),
        "image": str(build.image_id) if build.image_id else None,
        "revision": build.revision,
        "state": build.state,
        "step": build.step,
        "error": build.error,
        "log_tail": build.log_tail,
        "log_location": build.log_location,
        "image_uri": build.image_uri,
        "python_executable": build.python_executable,
        "spec": build.spec,
        "spec_hash": build.spec_hash,
        "reused_from": str(build.reused_from_id) if build.reused_from_id else None,
        "created_by": build.created_by.email if build.created_by else "",
        "created_at": build.created_at,
        "started_at": build.started_at,
        "finished_at": build.finished_at,
        "duration_seconds": build.duration_seconds,
    }


def _build(request: HttpRequest, org: Organization, id: str) -> ImageBuild:
    return context.one_or_404(
        selectors.image_builds(organization=org, viewer=context.viewer(request)),
        "image build",
        pk=context.int_id(id),
    )


@router.get("/orgs/{org}/image-builds", response=answers(page_of(BuildOut)), tags=["images"])
def image_build_list(request: HttpRequest, org: str, page: Query[PageParams]) -> dict[str, Any]:
    """The organization's image builds, newest first."""
    organization = context.organization(request, org)
    context.require(request, "project.list", organization)
    builds = selectors.image_builds(organization=organization, viewer=context.viewer(request))
    items, cursor = keyset_page(builds, page, ["-created_at", "-pk"])
    return {"items": [build_out(b) for b in items], "next_cursor": cursor}


@router.post("/orgs/{org}/image-builds", response=answers({201: BuildOut}), tags=["images"])
@decorate_view(idempotent)
def image_build_create(request: HttpRequest, org: str, body: BuildIn) -> Status:
    """Build an image from a spec in the cloud's data plane (image.manage: owners and
    admins). An identical spec already built on the cloud succeeds at once. Follow
    `state` and `step` until the build is final."""
    organization = context.organization(request, org)
    context.require(request, "image.manage", organization)
    cloud = _org_cloud(request, organization, body.cloud)
    build = image_build_start(
        organization=organization,
        actor=context.actor(request),
        cloud=cloud,
        name=body.name,
        spec=body.spec,
    )
    return Status(201, build_out(build))


@router.get("/orgs/{org}/image-builds/{id}", response=answers(BuildOut), tags=["images"])
def image_build_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    context.require(request, "project.list", organization)
    return build_out(_build(request, organization, id))


@router.get("/orgs/{org}/image-builds/{id}/log", response=answers(LogOut), tags=["images"])
def image_build_log(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """The build's whole log so far, from its cloud."""
    organization = context.organization(request, org)
    context.require(request, "project.list", organization)
    build = _build(request, organization, id)
    return {"id": str(build.pk), "state": build.state, "log": build_log(build)}


@router.post("/orgs/{org}/image-builds/{id}/cancel", response=answers(BuildOut), tags=["images"])
def image_build_cancel_endpoint(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """Stop a build that has not finished (422 when it has)."""
    organization = context.organization(request, org)
    build = _build(request, organization, id)
    context.require(request, "image.manage", organization)
    return build_out(image_build_cancel(build=build, actor=context.actor(request)))
