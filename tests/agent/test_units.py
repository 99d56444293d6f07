"""The agent's pieces in-process: configuration, the Ray command, dashboard parsing,
logs, state, the HTTP client's error sorting."""

from __future__ import annotations

import json
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from raydeck_agent import __main__ as agent_main
from raydeck_agent import api, logs, ray_process, ray_status, state
from raydeck_agent.agent import EXIT_GAVE_UP, Agent
from raydeck_agent.config import (
    DEFAULT_PORTS,
    EXIT_REFUSED,
    PERMANENT_EXITS,
    Config,
    ConfigError,
    ray_cpus,
)
from raydeck_agent.usage import UsageSampler

from .conftest import RAY_TEMP_ROOT, free_ports

NODE_ID = "5f0c8a1e-7d2b-4c3a-9e1f-2a3b4c5d6e7f"


def env(**overrides: str) -> dict[str, str]:
    base = {
        "RAYDECK_URL": "http://127.0.0.1:8000/",
        "RAYDECK_BOOTSTRAP_TOKEN": "rdb_token",
        "RAYDECK_NODE_ID": NODE_ID,
        "RAYDECK_INSTANCE_ID": f"local-{NODE_ID}",
        "RAYDECK_NODE_DIR": "/srv/node",
        "RAYDECK_PORTS": "6001,6002,6003,6004,6005,6006,6007,6008",
        "RAYDECK_CPUS": "2",
        "RAYDECK_MEMORY_MB": "2048",
        "RAYDECK_PYTHON": "/opt/venv/bin/python",
        "RAYDECK_NODE_ADDRESS": "127.0.0.1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v}


def registration(**overrides: object) -> api.Registration:
    data = {
        "credential": "rdn_x",
        "cluster_id": "c1",
        "node_id": NODE_ID,
        "role": "head",
        "heartbeat_interval": 5,
        "ray": {
            "num_cpus": 2.0,
            "memory_mb": 2048,
            "head_address": None,
            "temp_dir": f"{RAY_TEMP_ROOT}abcd1234",
        },
    }
    data.update(overrides)
    return api.Registration.from_response(data)


# --- config ----------------------------------------------------------------------------


def test_config_from_env():
    config = Config.from_env(env())
    assert config.url == "http://127.0.0.1:8000"
    assert config.ports["gcs"] == 6001 and config.ports["client_server"] == 6008
    assert config.shared_machine
    assert config.node_dir == Path("/srv/node")
    assert config.address == "127.0.0.1"


def test_config_without_ports_uses_fixed_defaults():
    config = Config.from_env(env(RAYDECK_PORTS="", RAYDECK_NODE_ADDRESS=""))
    assert config.ports == DEFAULT_PORTS
    assert config.ports["gcs"] == 6379
    assert not config.shared_machine
    assert config.address  # the default route's address (or loopback without a route)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RAYDECK_URL", ""),
        ("RAYDECK_URL", "ftp://x"),
        ("RAYDECK_BOOTSTRAP_TOKEN", ""),
        ("RAYDECK_NODE_ID", "not-a-uuid"),
        ("RAYDECK_PORTS", "1,2,3"),
        ("RAYDECK_PORTS", "1,1,2,3,4,5,6,7"),
        ("RAYDECK_CPUS", "many"),
    ],
)
def test_config_errors(name, value):
    with pytest.raises(ConfigError):
        Config.from_env(env(**{name: value}))


def test_main_exits_2_on_a_bad_environment(monkeypatch, capsys):
    for key in list(os.environ):
        if key.startswith("RAYDECK_"):
            monkeypatch.delenv(key)
    assert agent_main.main([]) == 2
    assert "RAYDECK_URL is not set" in capsys.readouterr().err


class Answers:
    """A control plane whose registration answers are these errors, in order."""

    def __init__(self, *errors: api.ApiError) -> None:
        self.errors = list(errors)

    def register(self, bootstrap_token: str, body: dict) -> dict:
        raise self.errors.pop(0) if len(self.errors) > 1 else self.errors[0]


