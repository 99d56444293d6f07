"""Reads of the clusters app for the console and the API: each takes the viewer (or an
object the viewer already reached through `visible_to`, or the API's token) and returns
a scoped queryset or list, or the API's page of clusters."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.urls import reverse
from django.utils import timezone

from accounts import api_context as context
from accounts.models import Organization, Project, User
from accounts.permissions import (
    ORG_ROLE_PERMISSIONS,
    PROJECT_ROLE_PERMISSIONS,
    READ_ONLY_ORG_ROLES,
    has_perm,
    token_require,
)
from accounts.tokens import TokenIdentity
from clouds.choices import CloudKind, CloudState, LaunchAccess
from clouds.models import Cloud
from clouds.providers.registry import traits_for
from clouds.selectors import preferred_cloud
from kit.api.errors import invalid
from kit.keyset import PageRequest, compiled_keyset_page
from kit.statements import Param, StatementCache

from . import live
from .choices import FINAL_CLUSTER_STATES, LIVE_NODE_STATES, ClusterState, NodeState
from .models import (
    VERSIONED_FIELDS,
    Cluster,
    ClusterEvent,
    ComputeConfig,
    ComputeConfigVersion,
    ContainerImage,
    ImageBuild,
    Node,
    filled_worker_groups,
)

EVENT_LIMIT = 100
NODE_LIMIT = 200
# Never needed by a page (and the tokens' hashes must never reach one).
NODE_PAGE_DEFER = ("log_tail", "bootstrap_token_hash", "credential_hash")


# --- Lists -----------------------------------------------------------------------------


def cluster_list(
    *,
    organization: Organization,
    viewer: User,
    project: str = "",
    state: str = "",
    cloud: int | None = None,
    query: str = "",
) -> QuerySet[Cluster]:
    """The clusters of the organization the viewer may see, newest first, filtered, with
    their live node count: one query per page whatever the number of rows."""
    clusters = Cluster.objects.visible_to(viewer, organization)
    if project:
        clusters = clusters.filter(project__slug=project)
    if state:
        clusters = clusters.filter(state=state)
    if cloud is not None:
        clusters = clusters.filter(cloud_id=cloud)
    if query:
        clusters = clusters.filter(name__icontains=query)
    return (
        clusters.select_related("project", "cloud")
        .annotate(node_count=Count("nodes", filter=Q(nodes__state__in=LIVE_NODE_STATES)))
        .order_by("-created_at", "-pk")
    )


def clusters_running_now(
    *, organization: Organization, viewer: User, limit: int = 10
) -> list[Cluster]:
    """The viewer's clusters that are not terminated or failed, newest first: the
    overview's "running now"."""
    live = cluster_list(organization=organization, viewer=viewer).exclude(
        state__in=list(FINAL_CLUSTER_STATES)
    )
    return list(live[:limit])


def recent_cluster_failures(
    *, organization: Organization, viewer: User, days: int = 7, limit: int = 5
) -> list[Cluster]:
    """The viewer's clusters that failed in the last `days`, latest failure first."""
    since = timezone.now() - timedelta(days=days)
    failed = Cluster.objects.visible_to(viewer, organization).filter(
        state=ClusterState.FAILED, state_changed_at__gte=since
    )
    return list(failed.select_related("project").order_by("-state_changed_at")[:limit])


def first_steps_done(*, organization: Organization, viewer: User) -> dict[str, bool]:
    """Which of a new organization's first steps are done: a verified cloud, a project,
    a cluster (counted over the organization: the steps are the organization's)."""
    return {
        "cloud": Cloud.objects.filter(organization=organization, state=CloudState.ACTIVE).exists(),
        "project": Project.objects.filter(organization=organization).exists(),
        "cluster": Cluster.objects.filter(organization=organization).exists(),
    }


def cluster_filter_choices(
    *, organization: Organization, viewer: User
) -> tuple[list[Project], list[Cloud]]:
    """The projects and clouds the filter box offers (two queries)."""
    projects = list(Project.objects.visible_to(viewer, organization).order_by("name", "pk"))
    clouds = list(Cloud.objects.visible_to(viewer).filter(organization=organization))
    return projects, clouds


# --- The API's cluster list -------------------------------------------------------------


