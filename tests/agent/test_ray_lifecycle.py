"""Real Ray, started by real agents: a head and a worker from registration to exit.

One test on purpose: a Ray head takes 5-10 s to start on a small machine. Its phases:
head up -> worker joins once told the head's address -> a job with unmet demand ->
the control plane goes away and comes back (Ray keeps running) -> stop -> nothing left.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import (
    IMAGE_APPS,
    group_members,
    listening,
    marked_processes,
    short_temp_dir,
    wait_for,
)

# A real Ray head and worker, given 30 s to see each other: with the parallel part of
# `make test` on both cores as well, they did not always (a head counting one node).
pytestmark = pytest.mark.serial

PORT_NAMES = [
    "gcs",
    "dashboard",
    "node_manager",
    "object_manager",
    "dashboard_agent",
    "metrics",
    "runtime_env_agent",
    "client_server",
]

# A driver that asks for more CPUs than the cluster has, then idles: pending demand.
JOB = (
    'python -c "import ray, time; ray.init(); f = ray.remote(num_cpus=4)(lambda: 1); '
    'ref = f.remote(); time.sleep(600)"'
)


def submit_job(dashboard_port: int) -> str:
    """Submit JOB as the head's agent does (raydeck_agent/jobs.py): retrying while Ray
    answers 500, as it may for a few seconds after a node joins (its job agent is not up)."""
    deadline = time.monotonic() + 30
    while True:
        request = urllib.request.Request(
            f"http://127.0.0.1:{dashboard_port}/api/jobs/",
            data=json.dumps({"entrypoint": JOB}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
                return json.loads(response.read())["submission_id"]
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or time.monotonic() > deadline:
                raise AssertionError(f"Ray refused the job: {exc.read().decode()}") from exc
            time.sleep(1)


def last_ray(node) -> dict:
    beats = [hb for hb in list(node.heartbeats) if hb["state"] == "ready"]
    return beats[-1]["ray"] if beats else {}


def test_head_and_worker_from_registration_to_exit(control_plane, spawn, tmp_path: Path):
    log_location = tmp_path / "shipped-logs"
    head = control_plane.add_node(
        role="head",
        num_cpus=2,
        memory_mb=1024,
        temp_dir=short_temp_dir(),
        log_location=str(log_location),
    )
    head_run = spawn(control_plane, head)
    ports = dict(zip(PORT_NAMES, head_run.ports, strict=True))

    # 1. The head registers with its ports, starts Ray, says "starting" then "ready".
    wait_for(
        lambda: "ready" in head.states() or head_run.proc.poll() is not None,
        120,
        "the head to be ready",
    )
    assert head_run.proc.poll() is None, head_run.output()
    registered = head.registrations[0]["ports"]
    assert {name: registered[name] for name in PORT_NAMES} == ports
    assert set(registered) - set(PORT_NAMES) <= IMAGE_APPS
    states = head.states()
    assert states[0] == "starting"
    assert "failed" not in states
    ready = next(hb for hb in head.heartbeats if hb["state"] == "ready")
    assert ready["ray"]["nodes"] == 1, ready
    assert ready["ray"]["resources_total"]["CPU"] == 2.0
    assert ready["ray"]["resources_total"]["memory"] == 1024 * 1024 * 1024
    assert ready["ray"]["running_jobs"] == 0
    assert "Ray head is up" in ready["message"]
    assert listening(ports["gcs"]) and listening(ports["dashboard"])
    # Ray's processes are in the agent's process group, and never see the token.
    members = group_members(head_run.pgid)
    assert len(members) > 3
    for pid in members:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"RAYDECK_BOOTSTRAP_TOKEN" not in environ or pid == head_run.proc.pid
    # Ray's own logs reach the heartbeats' tail.
    tail = [line for hb in head.heartbeats for line in hb.get("log_tail", [])]
    assert any(line.startswith(("[gcs_server.out]", "[raylet.out]")) for line in tail)

    # 2. A worker without a head address waits; told the address, it joins.
    worker = control_plane.add_node(
        role="worker", num_cpus=1, memory_mb=512, temp_dir=short_temp_dir()
    )
    worker_run = spawn(control_plane, worker)
    wait_for(lambda: len(worker.heartbeats) >= 2, 20, "the worker's heartbeats")
    assert set(worker.states()) == {"starting"}
    assert not listening(worker_run.ports[PORT_NAMES.index("node_manager")])
    worker.head_address = f"127.0.0.1:{ports['gcs']}"
    wait_for(
        lambda: "ready" in worker.states() or worker_run.proc.poll() is not None,
        60,
        "the worker to be ready",
    )
    assert worker_run.proc.poll() is None, worker_run.output()
    wait_for(lambda: last_ray(head).get("nodes") == 2, 30, "the head to count two nodes")
    assert last_ray(head)["resources_total"]["CPU"] == 3.0

    # 3. A submitted job waits for 4 CPUs: one running job, unmet demand.
    submit_job(ports["dashboard"])
    wait_for(
        lambda: (
            last_ray(head).get("running_jobs") == 1
            and {"CPU": 4.0} in last_ray(head).get("pending_demand", [])
        ),
        60,
        "the job and its pending demand in the head's heartbeat",
    )

    # 4. The control plane goes away: Ray keeps running; heartbeats resume after.
    control_plane.stop()
    time.sleep(4)  # several heartbeat intervals of connection refused
    assert head_run.proc.poll() is None and worker_run.proc.poll() is None
    assert listening(ports["gcs"]) and listening(ports["dashboard"])
    seen_head, seen_worker = len(head.heartbeats), len(worker.heartbeats)
    control_plane.start()
    wait_for(
        lambda: len(head.heartbeats) > seen_head and len(worker.heartbeats) > seen_worker,
        20,
        "heartbeats after the outage",
    )
    assert head.heartbeats[-1]["state"] == "ready"
    assert worker.heartbeats[-1]["state"] == "ready"
    assert last_ray(head)["nodes"] == 2
    assert "heartbeat failed" in head_run.output()

    # 5. Told to stop, both stop Ray and exit 0, leaving no process and no port behind.
    worker.action = "stop"
    head.action = "stop"
    assert worker_run.wait(40) == 0, worker_run.output()
    assert head_run.wait(40) == 0, head_run.output()
    assert head.heartbeats[-1]["state"] == "stopping"
    assert worker.heartbeats[-1]["state"] == "stopping"
    for run in (head_run, worker_run):
        wait_for(
            lambda run=run: not group_members(run.pgid) and not marked_processes(run.node_id),
            10,
            f"no process left of node {run.node_id}",
        )
        assert not [p for p in run.ports if listening(p)]

    # Logs were copied to <log_location>/<cluster_id>/<node_id>/.
    shipped = log_location / head.cluster_id / head_run.node_id
    assert "registered as head" in (shipped / "agent.log").read_text()
    assert (shipped / "ray-start.log").read_text().startswith("=== raydeck-agent:")
    assert (shipped / "ray" / "gcs_server.out").stat().st_size > 0