@pytest.mark.parametrize(
    ("errors", "code"),
    [
        # Refusals are for good: a spent or expired token, a node the control plane
        # does not know, any other 4xx; a 503 before one is retried first.
        ([api.Unauthorized("401", 401)], EXIT_REFUSED),
        ([api.NotFound("404", 404)], EXIT_REFUSED),
        ([api.TransientError("503", 503), api.PermanentError("403", 403)], EXIT_REFUSED),
        # Unreachable for the whole window: the node's unit tries again later.
        ([api.TransientError("connection refused")], EXIT_GAVE_UP),
    ],
)
def test_a_refused_registration_exits_with_a_code_nothing_restarts_on(tmp_path, errors, code):
    config = Config.from_env(env(RAYDECK_NODE_DIR=str(tmp_path), RAYDECK_REGISTER_TIMEOUT="1"))
    assert Agent(config, client=Answers(*errors)).run() == code  # type: ignore[arg-type]
    assert (code in PERMANENT_EXITS) == (code == EXIT_REFUSED)


def test_ray_cpus_are_whole():
    assert ray_cpus(2.0) == 2
    assert ray_cpus(2.7) == 2
    assert ray_cpus(0.5) == 1
    assert ray_cpus(0) == 0


# --- the ray start command -----------------------------------------------------------


def test_head_command():
    config = Config.from_env(env())
    command = ray_process.ray_start_command(config, registration(), None, (21100, 21199))
    assert command[:5] == ["/opt/venv/bin/python", "-m", "ray.scripts.scripts", "start", "--block"]
    for arg in [
        "--head",
        "--port=6001",
        "--dashboard-host=127.0.0.1",
        "--dashboard-port=6002",
        "--include-dashboard=true",
        "--node-manager-port=6003",
        "--object-manager-port=6004",
        "--dashboard-agent-listen-port=6005",
        "--metrics-export-port=6006",
        "--runtime-env-agent-port=6007",
        "--ray-client-server-port=6008",
        "--num-cpus=2",
        f"--memory={2048 << 20}",
        f"--object-store-memory={int((2048 << 20) * 0.3)}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={RAY_TEMP_ROOT}abcd1234",
        "--disable-usage-stats",
        "--min-worker-port=21100",
        "--max-worker-port=21199",
    ]:
        assert arg in command
    assert "stop" not in command


def test_worker_command_and_env():
    config = Config.from_env(env())
    reg = registration(role="worker")
    with pytest.raises(ValueError):
        ray_process.ray_start_command(config, reg, None, None)
    command = ray_process.ray_start_command(config, reg, "10.0.0.5:6379", None)
    assert "--address=10.0.0.5:6379" in command
    assert "--head" not in command and not any(a.startswith("--port=") for a in command)
    assert not any(a.startswith("--min-worker-port") for a in command)

    child_env = ray_process.ray_env(
        config, {"PATH": "/usr/bin", "RAYDECK_BOOTSTRAP_TOKEN": "secret", "RAYDECK_NODE_ID": "n"}
    )
    assert "RAYDECK_BOOTSTRAP_TOKEN" not in child_env
    assert child_env["RAYDECK_NODE_ID"] == "n"
    assert child_env[ray_process.MARKER_ENV] == NODE_ID
    assert child_env["PATH"] == "/opt/venv/bin:/usr/bin"  # job entrypoints' `python`
    assert child_env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "5"
    # Ray waits for its dashboard and its agents as long as the agent waits for Ray.
    assert child_env["RAY_DASHBOARD_STARTUP_TIMEOUT_S"] == str(int(config.ray_start_timeout))
    assert child_env["RAY_agent_register_timeout_ms"] == str(int(config.ray_start_timeout * 1000))


