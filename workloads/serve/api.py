"""JSON API of Services: deploy, list, look at, shift traffic, roll back, terminate, add
query tokens. Ids in a body are resolved through `visible_to` (another organization's
object is a missing one); the services in services/deploy.py check the rules and write."""

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
from clusters.api import cloud_of, config_and_image_of
from kit.api.errors import invalid
from kit.api.handlers import answers
from kit.api.pagination import PageParams, page_of
from kit.api.schema import Out
from kit.keyset import keyset_page

from . import selectors
from .models import Service, ServiceVersion
from .services import deploy

router = Router()


class ServiceIn(Schema):
    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="Lower-case letters, digits and '-'. Deploying a name that is live in "
        "the project deploys a new version of it.",
    )
    project: str = Field(description="The project's slug.")
    serve_config: dict[str, Any] = Field(
        description="A Ray Serve config: one application ({import_path, args, runtime_env, "
        "route_prefix}) or {applications: [...]}."
    )
    cloud: str | None = Field(
        None,
        description="The cloud's id (a new service only); without it, the project's "
        "preferred default cloud, else the organization's, else its only verified cloud.",
    )
    compute_config: str | None = Field(None, description="A compute config's id.")
    image: str | None = Field(None, description="An image's id.")
    canary_steps: list[int] | None = Field(
        None, max_length=10, description="Traffic percentages, e.g. [10, 50, 100]."
    )
    step_seconds: int | None = Field(None, ge=1, le=86400, description="How long each holds.")
    max_error_rate: float | None = Field(
        None, ge=0, le=1, description="A new version failing more (0-1) is rolled back."
    )
    max_latency_ratio: float | None = Field(
        None,
        ge=1,
        le=100,
        description="A new version whose p99 latency is more than this many times the "
        "serving version's (plus 50 ms) is rolled back.",
    )


class ServiceVersionOut(Out):
    number: int
    state: str
    state_reason: str
    weight: int
    config_hash: str
    serve_config: dict[str, Any]
    applications: dict[str, Any]
    cluster: str | None
    created_at: datetime


class ServiceOut(Out):
    id: str
    name: str
    project: str
    cloud: str
    state: str
    state_reason: str
    endpoint_url: str
    current_version: int | None
    canary_steps: list[int]
    step_seconds: int
    max_error_rate: float
    max_latency_ratio: float
    pinned_weight: int | None
    rollout: dict[str, Any] | None
    created_at: datetime


class ServiceDeployOut(Out):
    service: ServiceOut
    version: ServiceVersionOut
    token: str | None = Field(description="The new service's query token, shown only once.")


class ServiceTrafficIn(Schema):
    canary: int | None = Field(
        description="The new version's share in percent (0-100), or null to unpin."
    )


class ServiceTokenIn(Schema):
    name: str = Field(min_length=1, max_length=100)


class ServiceTokenOut(Out):
    name: str
    token: str = Field(description="Send it as Authorization: Bearer <token>; shown only once.")


class ServiceEventOut(Out):
    id: str
    at: datetime
    level: str
    step: str
    message: str
    version: int | None


class ServiceFilters(PageParams):
    project: str = Field("", description="Only this project's services (slug).")
    name: str = Field("", description="Only services of this name.")
    include_ended: bool = Field(False, description="Also terminated and failed services.")


class ServiceEventFilters(PageParams):
    after: int | None = Field(None, ge=0, description="Only events after this id.")


class ServiceSeriesOut(Out):
    versions: list[dict[str, Any]]


def version_out(version: ServiceVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "state": version.state,
        "state_reason": version.state_reason,
        "weight": version.weight,
        "config_hash": version.config_hash,
        "serve_config": version.serve_config,
        "applications": version.applications,
        "cluster": str(version.cluster.uuid) if version.cluster else None,
        "created_at": version.created_at,
    }


def service_out(service: Service) -> dict[str, Any]:
    current = service.current_version
    return {
        "id": str(service.uuid),
        "name": service.name,
        "project": service.project.slug,
        "cloud": str(service.cloud_id),
        "state": service.state,
        "state_reason": service.state_reason,
        "endpoint_url": service.endpoint_url,
        "current_version": current.number if current else None,
        "canary_steps": service.canary_steps,
        "step_seconds": service.step_seconds,
        "max_error_rate": service.max_error_rate,
        "max_latency_ratio": service.max_latency_ratio,
        "pinned_weight": service.pinned_weight,
        "rollout": selectors.rollout_progress(service),
        "created_at": service.created_at,
    }


def _service(request: HttpRequest, org: Organization, id: str, perm: str) -> Service:
    """The service `id` (its uuid) of `org` the token sees (404 otherwise), after `perm`."""
    service = context.one_or_404(
        selectors.services_for(context.viewer(request), org), "service", uuid=context.uuid_id(id)
    )
    context.require(request, perm, service.project)
    return service


@router.get("/orgs/{org}/services", response=answers(page_of(ServiceOut)), tags=["services"])
def service_list(request: HttpRequest, org: str, page: Query[ServiceFilters]) -> dict[str, Any]:
    """Services the token sees, newest first (live ones unless include_ended)."""
    organization = context.organization(request, org)
    context.require(request, "project.list", organization)
    services = selectors.services_for(context.viewer(request), organization)
    if not page.include_ended:
        services = services.live()
    if page.project:
        services = services.filter(project__slug=page.project)
    if page.name:
        services = services.filter(name=page.name)
    items, cursor = keyset_page(services, page, ["-created_at", "-pk"])
    return {"items": [service_out(s) for s in items], "next_cursor": cursor}