def cluster_rows(clusters: QuerySet[Cluster]) -> Any:
    """Only what `cluster_out` shows, as dicts: lists build no model instances (the list
    is the API's busiest call)."""
    return clusters.values(
        "pk",
        "uuid",
        "name",
        "cloud_id",
        "image_id",
        "desired_state",
        "state",
        "state_reason",
        "head_address",
        "created_at",
        "started_at",
        "terminated_at",
        project_slug=F("project__slug"),
        cloud_name=F("cloud__name"),
        image_name=F("image__name"),
        config_name=F("compute_config__config__name"),
        config_id=F("compute_config__config_id"),
        config_number=F("compute_config__number"),
        creator=F("created_by__email"),
    )


class ClusterUrls:
    """Console links of one organization's clusters, reversed once per request."""

    def __init__(self, org: Organization) -> None:
        marker = 999_999_999
        url = context.console_url(reverse("cluster_detail", args=[org.slug, marker]))
        self.before, self.after = url.split(str(marker))

    def __call__(self, pk: int) -> str:
        return f"{self.before}{pk}{self.after}"


def cluster_out(row: dict[str, Any], urls: ClusterUrls) -> dict[str, Any]:
    return {
        "id": str(row["uuid"]),
        "name": row["name"],
        "project": row["project_slug"],
        "cloud": str(row["cloud_id"]),
        "cloud_name": row["cloud_name"],
        "compute_config": str(row["config_id"]),
        "compute_config_name": row["config_name"],
        "compute_config_version": row["config_number"],
        "image": str(row["image_id"]),
        "image_name": row["image_name"],
        "desired_state": row["desired_state"],
        "state": row["state"],
        "state_reason": row["state_reason"],
        "head_address": row["head_address"],
        "created_by": row["creator"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "terminated_at": row["terminated_at"],
        "url": urls(row["pk"]),
    }


_cluster_lists = StatementCache()


def cluster_page(
    identity: TokenIdentity,
    org: str,
    page: PageRequest,
    *,
    project: str = "",
    state: str | None = None,
    cloud: str = "",
) -> dict[str, Any]:
    """A page of the clusters the token sees, newest first, as the API shows them
    (`cluster_out`), filtered by a project's slug, one observed state and a cloud's id.
    The API's busiest call: its query is compiled once per principal, role and filters
    (kit/statements.py), and console/api/fast.py serves it without the rest of
    Django; the ninja endpoint calls it too."""
    organization = context.organization_of(identity, org)
    token_require(identity, "project.list", organization)
    filters: dict[str, Any] = {}
    if cloud:
        filters["cloud"] = context.int_id(cloud)
        if not filters["cloud"]:
            raise invalid("cloud", "A cloud id is a number.")
    if project:
        filters["project"] = project
    if state:
        filters["state"] = ClusterState(state).value
    principal: Any = identity.principal  # a User or a ServiceAccount: visible_to takes both

    def build() -> QuerySet:
        clusters = Cluster.objects.visible_to(principal, organization)
        if "project" in filters:
            clusters = clusters.filter(project__slug=Param("project"))
        if "state" in filters:
            clusters = clusters.filter(state=Param("state"))
        if "cloud" in filters:
            clusters = clusters.filter(cloud_id=Param("cloud"))
        return cluster_rows(clusters)

    # Everything `build` reads besides the Params: visible_to's shape follows the
    # principal and its role in the organization.
    key = (
        organization.pk,
        type(principal).__name__,
        principal.pk,
        principal.org_role(organization),
        tuple(sorted(filters)),
    )
    items, cursor = compiled_keyset_page(
        _cluster_lists, key, build, Cluster, page, ["-created_at", "-pk"], **filters
    )
    urls = ClusterUrls(organization)
    return {"items": [cluster_out(row, urls) for row in items], "next_cursor": cursor}


# --- The create form's choices -----------------------------------------------------------


def projects_granting(*, organization: Organization, viewer: User, perm: str) -> QuerySet[Project]:
    """The projects where the viewer holds the project permission `perm`: the same rule
    as `has_perm(viewer, perm, project)`, as one query instead of one per project."""
    projects = Project.objects.visible_to(viewer, organization)
    role = viewer.org_role(organization)
    if role is None or role in READ_ONLY_ORG_ROLES:
        return projects.none()
    if perm in ORG_ROLE_PERMISSIONS[role]:
        return projects
    roles = [r for r, perms in PROJECT_ROLE_PERMISSIONS.items() if perm in perms]
    return projects.filter(memberships__user=viewer, memberships__role__in=roles).distinct()


def first_project_missing(*, organization: Organization, viewer: User) -> bool:
    """The organization has no project yet and the viewer may create one: what stands
    between them and a cluster is a project, not their role."""
    return not Project.objects.filter(organization=organization).exists() and has_perm(
        viewer, "project.create", organization
    )


def projects_for_cluster_create(*, organization: Organization, viewer: User) -> QuerySet[Project]:
    """The projects where the viewer may create clusters."""
    return projects_granting(organization=organization, viewer=viewer, perm="cluster.create")


def clouds_for_cluster_create(
    *, organization: Organization, viewer: User, projects: QuerySet[Project]
) -> QuerySet[Cloud]:
    """Verified clouds of the organization open to at least one of `projects`. The pair
    (project, cloud) is checked again by the form and by `cluster_create`."""
    return (
        Cloud.objects.visible_to(viewer)
        .filter(organization=organization, state=CloudState.ACTIVE)
        .filter(Q(launch_access=LaunchAccess.ALL) | Q(projects__in=projects.values("pk")))
        .distinct()
        .order_by("name", "pk")
    )


def cloud_for_create(
    *,
    project: Project,
    viewer: User,
    compute_config: ComputeConfigVersion | None = None,
) -> Cloud | None:
    """The one rule for the cloud of a request that names none (a cluster, a job, a
    workspace, a working directory; console, API, CLI and SDK): the compute config's own
    cloud wins, then the project's preferred cloud, then the organization's, then the
    only verified cloud the project may use. None: nothing to choose; the caller asks.
    The choice is checked like any other (`checked_choice`): an unverified preferred
    cloud is refused with its reason rather than silently replaced."""
    if compute_config is not None:
        return compute_config.cloud
    preferred = preferred_cloud(project=project)
    if preferred is not None:
        return preferred
    usable = list(
        clouds_for_cluster_create(
            organization=project.organization,
            viewer=viewer,
            projects=Project.objects.filter(pk=project.pk),
        )[:2]
    )
    return usable[0] if len(usable) == 1 else None


def compute_configs_for_cluster_create(
    *, organization: Organization, viewer: User, cloud: Cloud | None = None
) -> QuerySet[ComputeConfigVersion]:
    """The latest version of each compute config the viewer sees, on `cloud` if given."""
    configs = ComputeConfig.objects.visible_to(viewer, organization)
    latest = ComputeConfigVersion.objects.filter(config=OuterRef("pk")).order_by("-number")
    latest_ids = configs.annotate(latest_id=Subquery(latest.values("pk")[:1])).values("latest_id")
    versions = ComputeConfigVersion.objects.filter(
        organization=organization, pk__in=latest_ids
    ).select_related("config", "cloud")
    if cloud is not None:
        versions = versions.filter(cloud=cloud)
    return versions.order_by("config__name", "pk")


def images_for_cluster_create(
    *, organization: Organization, cloud: Cloud | None = None
) -> QuerySet[ContainerImage]:
    """The organization's images and the built-in ones that `cloud` runs: container images,
    or (the local cloud) Python environments."""
    images = ContainerImage.objects.available().filter(
        Q(organization=organization) | Q(organization=None)
    )
    if cloud is not None:
        images = images.filter(Q(cloud=None) | Q(cloud=cloud))  # built ones: on their cloud
        if traits_for(cloud.kind).runs_containers:
            images = images.exclude(image_uri="")
        else:
            images = images.filter(image_uri="")
    return images.order_by("name", "pk")


# --- The image pages ------------------------------------------------------------------------


def image_list(*, organization: Organization, viewer: User) -> QuerySet[ContainerImage]:
    """The images the viewer may choose: the organization's own, then the built-in ones,
    each by name, with how many of the organization's clusters that are not terminated
    or failed use it (never counting another organization's, on a built-in image)."""
    live = Q(clusters__organization=organization) & ~Q(
        clusters__state__in=list(FINAL_CLUSTER_STATES)
    )
    return (
        ContainerImage.objects.visible_to(viewer, organization)
        .annotate(
            live_clusters=Count("clusters", filter=live),
            built_in_last=Case(
                When(organization=None, then=Value(1)),
                default=Value(0),
                output_field=IntegerField(),
            ),
        )
        .order_by("built_in_last", "name", "pk")
    )


# --- The cluster page ----------------------------------------------------------------------


@dataclass
class NodeRow:
    """A node as the cluster page shows it: the row, its latest heartbeat and usage (the
    cache knows them within seconds, the row within a minute) as numbers."""

    node: Node
    last_seen: datetime | None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpus: list[float | None] = field(default_factory=list)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)


