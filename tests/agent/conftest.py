"""Fixtures for the node agent's tests: no Django, a fake control plane on a random port,
and agents run as real subprocesses in their own process groups.

Every agent started through `spawn` is SIGKILLed with its whole process group, and every
process carrying its node marker (Ray starts some in sessions of their own), when the
test ends, pass or fail, so no test leaks a Ray.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

AGENT_SRC = Path(__file__).resolve().parents[2] / "agent"
# The package is importable without being installed (pip install -e agent/ also works).
if str(AGENT_SRC) not in sys.path:
    sys.path.insert(0, str(AGENT_SRC))

from raydeck_agent.apps import prometheus_executable  # noqa: E402

from .fake_control_plane import FakeControlPlane, FakeNode  # noqa: E402

PYTHON = sys.executable
# Like the control plane's temp dirs: short, since Ray's Unix socket paths live under them.
RAY_TEMP_ROOT = "/tmp/raydeck/"  # noqa: S108
MARKER_ENV = "RAYDECK_RAY_NODE"


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def free_ports(n: int) -> list[int]:
    """Ports the kernel says are free, all bound at once so none repeats."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[2])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    found = []
    for name in os.listdir("/proc"):
        stat = _stat(int(name)) if name.isdigit() else None
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            found.append(int(name))
    return found


def marked_processes(node_id: str) -> list[int]:
    """Live processes started under this node's Ray, in whatever process group."""
    marker = f"{MARKER_ENV}={node_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _stat(int(name))
        if stat is None or stat[0] in ("Z", "X"):
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(name))
    return found


@dataclass
class AgentRun:
    proc: subprocess.Popen[bytes]
    node_id: str
    node_dir: Path
    ports: list[int]
    stderr_path: Path
    temp_dir: str

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the agent leads its own group

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def short_temp_dir() -> str:
    # Unix socket paths under it must stay below ~107 bytes.
    return f"{RAY_TEMP_ROOT}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def control_plane() -> Iterator[FakeControlPlane]:
    plane = FakeControlPlane()
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., AgentRun]]:
    runs: list[AgentRun] = []

    def start(
        plane: FakeControlPlane,
        node: FakeNode,
        *,
        node_id: str | None = None,
        node_dir: Path | None = None,
        ports: list[int] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> AgentRun:
        node_id = node_id or str(uuid.uuid4())
        node_dir = node_dir or tmp_path / node_id
        node_dir.mkdir(parents=True, exist_ok=True)
        ports = ports or free_ports(8)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYDECK_", "RAY_"))}
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(AGENT_SRC), env.get("PYTHONPATH")])),
            RAYDECK_URL=plane.url,
            RAYDECK_BOOTSTRAP_TOKEN=node.token,
            RAYDECK_NODE_ID=node_id,
            RAYDECK_INSTANCE_ID=f"local-{node_id}",
            RAYDECK_NODE_DIR=str(node_dir),
            RAYDECK_PORTS=",".join(map(str, ports)),
            RAYDECK_CPUS=f"{node.num_cpus:g}",
            RAYDECK_MEMORY_MB=str(node.memory_mb),
            RAYDECK_PYTHON=PYTHON,
            RAYDECK_NODE_ADDRESS="127.0.0.1",
        )
        env.update(extra_env or {})
        stderr_path = node_dir / f"stderr-{len(runs)}.txt"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [PYTHON, "-m", "raydeck_agent"],
                cwd=node_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so the finalizer can kill the whole group
            )
        run = AgentRun(proc, node_id, node_dir, ports, stderr_path, node.temp_dir)
        runs.append(run)
        return run

    yield start

    for run in runs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pgid, signal.SIGKILL)
        for pid in marked_processes(run.node_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.proc.wait(5)
        if run.temp_dir.startswith(RAY_TEMP_ROOT):
            shutil.rmtree(run.temp_dir, ignore_errors=True)


# The apps a head starts besides Ray on this machine (its "image"): JupyterLab always
# (this project's Python has it), Prometheus where Debian's package is installed.
IMAGE_APPS = {"jupyter"} | ({"prometheus"} if prometheus_executable() else set())
