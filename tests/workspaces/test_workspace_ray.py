"""A workspace on real Ray on the local cloud: the real agent, its gateway and JupyterLab
(this project's Python, which the local cloud's nodes run, has it), the files kept in
the local cloud's folder. No stand-ins.

One test walks a user's day: start → running (files restored) → JupyterLab answers
through the gateway with a token and refuses without one → a file written on the head →
stop (saved, then the cluster terminated, no process left) → start → the file is back,
as JupyterLab shows it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from clouds.choices import CloudState
from clouds.models import Cloud
from clouds.providers.registry import local_root
from clusters import access
from clusters.choices import ClusterState, NodeRole
from clusters.models import Cluster, Node
from clusters.services.lifecycle import cluster_terminate
from clusters.services.reconcile import cluster_reconcile
from tests.clusters.test_end_to_end import processes_with
from tests.clusters.test_gateway import call, trust_ca
from tests.conftest import make_tenant
from workloads.workspaces import services
from workloads.workspaces.choices import WorkspaceState
from workloads.workspaces.models import Workspace

pytestmark = [
    pytest.mark.ray,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash"),
]
START_SECONDS = 300  # Ray start on a busy shared 2-core machine, with room to spare
STOP_SECONDS = 90


def follow(workspace: Workspace, until: set[str], seconds: float) -> Workspace:
    """Run the reconciler and the workspace's sync as their tasks would, until a state."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        workspace.refresh_from_db()
        if workspace.cluster_id:
            cluster_reconcile(cluster_id=workspace.cluster_id)
        if services.workspace_sync(workspace_id=workspace.pk) in until:
            workspace.refresh_from_db()
            return workspace
        time.sleep(1)
    workspace.refresh_from_db()
    cluster = Cluster.objects.filter(pk=workspace.cluster_id).first()
    logs = "\n".join(
        (local_root(n.cluster.cloud) / str(n.uuid) / "agent.log").read_text()[-3000:]
        for n in Node.objects.filter(cluster=cluster)
    )
    raise AssertionError(
        f"workspace stuck in {workspace.state}: {workspace.state_reason} (cluster "
        f"{cluster.state if cluster else None}, restored {workspace.restored_at}, saved "
        f"{workspace.files_saved_at}, error {workspace.files_error!r})\n{logs}"
    )


def head_work_dir(cluster: Cluster) -> Path:
    # The live head: on a loaded machine a head may be lost and replaced (a second row).
    head = Node.objects.live().get(cluster=cluster, role=NodeRole.HEAD)
    return local_root(cluster.cloud) / str(head.uuid) / "work"


def jupyter(address: str, path: str, token: str | None) -> tuple[int, Any]:
    status, _, body = call(f"{address}/jupyter/{path}", token=token)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def test_a_day_in_a_workspace(live_server, settings, tmp_path) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("wsray")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    user = tenant.member
    workspace = services.workspace_create(
        project=tenant.project, actor=user, name="day", cloud=tenant.cloud
    )
    services.workspace_start(workspace=workspace, actor=user)
    first = None
    try:
        workspace = follow(
            workspace, {WorkspaceState.RUNNING, WorkspaceState.FAILED}, START_SECONDS
        )
        assert workspace.state == WorkspaceState.RUNNING, workspace.state_reason
        first = workspace.cluster
        assert first is not None and workspace.restored_at is not None
        address = access.gateway_address(first)
        assert address is not None
        trust_ca(tmp_path)  # the gateway serves HTTPS with the installation CA's certificate
        assert "jupyter" in access.available_apps(first)

        token = access.mint_token(user=user, cluster=first, lifetime=access.LINK_LIFETIME).token
        status, body = jupyter(address, "api/status", token)
        assert status == 200 and "started" in body, body
        status, body = jupyter(address, "api/status", None)
        assert status == 401 and "send a token" in body["error"]["message"]

        # Work done on the head: a notebook's output and a script in a folder.
        work = head_work_dir(first)
        (work / "results").mkdir(parents=True, exist_ok=True)
        (work / "results" / "scores.csv").write_text("epoch,score\n1,0.91\n")
        (work / ".ipynb_checkpoints").mkdir(exist_ok=True)
        (work / ".ipynb_checkpoints" / "draft.ipynb").write_text("{}")  # an exclude

        services.workspace_stop(workspace=workspace, actor=user)
        workspace = follow(workspace, {WorkspaceState.STOPPED}, STOP_SECONDS)
        assert workspace.files_saved_at is not None
        assert workspace.files_saved_at >= workspace.stop_requested_at
        assert workspace.files_count == 1 and workspace.cluster is None
        first.refresh_from_db()
        assert first.state == ClusterState.TERMINATED
        for _ in range(20):
            if not processes_with(str(first.uuid)):
                break
            time.sleep(0.5)
        assert processes_with(str(first.uuid)) == []

        services.workspace_start(workspace=workspace, actor=user)
        workspace = follow(
            workspace, {WorkspaceState.RUNNING, WorkspaceState.FAILED}, START_SECONDS
        )
        assert workspace.state == WorkspaceState.RUNNING, workspace.state_reason
        second = workspace.cluster
        assert second is not None and second.pk != first.pk
        address = access.gateway_address(second)
        token = access.mint_token(user=user, cluster=second, lifetime=access.LINK_LIFETIME).token
        status, body = jupyter(address, "api/contents/results/scores.csv?content=1", token)
        assert status == 200 and body["content"] == "epoch,score\n1,0.91\n", body
        assert not (head_work_dir(second) / ".ipynb_checkpoints").exists()
    finally:
        stop_everything(tenant.project)


def stop_everything(project: Any) -> None:
    """Whatever happened: the project's workspaces stopped, its clusters terminated."""
    for workspace in Workspace.objects.filter(project=project):
        services.workspace_stop(workspace=workspace, actor=None)
    for cluster in Cluster.objects.filter(project=project).exclude(state=ClusterState.TERMINATED):
        cluster_terminate(cluster=cluster, actor=None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cluster_reconcile(cluster_id=cluster.pk)
            cluster.refresh_from_db()
            if cluster.is_final:
                break
            time.sleep(1)