def test_sizes_fall_back_to_the_environment_and_zero_memory_is_ray_default():
    config = Config.from_env(env())
    answer = {
        "credential": "rdn_x",
        "cluster_id": "c1",
        "node_id": NODE_ID,
        "role": "head",
        "ray": {"temp_dir": f"{RAY_TEMP_ROOT}abcd1234"},
    }
    reg = api.Registration.from_response(answer, num_cpus=3.0, memory_mb=4096)
    assert (reg.num_cpus, reg.memory_mb, reg.heartbeat_interval) == (3.0, 4096, 5.0)
    reg.memory_mb = 0
    command = ray_process.ray_start_command(config, reg, None, None)
    assert not any(a.startswith(("--memory", "--object-store-memory")) for a in command)


def test_worker_port_ranges_are_locked_per_agent(tmp_path):
    node_id = str(uuid.uuid4())
    low, high, fd = ray_process.reserve_worker_ports(node_id, tmp_path)
    assert fd is not None
    assert high - low == 99 and low >= 20000 and high < 32768
    # Another node hashing to the same slot gets the next free one.
    low2, _, fd2 = ray_process.reserve_worker_ports(node_id, tmp_path)
    assert low2 != low
    os.close(fd)
    assert fd2 is not None
    os.close(fd2)
    # Released with the agent: the slot is free again.
    low3, _, fd3 = ray_process.reserve_worker_ports(node_id, tmp_path)
    assert low3 == low
    assert fd3 is not None
    os.close(fd3)


# --- the dashboard's answers (shapes as Ray 2.60 serves them) --------------------------

NODES = {
    "result": True,
    "msg": "",
    "data": {
        "result": {
            "total": 3,
            "result": [
                {
                    "node_id": "a",
                    "state": "ALIVE",
                    "is_head_node": True,
                    "resources_total": {
                        "CPU": 2.0,
                        "memory": 2147483648.0,
                        "object_store_memory": 200000000.0,
                        "node:__internal_head__": 1.0,
                        "node:192.0.2.2": 1.0,
                    },
                },
                {
                    "node_id": "b",
                    "state": "ALIVE",
                    "resources_total": {
                        "CPU": 1.0,
                        "GPU": 1.0,
                        "memory": 1073741824.0,
                        "object_store_memory": 100000000.0,
                        "my_accel": 2.0,
                    },
                },
                {"node_id": "c", "state": "DEAD", "resources_total": {"CPU": 8.0}},
            ],
        }
    },
}

CLUSTER_STATUS = {
    "result": True,
    "msg": "Got cluster status.",
    "data": {
        "autoscalingStatus": "Cluster status: ...",
        "autoscalingError": None,
        "clusterStatus": {
            "loadMetricsReport": {
                "usage": {
                    "CPU": [2.0, 3.0],
                    "memory": [0.0, 3221225472.0],
                    "objectStoreMemory": [1000.0, 300000000.0],
                    "myAccel": [1.0, 2.0],
                    "node:InternalHead": [0.0, 1.0],
                },
                "resourceDemand": [[{"CPU": 2.0}, 2], [{"CPU": 8.0}, 1]],
                "pgDemand": [[{"bundles": [[{"GPU": 1.0}, 2]], "strategy": "PACK"}, 1]],
                "requestDemand": [],
            }
        },
    },
}

JOBS = [
    {"type": "SUBMISSION", "status": "RUNNING", "submission_id": "raysubmit_1"},
    {"type": "SUBMISSION", "status": "FAILED", "submission_id": "raysubmit_2"},
    {"type": "DRIVER", "status": "RUNNING", "job_id": "01000000"},
    {"type": "DRIVER", "status": "SUCCEEDED", "job_id": "02000000"},
]


