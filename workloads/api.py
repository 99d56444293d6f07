"""JSON API shared by the workloads: working directories in the cloud's storage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema

from accounts import api_context as context
from accounts.models import Organization, Project
from clouds.providers.base import TransientCloudError
from clusters.api import CLOUD_WHEN_ABSENT, choice_of
from kit.api.errors import ApiError, invalid
from kit.api.handlers import answers
from kit.api.schema import Out

from .storage import working_dir_request_upload

router = Router()


class WorkingDirIn(Schema):
    project: str = Field(description="The project's slug (who may upload is checked there).")
    cloud: str | None = Field(None, description=CLOUD_WHEN_ABSENT)
    sha256: str = Field(min_length=1, max_length=64, description="The zip's SHA-256, in hex.")
    size: int = Field(ge=0, le=2**62, description="The zip's size in bytes.")


class SignedUrlOut(Out):
    method: str
    url: str
    headers: dict[str, str] = Field(description="Send these headers with the request.")
    expires_at: datetime


class WorkingDirOut(Out):
    id: str
    sha256: str
    size: int
    cloud: str
    uploaded: bool = Field(description="The cloud already holds it: nothing to upload.")
    upload: SignedUrlOut | None = Field(
        description="Where to PUT the zip (once, before `expires_at`); null when uploaded."
    )


def visible_project(request: HttpRequest, org: Organization, slug: str) -> Project:
    """The request's project by slug, or a 422 naming the field (another organization's
    is as missing as one that never was)."""
    project = Project.objects.visible_to(context.viewer(request), org).filter(slug=slug).first()
    if project is None:
        raise invalid("project", f"No project “{slug}” here.")
    return project


def unavailable(exc: TransientCloudError) -> ApiError:
    """A cloud that is down for now: 503 with Retry-After, never a 500."""
    return ApiError(503, exc.user_message, headers={"Retry-After": "30"})


@router.post(
    "/orgs/{org}/working-dirs",
    response=answers(WorkingDirOut, 503),
    tags=["working dirs"],
)
def working_dir_upload(request: HttpRequest, org: str, body: WorkingDirIn) -> dict[str, Any]:
    """Ask to upload a zipped working directory: answers a signed URL to PUT it to the
    cloud's storage, or `uploaded: true` when that digest is already there (the same
    tree is uploaded once). Then name the returned id as a job's working dir."""
    organization = context.organization(request, org)
    project = visible_project(request, organization, body.project)
    context.require(request, "workdir.upload", project)
    cloud, _, _ = choice_of(
        request, organization, project, cloud=body.cloud, compute_config=None, image=None
    )
    try:
        result = working_dir_request_upload(
            project=project,
            cloud=cloud,
            sha256=body.sha256,
            size=body.size,
            actor=context.actor(request),
        )
    except TransientCloudError as exc:
        raise unavailable(exc) from exc
    working_dir, upload = result.working_dir, result.upload
    return {
        "id": str(working_dir.pk),
        "sha256": working_dir.sha256,
        "size": working_dir.size,
        "cloud": str(cloud.pk),
        "uploaded": upload is None,
        "upload": None
        if upload is None
        else {
            "method": upload.method,
            "url": upload.url,
            "headers": upload.headers,
            "expires_at": upload.expires_at,
        },
    }
