"""The agent as a real subprocess against the fake control plane, without starting Ray:
a worker whose head address never comes stays "starting" and never runs Ray."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from raydeck_agent.config import EXIT_REFUSED, PERMANENT_EXITS

from .conftest import (
    IMAGE_APPS,
    AgentRun,
    group_members,
    marked_processes,
    short_temp_dir,
    wait_for,
)
from .fake_control_plane import FakeControlPlane, FakeNode

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


def waiting_worker(plane: FakeControlPlane, **kwargs: object) -> FakeNode:
    return plane.add_node(
        role="worker", num_cpus=1, memory_mb=512, temp_dir=short_temp_dir(), **kwargs
    )


def exit_code(run: AgentRun, timeout: float = 20) -> int:
    code = run.wait(timeout)
    return code


def test_used_token_exits_for_good_without_retrying(control_plane, spawn):
    node = waiting_worker(control_plane)
    node.credential = "rdn_already-issued"  # the token was spent by an earlier registration

    run = spawn(control_plane, node)

    # Its own code, not Python's 1 (a crash before main), and one the node's unit does
    # not restart on: a refused token stays refused.
    assert exit_code(run) == EXIT_REFUSED == 77, run.output()
    assert EXIT_REFUSED in PERMANENT_EXITS
    assert len(control_plane.requests_to("/agent/v1/register")) == 1
    assert control_plane.requests_to("/agent/v1/heartbeat") == []
    assert "already used" in run.output()


def test_retries_until_registered_then_never_resends_the_token(control_plane, spawn):
    node = waiting_worker(control_plane)
    control_plane.stop()  # first the control plane is down (connection refused) ...
    run = spawn(control_plane, node)
    time.sleep(1.0)
    control_plane.register_failures = 1  # ... then answers 503 once ...
    control_plane.start()  # ... on the same port

    wait_for(lambda: len(node.heartbeats) >= 4, 30, "four heartbeats")
    registers = control_plane.requests_to("/agent/v1/register")
    assert len(registers) >= 2  # at least the 503 and the 200 (refused connections unseen)
    assert {r.token for r in registers} == {node.token}
    body = registers[-1].body
    assert body["node_id"] == run.node_id
    assert body["instance_id"] == f"local-{run.node_id}"
    assert body["address"] == "127.0.0.1"
    assert body["agent_version"] == "0.1.0"
    assert body["hostname"]
    # Ray's and the gateway's ports as given, plus those of the image's apps.
    assert {name: body["ports"][name] for name in PORT_NAMES} == dict(
        zip(PORT_NAMES, run.ports, strict=True)
    )
    assert set(body["ports"]) - set(PORT_NAMES) <= IMAGE_APPS

    # A worker without a head address waits, "starting", and starts no Ray.
    beats = list(node.heartbeats)
    assert {hb["state"] for hb in beats} == {"starting"}
    assert "waiting for the head" in beats[-1]["message"]
    assert beats[-1]["ray"] == {}
    usage = beats[-1]["usage"]
    assert 0.0 <= usage["cpu_percent"] <= 100.0
    assert 0.0 < usage["memory_percent"] <= 100.0
    assert usage["memory_used_mb"] > 0
    assert usage["gpus"] >= 0
    # The log tail goes with the first heartbeat, then only when it changed.
    assert any("registered as worker" in line for line in beats[0]["log_tail"])
    assert all(line.startswith("[agent] ") for line in beats[0]["log_tail"])
    assert "log_tail" not in beats[-1]
    heartbeats = control_plane.requests_to("/agent/v1/heartbeat")
    assert {r.token for r in heartbeats} == {node.credential}
    assert not (run.node_dir / "ray-start.log").exists()

    node.action = "stop"
    assert exit_code(run) == 0, run.output()
    assert node.heartbeats[-1]["state"] == "stopping"
    assert len(control_plane.requests_to("/agent/v1/register")) == len(registers)
    assert (run.node_dir / "agent.log").read_text().count("registered as worker") == 1

    # Restarted with the same (spent) token, the agent resumes with its credential.
    node.action = "run"
    seen = len(node.heartbeats)
    again = spawn(control_plane, node, node_id=run.node_id, node_dir=run.node_dir)
    wait_for(lambda: len(node.heartbeats) >= seen + 2, 20, "heartbeats after the restart")
    assert len(control_plane.requests_to("/agent/v1/register")) == len(registers)
    assert "resuming as worker" in again.output()
    node.heartbeat_status = 404  # and stops when the control plane forgot the node
    assert exit_code(again) == 0, again.output()


def test_new_token_for_same_node_registers_again(control_plane, spawn, tmp_path: Path):
    first = waiting_worker(control_plane)
    run = spawn(control_plane, first)
    wait_for(lambda: first.heartbeats, 20, "a heartbeat")
    first.action = "stop"
    assert exit_code(run) == 0

    # A relaunch of the same node comes with a new token: the saved state is not reused.
    second = waiting_worker(control_plane)
    again = spawn(control_plane, second, node_id=run.node_id, node_dir=run.node_dir)
    wait_for(lambda: second.heartbeats, 20, "a heartbeat with the new credential")
    assert second.registrations and second.registrations[0]["node_id"] == run.node_id
    second.heartbeat_status = 401
    assert exit_code(again) == 0


def test_removed_node_exits_zero(control_plane, spawn):
    node = waiting_worker(control_plane)
    run = spawn(control_plane, node)
    wait_for(lambda: node.heartbeats, 20, "a heartbeat")

    node.heartbeat_status = 401

    assert exit_code(run) == 0, run.output()
    assert "no longer knows this node" in run.output()


def test_gives_up_registering_after_the_deadline(control_plane, spawn):
    node = waiting_worker(control_plane)
    control_plane.register_failures = 1000

    run = spawn(control_plane, node, extra_env={"RAYDECK_REGISTER_TIMEOUT": "2"})

    assert exit_code(run) == 3, run.output()
    assert 3 not in PERMANENT_EXITS  # the control plane may be back: the unit restarts
    assert len(control_plane.requests_to("/agent/v1/register")) >= 2
    assert "giving up" in run.output()


def test_sigterm_sends_stopping_and_exits_zero(control_plane, spawn):
    node = waiting_worker(control_plane, heartbeat_interval=30)
    run = spawn(control_plane, node)
    wait_for(lambda: node.heartbeats, 20, "a heartbeat")

    run.proc.send_signal(signal.SIGTERM)

    assert exit_code(run) == 0, run.output()
    assert node.heartbeats[-1]["state"] == "stopping"
    assert "stop requested: SIGTERM" in run.output()


def fake_python(tmp_path: Path, script: str) -> str:
    """Stands in for the node's Python, so `ray start` fails or hangs on purpose."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_ray_start_exiting_reports_failed_with_its_output(control_plane, spawn, tmp_path):
    python = fake_python(tmp_path, "echo 'No module named ray' >&2\nexit 1\n")
    node = control_plane.add_node(role="head", num_cpus=1, memory_mb=512, temp_dir=short_temp_dir())
    run = spawn(control_plane, node, extra_env={"RAYDECK_PYTHON": python})

    wait_for(lambda: "failed" in node.states(), 20, "a failed heartbeat")
    failed = next(hb for hb in node.heartbeats if hb["state"] == "failed")
    assert "ray start exited with code 1 before Ray was ready" in failed["message"]
    assert "No module named ray" in failed["message"]
    assert run.proc.poll() is None  # the agent stays, reporting, until told to stop
    assert ray_starts(run) == 1  # a failure of its own is not retried

    node.action = "stop"
    assert exit_code(run) == 0, run.output()