def test_dashboard_parsing():
    nodes = ray_status.alive_nodes(NODES)
    assert [n["node_id"] for n in nodes] == ["a", "b"]
    totals = ray_status.total_resources(nodes)
    assert totals == {
        "CPU": 3.0,
        "memory": 3221225472.0,
        "GPU": 1.0,
        "object_store_memory": 300000000.0,
        "my_accel": 2.0,
    }
    assert ray_status.used_resources(CLUSTER_STATUS, totals) == {
        "CPU": 2.0,
        "memory": 0.0,
        "GPU": 0.0,
        "object_store_memory": 1000.0,
        "my_accel": 1.0,
    }
    assert ray_status.pending_demand(CLUSTER_STATUS) == [
        {"CPU": 2.0},
        {"CPU": 2.0},
        {"CPU": 8.0},
        {"GPU": 1.0},
        {"GPU": 1.0},
    ]
    assert ray_status.count_jobs(JOBS, "SUBMISSION") == 1
    assert ray_status.count_jobs(JOBS, "DRIVER") == 1
    # Before the autoscaler's first report, or from an unexpected shape: nothing, no error.
    empty = {"data": {"clusterStatus": None}}
    assert ray_status.pending_demand(empty) is None
    assert ray_status.used_resources(empty, totals) is None
    assert ray_status.alive_nodes({"oops": 1}) is None


def test_cluster_info_from_a_fake_dashboard():
    routes = {
        "/api/v0/nodes": NODES,
        "/api/cluster_status": CLUSTER_STATUS,
        "/api/jobs/": JOBS,
    }
    with serve(routes) as port:
        info = ray_status.Dashboard(port).cluster_info()
    assert info["nodes"] == 2
    assert info["resources_total"]["CPU"] == 3.0
    assert info["resources_used"]["CPU"] == 2.0
    assert len(info["pending_demand"]) == 5
    assert info["running_jobs"] == 1 and info["running_drivers"] == 1
    # A dashboard that is not there yields an empty, not an error.
    assert ray_status.Dashboard(free_ports(1)[0], timeout=0.5).cluster_info() == {}


# --- logs ------------------------------------------------------------------------------


def test_log_buffer_keeps_the_last_lines():
    buffer = logs.LogBuffer(maxlen=5)
    buffer.add("agent", "one\ntwo\n\n")
    seq = buffer.seq
    assert buffer.tail() == ["[agent] one", "[agent] two"]
    buffer.add("raylet.out", "\n".join(str(i) for i in range(10)))
    assert buffer.seq == seq + 10
    assert buffer.tail(3) == ["[raylet.out] 7", "[raylet.out] 8", "[raylet.out] 9"]
    assert len(buffer.tail()) == 5


def test_file_follower_handles_partial_lines_and_rotation(tmp_path):
    path = tmp_path / "raylet.out"
    buffer = logs.LogBuffer()
    follower = logs.FileFollower(path, "raylet.out")
    follower.poll(buffer)  # not there yet
    path.write_text("first\nsecond without end")
    follower.poll(buffer)
    assert buffer.tail() == ["[raylet.out] first"]
    with open(path, "a") as f:
        f.write(" yet\n")
    follower.poll(buffer)
    assert buffer.tail()[-1] == "[raylet.out] second without end yet"
    seq = buffer.seq
    follower.poll(buffer)
    assert buffer.seq == seq  # nothing new, nothing added
    path.unlink()
    path.write_text("after rotation\n")
    follower.poll(buffer)
    assert buffer.tail()[-1] == "[raylet.out] after rotation"


def test_ray_log_watcher_follows_ray_system_files_only(tmp_path):
    node_dir, temp_dir = tmp_path / "node", tmp_path / "ray"
    logs_dir = temp_dir / "session_2026" / "logs"
    logs_dir.mkdir(parents=True)
    node_dir.mkdir()
    (temp_dir / "session_latest").symlink_to(temp_dir / "session_2026")
    buffer = logs.LogBuffer()
    watcher = logs.RayLogWatcher(buffer, node_dir, temp_dir)
    (node_dir / logs.RAY_START_LOG).write_text("Ray runtime started.\n")
    (logs_dir / "gcs_server.out").write_text("gcs up\n")
    (logs_dir / "dashboard.log").write_text(
        "INFO web_log.py:229 -- 127.0.0.1 'GET /api/jobs/ HTTP/1.1' 200\nINFO head.py:1 -- up\n"
    )
    (logs_dir / "monitor.log").write_text("Autoscaler status\n")
    # What the user's code prints stays on the node: never in a heartbeat.
    (logs_dir / "worker-0a1b-01000000-4242.err").write_text("Traceback\n")
    (logs_dir / "job-driver-raydeck-1.log").write_text("my output\n")
    watcher.poll()
    assert sorted(buffer.tail()) == [
        "[dashboard.log] INFO head.py:1 -- up",
        "[gcs_server.out] gcs up",
        "[ray-start] Ray runtime started.",
    ]


