"""JSON API of the clusters app: compute configs, images, clusters and their events,
nodes and logs. Ids in a body are resolved through `visible_to` (another
organization's object is a missing one); the same services as the console's
(clusters/services/) check the rules and write."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import F
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status

from accounts import api_context as context
from accounts.api_idempotency import idempotent
from accounts.models import Organization, Project
from clouds.models import Cloud
from kit.api.errors import ApiError, invalid, not_found
from kit.api.handlers import answers
from kit.api.pagination import PageParams, page_of
from kit.api.schema import Changes, Out
from kit.keyset import keyset_page

from . import selectors
from .access import cluster_address
from .certificates import bundle_sha256, trust_bundle_pem
from .choices import ClusterState, NodeRole
from .models import (
    DEFAULT_DOWNSCALE_DELAY_SECONDS,
    DOWNSCALE_DELAY_RANGE,
    Cluster,
    ClusterEvent,
    ComputeConfig,
    ComputeConfigVersion,
    ContainerImage,
    Node,
)
from .services.configs import compute_config_create, compute_config_update
from .services.defaults import ray_version
from .services.images import BUILT_IN, image_create, image_delete, image_update
from .services.lifecycle import cluster_create, cluster_terminate

router = Router()

# How a create body without a cloud gets one (selectors.cloud_for_create).
CLOUD_WHEN_ABSENT = (
    "The cloud's id; absent: the compute config's cloud, else the project's preferred "
    "default cloud, else the organization's, else the only verified cloud it may use."
)
DEFAULT_LOG_LINES = 200
MAX_LOG_LINES = 5000


# --- Schemas -------------------------------------------------------------------------------


class HeadSpec(Schema):
    instance_type: str = Field("", max_length=64)
    cpus: float = Field(1, gt=0, le=1024)
    memory_mb: int = Field(2048, gt=0, le=16 * 1024 * 1024)


class WorkerGroupSpec(Schema):
    name: str = Field(min_length=1, max_length=64)
    instance_type: str = Field("", max_length=64)
    cpus: float = Field(1, gt=0, le=1024)
    memory_mb: int = Field(1024, gt=0, le=16 * 1024 * 1024)
    min: int = Field(0, ge=0, le=1000)
    max: int = Field(0, ge=0, le=1000)
    gpus: float = Field(0, ge=0, le=64)
    spot: bool = False
    downscale_delay_seconds: int = Field(
        DEFAULT_DOWNSCALE_DELAY_SECONDS,
        ge=DOWNSCALE_DELAY_RANGE[0],
        le=DOWNSCALE_DELAY_RANGE[1],
        description="A worker idle this long is removed (down to min).",
    )


class ComputeConfigIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    project: str | None = Field(None, description="A project's slug; absent: organization-wide.")
    cloud: str = Field(description="The cloud's id.")
    region: str = Field("", max_length=64)
    zone: str = Field("", max_length=64)
    head: HeadSpec = HeadSpec(instance_type="", cpus=1, memory_mb=2048)
    worker_groups: list[WorkerGroupSpec] = Field(default_factory=list, max_length=20)
    idle_timeout_minutes: int = Field(60, ge=1, le=7 * 24 * 60)
    max_uptime_minutes: int | None = Field(None, ge=1, le=365 * 24 * 60)


class ComputeConfigChanges(Changes):
    """Only the fields sent change (`head` and `worker_groups` are replaced whole); a
    change that changes something saves the next version."""

    cloud: str | None = Field(None, description="The cloud's id.")
    region: str | None = Field(None, max_length=64)
    zone: str | None = Field(None, max_length=64)
    head: HeadSpec | None = None
    worker_groups: list[WorkerGroupSpec] | None = Field(None, max_length=20)
    idle_timeout_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60)
    max_uptime_minutes: int | None = Field(
        None, ge=1, le=365 * 24 * 60, description="null: no limit."
    )


class ComputeConfigOut(Out):
    id: str
    name: str
    project: str | None
    version: int
    cloud: str
    region: str
    zone: str
    head: HeadSpec
    worker_groups: list[WorkerGroupSpec]
    idle_timeout_minutes: int
    max_uptime_minutes: int | None
    created_at: datetime


class ComputeConfigFilters(PageParams):
    project: str = Field("", description="Only this project's configs (slug).")


AMIS_DESCRIPTION = (
    'AWS: the AMI nodes boot, per region ({"us-east-1": "ami-…"}); a region without one '
    "boots the installation's default. Only with an image_uri."
)


class ImageIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    image_uri: str = Field(
        "",
        max_length=300,
        description="A container image, for AWS and GCP clusters; empty for a Python "
        "environment of the local cloud (then give python_executable).",
    )
    python_executable: str = Field(
        "", max_length=300, description="Local cloud: the Python's absolute path."
    )
    ray_version: str = Field(
        default_factory=ray_version,
        min_length=1,
        max_length=32,
        description="Absent: the Ray version of Raydeck's built-in images.",
    )
    aws_amis: dict[str, str] = Field(default_factory=dict, description=AMIS_DESCRIPTION)
    gcp_image: str = Field("", max_length=300, description="GCP: a boot image or image family URL.")


class ImageChanges(Changes):
    """Only the fields sent change (null is no value: leave a field out to keep it)."""

    name: str | None = Field(None, min_length=1, max_length=100)
    image_uri: str | None = Field(None, max_length=300)
    python_executable: str | None = Field(None, max_length=300)
    ray_version: str | None = Field(None, min_length=1, max_length=32)
    aws_amis: dict[str, str] | None = Field(None, description=AMIS_DESCRIPTION)
    gcp_image: str | None = Field(None, max_length=300)


class ImageOut(Out):
    id: str
    name: str
    built_in: bool = Field(description="Raydeck's own, shared by every organization: read-only.")
    image_uri: str = Field(description="Empty for a Python environment of the local cloud.")
    python_executable: str = Field(description="Empty: Raydeck's own Python (local cloud).")
    ray_version: str
    aws_amis: dict[str, str]
    gcp_image: str
    created_at: datetime


class ClusterIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    project: str = Field(description="The project's slug.")
    cloud: str | None = Field(None, description=CLOUD_WHEN_ABSENT)
    compute_config: str | None = Field(
        None, description="A compute config's id (its latest version); absent: the default."
    )
    image: str | None = Field(None, description="An image's id; absent: Raydeck's default.")


class ClusterOut(Out):
    id: str
    name: str
    project: str
    cloud: str
    cloud_name: str
    compute_config: str
    compute_config_name: str
    compute_config_version: int
    image: str
    image_name: str
    desired_state: str
    state: str
    state_reason: str
    head_address: str
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    terminated_at: datetime | None
    url: str


class ClusterFilters(PageParams):
    project: str = Field("", description="A project's slug.")
    state: ClusterState | None = Field(None, description="One observed state.")
    cloud: str = Field("", description="A cloud's id.")


class EventOut(Out):
    id: str
    at: datetime
    level: str
    step: str
    message: str
    duration_ms: int | None
    node: str | None


class EventFilters(PageParams):
    after: int | None = Field(
        None, ge=0, description="Only events after this event id (for following a cluster)."
    )


class NodeOut(Out):
    id: str
    role: str
    group: str
    state: str
    state_reason: str
    instance_type: str
    cpus: float
    memory_mb: int
    private_address: str
    public_address: str
    resources: dict[str, Any]
    usage: dict[str, Any]
    last_heartbeat_at: datetime | None


class NodeList(Out):
    items: list[NodeOut]
    next_cursor: str | None = Field(None, description="Always null: live nodes come first.")


class LogParams(Schema):
    node: str | None = Field(None, description="A node's id; absent: the head node.")
    lines: int = Field(DEFAULT_LOG_LINES, ge=1, le=MAX_LOG_LINES)


class AddressOut(Out):
    job_address: str = Field(description="For `ray job submit --address`.")
    dashboard_url: str
    token: str = Field(description="For the cluster's gateway; at most an hour.")
    expires_at: datetime
    headers: dict[str, str] = Field(description="Send these with every request to the cluster.")
    ca_sha256: str = Field(
        description="SHA-256 of the CA bundle (GET /api/v1/ca) the gateway's certificate "
        "chains to: a pinned copy that differs is stale."
    )


class CertificateAuthorityOut(Out):
    certificate: str = Field(description="PEM: trust it to reach every cluster's gateway.")
    sha256: str = Field(description="SHA-256 of `certificate`, hex.")


class LogsOut(Out):
    node: str
    lines: list[str]


# --- Shapes --------------------------------------------------------------------------------


def config_out(config: ComputeConfig, version: ComputeConfigVersion) -> dict[str, Any]:
    return {
        "id": str(config.pk),
        "name": config.name,
        "project": config.project.slug if config.project_id else None,  # type: ignore[union-attr]
        "version": version.number,
        "cloud": str(version.cloud_id),
        "region": version.region,
        "zone": version.zone,
        "head": {
            "instance_type": version.head_instance_type,
            "cpus": version.head_cpus,
            "memory_mb": version.head_memory_mb,
        },
        "worker_groups": version.worker_groups,
        "idle_timeout_minutes": version.idle_timeout_minutes,
        "max_uptime_minutes": version.max_uptime_minutes,
        "created_at": config.created_at,
    }


def image_out(image: ContainerImage) -> dict[str, Any]:
    return {
        "id": str(image.pk),
        "name": image.name,
        "built_in": image.built_in,
        "image_uri": image.image_uri,
        "python_executable": image.python_executable,
        "ray_version": image.ray_version,
        "aws_amis": image.aws_amis if isinstance(image.aws_amis, dict) else {},
        "gcp_image": image.gcp_image,
        "created_at": image.created_at,
    }


def one_cluster_out(request: HttpRequest, org: Organization, cluster: Cluster) -> dict[str, Any]:
    row = selectors.cluster_rows(Cluster.objects.filter(pk=cluster.pk)).get()
    return selectors.cluster_out(row, selectors.ClusterUrls(org))


def _clusters(request: HttpRequest, org: Organization) -> Any:
    return Cluster.objects.visible_to(context.viewer(request), org).select_related("project")


def _cluster(request: HttpRequest, org: Organization, id: str, perm: str) -> Cluster:
    """The cluster `id` of `org` the token sees (404 otherwise), after checking `perm`."""
    cluster = context.one_or_404(_clusters(request, org), "cluster", uuid=context.uuid_id(id))
    context.require(request, perm, cluster)
    return cluster


def _visible_project(request: HttpRequest, org: Organization, slug: str) -> Project | None:
    return Project.objects.visible_to(context.viewer(request), org).filter(slug=slug).first()


# --- Compute configs and images --------------------------------------------------------------


@router.get(
    "/orgs/{org}/compute-configs",
    response=answers(page_of(ComputeConfigOut)),
    tags=["compute configs"],
)
def compute_config_list(
    request: HttpRequest, org: str, page: Query[ComputeConfigFilters]
) -> dict[str, Any]:
    """Compute configs with their latest version inlined (two queries a page)."""
    organization = context.organization(request, org)
    context.require(request, "project.list", organization)
    configs = selectors.compute_config_list(
        organization=organization, viewer=context.viewer(request)
    )
    if page.project:
        configs = configs.filter(project__slug=page.project)
    items, cursor = keyset_page(configs, page, ["name", "pk"])
    rows = selectors.config_rows(items)
    return {
        "items": [config_out(r.config, r.latest) for r in rows if r.latest is not None],
        "next_cursor": cursor,
    }


@router.post(
    "/orgs/{org}/compute-configs",
    response=answers({201: ComputeConfigOut}),
    tags=["compute configs"],
)
@decorate_view(idempotent)
def compute_config_create_endpoint(request: HttpRequest, org: str, body: ComputeConfigIn) -> Status:
    organization = context.organization(request, org)
    project = None
    if body.project:
        project = _visible_project(request, organization, body.project)
        if project is None:
            raise invalid("project", f"No project “{body.project}” here.")
    cloud = _org_cloud(request, organization, body.cloud)
    context.require(request, "compute_config.manage", project or organization)
    config = compute_config_create(
        organization=organization,
        project=project,
        actor=context.actor(request),
        name=body.name,
        cloud=cloud,
        region=body.region,
        zone=body.zone,
        head_instance_type=body.head.instance_type,
        head_cpus=body.head.cpus,
        head_memory_mb=body.head.memory_mb,
        worker_groups=[g.dict() for g in body.worker_groups],
        idle_timeout_minutes=body.idle_timeout_minutes,
        max_uptime_minutes=body.max_uptime_minutes,
    )
    return Status(201, config_out(config, config.latest))


def _org_cloud(request: HttpRequest, organization: Organization, id: str) -> Cloud:
    """The cloud a body names, of the organization in the URL (a 422 otherwise)."""
    cloud = (
        Cloud.objects.visible_to(context.viewer(request))
        .filter(organization=organization, pk=context.int_id(id))
        .first()
    )
    if cloud is None:
        raise invalid("cloud", f"No cloud with id “{id}” here.")
    return cloud


def _config(request: HttpRequest, organization: Organization, id: str) -> ComputeConfig:
    return context.one_or_404(
        ComputeConfig.objects.visible_to(context.viewer(request), organization)
        .select_related("project")
        .filter(versions__isnull=False)  # every config has its version 1
        .distinct(),
        "compute config",
        pk=context.int_id(id),
    )


@router.get(
    "/orgs/{org}/compute-configs/{id}", response=answers(ComputeConfigOut), tags=["compute configs"]
)
def compute_config_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    config = _config(request, organization, id)
    context.require(request, "project.list", organization)
    return config_out(config, config.latest)


@router.patch(
    "/orgs/{org}/compute-configs/{id}", response=answers(ComputeConfigOut), tags=["compute configs"]
)
def compute_config_update_endpoint(
    request: HttpRequest, org: str, id: str, body: ComputeConfigChanges
) -> dict[str, Any]:
    """Save the fields sent as the config's next version (the latest one stays when
    nothing changes). Clusters already created keep the version they started with."""
    organization = context.organization(request, org)
    config = _config(request, organization, id)
    context.require(request, "compute_config.manage", config)
    sent = body.dict(exclude_unset=True)
    for name, value in sent.items():
        if value is None and name != "max_uptime_minutes":
            raise invalid(name, "Leave the field out to keep its value; null is not one.")
    changes = {k: v for k, v in sent.items() if k not in ("cloud", "head")}
    if "cloud" in sent:
        changes["cloud"] = _org_cloud(request, organization, sent["cloud"])
    if body.head is not None:
        changes.update(
            head_instance_type=body.head.instance_type,
            head_cpus=body.head.cpus,
            head_memory_mb=body.head.memory_mb,
        )
    version = compute_config_update(config=config, actor=context.actor(request), **changes)
    return config_out(config, version)


@router.get("/orgs/{org}/images", response=answers(page_of(ImageOut)), tags=["images"])
def image_list(request: HttpRequest, org: str, page: Query[PageParams]) -> dict[str, Any]:
    """The organization's images and Raydeck's built-in ones."""
    organization = context.organization(request, org)
    context.require(request, "project.list", organization)
    images = selectors.images_for_cluster_create(organization=organization)
    items, cursor = keyset_page(images, page, ["name", "pk"])
    return {"items": [image_out(i) for i in items], "next_cursor": cursor}


def _image(request: HttpRequest, org: Organization, id: str) -> ContainerImage:
    """The image `id` (the organization's own or a built-in one): 404 otherwise."""
    return context.one_or_404(
        ContainerImage.objects.visible_to(context.viewer(request), org),
        "image",
        pk=context.int_id(id),
    )


def _own_image(request: HttpRequest, org: Organization, id: str) -> ContainerImage:
    """The organization's own image `id`, which the token may manage (403 for a
    built-in one)."""
    image = _image(request, org, id)
    if image.built_in:
        raise ApiError(403, BUILT_IN)
    context.require(request, "image.manage", image)
    return image


@router.post("/orgs/{org}/images", response=answers({201: ImageOut}), tags=["images"])
@decorate_view(idempotent)
def image_create_endpoint(request: HttpRequest, org: str, body: ImageIn) -> Status:
    """A container image (image_uri, optionally aws_amis and gcp_image for the machines
    under it) or a local Python environment (python_executable). Needs image.manage
    (owners and admins)."""
    organization = context.organization(request, org)
    context.require(request, "image.manage", organization)
    image = image_create(organization=organization, actor=context.actor(request), **body.dict())
    return Status(201, image_out(image))


@router.get("/orgs/{org}/images/{id}", response=answers(ImageOut), tags=["images"])
def image_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    context.require(request, "project.list", organization)
    return image_out(_image(request, organization, id))


@router.patch("/orgs/{org}/images/{id}", response=answers(ImageOut), tags=["images"])
def image_update_endpoint(
    request: HttpRequest, org: str, id: str, body: ImageChanges
) -> dict[str, Any]:
    """Change the fields sent. While clusters that are not terminated use the image,
    only its name may change (422 otherwise)."""
    organization = context.organization(request, org)
    image = _own_image(request, organization, id)
    changes = body.dict(exclude_unset=True)
    for name, value in changes.items():
        if value is None:
            raise invalid(name, "Leave the field out to keep its value; null is not one.")
    image = image_update(image=image, actor=context.actor(request), **changes)
    return image_out(image)


@router.delete("/orgs/{org}/images/{id}", response=answers({204: None}, 409), tags=["images"])
def image_delete_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """409 conflict while clusters that are not terminated use the image. Ended
    clusters keep naming it; it is gone from everything else."""
    organization = context.organization(request, org)
    image = _own_image(request, organization, id)
    try:
        image_delete(image=image, actor=context.actor(request))
    except ValidationError as exc:
        raise ApiError(409, " ".join(exc.messages)) from exc
    return Status(204, None)


# --- Clusters --------------------------------------------------------------------------------


def choice_of(
    request: HttpRequest,
    organization: Organization,
    project: Project,
    *,
    cloud: str | None,
    compute_config: str | None,
    image: str | None,
) -> tuple[Cloud, ComputeConfigVersion | None, ContainerImage | None]:
    """The cloud, compute config and image ids of a create body (a cluster's, a job's,
    a workspace's), resolved through `visible_to` (422 on the field naming a missing
    one); without a cloud, the one rule of `selectors.cloud_for_create`."""
    version, chosen_image = config_and_image_of(
        request, organization, compute_config=compute_config, image=image
    )
    return cloud_of(request, organization, project, cloud, version), version, chosen_image


def config_and_image_of(
    request: HttpRequest,
    organization: Organization,
    *,
    compute_config: str | None,
    image: str | None,
) -> tuple[ComputeConfigVersion | None, ContainerImage | None]:
    """The compute config (its latest version) and image a body names, if any, that the
    viewer sees in the organization (a 422 on the field otherwise)."""
    viewer = context.viewer(request)
    version = None
    if compute_config is not None:
        version = (
            selectors.compute_configs_for_cluster_create(organization=organization, viewer=viewer)
            .filter(config_id=context.int_id(compute_config))
            .first()
        )
        if version is None:
            raise invalid("compute_config", f"No compute config with id “{compute_config}” here.")
    chosen_image = None
    if image is not None:
        chosen_image = (
            ContainerImage.objects.visible_to(viewer, organization)
            .filter(pk=context.int_id(image))
            .first()
        )
        if chosen_image is None:
            raise invalid("image", f"No image with id “{image}” here.")
    return version, chosen_image


def cloud_of(
    request: HttpRequest,
    organization: Organization,
    project: Project,
    cloud: str | None,
    version: ComputeConfigVersion | None,
) -> Cloud:
    """The cloud a body names, else the one `selectors.cloud_for_create` picks (a 422
    that says why when there is none)."""
    if cloud is not None:
        return _org_cloud(request, organization, cloud)
    viewer = context.viewer(request)
    found = selectors.cloud_for_create(project=project, viewer=viewer, compute_config=version)
    if found is None:
        raise invalid("cloud", no_cloud_reason(project, viewer))
    return found


def no_cloud_reason(project: Project, viewer: Any) -> str:
    """Why a request of `project` that names no cloud has none to default to."""
    usable = selectors.clouds_for_cluster_create(
        organization=project.organization,
        viewer=viewer,
        projects=Project.objects.filter(pk=project.pk),
    ).count()
    if usable:
        return (
            f"Choose a cloud: {project.name} may use {usable} verified clouds here and "
            "has no preferred default cloud."
        )
    return f"{project.name} has no verified cloud to use; add or verify one first."


@router.get("/orgs/{org}/clusters", response=answers(page_of(ClusterOut)), tags=["clusters"])
def cluster_list(request: HttpRequest, org: str, page: Query[ClusterFilters]) -> dict[str, Any]:
    """Clusters the token sees, newest first."""
    identity = context.identity(request)
    return selectors.cluster_page(
        identity, org, page, project=page.project, state=page.state, cloud=page.cloud
    )


@router.post("/orgs/{org}/clusters", response=answers({201: ClusterOut}), tags=["clusters"])
@decorate_view(idempotent)
def cluster_create_endpoint(request: HttpRequest, org: str, body: ClusterIn) -> Status:
    """Create a cluster: the request records what is wanted and the reconciler starts
    the nodes; follow `state` (or the events) until it is running."""
    organization = context.organization(request, org)
    project = _visible_project(request, organization, body.project)
    if project is None:
        raise invalid("project", f"No project “{body.project}” here.")
    context.require(request, "cluster.create", project)
    actor = context.writer(request)
    cloud, version, image = choice_of(
        request,
        organization,
        project,
        cloud=body.cloud,
        compute_config=body.compute_config,
        image=body.image,
    )
    cluster = cluster_create(
        project=project,
        actor=actor,
        name=body.name,
        cloud=cloud,
        compute_config=version,
        image=image,
    )
    return Status(201, one_cluster_out(request, organization, cluster))


@router.get("/orgs/{org}/clusters/{id}", response=answers(ClusterOut), tags=["clusters"])
def cluster_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    cluster = _cluster(request, organization, id, "project.view")
    return one_cluster_out(request, organization, cluster)


@router.post(
    "/orgs/{org}/clusters/{id}/terminate", response=answers({202: ClusterOut}), tags=["clusters"]
)
def cluster_terminate_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """Ask for the cluster to be terminated; asking again changes nothing."""
    organization = context.organization(request, org)
    cluster = _cluster(request, organization, id, "cluster.update")
    if not cluster.is_final:
        cluster_terminate(cluster=cluster, actor=context.writer(request))
    return Status(202, one_cluster_out(request, organization, cluster))


@router.get(
    "/orgs/{org}/clusters/{id}/events", response=answers(page_of(EventOut)), tags=["clusters"]
)
def cluster_event_list(
    request: HttpRequest, org: str, id: str, page: Query[EventFilters]
) -> dict[str, Any]:
    """The cluster's lifecycle steps, oldest first; `after` follows new ones."""
    organization = context.organization(request, org)
    cluster = _cluster(request, organization, id, "project.view")
    events = ClusterEvent.objects.filter(cluster=cluster).annotate(node_uuid=F("node__uuid"))
    if page.after is not None:
        events = events.filter(pk__gt=page.after)
    items, cursor = keyset_page(events, page, ["pk"])
    return {
        "items": [
            {
                "id": str(e.pk),
                "at": e.created_at,
                "level": e.level,
                "step": e.step,
                "message": e.message,
                "duration_ms": e.duration_ms,
                "node": str(e.node_uuid) if e.node_uuid else None,
            }
            for e in items
        ],
        "next_cursor": cursor,
    }


@router.get("/orgs/{org}/clusters/{id}/nodes", response=answers(NodeList), tags=["clusters"])
def cluster_node_list(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """The cluster's nodes: live ones first (head, then workers by group), then up to
    200 in all, with the latest heartbeat the control plane heard."""
    organization = context.organization(request, org)
    cluster = _cluster(request, organization, id, "project.view")
    items = []
    for row in selectors.node_rows(cluster):
        node = row.node
        items.append(
            {
                "id": str(node.uuid),
                "role": node.role,
                "group": node.group,
                "state": node.state,
                "state_reason": node.state_reason,
                "instance_type": node.instance_type,
                "cpus": node.cpus,
                "memory_mb": node.memory_mb,
                "private_address": node.private_address,
                "public_address": node.public_address,
                "resources": node.resources if isinstance(node.resources, dict) else {},
                "usage": node.usage if isinstance(node.usage, dict) else {},
                "last_heartbeat_at": row.last_seen,
            }
        )
    return {"items": items, "next_cursor": None}


@router.get("/orgs/{org}/clusters/{id}/logs", response=answers(LogsOut, 409), tags=["clusters"])
def cluster_logs(
    request: HttpRequest, org: str, id: str, params: Query[LogParams]
) -> dict[str, Any]:
    """The last lines a node's agent sent (default: the head node)."""
    organization = context.organization(request, org)
    cluster = _cluster(request, organization, id, "project.view")
    nodes = Node.objects.filter(cluster=cluster).only("uuid", "log_tail", "state", "role")
    if params.node is not None:
        node = nodes.filter(uuid=context.uuid_id(params.node)).first()
        if node is None:
            raise not_found("node")
    else:
        heads = nodes.filter(role=NodeRole.HEAD)
        node = heads.live().first() or heads.order_by("-created_at").first()
        if node is None:
            raise ApiError(
                409, "This cluster has no head node yet; try again in a moment.", code="conflict"
            )
    lines = node.log_tail.splitlines()[-params.lines :]
    return {"node": str(node.uuid), "lines": lines}


@router.get(
    "/orgs/{org}/clusters/{id}/address", response=answers(AddressOut, 409), tags=["clusters"]
)
def cluster_address_endpoint(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """Where to reach the running cluster with standard Ray tools, and a fresh token for
    its gateway (audited): `ray job submit --address <job_address> --headers
    '{"Authorization": "Bearer <token>"}' -- ...`. 409 while it is not running."""
    organization = context.organization(request, org)
    cluster = _cluster(request, organization, id, "cluster.access")
    if cluster.state != ClusterState.RUNNING:
        raise ApiError(409, f"The cluster is {cluster.state}, not running: it has no address.")
    try:
        address = cluster_address(context.actor(request), cluster)
    except ValidationError as exc:  # running, but its head has not reported a gateway yet
        raise ApiError(409, " ".join(exc.messages)) from exc
    return {
        **address,
        "headers": {"Authorization": f"Bearer {address['token']}"},
        "ca_sha256": bundle_sha256(trust_bundle_pem()),
    }


@router.get("/ca", response=CertificateAuthorityOut, auth=None, tags=["clusters"])
def certificate_authority(request: HttpRequest) -> dict[str, Any]:
    """The installation's CA bundle (public, no token needed): the gateways' certificates
    chain to it. The CLI and SDK fetch it once and pin it per installation."""
    pem = trust_bundle_pem()
    return {"certificate": pem, "sha256": bundle_sha256(pem)}
