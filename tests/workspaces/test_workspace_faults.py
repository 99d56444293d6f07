"""`kill -9` of the Celery worker while a workspace stops: its files are still saved and
its cluster still terminated. Real Celery worker and beat processes on a private Redis,
the test database, real Ray on the local cloud (the harness of tests/clusters/
test_faults.py); no stand-ins.

The head saves the files on its own once the heartbeat orders say so, and the stop's
follow-up (terminate once saved) is the workspace's sync: the first worker is killed
with the stop's sync in its queue, and beat's sweep hands it to a new worker."""

from __future__ import annotations

import json
import time
from pathlib import Path

from clouds.providers.registry import local_root
from clusters.choices import ClusterState, NodeRole
from clusters.models import Cluster, Node
from tests.clusters.test_end_to_end import processes_with
from tests.clusters.test_faults import Faults, faults  # noqa: F401 - the harness fixture
from tests.clusters.test_faults import pytestmark as fault_marks
from workloads.workspaces import services
from workloads.workspaces.choices import WorkspaceState
from workloads.workspaces.models import Workspace

pytestmark = [  # PostgreSQL, redis-server, bash, real Ray
    *fault_marks,
]
WAIT_SECONDS = 240


def wait_state(workspace: Workspace, state: str, seconds: float) -> Workspace:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        workspace.refresh_from_db()
        if workspace.state == state:
            return workspace
        assert workspace.state != WorkspaceState.FAILED, workspace.state_reason
        time.sleep(1)
    raise AssertionError(f"still {workspace.state}: {workspace.state_reason}")


def test_killed_worker_during_stop_files_saved_and_cluster_terminated(faults: Faults) -> None:  # noqa: F811
    faults.env["RAYDECK_WORKSPACE_SWEEP_SECONDS"] = "3"
    tenant = faults.tenant
    faults.start_beat()
    worker = faults.start_worker("ws-1")
    workspace = services.workspace_create(
        project=tenant.project, actor=tenant.member, name="night", cloud=tenant.cloud
    )
    services.workspace_start(workspace=workspace, actor=tenant.member)
    workspace.refresh_from_db()
    cluster = workspace.cluster
    assert cluster is not None
    faults.clusters.append(cluster)
    faults.all_clusters.append(cluster)
    workspace = wait_state(workspace, WorkspaceState.RUNNING, WAIT_SECONDS)

    head = Node.objects.get(cluster=cluster, role=NodeRole.HEAD)
    work = local_root(cluster.cloud) / str(head.uuid) / "work"
    (work / "model.txt").write_text("weights v7\n")

    worker.kill_group()  # kill -9 of the whole worker: the stop's sync waits in the queue
    worker.popen.wait(10)
    services.workspace_stop(workspace=workspace, actor=tenant.member)
    time.sleep(5)  # the head saves meanwhile; nobody terminates anything yet
    assert Cluster.objects.get(pk=cluster.pk).desired_state == "running"
    faults.start_worker("ws-2")
    workspace = wait_state(workspace, WorkspaceState.STOPPED, WAIT_SECONDS)

    assert workspace.files_saved_at is not None
    assert workspace.files_saved_at >= workspace.stop_requested_at
    manifest = json.loads((Path(workspace.files_location) / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.txt"}
    cluster.refresh_from_db()
    assert cluster.state == ClusterState.TERMINATED
    for _ in range(20):
        if not processes_with(str(cluster.uuid)):
            break
        time.sleep(0.5)
    assert processes_with(str(cluster.uuid)) == []