def test_log_shipping_to_a_folder(tmp_path):
    source = tmp_path / "agent.log"
    source.write_text("a\n")
    sink = logs.sink_for(str(tmp_path / "dest"), "c1", NODE_ID)
    shipper = logs.LogShipper(sink, lambda: [("agent.log", source)])
    shipper.ship()
    with open(source, "a") as f:
        f.write("b\n")
    shipper.ship()
    shipper.ship()
    assert (tmp_path / "dest" / "c1" / NODE_ID / "agent.log").read_text() == "a\nb\n"
    assert isinstance(logs.sink_for(f"file://{tmp_path}", "c1", NODE_ID), logs.LocalFolderSink)
    for location in ("s3:///no-bucket", "relative/path"):
        with pytest.raises(logs.UnsupportedLogLocation):
            logs.sink_for(location, "c1", NODE_ID)
    with pytest.raises(logs.UnsupportedLogLocation):
        logs.sink_for(str(tmp_path), "..", NODE_ID)


# --- registration, state, usage -------------------------------------------------------


def test_registration_validation():
    reg = registration(log_location="/var/log/raydeck")
    assert reg.role == "head" and reg.num_cpus == 2.0 and reg.head_address is None
    assert reg.log_location == "/var/log/raydeck"
    for bad in ({"role": "boss"}, {"credential": ""}, {"ray": None}):
        with pytest.raises(api.PermanentError):
            registration(**bad)
    assert api.clamp_interval(0) == 0.5
    assert api.clamp_interval("x") == 5.0
    assert api.clamp_interval(10_000) == 300.0


def test_state_is_bound_to_node_and_token(tmp_path):
    reg = registration()
    state.save(tmp_path, NODE_ID, "rdb_token", reg)
    assert oct((tmp_path / state.STATE_FILE).stat().st_mode & 0o777) == "0o600"
    assert state.load(tmp_path, NODE_ID, "rdb_token") == reg
    assert state.load(tmp_path, NODE_ID, "rdb_other") is None  # a relaunch, new token
    assert state.load(tmp_path, str(uuid.uuid4()), "rdb_token") is None
    (tmp_path / state.STATE_FILE).write_text("{not json")
    assert state.load(tmp_path, NODE_ID, "rdb_token") is None


def test_usage_from_proc():
    sampler = UsageSampler()
    sum(i * i for i in range(200_000))  # some CPU time between the samples
    usage = sampler.sample()
    assert 0.0 <= usage["cpu_percent"] <= 100.0
    assert 0.0 < usage["memory_percent"] < 100.0
    assert usage["memory_used_mb"] > 0
    assert usage["gpus"] >= 0


def test_usage_from_fake_proc(tmp_path):
    (tmp_path / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    (tmp_path / "meminfo").write_text("MemTotal: 1000000 kB\nMemAvailable: 250000 kB\n")
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    sampler = UsageSampler(proc=tmp_path, dev=dev)
    (tmp_path / "stat").write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")
    usage = sampler.sample()
    assert usage == {
        "cpu_percent": 50.0,
        "memory_percent": 75.0,
        "memory_used_mb": 732,
        "gpus": 2,
    }


# --- the HTTP client -------------------------------------------------------------------


class serve:
    """A tiny JSON server: GET path -> body, POST path -> (status, body, headers)."""

    def __init__(self, routes: dict[str, object]) -> None:
        self.routes = routes

    def __enter__(self) -> int:
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                route = routes.get(self.path.split("?")[0])
                status, body, headers = (
                    route
                    if isinstance(route, tuple)
                    else (200 if route is not None else 404, route, {})
                )
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._answer()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self.server.server_address[1]

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (401, {}, api.Unauthorized),
        (404, {}, api.NotFound),
        (400, {}, api.PermanentError),
        (302, {"Location": "https://elsewhere/"}, api.PermanentError),
        (429, {}, api.TransientError),
        (502, {}, api.TransientError),
    ],
)
def test_client_sorts_errors(status, headers, error):
    with serve({"/agent/v1/heartbeat": (status, {"error": "x"}, headers)}) as port:
        client = api.ControlPlane(f"http://127.0.0.1:{port}")
        with pytest.raises(error) as caught:
            client.heartbeat("rdn_x", {})
    assert caught.value.status == status
    assert type(caught.value) is error


