"""The Services part of the SDK: `client.services` (a raydeck.Client's).

    deployed = client.services.deploy("echo", project="ml", serve_config={...}, cloud="3")
    deployed.token                       # the query token of a new service, shown once
    client.services.wait_for_rollout("echo")
    client.services.set_traffic("echo", canary=10)
    client.services.rollback("echo")

A service is named by its id or by its name (the live service of that name).
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NotFound, WaitTimeout
from .models import Resource

if TYPE_CHECKING:
    from .client import Client

FINAL_SERVICE_STATES = frozenset({"terminated", "failed"})


@dataclass(frozen=True)
class Service(Resource):
    id: str = ""
    name: str = ""
    project: str = ""
    state: str = ""
    state_reason: str = ""
    endpoint_url: str = ""
    current_version: int | None = None
    rollout: dict[str, Any] | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class ServiceVersion(Resource):
    number: int = 0
    state: str = ""
    state_reason: str = ""
    weight: int = 0
    applications: dict[str, Any] = field(default_factory=dict)
    cluster: str | None = None


@dataclass(frozen=True)
class Deployed:
    service: Service
    version: ServiceVersion
    token: str | None  # a new service's query token (only in this answer)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class Services:
    def __init__(self, client: Client) -> None:
        self.client = client

    def _path(self, org: str | None, *parts: str) -> str:
        return self.client._org_path(org, "services", *parts)

    def resolve(self, ref: str, *, org: str | None = None) -> str:
        """A service's id from its id or the name of a live service."""
        if _is_uuid(ref):
            return ref
        for service in self.list(name=ref, org=org):
            return service.id
        raise NotFound(f"No live service is named {ref!r}.", status=0, code="not_found")

    def list(
        self,
        *,
        project: str | None = None,
        name: str | None = None,
        include_ended: bool = False,
        org: str | None = None,
    ) -> Iterator[Service]:
        params = {"project": project, "name": name, "include_ended": include_ended or None}
        return self.client.iterate(
            self._path(org), Service, params={k: v for k, v in params.items() if v}
        )

    def get(self, ref: str, *, org: str | None = None) -> Service:
        ident = self.resolve(ref, org=org)
        return Service.from_api(self.client.request("GET", self._path(org, ident)))

    def versions(self, ref: str, *, org: str | None = None) -> builtins.list[ServiceVersion]:
        ident = self.resolve(ref, org=org)
        body = self.client.request("GET", self._path(org, ident, "versions"))
        return [ServiceVersion.from_api(v) for v in body]

    def events(self, ref: str, *, org: str | None = None) -> Iterator[Resource]:
        ident = self.resolve(ref, org=org)
        return self.client.iterate(self._path(org, ident, "events"), Resource)

    def deploy(
        self,
        name: str,
        *,
        project: str,
        serve_config: dict[str, Any],
        cloud: str | None = None,
        compute_config: str | None = None,
        image: str | None = None,
        canary_steps: builtins.list[int] | None = None,
        step_seconds: int | None = None,
        max_error_rate: float | None = None,
        max_latency_ratio: float | None = None,
        idempotency_key: str | None = None,
        org: str | None = None,
    ) -> Deployed:
        """A new service, or the next version of the live one named `name`."""
        body = {
            "name": name,
            "project": project,
            "serve_config": serve_config,
            "cloud": cloud,
            "compute_config": compute_config,
            "image": image,
            "canary_steps": canary_steps,
            "step_seconds": step_seconds,
            "max_error_rate": max_error_rate,
            "max_latency_ratio": max_latency_ratio,
        }
        answer = self.client.request(
            "POST",
            self._path(org),
            body={k: v for k, v in body.items() if v is not None},
            idempotency_key=idempotency_key or str(uuid.uuid4()),
        )
        return Deployed(
            service=Service.from_api(answer["service"]),
            version=ServiceVersion.from_api(answer["version"]),
            token=answer.get("token"),
        )

    def _act(self, ref: str, action: str, body: Any = None, org: str | None = None) -> Service:
        ident = self.resolve(ref, org=org)
        answer = self.client.request("POST", self._path(org, ident, action), body=body)
        return Service.from_api(answer)

    def set_traffic(self, ref: str, *, canary: int | None, org: str | None = None) -> Service:
        """Pin the new version at `canary` percent of the traffic (None: unpin)."""
        return self._act(ref, "traffic", {"canary": canary}, org)

    def rollback(self, ref: str, *, org: str | None = None) -> Service:
        return self._act(ref, "rollback", None, org)

    def terminate(self, ref: str, *, org: str | None = None) -> Service:
        return self._act(ref, "terminate", None, org)

    def create_token(self, ref: str, name: str, *, org: str | None = None) -> str:
        ident = self.resolve(ref, org=org)
        answer = self.client.request("POST", self._path(org, ident, "tokens"), body={"name": name})
        return str(answer["token"])

    def wait_for_rollout(
        self, ref: str, *, timeout: float = 1800, poll: float = 2.0, org: str | None = None
    ) -> Service:
        """Until no version is on its way (serving, rolled back, or ended)."""
        ident = self.resolve(ref, org=org)
        deadline = time.monotonic() + timeout
        while True:
            service = self.get(ident, org=org)
            settled = service.state in ("running", *FINAL_SERVICE_STATES)
            if settled and service.rollout is None:
                return service
            if time.monotonic() > deadline:
                raise WaitTimeout(f"{service.name} is still {service.state}.")
            time.sleep(poll)
