"""The SDK's workspaces: `client.workspaces.create(...)`, `.update`, `.start`, `.stop`, `.wait`,
`.ssh_access`, `.tunnel`, `.create_job`… over /api/v1/orgs/{org}/workspaces.

`tunnel` carries an SSH connection's bytes between two file descriptors (the ssh
client's ProxyCommand: stdin and stdout) and the gateway's /ssh WebSocket on the
workspace's head, whose TLS certificate is verified with the installation's CA
(trust.py); sshd itself listens on the head's loopback only."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ClusterFailed, ConnectionFailed, WaitTimeout
from .jobs_sdk import Job
from .models import Resource

if TYPE_CHECKING:
    from .client import Client

WORKSPACE_STATES = ("stopped", "starting", "running", "stopping", "failed")


@dataclass(frozen=True)
class Workspace(Resource):
    id: str = ""
    name: str = ""
    project: str | None = None
    cloud: str | None = None
    compute_config: str | None = None
    image: str | None = None
    # Raydeck's workspace image's build (image left blank): state, error, waiting, url.
    image_build: dict[str, Any] | None = None
    state: str = ""
    state_reason: str | None = None
    cluster: str | None = None
    files: dict[str, Any] = field(default_factory=dict)
    packages_added: list[str] = field(default_factory=list)
    created_by: str | None = None
    created_at: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class SshAccess(Resource):
    """Where a workspace's sshd is reached: the gateway's WebSocket, a 5-minute token
    that opens it, and the account to log in as."""

    url: str = ""
    token: str = field(default="", repr=False)
    expires_at: str | None = None
    user: str = ""


TUNNEL_CHUNK = 64 * 1024


class Workspaces:
    """A client's workspaces (of its organization, or `org=`)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _path(self, org: str | None, *parts: str) -> str:
        return self.client._org_path(org, "workspaces", *parts)

    def list(
        self, *, project: str | None = None, org: str | None = None, max_items: int | None = None
    ) -> Iterator[Workspace]:
        params = {"project": project} if project else None
        return self.client.iterate(self._path(org), Workspace, params=params, max_items=max_items)

    def get(self, workspace_id: str, *, org: str | None = None) -> Workspace:
        return Workspace.from_api(self.client.request("GET", self._path(org, workspace_id)))

    def create(
        self,
        name: str,
        project: str,
        *,
        cloud: str | None = None,
        compute_config: str | None = None,
        image: str | None = None,
        org: str | None = None,
        idempotency_key: str | None = None,
    ) -> Workspace:
        body = {
            "name": name,
            "project": project,
            "cloud": cloud,
            "compute_config": compute_config,
            "image": image,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return self.client._create(self._path(org), Workspace, body, idempotency_key)

    def update(self, workspace_id: str, *, org: str | None = None, **changes: Any) -> Workspace:
        """Change a stopped workspace's `name`, `compute_config` (an id) or `image` (an id;
        None: Raydeck's workspace image); only those given. Its next start uses them;
        Conflict while it runs."""
        return Workspace.from_api(
            self.client.request("PATCH", self._path(org, workspace_id), body=changes)
        )

    def start(self, workspace_id: str, *, org: str | None = None) -> Workspace:
        return Workspace.from_api(
            self.client.request("POST", self._path(org, workspace_id, "start"))
        )

    def stop(self, workspace_id: str, *, org: str | None = None) -> Workspace:
        return Workspace.from_api(
            self.client.request("POST", self._path(org, workspace_id, "stop"))
        )

    def delete(self, workspace_id: str, *, org: str | None = None) -> None:
        self.client.request("DELETE", self._path(org, workspace_id))

    def jupyter_url(self, workspace_id: str, *, org: str | None = None) -> str:
        """A link that opens JupyterLab once, within 5 minutes."""
        return str(self.client.request("POST", self._path(org, workspace_id, "jupyter"))["url"])

    def ssh_access(self, workspace_id: str, *, org: str | None = None) -> SshAccess:
        """A fresh token for the workspace's SSH tunnel; Conflict (with what to do) when
        the workspace is not running, SSH is not in its image, or you have no key."""
        path = self._path(org, workspace_id, "ssh")
        return SshAccess.from_api(self.client.request("POST", path))

    def create_job(
        self,
        workspace_id: str,
        entrypoint: str,
        *,
        name: str = "",
        max_retries: int | None = None,
        timeout_seconds: int | None = None,
        org: str | None = None,
    ) -> Job:
        """Submit a job from a running workspace: its files as they are now, its image,
        compute config and the packages added in it (the server waits for the head to
        pack the files: some seconds)."""
        body: dict[str, Any] = {"entrypoint": entrypoint, "name": name}
        if max_retries is not None:
            body["max_retries"] = max_retries
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        path = self._path(org, workspace_id, "jobs")
        return Job.from_api(self.client.request("POST", path, body=body))

    def tunnel(
        self, workspace_id: str, *, org: str | None = None, stdin: int = 0, stdout: int = 1
    ) -> None:
        """Carry bytes between `stdin`/`stdout` and the workspace's sshd until either
        side closes (an ssh client's ProxyCommand)."""
        from websockets.exceptions import ConnectionClosed, InvalidStatus
        from websockets.sync.client import connect

        access = self.ssh_access(workspace_id, org=org)
        try:
            channel = connect(
                access.url,
                ssl=self.client.gateway_ssl_context(),
                additional_headers={"Authorization": f"Bearer {access.token}"},
                max_size=None,
                compression=None,
                open_timeout=30,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode(errors="replace") if exc.response.body else ""
            raise ConnectionFailed(
                f"The workspace's gateway refused the tunnel (HTTP "
                f"{exc.response.status_code}): {body.strip()}"
            ) from exc
        except OSError as exc:
            raise ConnectionFailed(f"Cannot reach the workspace's gateway: {exc}") from exc

        def upstream() -> None:
            try:
                while data := os.read(stdin, TUNNEL_CHUNK):
                    channel.send(data)
            except (OSError, ConnectionClosed):
                pass
            finally:
                channel.close()

        threading.Thread(target=upstream, name="raydeck-tunnel", daemon=True).start()
        try:
            for message in channel:
                data = message if isinstance(message, bytes) else message.encode()
                while data:
                    data = data[os.write(stdout, data) :]
        except (OSError, ConnectionClosed):
            pass
        finally:
            channel.close()

    def wait(
        self,
        workspace_id: str,
        state: str,
        *,
        timeout: float = 900,
        every: float = 2.0,
        org: str | None = None,
    ) -> Workspace:
        """Poll until the workspace is in `state`; ClusterFailed if it fails instead."""
        deadline = time.monotonic() + timeout
        while True:
            workspace = self.get(workspace_id, org=org)
            if workspace.state == state:
                return workspace
            if workspace.state == "failed":
                raise ClusterFailed(
                    f"The workspace {workspace.name} failed: {workspace.state_reason}"
                )
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"The workspace {workspace.name} is still {workspace.state}.")
            time.sleep(every)