def test_a_503_is_transient_and_says_how_long_to_wait():
    answer = (503, {"error": {"code": "unavailable"}}, {"Retry-After": "7"})
    with (
        serve({"/agent/v1/heartbeat": answer}) as port,
        pytest.raises(api.TransientError) as caught,
    ):
        api.ControlPlane(f"http://127.0.0.1:{port}").heartbeat("rdn_x", {})
    assert caught.value.retry_after == 7


def test_heartbeats_back_off_while_they_fail_but_stay_within_the_grace():
    """Doubling from the interval, at least a 503's Retry-After, at most two intervals:
    a node is judged from when the control plane listens again (15 s of grace)."""
    from types import SimpleNamespace

    from raydeck_agent.agent import Node

    def wait(failures: int, retry_after: float | None = None) -> float:
        node = SimpleNamespace(interval=5.0, _failures=failures, _retry_after=retry_after)
        return Node._next_wait(node)  # type: ignore[arg-type]

    assert [wait(n) for n in range(5)] == [5.0, 5.0, 10.0, 10.0, 10.0]
    assert wait(1, retry_after=7) == 7.0
    assert wait(1, retry_after=600) == 10.0


def test_client_transient_on_network_errors_and_garbage():
    client = api.ControlPlane(f"http://127.0.0.1:{free_ports(1)[0]}", timeout=1)
    with pytest.raises(api.TransientError):
        client.register("rdb_x", {})
    garbage = {"/agent/v1/register": (200, b"<html>proxy</html>", {})}
    with serve(garbage) as port, pytest.raises(api.TransientError):
        api.ControlPlane(f"http://127.0.0.1:{port}").register("rdb_x", {})
    with serve({"/agent/v1/register": {"credential": "rdn_1"}}) as port:
        assert api.ControlPlane(f"http://127.0.0.1:{port}/").register("rdb_x", {}) == {
            "credential": "rdn_1"
        }


def test_orders_reach_their_handler_and_a_broken_handler_stops_nothing(tmp_path, monkeypatch):
    from raydeck_agent import orders as orders_module

    class Echo:
        topic = "echo"

        def __init__(self):
            self.seen = []

        def handle(self, payload):
            self.seen.append(payload)

        def report(self):
            return {"seen": len(self.seen)}

        def stop(self):
            self.seen.append("stopped")

    class Broken:
        topic = "broken"

        def handle(self, payload):
            raise RuntimeError("bug")

        def report(self):
            raise RuntimeError("bug")

        def stop(self):
            raise RuntimeError("bug")

    echo = Echo()
    monkeypatch.setattr(
        orders_module,
        "HANDLER_FACTORIES",
        [lambda ctx: echo, lambda ctx: Broken(), lambda ctx: None],
    )
    context = orders_module.HeadContext(
        node_dir=tmp_path, python="python3", ray_env={}, dashboard_url="http://127.0.0.1:1"
    )
    head = orders_module.Orders(context)
    head.handle({"broken": 1, "echo": {"a": 1}, "unknown": 2})
    head.handle("not a dict")
    assert head.reports() == {"echo": {"seen": 1}}
    head.stop()
    assert echo.seen == [{"a": 1}, "stopped"]
