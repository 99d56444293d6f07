"""Autoscaling decisions: which group grows for what demand, which idle worker goes, and
what the cluster's events say. `plan` is pure; `cluster_autoscale` is checked against the
database and the shared cache like the reconciler runs it."""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import ValidationError

from clusters.choices import ClusterState, NodeRole, NodeState
from clusters.live import note_head_report
from clusters.models import ComputeConfigVersion, validate_worker_groups
from clusters.services import reconcile
from clusters.services.autoscale import Group, Worker, cluster_autoscale, plan
from tests.factories import ClusterFactory, NodeFactory

CPU = {
    "name": "cpu",
    "cpus": 2,
    "memory_mb": 2048,
    "min": 0,
    "max": 2,
    "downscale_delay_seconds": 30,
}
GPU = {"name": "gpu", "cpus": 8, "gpus": 1, "memory_mb": 8192, "min": 0, "max": 1}


def groups(*configs: dict) -> list[Group]:
    return [Group.from_config(c) for c in configs]


def test_demand_beyond_the_head_adds_a_worker_of_the_group_that_fits() -> None:
    result = plan(groups=groups(CPU, GPU), workers=[], demand=[{"CPU": 2.0}], cluster_cpus=1)
    assert result.add == {"cpu": 1}
    assert result.messages == ["Added 1 worker of group cpu: 2 CPU pending, the cluster has 1 CPU."]
    gpu = plan(
        groups=groups(CPU, GPU), workers=[], demand=[{"GPU": 1.0, "CPU": 1.0}], cluster_cpus=1
    )
    assert gpu.add == {"gpu": 1}


def test_requests_are_packed_and_max_is_respected() -> None:
    # Four 1-CPU tasks fit on two 2-CPU workers; a fifth would need a third, over max.
    result = plan(groups=groups(CPU), workers=[], demand=[{"CPU": 1.0}] * 5, cluster_cpus=1)
    assert result.add == {"cpu": 2}
    assert "Group cpu is at its maximum of 2 workers; 1 request wait" in result.waiting


def test_workers_on_their_way_absorb_demand_so_nothing_launches_twice() -> None:
    arriving = [Worker(pk=1, group="cpu", arriving=True, idle_seconds=None)]
    result = plan(groups=groups(CPU), workers=arriving, demand=[{"CPU": 2.0}], cluster_cpus=1)
    assert result.add == {} and result.messages == []


def test_demand_no_group_fits_waits_and_says_so() -> None:
    result = plan(groups=groups(CPU), workers=[], demand=[{"CPU": 64.0}], cluster_cpus=1)
    assert result.add == {}
    assert result.waiting.startswith("No worker group fits 64 CPU pending")


def test_idle_workers_go_after_the_delay_down_to_min() -> None:
    group = {**CPU, "min": 1, "max": 3}
    workers = [
        Worker(pk=1, group="cpu", arriving=False, idle_seconds=45),
        Worker(pk=2, group="cpu", arriving=False, idle_seconds=31),
        Worker(pk=3, group="cpu", arriving=False, idle_seconds=5),  # busy lately
    ]
    result = plan(groups=groups(group), workers=workers, demand=[], cluster_cpus=7)
    assert set(result.remove) == {1, 2}
    assert result.remove[1] == "idle for 45 s (downscale delay 30 s)"
    assert result.messages == [
        "Removed 2 workers of group cpu: idle for at least 30 s, 1 left (min 1)."
    ]
    at_min = plan(
        groups=groups({**CPU, "min": 3, "max": 3}), workers=workers, demand=[], cluster_cpus=7
    )
    assert at_min.remove == {}


