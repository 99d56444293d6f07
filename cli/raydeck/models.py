"""Typed views of what the API returns.

Each class lists the fields of the API contract (docs/api.md); `raw` keeps the whole
object as the server sent it, so fields the server adds later are never lost (the CLI's
JSON and YAML output print `raw`). Ids are strings whatever the server uses; times are
the server's ISO 8601 UTC strings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

CLUSTER_STATES = ("pending", "starting", "running", "terminating", "terminated", "failed")
FINAL_CLUSTER_STATES = frozenset({"terminated", "failed"})


@dataclass(frozen=True)
class Resource:
    raw: dict[str, Any] = field(repr=False, compare=False)
    # Fields holding another resource: name -> its class.
    nested: ClassVar[dict[str, type[Resource]]] = {}

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "raw":
                continue
            value = data.get(f.name)
            if value is None:
                continue  # the field's default
            if f.name in cls.nested and isinstance(value, dict):
                value = cls.nested[f.name].from_api(value)
            elif f.name == "id":
                value = str(value)
            values[f.name] = value
        return cls(raw=data, **values)


@dataclass(frozen=True)
class User(Resource):
    id: str = ""
    email: str | None = None
    name: str = ""


@dataclass(frozen=True)
class TokenInfo(Resource):
    id: str = ""
    name: str = ""
    read_only: bool | None = None
    expires_at: str | None = None


@dataclass(frozen=True)
class Organization(Resource):
    slug: str = ""
    name: str = ""
    role: str | None = None


@dataclass(frozen=True)
class Me(Resource):
    user: User | None = None
    token: TokenInfo | None = None
    organization: Organization | None = None  # the one the token acts in
    nested: ClassVar[dict[str, type[Resource]]] = {
        "user": User,
        "token": TokenInfo,
        "organization": Organization,
    }


@dataclass(frozen=True)
class Member(Resource):
    user: User | None = None
    role: str | None = None
    joined_at: str | None = None
    nested: ClassVar[dict[str, type[Resource]]] = {"user": User}


@dataclass(frozen=True)
class Project(Resource):
    slug: str = ""
    name: str = ""
    description: str | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class Cloud(Resource):
    id: str = ""
    name: str = ""
    kind: str | None = None
    status: str | None = None
    status_reason: str | None = None
    region: str | None = None
    launch_access: str | None = None
    aws_external_id: str | None = None
    identity_configured: bool | None = None
    # The latest verification: {"state", "checks": [{"name", "passed", "message"}]}.
    verification: dict[str, Any] | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class ComputeConfig(Resource):
    id: str = ""
    name: str = ""
    project: str | None = None
    version: int | None = None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    head: dict[str, Any] | None = None
    worker_groups: list[dict[str, Any]] | None = None
    idle_timeout_minutes: int | None = None
    max_uptime_minutes: int | None = None


@dataclass(frozen=True)
class Image(Resource):
    id: str = ""
    name: str = ""
    built_in: bool | None = None
    image_uri: str | None = None
    python_executable: str | None = None
    ray_version: str | None = None
    aws_amis: dict[str, str] | None = None
    gcp_image: str | None = None


@dataclass(frozen=True)
class Cluster(Resource):
    id: str = ""
    name: str = ""
    project: str | None = None
    cloud: str | None = None
    cloud_name: str | None = None
    compute_config: str | None = None
    compute_config_name: str | None = None
    compute_config_version: int | None = None
    image: str | None = None
    image_name: str | None = None
    desired_state: str | None = None
    state: str = ""
    state_reason: str | None = None
    head_address: str | None = None
    created_by: Any = None
    created_at: str | None = None
    started_at: str | None = None
    terminated_at: str | None = None
    url: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_CLUSTER_STATES


@dataclass(frozen=True)
class ClusterEvent(Resource):
    id: str = ""
    at: str | None = None
    level: str | None = None
    step: str | None = None
    message: str | None = None
    duration_ms: int | None = None
    node: str | None = None


@dataclass(frozen=True)
class Node(Resource):
    id: str = ""
    role: str | None = None
    group: str | None = None
    state: str | None = None
    private_address: str | None = None
    public_address: str | None = None
    resources: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    last_heartbeat_at: str | None = None


@dataclass(frozen=True)
class Logs(Resource):
    node: str | None = None
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Address(Resource):
    job_address: str = ""
    dashboard_url: str | None = None
    token: str | None = None
    expires_at: str | None = None
    headers: dict[str, str] | None = None
    ca_sha256: str | None = None
    # Set by Client.cluster_address: the pinned CA the gateway's certificate chains to.
    ca_bundle: str | None = None

    @property
    def auth_headers(self) -> dict[str, str]:
        """The headers Ray's job client must send (`ray job submit --headers`)."""
        if self.headers:
            return dict(self.headers)
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass(frozen=True)
class AuditEvent(Resource):
    id: str = ""
    at: str | None = None
    actor: Any = None
    action: str | None = None
    target: Any = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Token(Resource):
    id: str = ""
    name: str = ""
    owner: Any = None
    read_only: bool | None = None
    expires_at: str | None = None
    last_used_at: str | None = None
    last_used_ip: str | None = None
    created_at: str | None = None
    secret: str | None = None  # only in the answer to a create
