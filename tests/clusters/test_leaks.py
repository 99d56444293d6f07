"""Nothing leaks when a node stops on its own before Raydeck terminates it (issue 13,
defect 4): its folder, Ray temp folder and ports are released by the terminate of its
cluster or, when no node claims it, by the orphan sweep. Real processes on the local
cloud (no stand-in): the node's process group is killed as an agent that stopped by
itself (idle stop, the dead-man's switch) would leave it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from clouds.providers.base import InstanceState, ray_temp_dir
from clouds.providers.local import LocalProvider
from clusters.choices import ClusterState, NodeState
from clusters.models import Cluster, Node
from clusters.services import lifecycle, reconcile
from tests.clusters.test_reconcile import live_instances, new_cluster
from tests.conftest import Tenant

pytestmark = pytest.mark.django_db


def stopped_on_its_own(provider: LocalProvider, cluster: Cluster) -> tuple[Node, Path, Path]:
    """The cluster's head, launched, then exited by itself; with a Ray temp folder as Ray
    leaves one. Returns the node, its folder and its Ray temp folder."""
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    head = cluster.nodes.get()
    folder = provider.root / str(head.uuid)
    temp = Path(ray_temp_dir(head.uuid))
    (temp / "session_latest").mkdir(parents=True, exist_ok=True)
    pgid = json.loads((folder / "instance.json").read_text())["pgid"]
    os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while [i.state for i in live_instances(provider, cluster)] != [InstanceState.STOPPED]:
        assert time.monotonic() < deadline, live_instances(provider, cluster)
        time.sleep(0.1)
    return head, folder, temp


def test_terminating_a_cluster_releases_a_node_that_stopped_on_its_own(
    tenant_a: Tenant, local_cloud, provider
) -> None:
    cluster = new_cluster(tenant_a, local_cloud)
    _, folder, temp = stopped_on_its_own(provider, cluster)

    lifecycle.cluster_terminate(cluster=cluster, actor=tenant_a.member)
    for _ in range(5):
        if reconcile.cluster_reconcile(cluster_id=cluster.pk).requeue_in is None:
            break
    cluster.refresh_from_db()

    assert cluster.state == ClusterState.TERMINATED
    assert live_instances(provider, cluster) == []  # the provider reports nothing left
    assert not folder.exists()
    assert not temp.exists()


def test_the_orphan_sweep_releases_a_stopped_node_no_row_claims(
    tenant_a: Tenant, local_cloud, provider, settings
) -> None:
    settings.RAYDECK_ORPHAN_GRACE_SECONDS = 0
    cluster = new_cluster(tenant_a, local_cloud)
    head, folder, temp = stopped_on_its_own(provider, cluster)
    Node.objects.filter(pk=head.pk).update(state=NodeState.TERMINATED)

    assert reconcile.orphans_sweep() == 1

    assert live_instances(provider, cluster) == []
    assert not folder.exists()
    assert not temp.exists()


def test_a_folder_left_without_a_record_is_swept_once_old_enough(
    tenant_a: Tenant, local_cloud, provider, settings
) -> None:
    """A launch that crashed before writing its record leaves a bare folder: unknown to
    every cluster, it is swept after the grace (a launch under way is younger)."""
    bare = provider.root / "6f1c1f4e-3f7c-4f5e-9d43-0b8a3f1e2c11"
    bare.mkdir(parents=True)
    settings.RAYDECK_ORPHAN_GRACE_SECONDS = 3600
    assert reconcile.orphans_sweep() == 0
    assert bare.exists()
    settings.RAYDECK_ORPHAN_GRACE_SECONDS = 0
    assert reconcile.orphans_sweep() == 1
    assert not bare.exists()
