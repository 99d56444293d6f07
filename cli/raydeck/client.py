"""`raydeck.Client`: every operation of the JSON API (/api/v1), typed.

    client = raydeck.Client()                     # environment, then the config file
    client = raydeck.Client("https://rd.example.com", "rdk_...", org="acme")

Methods that act inside an organization take `org=`; without it the client's default
(RAYDECK_ORG, else the organization `raydeck login` chose) is used. `list_*` methods
return iterators that fetch the next page (`next_cursor`) only when needed. Creates
send an Idempotency-Key (a fresh one unless you pass yours), kept across retries.
"""

from __future__ import annotations

import dataclasses
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from . import config, trust
from .clouds_sdk import Clouds
from .errors import ClusterFailed, ConfigError, Conflict, WaitTimeout
from .image_builds import ImageBuildMethods
from .jobs_sdk import Jobs
from .models import (
    FINAL_CLUSTER_STATES,
    Address,
    AuditEvent,
    Cloud,
    Cluster,
    ClusterEvent,
    ComputeConfig,
    Image,
    Logs,
    Me,
    Member,
    Node,
    Organization,
    Project,
    Resource,
    Token,
)
from .schedules_sdk import Schedules
from .services_sdk import Services
from .transport import Transport

R = TypeVar("R", bound=Resource)
T = TypeVar("T")
API = "/api/v1"
PAGE_SIZE = 100


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its items and the cursor of the next page (None at the end)."""

    items: list[T]
    next_cursor: str | None


def _segment(value: str) -> str:
    return quote(str(value), safe="")


class Client(ImageBuildMethods):
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        org: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        config_path: Path | None = None,
    ) -> None:
        settings = config.resolve(url, token, org, path=config_path)
        self.url = settings.url
        self.org = settings.org
        self.transport = Transport(settings.url, settings.token, timeout=timeout, retries=retries)

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, org={self.org!r})"

    @property
    def clouds(self) -> Clouds:
        """Clouds: create, update, verify, delete; the preferred default (clouds_sdk.py)."""
        return Clouds(self)

    @property
    def jobs(self) -> Jobs:
        """Jobs: submit, follow, stop (jobs_sdk.py)."""
        return Jobs(self)

    @property
    def schedules(self) -> Schedules:
        """Job schedules: a job submitted at cron times (schedules_sdk.py)."""
        return Schedules(self)

    @property
    def services(self) -> Services:
        """Services: deploy, roll out, roll back (services_sdk.py)."""
        return Services(self)

    # --- plumbing ------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any API call; `path` is below /api/v1 (e.g. "/me")."""
        return self.transport.request(method, API + path, **kwargs)

    def _org_path(self, org: str | None, *parts: str) -> str:
        slug = org or self.org
        if not slug:
            raise ConfigError(
                "No organization chosen: pass --org / org=, set RAYDECK_ORG, or sign in "
                "with `raydeck login`."
            )
        return "/orgs/" + "/".join(_segment(p) for p in (slug, *parts))

    def page(
        self,
        path: str,
        model: type[R],
        *,
        params: Mapping[str, Any] | None = None,
        cursor: str | None = None,
        limit: int = PAGE_SIZE,
    ) -> Page[R]:
        body = self.request(
            "GET", path, params={**(params or {}), "cursor": cursor, "limit": limit}
        )
        items = [model.from_api(item) for item in body.get("items", [])]
        return Page(items=items, next_cursor=body.get("next_cursor") or None)

    def iterate(
        self,
        path: str,
        model: type[R],
        *,
        params: Mapping[str, Any] | None = None,
        max_items: int | None = None,
    ) -> Iterator[R]:
        """Every item of a list, page after page, stopping after `max_items` if given."""
        cursor: str | None = None
        seen = 0
        while True:
            size = PAGE_SIZE if max_items is None else max(1, min(PAGE_SIZE, max_items - seen))
            page = self.page(path, model, params=params, cursor=cursor, limit=size)
            for item in page.items:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield item
            if not page.next_cursor or (max_items is not None and seen >= max_items):
                return
            cursor = page.next_cursor

    def _create(
        self, path: str, model: type[R], body: dict[str, Any], idempotency_key: str | None
    ) -> R:
        key = idempotency_key or str(uuid.uuid4())
        answer = self.request("POST", path, body=body, idempotency_key=key)
        return model.from_api(answer)

    # --- who am I, organizations -----------------------------------------------------

    def me(self) -> Me:
        return Me.from_api(self.request("GET", "/me"))

    def list_orgs(self, *, max_items: int | None = None) -> Iterator[Organization]:
        return self.iterate("/orgs", Organization, max_items=max_items)

    def get_org(self, org: str | None = None) -> Organization:
        return Organization.from_api(self.request("GET", self._org_path(org)))

    def list_members(self, *, org: str | None = None) -> Iterator[Member]:
        return self.iterate(self._org_path(org, "members"), Member)

    # --- projects ------------------------------------------------------------------

    def list_projects(self, *, org: str | None = None) -> Iterator[Project]:
        return self.iterate(self._org_path(org, "projects"), Project)

    def get_project(self, project: str, *, org: str | None = None) -> Project:
        return Project.from_api(self.request("GET", self._org_path(org, "projects", project)))

    def create_project(
        self,
        name: str,
        *,
        slug: str | None = None,
        description: str | None = None,
        org: str | None = None,
        idempotency_key: str | None = None,
    ) -> Project:
        body = {"name": name, "slug": slug, "description": description}
        return self._create(
            self._org_path(org, "projects"),
            Project,
            {k: v for k, v in body.items() if v is not None},
            idempotency_key,
        )

    # --- clouds, compute configs, images ---------------------------------------------

    def list_clouds(self, *, org: str | None = None) -> Iterator[Cloud]:
        return self.iterate(self._org_path(org, "clouds"), Cloud)

    def get_cloud(self, cloud_id: str, *, org: str | None = None) -> Cloud:
        return Cloud.from_api(self.request("GET", self._org_path(org, "clouds", cloud_id)))

    def list_compute_configs(
        self, *, project: str | None = None, org: str | None = None
    ) -> Iterator[ComputeConfig]:
        return self.iterate(
            self._org_path(org, "compute-configs"), ComputeConfig, params={"project": project}
        )

    def get_compute_config(self, config_id: str, *, org: str | None = None) -> ComputeConfig:
        path = self._org_path(org, "compute-configs", config_id)
        return ComputeConfig.from_api(self.request("GET", path))

    def create_compute_config(
        self,
        spec: Mapping[str, Any],
        *,
        org: str | None = None,
        idempotency_key: str | None = None,
    ) -> ComputeConfig:
        """`spec` is the body of the contract: name, cloud, head, worker_groups, ...
        (what a compute config YAML file holds)."""
        return self._create(
            self._org_path(org, "compute-configs"), ComputeConfig, dict(spec), idempotency_key
        )

    def update_compute_config(
        self, config_id: str, changes: Mapping[str, Any], *, org: str | None = None
    ) -> ComputeConfig:
        """Save `changes` (any of cloud, region, zone, head, worker_groups,
        idle_timeout_minutes, max_uptime_minutes) as the next version; the latest one
        comes back unchanged when nothing changed."""
        path = self._org_path(org, "compute-configs", config_id)
        return ComputeConfig.from_api(self.request("PATCH", path, body=dict(changes)))

    def list_images(self, *, org: str | None = None) -> Iterator[Image]:
        return self.iterate(self._org_path(org, "images"), Image)

    def get_image(self, image_id: str, *, org: str | None = None) -> Image:
        return Image.from_api(self.request("GET", self._org_path(org, "images", image_id)))

    def create_image(
        self,
        spec: Mapping[str, Any],
        *,
        org: str | None = None,
        idempotency_key: str | None = None,
    ) -> Image:
        """`spec`: name, ray_version, and image_uri (with aws_amis, gcp_image) for a
        container image, or python_executable for a local Python environment."""
        return self._create(self._org_path(org, "images"), Image, dict(spec), idempotency_key)

    def update_image(
        self, image_id: str, changes: Mapping[str, Any], *, org: str | None = None
    ) -> Image:
        path = self._org_path(org, "images", image_id)
        return Image.from_api(self.request("PATCH", path, body=dict(changes)))

    def delete_image(self, image_id: str, *, org: str | None = None) -> None:
        self.request("DELETE", self._org_path(org, "images", image_id))

    # --- clusters ------------------------------------------------------------------

    def list_clusters(
        self,
        *,
        project: str | None = None,
        state: str | None = None,
        cloud: str | None = None,
        org: str | None = None,
        max_items: int | None = None,
    ) -> Iterator[Cluster]:
        params = {"project": project, "state": state, "cloud": cloud}
        return self.iterate(
            self._org_path(org, "clusters"), Cluster, params=params, max_items=max_items
        )

    def get_cluster(self, cluster_id: str, *, org: str | None = None) -> Cluster:
        return Cluster.from_api(self.request("GET", self._org_path(org, "clusters", cluster_id)))

    def create_cluster(
        self,
        name: str,
        project: str,
        *,
        cloud: str | None = None,
        compute_config: str | None = None,
        image: str | None = None,
        org: str | None = None,
        idempotency_key: str | None = None,
    ) -> Cluster:
        """Ask for a cluster; it starts in the background (see wait_until_running).
        Cloud, compute config and image default the way the console's form does."""
        body = {
            "name": name,
            "project": project,
            "cloud": cloud,
            "compute_config": compute_config,
            "image": image,
        }
        return self._create(
            self._org_path(org, "clusters"),
            Cluster,
            {k: v for k, v in body.items() if v is not None},
            idempotency_key,
        )

    def terminate_cluster(self, cluster_id: str, *, org: str | None = None) -> Cluster:
        path = self._org_path(org, "clusters", cluster_id, "terminate")
        return Cluster.from_api(self.request("POST", path))

    def cluster_events(
        self, cluster_id: str, *, after: str | None = None, org: str | None = None
    ) -> Iterator[ClusterEvent]:
        """The cluster's lifecycle events, oldest first, only those after `after`."""
        return self.iterate(
            self._org_path(org, "clusters", cluster_id, "events"),
            ClusterEvent,
            params={"after": after},
        )

    def latest_event_id(self, cluster_id: str, *, org: str | None = None) -> str | None:
        """The id of the cluster's latest event (None without any): pass it as `after`
        to follow only what happens next."""
        latest = None
        for event in self.cluster_events(cluster_id, org=org):
            latest = event.id
        return latest

    def cluster_nodes(self, cluster_id: str, *, org: str | None = None) -> Iterator[Node]:
        return self.iterate(self._org_path(org, "clusters", cluster_id, "nodes"), Node)

    def cluster_logs(
        self,
        cluster_id: str,
        *,
        node: str | None = None,
        lines: int | None = None,
        org: str | None = None,
    ) -> Logs:
        """The latest lines of a node's log (the head's unless `node` is given)."""
        path = self._org_path(org, "clusters", cluster_id, "logs")
        return Logs.from_api(self.request("GET", path, params={"node": node, "lines": lines}))

    def cluster_address(self, cluster_id: str, *, org: str | None = None) -> Address:
        """Where `ray job submit` reaches the cluster, with a short-lived token.
        Raises Conflict while the cluster is not running."""
        path = self._org_path(org, "clusters", cluster_id, "address")
        address = Address.from_api(self.request("GET", path))
        pinned = trust.installation_ca(self.transport, address.ca_sha256)
        return dataclasses.replace(address, ca_bundle=str(pinned))

    def installation_ca(self) -> Path:
        """The file of the CA that signs this installation's cluster gateways and service
        endpoints (fetched once and pinned: raydeck/trust.py), for `curl --cacert` and
        other clients."""
        return trust.installation_ca(self.transport)

    def gateway_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this installation's cluster gateways."""
        return trust.ssl_context(self.installation_ca())

    def follow_cluster(
        self,
        cluster_id: str,
        *,
        until: Callable[[Cluster], bool],
        timeout: float = 900.0,
        poll_interval: float = 2.0,
        org: str | None = None,
        after: str | None = None,
    ) -> Iterator[ClusterEvent]:
        """Yield the cluster's events as they are recorded (those after the event id
        `after`, if given), until `until(cluster)` holds. The state is read before the
        events each round, so every event that led to the final state has been yielded
        when the iterator ends."""
        deadline = time.monotonic() + timeout
        while True:
            cluster = self.get_cluster(cluster_id, org=org)
            for event in self.cluster_events(cluster_id, after=after, org=org):
                after = event.id
                yield event
            if until(cluster):
                return
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"Cluster {cluster.name} is still {cluster.state} after {timeout:.0f} s."
                )
            time.sleep(poll_interval)

    def wait_until_running(
        self,
        cluster_id: str,
        *,
        timeout: float = 900.0,
        poll_interval: float = 2.0,
        org: str | None = None,
    ) -> Iterator[ClusterEvent]:
        """Yield lifecycle events as they happen until the cluster runs. Raises
        ClusterFailed if it fails or is terminated instead, WaitTimeout after `timeout`.

            for event in client.wait_until_running(cluster.id):
                print(event.step, event.message)
        """

        def running(cluster: Cluster) -> bool:
            if cluster.state == "running":
                return True
            if cluster.state in FINAL_CLUSTER_STATES or cluster.desired_state == "terminated":
                reason = f": {cluster.state_reason}" if cluster.state_reason else ""
                raise ClusterFailed(
                    f"Cluster {cluster.name} is {cluster.state}, not running{reason}",
                    cluster=cluster,
                )
            return False

        return self.follow_cluster(
            cluster_id, until=running, timeout=timeout, poll_interval=poll_interval, org=org
        )

    def wait_until_terminated(
        self,
        cluster_id: str,
        *,
        timeout: float = 600.0,
        poll_interval: float = 2.0,
        org: str | None = None,
        after: str | None = None,
    ) -> Iterator[ClusterEvent]:
        """Yield events (after the event id `after`, if given; see `latest_event_id`)
        until the cluster is terminated; ClusterFailed if it failed."""

        def gone(cluster: Cluster) -> bool:
            if cluster.state == "failed":
                raise ClusterFailed(
                    f"Cluster {cluster.name} failed while terminating: {cluster.state_reason}",
                    cluster=cluster,
                )
            return cluster.state == "terminated"

        return self.follow_cluster(
            cluster_id,
            until=gone,
            timeout=timeout,
            poll_interval=poll_interval,
            org=org,
            after=after,
        )

    def follow_logs(
        self,
        cluster_id: str,
        *,
        node: str | None = None,
        lines: int | None = None,
        poll_interval: float = 2.0,
        org: str | None = None,
    ) -> Iterator[str]:
        """The log's latest lines, then each new line as it appears, until the cluster
        is terminated or failed (or the caller stops iterating). Before the cluster has
        a head node there is nothing to print yet, and it waits."""
        previous: list[str] = []
        while True:
            cluster = self.get_cluster(cluster_id, org=org)
            try:
                current = self.cluster_logs(cluster_id, node=node, lines=lines, org=org).lines
            except Conflict:  # no head node yet: keep waiting for one
                current = previous
            yield from new_lines(previous, current)
            previous = current
            if cluster.is_final:
                return
            time.sleep(poll_interval)

    # --- audit, tokens -------------------------------------------------------------

    def list_audit_events(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        org: str | None = None,
        max_items: int | None = None,
    ) -> Iterator[AuditEvent]:
        return self.iterate(
            self._org_path(org, "audit-events"),
            AuditEvent,
            params={"action": action, "actor": actor},
            max_items=max_items,
        )

    def list_tokens(self, *, org: str | None = None) -> Iterator[Token]:
        return self.iterate(self._org_path(org, "tokens"), Token)

    def create_token(
        self,
        name: str,
        *,
        expires_in_days: int | None = None,
        read_only: bool | None = None,
        org: str | None = None,
        idempotency_key: str | None = None,
    ) -> Token:
        body = {"name": name, "expires_in_days": expires_in_days, "read_only": read_only}
        return self._create(
            self._org_path(org, "tokens"),
            Token,
            {k: v for k, v in body.items() if v is not None},
            idempotency_key,
        )

    def delete_token(self, token_id: str, *, org: str | None = None) -> None:
        self.request("DELETE", self._org_path(org, "tokens", token_id))


def new_lines(previous: list[str], current: list[str]) -> list[str]:
    """The lines of `current` (a log's latest lines) not already in `previous` (the
    latest lines one poll earlier): what follows the longest end of `previous` that
    `current` starts with. With no overlap the log moved on by more than a whole tail,
    and all of `current` is new."""
    for start in range(max(0, len(previous) - len(current)), len(previous)):
        overlap = previous[start:]
        if current[: len(overlap)] == overlap:
            return current[len(overlap) :]
    return current
