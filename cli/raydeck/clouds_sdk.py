"""The SDK's clouds: `client.clouds.create(...)`, `.update`, `.verify`, `.wait_verified`,
`.delete`, and the preferred default cloud (`.default`, `.set_default`), over
/api/v1/orgs/{org}/clouds and …/default-cloud."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import WaitTimeout
from .models import Cloud

if TYPE_CHECKING:
    from .client import Client


class Clouds:
    """A client's clouds (of its organization, or `org=`)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _path(self, org: str | None, *parts: str) -> str:
        return self.client._org_path(org, "clouds", *parts)

    def list(self, *, org: str | None = None, max_items: int | None = None) -> Iterator[Cloud]:
        return self.client.iterate(self._path(org), Cloud, max_items=max_items)

    def get(self, cloud_id: str, *, org: str | None = None) -> Cloud:
        return Cloud.from_api(self.client.request("GET", self._path(org, cloud_id)))

    def create(
        self,
        kind: str,
        name: str,
        *,
        org: str | None = None,
        idempotency_key: str | None = None,
        **settings: Any,
    ) -> Cloud:
        """`settings`: what the kind of cloud has (region, log_location, aws_role_arn,
        gcp_project_id, launch_access, projects…; the API's contract lists them)."""
        body = {"kind": kind, "name": name, **settings}
        return self.client._create(self._path(org), Cloud, body, idempotency_key)

    def update(self, cloud_id: str, *, org: str | None = None, **changes: Any) -> Cloud:
        """Change only the fields given; changing how Raydeck reaches it verifies it again."""
        return Cloud.from_api(self.client.request("PATCH", self._path(org, cloud_id), body=changes))

    def verify(self, cloud_id: str, *, org: str | None = None) -> Cloud:
        """Run the checks again; follow with `wait_verified`."""
        return Cloud.from_api(self.client.request("POST", self._path(org, cloud_id, "verify")))

    def wait_verified(
        self, cloud_id: str, *, timeout: float = 300, every: float = 1.0, org: str | None = None
    ) -> Cloud:
        """Poll until the cloud is no longer verifying; its `status` says how it went
        (active or error) and `verification` has each check."""
        deadline = time.monotonic() + timeout
        while True:
            cloud = self.get(cloud_id, org=org)
            if cloud.status != "verifying":
                return cloud
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"The cloud {cloud.name} is still being verified.")
            time.sleep(every)

    def delete(self, cloud_id: str, *, org: str | None = None) -> None:
        self.client.request("DELETE", self._path(org, cloud_id))

    def _default_path(self, org: str | None, project: str | None) -> str:
        if project:
            return self.client._org_path(org, "projects", project, "default-cloud")
        return self.client._org_path(org, "default-cloud")

    def default(self, *, project: str | None = None, org: str | None = None) -> str | None:
        """The id of the preferred default cloud of the organization (or of `project`,
        its own preference only), or None."""
        answer = self.client.request("GET", self._default_path(org, project))
        return answer.get("cloud")

    def set_default(
        self, cloud_id: str | None, *, project: str | None = None, org: str | None = None
    ) -> str | None:
        """Prefer `cloud_id` when a request names no cloud; None removes the preference."""
        answer = self.client.request(
            "PUT", self._default_path(org, project), body={"cloud": cloud_id}
        )
        return answer.get("cloud")
