"""The agent's settings, read once from the environment the boot script sets."""

from __future__ import annotations

import math
import os
import socket
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# The order of RAYDECK_PORTS: the local driver (clouds/providers/local.py, through
# clouds/providers/boot.py) hands out one port per name, in exactly this order.
PORT_NAMES = (
    "gcs",
    "dashboard",
    "node_manager",
    "object_manager",
    "dashboard_agent",
    "metrics",
    "runtime_env_agent",
    "client_server",
    "gateway",
    "serve",
)

# Exit codes that say a restart cannot help: the environment is wrong, or the control
# plane refused the registration for good (bad, spent or expired token; node gone).
# The node's systemd unit (clouds/providers/boot.py) does not restart after them; any
# other failure (unreachable control plane, crash) restarts. Not 1: Python's own.
EXIT_CONFIG = 2
EXIT_REFUSED = 77  # EX_NOPERM of sysexits.h
PERMANENT_EXITS = (EXIT_CONFIG, EXIT_REFUSED)

# Ray's own processes' logs, under <temp_dir>/session_latest/logs/, that heartbeats
# carry (each line labelled with its file's name).
RAY_LOG_FILES = (
    "raylet.out",
    "raylet.err",
    "gcs_server.out",
    "gcs_server.err",
    "dashboard.log",
    "dashboard.err",
    "dashboard_agent.log",
    "runtime_env_agent.log",
    # Not monitor.log: the autoscaler rewrites its status there every few seconds, which
    # would make the tail "change" on every heartbeat. Its errors go to monitor.err.
    "monitor.err",
    "ray_process_exit.log",
)
AGENT_LOG_SOURCE = "agent"  # the agent's own log
RAY_START_SOURCE = "ray-start"  # stdout+stderr of `ray start --block`
# Every source a heartbeat's log tail may carry: Raydeck's and Ray's system logs only.
# What the user's code prints (Ray's worker-*.out/err, job-driver-*.log) is customer
# data and never leaves the data plane; the server drops any other line too.
SYSTEM_LOG_SOURCES = frozenset({AGENT_LOG_SOURCE, RAY_START_SOURCE, *RAY_LOG_FILES})

# The last names of PORT_NAMES, which nodes launched before they existed do without.
OPTIONAL_PORTS = ("gateway", "serve")

# Without RAYDECK_PORTS (AWS/GCP: one node per machine) every node uses these fixed ports,
# so the cloud's firewall rules between a cluster's nodes can name them. gcs, dashboard,
# dashboard_agent and client_server are Ray's own defaults.
DEFAULT_PORTS: dict[str, int] = {
    "gcs": 6379,
    "dashboard": 8265,
    "node_manager": 6380,
    "object_manager": 6381,
    "dashboard_agent": 52365,
    "metrics": 6382,
    "runtime_env_agent": 6383,
    "client_server": 10001,
    # The access gateway (gateway.py): the one port users reach, next to the dashboard's.
    "gateway": 8266,
    # Ray Serve's HTTP proxy on the head (serve.py): what a service's router sends to.
    "serve": 8000,
}

DEFAULT_REGISTER_TIMEOUT = 600.0  # give up registering after ~10 minutes
# "failed" if Ray is not up by then: a head on a busy 2-core machine takes over two
# minutes, and a replacement starts again from zero. Kept inside the control plane's
# RAYDECK_READY_TIMEOUT_SECONDS (5 min), after which the whole cluster fails.
DEFAULT_RAY_START_TIMEOUT = 240.0
DEFAULT_STOP_TIMEOUT = 10.0  # SIGTERM grace for `ray start --block` before SIGKILL
DEFAULT_DEADMAN_SECONDS = 3600.0  # the control plane's answer usually sets it


class ConfigError(ValueError):
    """The environment is missing or has a malformed variable; the agent cannot start."""