def test_nothing_is_removed_while_demand_waits_or_idleness_is_unknown() -> None:
    idle = [Worker(pk=1, group="cpu", arriving=False, idle_seconds=999)]
    busy = plan(groups=groups(CPU), workers=idle, demand=[{"CPU": 64.0}], cluster_cpus=1)
    assert busy.remove == {}
    unknown = [Worker(pk=1, group="cpu", arriving=False, idle_seconds=None)]
    assert plan(groups=groups(CPU), workers=unknown, demand=[], cluster_cpus=1).remove == {}


@pytest.mark.parametrize(
    ("groups_value", "message"),
    [
        ([{"name": "a", "min": 3, "max": 1}], "needs 0 <= min <= max"),
        ([{"name": "a", "max": 1, "downscale_delay_seconds": 1}], "downscale_delay_seconds"),
        ([{"name": "a", "max": 1}, {"name": "a", "max": 1}], "Two worker groups are named a"),
        ([{"name": "", "max": 1}], "needs a name"),
        ([{"name": "a", "max": 1, "cpus": 0}], "cpus must be a number above 0"),
    ],
)
def test_worker_groups_are_validated(groups_value: list, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_worker_groups(groups_value)
    assert message in " ".join(caught.value.messages)
    validate_worker_groups([{"name": "ok", "min": 0, "max": 2, "downscale_delay_seconds": 60}])


# --- In the reconciler -----------------------------------------------------------------


def _running_cluster(tenant_a):
    cluster = ClusterFactory(
        project=tenant_a.project, cloud=tenant_a.cloud, name="scaled", state=ClusterState.RUNNING
    )
    version: ComputeConfigVersion = cluster.compute_config
    version.worker_groups = [CPU]
    version.save()
    head = NodeFactory(cluster=cluster, role=NodeRole.HEAD, state=NodeState.READY)
    return cluster, head


def test_cluster_autoscale_writes_desired_counts_and_one_event(tenant_a, db) -> None:
    cluster, _ = _running_cluster(tenant_a)
    note_head_report(
        cluster.pk,
        {"pending_demand": [{"CPU": 2.0}], "resources_total": {"CPU": 1.0}},
        None,
        time.time(),
    )
    cluster_autoscale(cluster)
    cluster.refresh_from_db()
    assert cluster.desired_workers == {"cpu": 1}
    reconcile._plan_nodes(cluster)
    assert cluster.nodes.filter(role=NodeRole.WORKER, group="cpu").count() == 1
    # The same report again (a second heartbeat, a second pass): the planned worker
    # absorbs the demand, so nothing more is added.
    cluster_autoscale(cluster)
    reconcile._plan_nodes(cluster)
    assert cluster.nodes.filter(role=NodeRole.WORKER).count() == 1
    messages = list(cluster.events.filter(step="autoscaler").values_list("message", flat=True))
    assert messages == ["Added 1 worker of group cpu: 2 CPU pending, the cluster has 1 CPU."]


def test_cluster_autoscale_removes_an_idle_worker(tenant_a, db) -> None:
    cluster, _ = _running_cluster(tenant_a)
    worker = NodeFactory(cluster=cluster, role=NodeRole.WORKER, group="cpu", state=NodeState.READY)
    type(worker).objects.filter(pk=worker.pk).update(ready_at=worker.created_at.replace(year=2020))
    cluster.desired_workers = {"cpu": 1}
    cluster.save()
    activity = {
        "running_jobs": 0,
        "drivers": 0,
        "pending_demand": 0,
        "nodes_idle_seconds": {str(worker.uuid): 40.0},
    }
    note_head_report(
        cluster.pk, {"pending_demand": [], "resources_total": {"CPU": 3.0}}, activity, time.time()
    )
    cluster_autoscale(cluster)
    cluster.refresh_from_db()
    worker.refresh_from_db()
    assert cluster.desired_workers == {"cpu": 0}
    assert worker.state == NodeState.TERMINATING
    assert worker.state_reason == "Autoscaler: idle for 40 s (downscale delay 30 s)."
    assert cluster.events.filter(step="autoscaler", message__startswith="Removed 1 worker").exists()
