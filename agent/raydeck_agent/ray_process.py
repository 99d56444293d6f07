"""Runs `ray start --block` as the agent's child, tells when Ray is up, and stops it.

The child stays in the agent's process group (no setsid): the local cloud stops a node
by signalling that whole group. `ray stop` is never used: it stops every Ray on the
machine, including other nodes of the local cloud.

Ray 2.60 starts some processes in sessions of their own (job drivers, and their watchers),
so the group alone does not find everything this node started. Every process started
under Ray inherits MARKER_ENV=<node id> from the agent, and stop() looks for that too.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import fcntl
import logging
import math
import os
import shlex
import signal
import socket
import subprocess
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from .api import Registration
from .config import Config, ray_cpus
from .ray_status import Dashboard

logger = logging.getLogger("raydeck_agent")

MARKER_ENV = "RAYDECK_RAY_NODE"
# Never handed to Ray: user code runs there.
SECRET_ENV = ("RAYDECK_BOOTSTRAP_TOKEN",)
# Ray's token authentication (Ray 2.52+): the mode and the cluster's token. Whatever the
# agent's own environment says about them is replaced (AUTH_ENV), never inherited.
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"  # noqa: S105 - a variable name
AUTH_ENV = (AUTH_MODE_ENV, AUTH_TOKEN_ENV, "RAY_AUTH_TOKEN_PATH")
# Ray 2.60 drains a node for up to 30 s on SIGTERM; keep that inside our stop grace.
DRAIN_ENV = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"
DRAIN_SECONDS = "5"
# Ray's own waits at start: `ray start` for its dashboard (60 s, then it gives up), the
# raylet for its agents to register (30 s, then it kills and restarts them). On a loaded
# machine both run out before our RAYDECK_RAY_START_TIMEOUT, and the node is replaced for
# being slow, not broken: they get our timeout instead. (The raylet's wait for its agents'
# port files, 15 s, is fixed in Ray: START_ATTEMPTS below covers it.)
DASHBOARD_WAIT_ENV = "RAY_DASHBOARD_STARTUP_TIMEOUT_S"
AGENTS_WAIT_ENV = "RAY_agent_register_timeout_ms"
OBJECT_STORE_SHARE = 0.3  # of memory_mb, like Ray's own default share of the machine
OBJECT_STORE_MIN_BYTES = 80 << 20  # Ray refuses less than 75 MiB
MIB = 1 << 20

# Worker ports on a machine shared by several nodes: a range of WORKER_PORTS_SPAN per
# node, between WORKER_PORTS_BASE and the kernel's ephemeral range (outgoing connections
# take ports from there at random, which would collide with workers' listening ports).
WORKER_PORTS_BASE = 20000
WORKER_PORTS_SPAN = 100
# Lock files live next to the nodes' temp dirs (/tmp/raydeck/<id>): shared by all nodes.
WORKER_PORTS_LOCKS = ".worker-ports"

# Seconds between readiness checks while Ray starts (a refused connection costs nothing;
# the agent's loop wakes this often then): the cluster is running only once the agent saw
# Ray ready, so half of this is added to every start on average.
READY_CHECK_EVERY = 0.1
# `ray start` gives up when its raylet has not registered 30 s after it started (also
# when the raylet crashed waiting for its agents' port files; both limits are fixed in
# Ray): on a busy machine that is slowness, not a broken node. The agent runs it again,
# within RAYDECK_RAY_START_TIMEOUT of the first start, rather than have the whole node
# replaced (which starts from zero).
RAY_GAVE_UP = "timed out during startup"
START_ATTEMPTS = 3
LEFTOVER_GRACE = 2.0  # after `ray start` exited, before SIGKILL of what it left behind


class Phase(enum.StrEnum):
    IDLE = "idle"  # not started (a worker waiting for the head's address)
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


class RayProcess:
    def __init__(self, config: Config, registration: Registration, *, log_path: Path) -> None:
        self.config = config
        self.registration = registration
        self.log_path = log_path
        self.is_head = registration.role == "head"
        self.dashboard = Dashboard(config.ports["dashboard"], token=registration.ray_auth_token)
        self.phase = Phase.IDLE
        self.message = ""
        self.head_address: str | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self._log: IO[bytes] | None = None
        self._started_at = 0.0  # of the first attempt: the start timeout counts from there
        self.attempts = 0
        self._last_check = 0.0
        self._port_lock: int | None = None

    # -- start --------------------------------------------------------------------

    def start(self, head_address: str | None = None) -> None:
        self.attempts += 1
        worker_ports = None
        if self.config.shared_machine:
            locks = Path(self.registration.temp_dir).parent / WORKER_PORTS_LOCKS
            low, high, self._port_lock = reserve_worker_ports(self.config.node_id, locks)
            worker_ports = (low, high)
        self.head_address = head_address
        command = ray_start_command(self.config, self.registration, head_address, worker_ports)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it until stop
        self._log.write(f"=== raydeck-agent: {shlex.join(command)}\n".encode())
        self._log.flush()
        logger.info(
            "starting Ray %s: %s", "head" if self.is_head else "worker", shlex.join(command)
        )
        try:
            self.child = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                command,
                cwd=self.config.node_dir,
                env=ray_env(self.config, os.environ, auth_token=self.registration.ray_auth_token),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # preexec_fn is fork-unsafe with threads; the agent has only one.
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            self.phase = Phase.FAILED
            self.message = f"could not run {self.config.python}: {exc}"
            logger.error("%s", self.message)
            return
        if self.attempts == 1:
            self._started_at = time.monotonic()
        self.phase = Phase.STARTING
        self.message = (
            f"starting Ray head (GCS port {self.config.ports['gcs']})"
            if self.is_head
            else f"starting Ray worker, joining {head_address}"
        )

    # -- watch --------------------------------------------------------------------

    def poll(self) -> bool:
        """Update phase/message; True when either changed."""
        before = (self.phase, self.message)
        if self.child is not None and self.exit_code is None and self.phase != Phase.STOPPED:
            code = self.child.poll()
            if code is not None and self._start_again():
                return (self.phase, self.message) != before
            if code is not None:
                self.exit_code = code
                when = "before Ray was ready" if self.phase == Phase.STARTING else "unexpectedly"
                self.phase = Phase.FAILED
                self.message = f"ray start exited with code {code} {when}"
                if output := last_lines(self.log_path, 3):
                    self.message += ": " + " | ".join(output)
                logger.error("%s", self.message)
            elif code is None and self.phase != Phase.READY:
                self._check_ready()
        return (self.phase, self.message) != before

    def _start_again(self) -> bool:
        """After `ray start` exited before Ray was ready because Ray's own wait for its
        raylet ran out: start it again while attempts and the start timeout allow. True
        when it was started again."""
        elapsed = time.monotonic() - self._started_at
        if (
            self.phase != Phase.STARTING
            or self.attempts >= START_ATTEMPTS
            or elapsed >= self.config.ray_start_timeout
            or not any(RAY_GAVE_UP in line for line in last_lines(self.log_path, 5))
        ):
            return False
        logger.warning(
            "ray start gave up on its raylet after %.0f s (attempt %d); starting it again",
            elapsed,
            self.attempts,
        )
        self.close()
        # It SIGTERMed what it started; their ports are free once they have exited.
        time.sleep(LEFTOVER_GRACE)
        self.start(self.head_address)
        return True

    def _check_ready(self) -> None:
        now = time.monotonic()
        if now - self._last_check < READY_CHECK_EVERY:
            return
        self._last_check = now
        missing = self.missing()
        if not missing:
            late = self.phase == Phase.FAILED
            self.phase = Phase.READY
            if self.is_head:
                self.message = (
                    f"Ray head is up: GCS {self.config.address}:{self.config.ports['gcs']}, "
                    f"dashboard 127.0.0.1:{self.config.ports['dashboard']}"
                )
            else:
                self.message = f"Ray worker is up and joined {self.head_address}"
            elapsed = now - self._started_at
            logger.info("%s (after %.1f s%s)", self.message, elapsed, ", late" if late else "")
        elif (
            self.phase == Phase.STARTING and now - self._started_at > self.config.ray_start_timeout
        ):
            self.phase = Phase.FAILED
            self.message = (
                f"Ray did not start within {self.config.ray_start_timeout:.0f} s: "
                + "; ".join(missing)
            )
            logger.error("%s", self.message)

    def missing(self) -> list[str]:
        """What is not up yet, in words for the failure message."""
        ports = self.config.ports
        missing = []
        if self.is_head:
            if not self._listening(ports["gcs"]):
                missing.append(f"the GCS is not listening on port {ports['gcs']}")
            if self.dashboard.version(timeout=1.0) is None:
                missing.append(f"the dashboard does not answer on 127.0.0.1:{ports['dashboard']}")
            elif not self.dashboard.alive_nodes(timeout=2.0):
                missing.append("the head's raylet has not registered with the GCS")
        else:
            for name in ("node_manager", "object_manager"):
                if not self._listening(ports[name]):
                    label = name.replace("_", " ")
                    missing.append(f"the raylet's {label} is not listening on port {ports[name]}")
        return missing

    def _listening(self, port: int) -> bool:
        hosts = ["127.0.0.1"]
        if self.config.address not in hosts:
            hosts.append(self.config.address)  # Ray may bind only the node's address
        return any(tcp_open(host, port) for host in hosts)

    # -- stop ---------------------------------------------------------------------

    def stop(self, grace: float) -> None:
        """SIGTERM `ray start --block`, wait up to `grace`, then SIGKILL whatever is left of
        this node: the rest of our process group and anything carrying MARKER_ENV."""
        child = self.child
        exited = True
        if child is not None and child.poll() is None:
            logger.info("stopping Ray (SIGTERM to pid %d)", child.pid)
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                exited = False
                logger.warning("ray start did not exit %.0f s after SIGTERM; killing it", grace)
        if exited:
            # `ray start` has SIGTERMed its processes (or the local cloud the whole group):
            # give the last ones a moment to finish on their own.
            settle = time.monotonic() + LEFTOVER_GRACE
            while node_processes(self.config.node_id) and time.monotonic() < settle:
                time.sleep(0.1)
        deadline = time.monotonic() + 5
        reported = False
        while left := node_processes(self.config.node_id):
            if time.monotonic() > deadline:
                logger.error("processes survived SIGKILL: %s", left)
                break
            if not reported:
                reported = True
                names = ", ".join(f"{pid} ({_comm(pid)})" for pid in left)
                logger.info("killing %d leftover processes: %s", len(left), names)
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if child is not None:
                child.poll()  # reap it, or it stays a zombie of ours
            time.sleep(0.1)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
        if self.phase != Phase.IDLE:
            self.phase = Phase.STOPPED
            self.message = "Ray stopped"
        self.close()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._port_lock is not None:
            os.close(self._port_lock)
            self._port_lock = None


# --- the command ---------------------------------------------------------------------


def ray_start_command(
    config: Config,
    registration: Registration,
    head_address: str | None,
    worker_ports: tuple[int, int] | None,
) -> list[str]:
    ports = config.ports
    memory = registration.memory_mb * MIB
    object_store = (
        registration.object_store_memory_mb * MIB
        if registration.object_store_memory_mb
        else int(memory * OBJECT_STORE_SHARE)
    )
    command = [config.python, "-m", "ray.scripts.scripts", "start", "--block"]
    if registration.role == "head":
        command += [
            "--head",
            f"--port={ports['gcs']}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports['dashboard']}",
            "--include-dashboard=true",
            f"--ray-client-server-port={ports['client_server']}",
        ]
    else:
        if not head_address:
            raise ValueError("a worker needs the head's address")
        command.append(f"--address={head_address}")
    command += [
        f"--node-ip-address={config.address}",
        f"--num-cpus={ray_cpus(registration.num_cpus)}",
    ]
    if memory > 0:  # else Ray sizes both from the machine's memory
        command += [
            f"--memory={memory}",
            f"--object-store-memory={max(object_store, OBJECT_STORE_MIN_BYTES)}",
        ]
    command += [
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        f"--dashboard-agent-listen-port={ports['dashboard_agent']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--temp-dir={registration.temp_dir}",
        # Lets the head tell the control plane which of its nodes are idle (ray_status).
        f"--node-name={config.node_id}",
        "--disable-usage-stats",
    ]
    if worker_ports is not None:
        command += [f"--min-worker-port={worker_ports[0]}", f"--max-worker-port={worker_ports[1]}"]
    return command


def ray_env(
    config: Config, base: Mapping[str, str], *, auth_token: str | None = None
) -> dict[str, str]:
    """The environment of Ray and of everything that talks to this cluster's Ray. With
    the cluster's token (the registration's `ray_auth_token`), Ray's ports require it:
    RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (AUTH_TOKEN_ENV), which Ray's own clients
    (ray.init, the job SDK) read; an HTTP call to the dashboard sends it as
    `Authorization: Bearer <RAY_AUTH_TOKEN>`."""
    env = {k: v for k, v in base.items() if k not in SECRET_ENV and k not in AUTH_ENV}
    env[MARKER_ENV] = config.node_id
    if auth_token:
        env[AUTH_MODE_ENV] = "token"
        env[AUTH_TOKEN_ENV] = auth_token
    if DRAIN_ENV not in env:
        env[DRAIN_ENV] = DRAIN_SECONDS
    if DASHBOARD_WAIT_ENV not in env:
        env[DASHBOARD_WAIT_ENV] = str(math.ceil(config.ray_start_timeout))
    if AGENTS_WAIT_ENV not in env:
        env[AGENTS_WAIT_ENV] = str(math.ceil(config.ray_start_timeout * 1000))
    env["PYTHONUNBUFFERED"] = "1"
    # Job entrypoints say `python ...`: it must be the node's Python, the one with Ray.
    bin_dir = os.path.dirname(config.python)
    path = env.get("PATH", os.defpath)
    if bin_dir and path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = os.pathsep.join([bin_dir, path])
    return env


def reserve_worker_ports(node_id: str, lock_dir: Path) -> tuple[int, int, int | None]:
    """A worker port range for this node, (low, high, lock fd). The slot starts at a hash
    of the node id; an flock on its file (held until the agent exits) makes other agents
    on this machine skip it."""
    slots = _worker_port_slots()
    first = zlib.crc32(node_id.encode()) % slots
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        for i in range(slots):
            slot = (first + i) % slots
            fd = os.open(lock_dir / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            low = WORKER_PORTS_BASE + slot * WORKER_PORTS_SPAN
            return low, low + WORKER_PORTS_SPAN - 1, fd
    except OSError as exc:
        logger.warning("cannot lock a worker port range (%s); using the hashed one", exc)
    low = WORKER_PORTS_BASE + first * WORKER_PORTS_SPAN
    return low, low + WORKER_PORTS_SPAN - 1, None


def _worker_port_slots() -> int:
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    slots = (ephemeral_low - WORKER_PORTS_BASE) // WORKER_PORTS_SPAN
    return slots if slots >= 8 else 400  # an unusual ephemeral range: fall back to 20000-59999


# --- processes -----------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) from /proc/<pid>/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        # comm (field 2) may contain spaces and ")": split after the last ")".
        rest = raw[raw.rindex(b")") + 2 :].split()
        return rest[0].decode(), int(rest[2])
    except (OSError, ValueError, IndexError):
        return None


def _has_env(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False  # gone, or another user's process


def node_processes(node_id: str) -> list[int]:
    """Live processes of this node other than the agent itself: the members of the
    agent's process group when the agent leads it (os.killpg would kill the agent too),
    and, in any group, processes carrying MARKER_ENV=<node id>."""
    me = os.getpid()
    group = os.getpgrp()
    leader = group == me  # else the group may hold our parent's other processes
    marker = f"{MARKER_ENV}={node_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X", "x"):
            continue  # gone, or a zombie waiting to be reaped
        if (leader and stat[1] == group) or _has_env(pid, marker):
            found.append(pid)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def last_lines(path: Path, n: int, max_bytes: int = 4096) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()][-n:]


# Looked up before any fork, so the child only makes one libc call.
def _find_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_prctl = _find_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it if the agent dies without stopping it
    (SIGKILL, crash), so Ray never outlives its agent unnoticed."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