@dataclass(frozen=True)
class Config:
    url: str
    bootstrap_token: str
    node_id: str
    instance_id: str
    node_dir: Path
    ports: dict[str, int]
    # True when RAYDECK_PORTS was given: several nodes share this machine (local cloud).
    shared_machine: bool
    cpus: float
    memory_mb: int
    python: str
    address: str
    hostname: str
    register_timeout: float = DEFAULT_REGISTER_TIMEOUT
    ray_start_timeout: float = DEFAULT_RAY_START_TIMEOUT
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    deadman_seconds: float = DEFAULT_DEADMAN_SECONDS
    # A PEM file of the CAs that sign RAYDECK_URL's certificate, when the node's system
    # CAs do not (the boot script writes it); None: the system's.
    ca_bundle: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        url = _required(env, "RAYDECK_URL").rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"RAYDECK_URL must be an http(s) URL, not {url!r}")
        node_id = _required(env, "RAYDECK_NODE_ID")
        try:
            uuid.UUID(node_id)
        except ValueError:
            raise ConfigError(f"RAYDECK_NODE_ID must be a UUID, not {node_id!r}") from None
        raw_ports = env.get("RAYDECK_PORTS", "").strip()
        ports = parse_ports(raw_ports) if raw_ports else dict(DEFAULT_PORTS)
        return cls(
            url=url,
            bootstrap_token=_required(env, "RAYDECK_BOOTSTRAP_TOKEN"),
            node_id=node_id,
            instance_id=env.get("RAYDECK_INSTANCE_ID", ""),
            node_dir=Path(env.get("RAYDECK_NODE_DIR") or os.getcwd()),
            ports=ports,
            shared_machine=bool(raw_ports),
            cpus=_number(env, "RAYDECK_CPUS", float(os.cpu_count() or 1)),
            memory_mb=int(_number(env, "RAYDECK_MEMORY_MB", 0)),
            python=env.get("RAYDECK_PYTHON") or sys.executable,
            address=env.get("RAYDECK_NODE_ADDRESS") or default_route_address(),
            hostname=socket.gethostname(),
            register_timeout=_number(env, "RAYDECK_REGISTER_TIMEOUT", DEFAULT_REGISTER_TIMEOUT),
            ray_start_timeout=_number(env, "RAYDECK_RAY_START_TIMEOUT", DEFAULT_RAY_START_TIMEOUT),
            stop_timeout=_number(env, "RAYDECK_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT),
            deadman_seconds=_number(env, "RAYDECK_DEADMAN_SECONDS", DEFAULT_DEADMAN_SECONDS),
            ca_bundle=_ca_bundle(env),
        )


def parse_ports(raw: str) -> dict[str, int]:
    try:
        values = [int(p) for p in raw.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"RAYDECK_PORTS must be comma-separated port numbers: {raw!r}") from None
    required = len(PORT_NAMES) - len(OPTIONAL_PORTS)
    if len(values) < required:
        raise ConfigError(
            f"RAYDECK_PORTS needs {required} ports ({', '.join(PORT_NAMES[:required])}) and "
            f"optionally {', '.join(OPTIONAL_PORTS)}, got {len(values)}: {raw!r}"
        )
    if any(not 0 < p < 65536 for p in values) or len(set(values)) != len(values):
        raise ConfigError(f"RAYDECK_PORTS must be distinct ports in 1-65535: {raw!r}")
    return dict(zip(PORT_NAMES, values, strict=False))


def default_route_address() -> str:
    """This machine's address on the default route: what other nodes can reach."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # connect() on UDP sends nothing; the kernel only picks the source address
            # it would use for that destination, i.e. the default route's.
            sock.connect(("8.8.8.8", 53))
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"  # no route at all: only this machine can reach us anyway


def ray_cpus(num_cpus: float) -> int:
    """`ray start --num-cpus` takes whole CPUs. Round down (never promise more than the
    node has), but keep a fractional node at 1 so it can still run tasks."""
    if num_cpus <= 0:
        return 0
    return max(1, math.floor(num_cpus + 1e-9))


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{name} must be a non-negative number, not {raw!r}")
    return value


def _ca_bundle(env: Mapping[str, str]) -> Path | None:
    raw = env.get("RAYDECK_CA_BUNDLE", "").strip()
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"RAYDECK_CA_BUNDLE is not a readable file: {raw!r}")
    return path
