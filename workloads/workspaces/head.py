"""The workspaces' participant in a head's heartbeat (clusters/head_orders.py): the
orders under the "workspace" topic tell the head where the files live, to restore them
once, to save them every few minutes and now when the workspace stops, and which SSH
public keys its sshd accepts; its reports (restored, saved, packages added, the sshd's
account or why it cannot run, a snapshot packed for a job) go to
services.workspace_report."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from workloads.storage import working_dirs_uri

from . import live
from .choices import ACTIVE_WORKSPACE_STATES, WorkspaceState
from .models import Workspace
from .selectors import ssh_keys_for

TOPIC = "workspace"


def head_orders(workspace: Workspace) -> dict[str, Any]:
    files: dict[str, Any] = settings.RAYDECK_WORKSPACE_FILES
    save_for = None
    if workspace.state == WorkspaceState.STOPPING and workspace.stop_requested_at:
        save_for = live.save_token(workspace.stop_requested_at)
    return {
        "id": str(workspace.uuid),
        "files": workspace.files_location,
        "save_every": files["save_every_seconds"],
        "save_for": save_for,
        "max_file_bytes": files["max_file_bytes"],
        "max_total_bytes": files["max_total_bytes"],
        "excludes": list(files["excludes"]),
        "ssh": {"keys": ssh_keys_for(workspace)},
        "snapshot": snapshot_orders(workspace),
    }


def snapshot_orders(workspace: Workspace) -> dict[str, Any] | None:
    """A snapshot asked for a job (services.workspace_job_create), or None."""
    token = live.snapshot_asked(workspace.cluster_id) if workspace.cluster_id else None
    if token is None:
        return None
    return {
        "for": token,
        "to": working_dirs_uri(workspace.cloud),
        "max_bytes": settings.RAYDECK_WORKDIR_MAX_BYTES,
    }


class WorkspaceParticipant:
    topic = TOPIC

    def orders(self, cluster_id: int) -> Any | None:
        orders = live.cached_orders(cluster_id)
        if orders is None:
            workspace = (
                Workspace.objects.filter(cluster_id=cluster_id, state__in=ACTIVE_WORKSPACE_STATES)
                .only(
                    "uuid",
                    "organization_id",
                    "project_id",
                    "files_location",
                    "state",
                    "stop_requested_at",
                    "cluster_id",
                    "cloud",
                )
                .first()
            )
            orders = head_orders(workspace) if workspace else {}
            live.keep_orders(cluster_id, orders, workspace.organization_id if workspace else None)
        return orders or None

    def prompt(self, cluster_id: int, orders: Any | None) -> bool:
        # A request waits for a snapshot; otherwise JupyterLab starts once and its page
        # reads the head through the gateway.
        return isinstance(orders, dict) and bool(orders.get("snapshot"))

    def receive(self, cluster_id: int, report: Any) -> None:
        from .services import workspace_report  # services import tasks; keep ready() light

        workspace_report(cluster_id=cluster_id, report=report)
