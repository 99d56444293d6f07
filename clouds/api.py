"""JSON API of the clouds app: the organization's clouds (list, get, create, update,
verify, delete) and the preferred default cloud of the organization and of a project.

The same services as the console's pages write (clouds/services.py: role checks,
Cloud.clean's per-kind rules, audit events); which fields a kind of cloud has is the
console's forms' answer (`kind_fields`), so the API and the pages accept the same
things. Nothing secret is stored on a cloud, so nothing secret is returned."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status

from accounts import api_context as context
from accounts.api_idempotency import idempotent
from accounts.models import Organization, Project
from kit.api.errors import ApiError, invalid
from kit.api.handlers import answers
from kit.api.pagination import PageParams, page_of
from kit.api.schema import Changes, Out
from kit.keyset import keyset_page

from . import selectors, services
from .forms import CLOUD_FORMS, IDENTITY_FORMS
from .models import Cloud

router = Router(tags=["clouds"])

Kind = Literal["aws", "gcp", "local"]
Access = Literal["all", "projects"]
Addresses = Literal["public", "private"]
# Fields every kind has; the others depend on the kind (kind_fields).
COMMON_FIELDS = frozenset({"kind", "name", "launch_access", "projects"})


def kind_fields(kind: str) -> frozenset[str]:
    """The fields a cloud of `kind` has: those of its console forms (add and setup)."""
    names = set(CLOUD_FORMS[kind].base_fields)
    if kind in IDENTITY_FORMS:
        names |= set(IDENTITY_FORMS[kind].base_fields)
    return frozenset(names)


# --- Schemas -------------------------------------------------------------------------------


class CloudSettings(Schema):
    """What describes a cloud; which of these a kind has is in the description of each."""

    region: str = Field("", max_length=64, description="AWS and GCP.")
    zones: list[str] = Field(
        default_factory=list, max_length=20, description="GCP; empty: <region>-a."
    )
    log_location: str = Field(
        "", max_length=300, description="s3://… (AWS), gs://… (GCP) or a folder (local)."
    )
    node_identity: str = Field(
        "",
        max_length=300,
        description="AWS: the nodes' instance profile; GCP: their service account.",
    )
    local_root: str = Field("", max_length=300, description="Local: where node folders live.")
    gateway_cidrs: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="AWS and GCP: address ranges allowed to reach the clusters' gateways.",
    )
    gateway_open_to_internet: bool = Field(
        False, description="AWS and GCP: confirms 0.0.0.0/0 in gateway_cidrs."
    )
    node_addresses: Addresses = Field(
        "public",
        description="AWS and GCP: 'public' (nodes get a public address, users reach the "
        "gateway there) or 'private' (only a private address).",
    )
    aws_role_arn: str = Field(
        "", max_length=200, description="AWS: the role Raydeck assumes (after the setup)."
    )
    gcp_project_id: str = Field("", max_length=64, description="GCP.")
    gcp_workload_identity_provider: str = Field("", max_length=300, description="GCP.")
    gcp_service_account: str = Field(
        "", max_length=200, description="GCP: the service account Raydeck impersonates."
    )


class CloudIn(CloudSettings):
    kind: Kind
    name: str = Field(min_length=1, max_length=100)
    launch_access: Access = "all"
    projects: list[str] = Field(
        default_factory=list,
        max_length=500,
        description="Slugs of the projects that may launch here (launch_access=projects).",
    )


class CloudChanges(Changes):
    """Only the fields sent change; the kind never does. Changing how Raydeck reaches
    the cloud (region, role, project…) verifies it again."""

    kind: str | None = Field(None, description="Never changes: sending it is refused.")
    name: str | None = Field(None, min_length=1, max_length=100)
    launch_access: Access | None = None
    projects: list[str] | None = Field(None, max_length=500)
    region: str | None = Field(None, max_length=64)
    zones: list[str] | None = Field(None, max_length=20)
    log_location: str | None = Field(None, max_length=300)
    node_identity: str | None = Field(None, max_length=300)
    local_root: str | None = Field(None, max_length=300)
    gateway_cidrs: list[str] | None = Field(None, max_length=50)
    gateway_open_to_internet: bool | None = None
    node_addresses: Addresses | None = None
    aws_role_arn: str | None = Field(None, max_length=200)
    gcp_project_id: str | None = Field(None, max_length=64)
    gcp_workload_identity_provider: str | None = Field(None, max_length=300)
    gcp_service_account: str | None = Field(None, max_length=200)


class CloudOut(Out):
    id: str
    name: str
    kind: str
    status: str
    status_reason: str
    region: str
    zones: list[str]
    log_location: str
    node_identity: str
    local_root: str
    gateway_cidrs: list[str]
    gateway_open_to_internet: bool
    node_addresses: str
    launch_access: str
    projects: list[str]
    aws_role_arn: str
    aws_external_id: str = Field(description="AWS: the ExternalId the role's trust policy names.")
    gcp_project_id: str
    gcp_workload_identity_provider: str
    gcp_service_account: str
    identity_configured: bool = Field(description="Whether Raydeck knows how to reach it.")
    created_at: datetime
    verified_at: datetime | None


class CheckOut(Out):
    name: str
    passed: bool
    message: str


class VerificationOut(Out):
    id: str
    state: str
    started_at: datetime
    finished_at: datetime | None
    checks: list[CheckOut]


class CloudDetailOut(CloudOut):
    verification: VerificationOut | None = Field(description="The latest verification.")


class DefaultCloudIn(Schema):
    cloud: str | None = Field(description="A cloud's id; null: no preference.")


class DefaultCloudOut(Out):
    cloud: str | None
    cloud_name: str | None


def cloud_out(cloud: Cloud) -> dict[str, Any]:
    return {
        "id": str(cloud.pk),
        "name": cloud.name,
        "kind": cloud.kind,
        "status": cloud.state,
        "status_reason": cloud.state_reason,
        "region": cloud.region,
        "zones": list(cloud.zones),
        "log_location": cloud.log_location,
        "node_identity": cloud.node_identity,
        "local_root": cloud.local_root,
        "gateway_cidrs": list(cloud.gateway_cidrs),
        "gateway_open_to_internet": cloud.gateway_open_to_internet,
        "node_addresses": cloud.node_addresses,
        "launch_access": cloud.launch_access,
        "projects": sorted(p.slug for p in cloud.projects.all()),
        "aws_role_arn": cloud.aws_role_arn,
        "aws_external_id": cloud.aws_external_id,
        "gcp_project_id": cloud.gcp_project_id,
        "gcp_workload_identity_provider": cloud.gcp_workload_identity_provider,
        "gcp_service_account": cloud.gcp_service_account,
        "identity_configured": cloud.identity_configured,
        "created_at": cloud.created_at,
        "verified_at": cloud.verified_at,
    }


def cloud_detail_out(cloud: Cloud) -> dict[str, Any]:
    latest = selectors.cloud_verifications(cloud=cloud, limit=1)
    verification = None
    if latest:
        v = latest[0]
        verification = {
            "id": str(v.pk),
            "state": v.state,
            "started_at": v.started_at,
            "finished_at": v.finished_at,
            "checks": [
                {"name": c.name, "passed": c.passed, "message": c.message} for c in v.checks.all()
            ],
        }
    return {**cloud_out(cloud), "verification": verification}


def default_out(cloud: Cloud | None) -> dict[str, Any]:
    return {"cloud": str(cloud.pk) if cloud else None, "cloud_name": cloud.name if cloud else None}


# --- Helpers -------------------------------------------------------------------------------


def _cloud(request: HttpRequest, organization: Organization, id: str, perm: str) -> Cloud:
    cloud = context.one_or_404(
        Cloud.objects.visible_to(context.viewer(request)),
        "cloud",
        organization=organization,
        pk=context.int_id(id),
    )
    context.require(request, perm, cloud)
    return cloud


def _body_cloud(request: HttpRequest, organization: Organization, id: str) -> Cloud:
    """The cloud a body names, of the organization in the URL (a 422 otherwise, in the
    same words whether it is missing or another organization's)."""
    cloud = (
        Cloud.objects.visible_to(context.viewer(request))
        .filter(organization=organization, pk=context.int_id(id))
        .first()
    )
    if cloud is None:
        raise invalid("cloud", f"No cloud with id “{id}” here.")
    return cloud


def _projects(organization: Organization, slugs: list[str]) -> list[Project]:
    found = {p.slug: p for p in Project.objects.filter(organization=organization, slug__in=slugs)}
    missing = [s for s in slugs if s not in found]
    if missing:
        raise invalid("projects", f"No project “{missing[0]}” here.")
    return [found[s] for s in dict.fromkeys(slugs)]


def _check_kind_fields(kind: str, sent: dict[str, Any]) -> None:
    """Refuse a field the kind of cloud does not have, rather than ignore it."""
    allowed = kind_fields(kind) | COMMON_FIELDS
    for name in sent:
        if name not in allowed:
            raise invalid(name, f"A cloud of kind “{kind}” has no {name}.")


def _project(request: HttpRequest, organization: Organization, slug: str) -> Project:
    return context.one_or_404(
        Project.objects.visible_to(context.viewer(request), organization), "project", slug=slug
    )


# --- Clouds --------------------------------------------------------------------------------


@router.get("/orgs/{org}/clouds", response=answers(page_of(CloudOut)))
def cloud_list(request: HttpRequest, org: str, page: Query[PageParams]) -> dict[str, Any]:
    organization = context.organization(request, org)
    context.require(request, "cloud.view", organization)
    clouds = selectors.cloud_list(organization=organization, viewer=context.viewer(request))
    items, cursor = keyset_page(clouds.prefetch_related("projects"), page, ["name", "pk"])
    return {"items": [cloud_out(c) for c in items], "next_cursor": cursor}


@router.post("/orgs/{org}/clouds", response=answers({201: CloudDetailOut}))
@decorate_view(idempotent)
def cloud_create_endpoint(request: HttpRequest, org: str, body: CloudIn) -> Status:
    """Register a cloud (needs cloud.manage: owners and admins). An AWS cloud answers
    the ExternalId its role must trust; once it has aws_role_arn (or, on GCP, the
    Workload Identity provider and service account) it is verified at once."""
    organization = context.organization(request, org)
    context.require(request, "cloud.manage", organization)
    sent = body.dict(exclude_unset=True)
    _check_kind_fields(body.kind, sent)
    form_fields = CLOUD_FORMS[body.kind].base_fields
    fields = {
        name: sent.get(name, form_fields[name].initial if name in form_fields else "")
        for name in kind_fields(body.kind) - COMMON_FIELDS
    }
    for name in ("zones", "gateway_cidrs"):
        if name in fields:
            fields[name] = list(sent.get(name) or [])
    if "gateway_open_to_internet" in fields:
        fields["gateway_open_to_internet"] = bool(sent.get("gateway_open_to_internet"))
    cloud = services.cloud_create(
        organization=organization,
        actor=context.actor(request),
        kind=body.kind,
        name=body.name,
        launch_access=body.launch_access,
        projects=_projects(organization, body.projects),
        **{k: "" if v is None else v for k, v in fields.items()},
    )
    return Status(201, cloud_detail_out(cloud))


@router.get("/orgs/{org}/clouds/{id}", response=answers(CloudDetailOut))
def cloud_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    return cloud_detail_out(_cloud(request, organization, id, "cloud.view"))


@router.patch("/orgs/{org}/clouds/{id}", response=answers(CloudDetailOut))
def cloud_update_endpoint(
    request: HttpRequest, org: str, id: str, body: CloudChanges
) -> dict[str, Any]:
    organization = context.organization(request, org)
    cloud = _cloud(request, organization, id, "cloud.manage")
    sent = body.dict(exclude_unset=True)
    for name, value in sent.items():
        if value is None:
            raise invalid(name, "Leave the field out to keep its value; null is not one.")
    if "kind" in sent:
        raise invalid("kind", "A cloud's kind cannot change; add a cloud of the other kind.")
    _check_kind_fields(cloud.kind, sent)
    projects = None
    if "projects" in sent:
        projects = _projects(organization, sent.pop("projects"))
    cloud = services.cloud_update(
        cloud=cloud, actor=context.actor(request), projects=projects, **sent
    )
    return cloud_detail_out(cloud)


@router.post("/orgs/{org}/clouds/{id}/verify", response=answers({202: CloudDetailOut}, 409))
def cloud_verify_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """Run the checks again (joins a verification already running); follow
    `status` and `verification` until it is no longer verifying. 409 before the setup
    is finished."""
    organization = context.organization(request, org)
    cloud = _cloud(request, organization, id, "cloud.manage")
    try:
        services.cloud_verify_request(cloud=cloud, actor=context.actor(request))
    except ValidationError as exc:
        raise ApiError(409, " ".join(exc.messages)) from exc
    cloud.refresh_from_db()
    return Status(202, cloud_detail_out(cloud))


@router.delete("/orgs/{org}/clouds/{id}", response=answers({204: None}, 409))
def cloud_delete_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """409 while clusters that are not terminated (or workspaces, unfinished jobs,
    running services) use the cloud."""
    organization = context.organization(request, org)
    cloud = _cloud(request, organization, id, "cloud.manage")
    try:
        services.cloud_delete(cloud=cloud, actor=context.actor(request))
    except ValidationError as exc:
        raise ApiError(409, " ".join(exc.messages)) from exc
    return Status(204, None)


# --- Preferred default cloud ---------------------------------------------------------------


@router.get("/orgs/{org}/default-cloud", response=answers(DefaultCloudOut))
def org_default_cloud_get(request: HttpRequest, org: str) -> dict[str, Any]:
    """The cloud requests of the organization use when they name none (a project's own
    preference overrides it; a compute config's cloud overrides both)."""
    organization = context.organization(request, org)
    context.require(request, "cloud.view", organization)
    return default_out(selectors.default_cloud(organization=organization))


@router.put("/orgs/{org}/default-cloud", response=answers(DefaultCloudOut))
def org_default_cloud_set(request: HttpRequest, org: str, body: DefaultCloudIn) -> dict[str, Any]:
    organization = context.organization(request, org)
    context.require(request, "organization.update", organization)
    cloud = _body_cloud(request, organization, body.cloud) if body.cloud is not None else None
    services.default_cloud_set(
        organization=organization, project=None, cloud=cloud, actor=context.actor(request)
    )
    return default_out(cloud)


@router.get("/orgs/{org}/projects/{project}/default-cloud", response=answers(DefaultCloudOut))
def project_default_cloud_get(request: HttpRequest, org: str, project: str) -> dict[str, Any]:
    """The project's own preferred cloud (null: the organization's applies)."""
    organization = context.organization(request, org)
    found = _project(request, organization, project)
    context.require(request, "project.view", found)
    return default_out(selectors.default_cloud(organization=organization, project=found))


@router.put("/orgs/{org}/projects/{project}/default-cloud", response=answers(DefaultCloudOut))
def project_default_cloud_set(
    request: HttpRequest, org: str, project: str, body: DefaultCloudIn
) -> dict[str, Any]:
    organization = context.organization(request, org)
    found = _project(request, organization, project)
    context.require(request, "project.update", found)
    cloud = _body_cloud(request, organization, body.cloud) if body.cloud is not None else None
    services.default_cloud_set(
        organization=organization, project=found, cloud=cloud, actor=context.actor(request)
    )
    return default_out(cloud)