@router.post("/orgs/{org}/services", response=answers({201: ServiceDeployOut}), tags=["services"])
@decorate_view(idempotent)
def service_deploy_endpoint(request: HttpRequest, org: str, body: ServiceIn) -> Status:
    """Deploy: a new service (its answer holds the query token, once), or a new version of
    the live service of that name, which then takes the traffic over step by step."""
    organization = context.organization(request, org)
    viewer = context.viewer(request)
    project = selectors.projects_for_deploy(viewer, organization).filter(slug=body.project).first()
    if project is None:
        raise invalid("project", f"No project “{body.project}” here.")
    context.require(request, "service.manage", project)
    compute_config, image = config_and_image_of(
        request, organization, compute_config=body.compute_config, image=body.image
    )
    cloud = None
    new_service = (
        not Service.objects.filter(project=project, name=body.name.strip()).live().exists()
    )
    if body.cloud is not None or new_service:  # the next version runs on the service's cloud
        cloud = cloud_of(request, organization, project, body.cloud, compute_config)
    deployed = deploy.service_deploy(
        project=project,
        actor=context.actor(request),
        name=body.name,
        serve_config=body.serve_config,
        cloud=cloud,
        compute_config=compute_config,
        image=image,
        canary_steps=body.canary_steps,
        step_seconds=body.step_seconds,
        max_error_rate=body.max_error_rate,
        max_latency_ratio=body.max_latency_ratio,
    )
    return Status(
        201,
        {
            "service": service_out(deployed.service),
            "version": version_out(deployed.version),
            "token": deployed.token,
        },
    )


@router.get("/orgs/{org}/services/{id}", response=answers(ServiceOut), tags=["services"])
def service_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    return service_out(_service(request, organization, id, "project.view"))


@router.get(
    "/orgs/{org}/services/{id}/versions",
    response=answers(list[ServiceVersionOut]),
    tags=["services"],
)
def service_versions(request: HttpRequest, org: str, id: str) -> list[dict[str, Any]]:
    """Every version, newest first, with its state, weight and Serve applications' health."""
    organization = context.organization(request, org)
    service = _service(request, organization, id, "project.view")
    return [version_out(v) for v in selectors.version_rows(service)]


@router.get(
    "/orgs/{org}/services/{id}/events",
    response=answers(page_of(ServiceEventOut)),
    tags=["services"],
)
def service_event_list(
    request: HttpRequest, org: str, id: str, page: Query[ServiceEventFilters]
) -> dict[str, Any]:
    """The service's steps (versions starting, traffic steps, rollbacks and why), oldest
    first; `after` follows new ones."""
    organization = context.organization(request, org)
    service = _service(request, organization, id, "project.view")
    items, cursor = keyset_page(selectors.service_events(service, after=page.after), page, ["pk"])
    return {
        "items": [
            {
                "id": str(e.pk),
                "at": e.created_at,
                "level": e.level,
                "step": e.step,
                "message": e.message,
                "version": e.version.number if e.version else None,
            }
            for e in items
        ],
        "next_cursor": cursor,
    }


@router.get(
    "/orgs/{org}/services/{id}/metrics", response=answers(ServiceSeriesOut), tags=["services"]
)
def service_metrics(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """Per version: request rate, error rate (%) and p50/p99 latency (ms) over time."""
    organization = context.organization(request, org)
    service = _service(request, organization, id, "project.view")
    return {"versions": selectors.version_series(service)}


@router.post(
    "/orgs/{org}/services/{id}/traffic", response=answers({202: ServiceOut}), tags=["services"]
)
def service_traffic_endpoint(
    request: HttpRequest, org: str, id: str, body: ServiceTrafficIn
) -> Status:
    """Pin the new version's share of the traffic (manual canary), or unpin it."""
    organization = context.organization(request, org)
    service = _service(request, organization, id, "service.manage")
    service = deploy.service_set_traffic(
        service=service, actor=context.actor(request), canary=body.canary
    )
    return Status(202, service_out(service))


@router.post(
    "/orgs/{org}/services/{id}/rollback", response=answers({202: ServiceOut}), tags=["services"]
)
def service_rollback_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """Stop the rollout under way, or deploy the previous version's config again."""
    organization = context.organization(request, org)
    service = _service(request, organization, id, "service.manage")
    service = deploy.service_rollback(service=service, actor=context.actor(request))
    return Status(202, service_out(service))


@router.post(
    "/orgs/{org}/services/{id}/terminate", response=answers({202: ServiceOut}), tags=["services"]
)
def service_terminate_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """Stop every version and remove the endpoint; asking again changes nothing."""
    organization = context.organization(request, org)
    service = _service(request, organization, id, "service.manage")
    service = deploy.service_terminate(service=service, actor=context.actor(request))
    return Status(202, service_out(service))


@router.post(
    "/orgs/{org}/services/{id}/tokens", response=answers({201: ServiceTokenOut}), tags=["services"]
)
def service_token_endpoint(request: HttpRequest, org: str, id: str, body: ServiceTokenIn) -> Status:
    """Another query token (rotate: add the new one, move clients, revoke the old)."""
    organization = context.organization(request, org)
    service = _service(request, organization, id, "service.manage")
    secret = deploy.service_token_create(
        service=service, actor=context.actor(request), name=body.name
    )
    return Status(201, {"name": body.name.strip(), "token": secret})
