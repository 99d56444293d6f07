"""Autoscaling, idle termination and the dead-man's switch on real local clusters.

Real parts throughout, as in test_end_to_end.py: the local cloud starts real processes,
each runs the real raydeck-agent against this test's live server, and Ray is real; jobs
go through Ray's own job API on the head. The reconciler and the idle check are called
the way their tasks call them. The one stand-in: in the dead-man's test the agents reach
the control plane through a TCP relay in this process, which the test closes to make
the control plane unreachable (a network partition) and opens again.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.choices import ClusterState, DesiredState, NodeRole, NodeState
from clusters.models import Cluster
from clusters.services import lifecycle, reconcile
from clusters.services.idle import cluster_idle_check, cluster_idleness
from tests.clusters.ray_http import ray_dashboard
from tests.conftest import make_tenant

from .test_end_to_end import drive, processes_with

pytestmark = [
    pytest.mark.ray,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash"),
]

JOB = """
import time, ray
ray.init()

@ray.remote(num_cpus=2)
def wide():
    time.sleep({seconds})
    return "done"

print(ray.get(wide.remote()))
"""


def local_cluster(settings, tmp_path: Path, agent_url: str, **config: object) -> Cluster:
    settings.RAYDECK_AGENT_URL = agent_url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("ray")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    cluster = lifecycle.cluster_create(
        project=tenant.project, actor=tenant.member, name="lean", cloud=tenant.cloud
    )
    version = cluster.compute_config
    for key, value in config.items():
        setattr(version, key, value)
    version.full_clean()
    version.save()
    return cluster


def step(cluster: Cluster) -> Cluster:
    """One pass of what beat runs: reconcile, then the idle check."""
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    cluster_idle_check(cluster_id=cluster.pk)
    cluster.refresh_from_db()
    return cluster


def wait_until(cluster: Cluster, what: str, check, deadline_seconds: float, *, each=step):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        cluster = each(cluster)
        result = check(cluster)
        if result:
            return result
        time.sleep(1)
    events = "\n".join(
        f"{e.created_at:%H:%M:%S} {e.step}: {e.message}" for e in cluster.events.all()
    )
    logs = "\n".join(f"{n.role} {n.state}: {n.log_tail[-1500:]}" for n in cluster.nodes.all())
    raise AssertionError(f"timed out waiting for {what}\n{events}\n{logs}")


def test_workers_follow_the_load_and_an_idle_cluster_stops(live_server, settings, tmp_path):
    group = {
        "name": "cpu",
        "instance_type": "local",
        "cpus": 2,
        "memory_mb": 1024,
        "min": 0,
        "max": 1,
        "spot": False,
        "downscale_delay_seconds": 5,
    }
    cluster = local_cluster(
        settings,
        tmp_path,
        live_server.url,
        head_cpus=1,
        worker_groups=[group],
        idle_timeout_minutes=1,
    )
    try:
        cluster = drive(
            cluster, {ClusterState.RUNNING, ClusterState.FAILED}, time.monotonic() + 150
        )
        assert cluster.state == ClusterState.RUNNING, cluster.state_reason
        assert not cluster.nodes.filter(role=NodeRole.WORKER).exists()
        # Nothing runs: the page says idle, with the countdown.
        headline = wait_until(
            cluster, "an idle report", lambda c: cluster_idleness(c).headline(_now()), 30
        )
        assert headline.startswith("Idle for ")

        # A job that needs 2 CPUs on a cluster whose head has 1: a worker must come.
        script = tmp_path / "wide.py"
        # The task alone outlasts the one-minute idle timeout, however fast the worker
        # comes (the job's time also holds the wait for it).
        script.write_text(JOB.format(seconds=62))
        job = ray_dashboard(cluster, "/api/jobs/", {"entrypoint": f"python {script}"})
        job_id = job["submission_id"]

        def job_status() -> str:
            return ray_dashboard(cluster, f"/api/jobs/{job_id}")["status"]

        seen_why_not: set[str] = set()

        def worker_ready(c: Cluster):
            seen_why_not.add(cluster_idleness(c).why_not)
            return c.nodes.filter(role=NodeRole.WORKER, state=NodeState.READY).first()

        worker = wait_until(cluster, "a worker for the job", worker_ready, 120)
        assert worker.group == "cpu"
        added = cluster.events.get(step="autoscaler", message__startswith="Added")
        assert added.message == "Added 1 worker of group cpu: 2 CPU pending, the cluster has 1 CPU."
        assert "1 job running; 1 resource request pending" in seen_why_not

        # While the job runs (longer than the idle timeout), the cluster is never idle.
        while (status := job_status()) in ("PENDING", "RUNNING"):
            cluster = step(cluster)
            state = cluster_idleness(cluster)
            assert not state.idle and state.why_not.startswith("1 job running"), state.why_not
            assert cluster.desired_state == DesiredState.RUNNING
            assert not cluster.events.filter(step="idle warning").exists()
            time.sleep(1)
        assert status == "SUCCEEDED", ray_dashboard(cluster, f"/api/jobs/{job_id}")
        info = ray_dashboard(cluster, f"/api/jobs/{job_id}")
        assert (info["end_time"] - info["start_time"]) / 1000 > 60  # longer than the timeout
        logs = ray_dashboard(cluster, f"/api/jobs/{job_id}/logs")["logs"]
        assert "done" in logs

        # The job ended: after its downscale delay the worker goes, the head stays. (On a
        # busy machine a worker's Ray may fail to start and another one is added: any
        # worker the autoscaler took away will do, as long as none is left.)
        def worker_removed(c: Cluster):
            removed = c.nodes.filter(role=NodeRole.WORKER, state=NodeState.TERMINATED)
            return removed.filter(state_reason__startswith="Autoscaler: idle for ").first()

        wait_until(cluster, "the idle worker's removal", worker_removed, 90)
        # Live as the product counts it: a worker found lost on a loaded machine (and
        # replaced) had its instance terminated then, so it is not left either.
        live = cluster.nodes.filter(role=NodeRole.WORKER).live()
        assert not live.exists(), [(str(n), n.state, n.state_reason) for n in live]
        removed = cluster.events.get(step="autoscaler", message__startswith="Removed")
        assert removed.message == (
            "Removed 1 worker of group cpu: idle for at least 5 s, 0 left (min 0)."
        )
        assert cluster.state == ClusterState.RUNNING
        assert cluster.nodes.get(role=NodeRole.HEAD).state == NodeState.READY

        # Idle for the timeout: a warning first, then the termination, saying why.
        wait_until(
            cluster,
            "the idle warning",
            lambda c: c.events.filter(step="idle warning").exists(),
            120,
        )
        assert cluster.desired_state == DesiredState.RUNNING
        assert cluster_idleness(cluster).warned
        wait_until(
            cluster,
            "the idle termination",
            lambda c: c.desired_state == DesiredState.TERMINATED,
            60,
        )
        reason = cluster.events.get(step="terminate requested").message
        assert reason.startswith("Terminated by Raydeck: idle for ")
        assert "(idle timeout 60 s): no running job or driver, no pending demand" in reason
        warning = cluster.events.get(step="idle warning")
        assert warning.created_at < cluster.events.get(step="terminate requested").created_at
    finally:
        lifecycle.cluster_terminate(cluster=cluster, actor=None)
        cluster = drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 90)
    assert cluster.state == ClusterState.TERMINATED
    for _ in range(20):
        if not processes_with(str(cluster.uuid)):
            break
        time.sleep(0.5)
    assert processes_with(str(cluster.uuid)) == []


def _now():
    from django.utils import timezone

    return timezone.now()


# --- The dead-man's switch ---------------------------------------------------------------


class Relay:
    """A TCP relay from a fixed local port to the live server; closing it is a network
    partition between the nodes and the control plane."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.listener: socket.socket | None = None
        self.open_sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        if self.listener is not None:
            # shutdown() wakes the thread blocked in accept(), so the port is free at once.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for sock in self.open_sockets:
                sock.close()
            self.open_sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open_sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def test_with_the_control_plane_unreachable_an_idle_cluster_stops_itself(
    live_server, settings, tmp_path
):
    settings.RAYDECK_DEADMAN_SECONDS = 8
    host, port = live_server.thread.host, live_server.thread.port
    relay = Relay((host, port))
    relay.open()
    cluster = local_cluster(settings, tmp_path, relay.url)
    try:
        cluster = drive(
            cluster, {ClusterState.RUNNING, ClusterState.FAILED}, time.monotonic() + 150
        )
        assert cluster.state == ClusterState.RUNNING, cluster.state_reason
        wait_until(cluster, "an idle report", lambda c: cluster_idleness(c).idle, 30, each=_refresh)
        head = cluster.nodes.get(role=NodeRole.HEAD)
        ray_marker = f"RAYDECK_RAY_NODE={head.uuid}"
        assert processes_with(ray_marker)

        relay.close()  # the control plane is gone for the nodes; nothing reconciles here
        deadline = time.monotonic() + 90
        while processes_with(ray_marker) and time.monotonic() < deadline:
            time.sleep(1)
        assert processes_with(ray_marker) == [], "the head did not stop Ray by itself"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", cluster.dashboard_port), timeout=2).close()
        # The control plane knows nothing yet: the cluster still reads as running.
        cluster.refresh_from_db()
        assert cluster.desired_state == DesiredState.RUNNING

        relay.open()  # back: the head reports what it did, the control plane reconciles
        wait_until(
            cluster,
            "the head's report",
            lambda c: c.events.filter(step="stopped itself").first(),
            60,
            each=_refresh,
        )
        cluster = drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 90)
        event = cluster.events.get(step="stopped itself")
        assert event.message.startswith("Stopped itself: control plane unreachable for ")
        assert event.message.endswith(" s while idle.")
        head.refresh_from_db()
        assert head.state == NodeState.TERMINATED
        assert head.state_reason == event.message
    finally:
        if relay.listener is None:
            relay.open()
        lifecycle.cluster_terminate(cluster=cluster, actor=None)
        cluster = drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 90)
        relay.close()
    for _ in range(20):
        if not processes_with(str(cluster.uuid)):
            break
        time.sleep(0.5)
    assert processes_with(str(cluster.uuid)) == []


def _refresh(cluster: Cluster) -> Cluster:
    cluster.refresh_from_db()
    return cluster