@dataclass
class Usage:
    """The cluster's use of what its live nodes have. Percentages are of the nodes that
    reported; `silent` counts the live nodes that have not (yet)."""

    nodes: int = 0
    silent: int = 0
    cpus: float = 0
    cpus_reporting: float = 0
    cpus_used: float = 0
    memory_mb: int = 0
    memory_reporting_mb: int = 0
    memory_used_mb: float = 0
    gpus: int = 0
    gpu_percent: float | None = None

    @property
    def cpu_percent(self) -> float | None:
        if not self.cpus_reporting:
            return None
        return self.cpus_used / self.cpus_reporting * 100

    @property
    def memory_percent(self) -> float | None:
        if not self.memory_reporting_mb:
            return None
        return self.memory_used_mb / self.memory_reporting_mb * 100


def _percent(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return max(0.0, min(100.0, float(value)))


def _gpu_percents(value: Any, resources: dict[str, Any]) -> list[float | None]:
    """`usage["gpus"]` is a list of per-GPU figures ({"utilization_percent": …} or plain
    numbers) or a count; without it, the GPUs Ray reports, use unknown."""
    if isinstance(value, list):
        result = []
        for gpu in value:
            if isinstance(gpu, dict):
                gpu = gpu.get("utilization_percent", gpu.get("percent"))
            result.append(_percent(gpu))
        return result
    count = value if isinstance(value, int) and not isinstance(value, bool) else None
    if count is None:
        total = resources.get("resources_total") if isinstance(resources, dict) else None
        gpus = total.get("GPU") if isinstance(total, dict) else None
        count = int(gpus) if isinstance(gpus, (int, float)) else 0
    return [None] * max(0, min(count, 64))


def node_rows(cluster: Cluster, limit: int = NODE_LIMIT) -> list[NodeRow]:
    """Live nodes first (head, then workers by group), then the latest gone ones. One
    query and one cache read, however many nodes there are."""
    nodes = list(
        cluster.nodes.defer(*NODE_PAGE_DEFER)
        .annotate(
            is_gone=Case(
                When(state__in=LIVE_NODE_STATES, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("is_gone", "role", "group", "-created_at")[:limit]
    )
    cached = live.liveness([n.pk for n in nodes])
    rows = []
    for node in nodes:
        seen, usage = node.last_heartbeat_at, node.usage if isinstance(node.usage, dict) else {}
        moment, latest_usage = cached.get(node.pk, (None, None))
        if moment is not None and (seen is None or moment >= seen):
            seen = moment
            usage = latest_usage if latest_usage is not None else usage
        alive = node.state in LIVE_NODE_STATES
        rows.append(
            NodeRow(
                node=node,
                last_seen=seen,
                cpu_percent=_percent(usage.get("cpu_percent")) if alive else None,
                memory_percent=_percent(usage.get("memory_percent")) if alive else None,
                gpus=_gpu_percents(usage.get("gpus"), node.resources) if alive else [],
            )
        )
    return rows


def cluster_usage(rows: list[NodeRow]) -> Usage:
    """Totals over the live nodes: CPUs and memory weighted by each node's size."""
    usage = Usage()
    gpu_figures: list[float] = []
    for row in rows:
        node = row.node
        if node.state not in LIVE_NODE_STATES:
            continue
        usage.nodes += 1
        usage.cpus += node.cpus
        usage.memory_mb += node.memory_mb
        usage.gpus += row.gpu_count
        if row.cpu_percent is None and row.memory_percent is None:
            usage.silent += 1
        if row.cpu_percent is not None:
            usage.cpus_reporting += node.cpus
            usage.cpus_used += node.cpus * row.cpu_percent / 100
        if row.memory_percent is not None:
            usage.memory_reporting_mb += node.memory_mb
            usage.memory_used_mb += node.memory_mb * row.memory_percent / 100
        gpu_figures += [g for g in row.gpus if g is not None]
    if gpu_figures:
        usage.gpu_percent = sum(gpu_figures) / len(gpu_figures)
    return usage


def cluster_events(cluster: Cluster, limit: int = EVENT_LIMIT) -> list[ClusterEvent]:
    """The latest `limit` events, oldest first (one query, with their nodes)."""
    events = list(
        cluster.events.select_related("node")
        .defer(*(f"node__{name}" for name in (*NODE_PAGE_DEFER, "usage", "resources")))
        .order_by("-created_at", "-pk")[:limit]
    )
    events.reverse()
    return events


def cluster_event_count(cluster: Cluster) -> int:
    return cluster.events.count()


# --- The compute config pages ----------------------------------------------------------------


@dataclass
class ConfigRow:
    """A compute config as its list shows it: the config and its latest version."""

    config: ComputeConfig
    latest: ComputeConfigVersion | None


def may_manage_compute_configs(*, organization: Organization, viewer: User) -> bool:
    """Whether the viewer may create a compute config anywhere: organization-wide, or in
    at least one project."""
    return has_perm(viewer, "compute_config.manage", organization) or (
        projects_granting(
            organization=organization, viewer=viewer, perm="compute_config.manage"
        ).exists()
    )


def compute_config_list(*, organization: Organization, viewer: User) -> QuerySet[ComputeConfig]:
    """The compute configs the viewer sees, by name, each with its latest version's id."""
    latest = ComputeConfigVersion.objects.filter(config=OuterRef("pk")).order_by("-number")
    return (
        ComputeConfig.objects.visible_to(viewer, organization)
        .select_related("project")
        .annotate(latest_id=Subquery(latest.values("pk")[:1]))
        .order_by("name", "pk")
    )


def config_rows(configs: Iterable[ComputeConfig]) -> list[ConfigRow]:
    """A page of `compute_config_list` with the latest versions (one more query)."""
    configs = list(configs)
    ids = [c.latest_id for c in configs if c.latest_id]  # type: ignore[attr-defined]
    versions = ComputeConfigVersion.objects.select_related("cloud").in_bulk(ids)
    return [ConfigRow(c, versions.get(c.latest_id)) for c in configs]  # type: ignore[attr-defined]


def compute_config_versions(config: ComputeConfig) -> QuerySet[ComputeConfigVersion]:
    return config.versions.select_related("cloud", "created_by").order_by("-number")


def clusters_using_config(
    *, config: ComputeConfig, organization: Organization, viewer: User
) -> QuerySet[Cluster]:
    """The clusters the viewer sees that were created from any version of `config`."""
    return (
        Cluster.objects.visible_to(viewer, organization)
        .filter(compute_config__config=config)
        .select_related("project", "compute_config")
        .order_by("-created_at", "-pk")
    )


@dataclass
class VersionRow:
    """A version as the config's history shows it, with what it changed."""

    version: ComputeConfigVersion
    changes: list[str]


SETTING_LABELS = {
    "cloud": "Cloud",
    "region": "Region",
    "zone": "Zone",
    "head_instance_type": "Head instance type",
    "head_cpus": "Head CPUs",
    "head_memory_mb": "Head memory (MB)",
    "idle_timeout_minutes": "Idle timeout (minutes)",
    "max_uptime_minutes": "Max uptime (minutes)",
}
GROUP_SETTING_LABELS = {
    "instance_type": "instance type",
    "cpus": "CPUs",
    "memory_mb": "memory (MB)",
    "gpus": "GPUs",
    "min": "min",
    "max": "max",
    "spot": "spot",
    "downscale_delay_seconds": "downscale delay (s)",
}


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def version_changes(before: ComputeConfigVersion, after: ComputeConfigVersion) -> list[str]:
    """What `after` changed of `before`, one line per setting or worker group."""
    changes = []
    for name in VERSIONED_FIELDS:
        if name == "worker_groups":
            continue
        old, new = getattr(before, name), getattr(after, name)
        if name == "cloud":
            old, new = (before.cloud.name, after.cloud.name) if old.pk != new.pk else (0, 0)
        if old != new:
            changes.append(f"{SETTING_LABELS[name]}: {_shown(old)} → {_shown(new)}")
    old_groups = {g["name"]: g for g in filled_worker_groups(before.worker_groups)}
    new_groups = {g["name"]: g for g in filled_worker_groups(after.worker_groups)}
    for name, group in new_groups.items():
        if name not in old_groups:
            changes.append(f"Worker group {name} added")
            continue
        diffs = [
            f"{label} {_shown(old_groups[name][key])} → {_shown(group[key])}"
            for key, label in GROUP_SETTING_LABELS.items()
            if old_groups[name][key] != group[key]
        ]
        if diffs:
            changes.append(f"Worker group {name}: {', '.join(diffs)}")
    changes += [f"Worker group {name} removed" for name in old_groups if name not in new_groups]
    return changes


def version_rows(
    config: ComputeConfig, versions: Iterable[ComputeConfigVersion]
) -> list[VersionRow]:
    """A page of `compute_config_versions`, each with what it changed of the one before
    (fetched in one query when not on the page too)."""
    shown = {v.number: v for v in versions}
    missing = {n - 1 for n in shown} - set(shown) - {0}
    earlier = config.versions.select_related("cloud").filter(number__in=missing)
    every = {v.number: v for v in earlier} | shown
    rows = []
    for number, version in shown.items():
        before = every.get(number - 1)
        rows.append(VersionRow(version, version_changes(before, version) if before else []))
    return rows


# --- Image builds ----------------------------------------------------------------------------


def image_builds(*, organization: Organization, viewer: User) -> QuerySet[ImageBuild]:
    """The organization's image builds, newest first, to its members."""
    return (
        ImageBuild.objects.visible_to(viewer, organization)
        .select_related("cloud", "image", "created_by")
        .order_by("-created_at", "-pk")
    )


def clouds_that_build(*, organization: Organization, viewer: User) -> QuerySet[Cloud]:
    """The organization's clouds whose kind builds images, for the build form."""
    kinds = [kind for kind in CloudKind.values if traits_for(kind).builds_images]
    return Cloud.objects.visible_to(viewer).filter(organization=organization, kind__in=kinds)


# --- A node's log ----------------------------------------------------------------------------

# The log files a node's agent labels its lines with ("[raylet.out] …", see LogBuffer in
# agent/raydeck_agent/logs.py), grouped as a person looks for them.
LOG_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "agent": ("Agent", ("agent",)),
    "boot": ("Boot (ray start)", ("ray-start",)),
    "raylet": ("Raylet", ("raylet.out", "raylet.err")),
    "gcs": ("GCS", ("gcs_server.out", "gcs_server.err")),
    "dashboard": ("Dashboard", ("dashboard.log", "dashboard.err", "dashboard_agent.log")),
}
_LOG_LABEL = re.compile(r"^\[([\w.-]+)\] ")
# Ray's C++ lines carry a level letter ("[2026-… 12:00:00,123 E 123 456]"), Python's a word.
_LOG_ERROR = re.compile(r"^\[\S+ \S+ [EFC] \d+ \d+\]|\b(?:ERROR|CRITICAL|FATAL)\b|^Traceback ")
# Every minute or so Ray's raylet and GCS dump their internal counters: noise to most.
_STATE_DUMP = "[state-dump]"
# The raylet's alarm when its agent processes go away. A stop Raydeck asked for ends them
# too, so after one it is expected, not an out-of-memory kill.
_AGENT_GONE = re.compile(
    r"Ray agent failed|fate[ -]shares with|version of `grpcio`|agent failed to start|"
    r"agent is killed by the OS"
)
_STOPPED_ON_PURPOSE = frozenset({NodeState.TERMINATING, NodeState.TERMINATED})


@dataclass(frozen=True)
class LogLine:
    text: str  # as stored, with its file's label
    error: bool = False
    expected: bool = False  # an alarm Ray prints after a stop Raydeck asked for


@dataclass
class NodeLog:
    lines: list[LogLine]
    total: int  # before filtering
    hidden_dumps: int  # state-dump lines left out
    stop_explained: bool  # the raylet's "agent is killed by the OS" alarm is in, and expected


def node_log(node: Node, *, source: str = "", query: str = "", dumps: bool = False) -> NodeLog:
    """The lines of the node's log tail (as its heartbeats stored them) from the files of
    LOG_SOURCES[source] (any, when blank) containing `query` (any case); Ray's periodic
    state dumps only with `dumps`."""
    files = LOG_SOURCES[source][1] if source in LOG_SOURCES else None
    stopped = node.state in _STOPPED_ON_PURPOSE
    needle = query.casefold()
    all_lines = node.log_tail.splitlines()
    lines: list[LogLine] = []
    hidden_dumps = 0
    stop_explained = False
    for text in all_lines:
        label = _LOG_LABEL.match(text)
        if files is not None and (label is None or label.group(1) not in files):
            continue
        if needle and needle not in text.casefold():
            continue
        if _STATE_DUMP in text and not dumps:
            hidden_dumps += 1
            continue
        body = text[label.end() :] if label else text
        if label and label.group(1).startswith("raylet") and _AGENT_GONE.search(body):
            stop_explained = stop_explained or stopped
            lines.append(LogLine(text, error=not stopped, expected=stopped))
        else:
            lines.append(LogLine(text, error=bool(_LOG_ERROR.search(body))))
    return NodeLog(lines, len(all_lines), hidden_dumps, stop_explained)