def ray_starts(run: AgentRun) -> int:
    log = (run.node_dir / "ray-start.log").read_text()
    return log.count("=== raydeck-agent: ")


# What `ray start` says when its raylet did not register within Ray's fixed 30 s.
RAY_GAVE_UP = """\
echo 'Exception: The current node timed out during startup. This could happen because'
exit 1
"""


def test_ray_giving_up_on_a_slow_raylet_is_started_again_before_failing(
    control_plane, spawn, tmp_path
):
    """On a busy machine Ray's own wait for its raylet runs out: the agent starts Ray
    again (three attempts in all) instead of having the node replaced at once."""
    python = fake_python(tmp_path, RAY_GAVE_UP)
    node = control_plane.add_node(role="head", num_cpus=1, memory_mb=512, temp_dir=short_temp_dir())
    run = spawn(control_plane, node, extra_env={"RAYDECK_PYTHON": python})

    wait_for(lambda: "failed" in node.states(), 30, "a failed heartbeat")
    failed = next(hb for hb in node.heartbeats if hb["state"] == "failed")
    assert "timed out during startup" in failed["message"]
    assert ray_starts(run) == 3
    assert run.output().count("starting it again") == 2

    node.action = "stop"
    assert exit_code(run) == 0, run.output()


# Starts, never listens, ignores SIGTERM, and leaves a process in a session of its own
# (as Ray's job drivers are): only the RAYDECK_RAY_NODE marker finds that one.
STUBBORN = """\
trap '' TERM
setsid sleep 600 &
sleep 600 &
wait
"""


def test_ray_not_up_in_time_reports_what_is_missing(control_plane, spawn, tmp_path):
    python = fake_python(tmp_path, STUBBORN)
    node = control_plane.add_node(role="head", num_cpus=1, memory_mb=512, temp_dir=short_temp_dir())
    run = spawn(
        control_plane,
        node,
        extra_env={
            "RAYDECK_PYTHON": python,
            "RAYDECK_RAY_START_TIMEOUT": "2",
            "RAYDECK_STOP_TIMEOUT": "1",
        },
    )

    wait_for(lambda: "failed" in node.states(), 20, "a failed heartbeat")
    message = next(hb for hb in node.heartbeats if hb["state"] == "failed")["message"]
    assert message.startswith("Ray did not start within 2 s: ")
    assert f"the GCS is not listening on port {run.ports[0]}" in message
    assert f"the dashboard does not answer on 127.0.0.1:{run.ports[1]}" in message
    # The agent, `ray start` and its sleep: the head's apps (JupyterLab, Prometheus)
    # start only once Ray is up, so as not to slow its start.
    assert len(group_members(run.pgid)) == 3
    # `ray start`, its sleep and the one elsewhere.
    assert len(marked_processes(run.node_id)) == 3

    node.action = "stop"
    assert exit_code(run) == 0, run.output()
    assert "did not exit 1 s after SIGTERM" in run.output()
    assert "killing 3 leftover processes" in run.output()
    wait_for(
        lambda: not group_members(run.pgid) and not marked_processes(run.node_id),
        5,
        "every process of the node to be gone",
    )
