"""The local cloud's image registry: Debian's `docker-registry` (the CNCF Distribution
registry) on a loopback port, its storage under the cloud's root, started on first use
and found again afterwards (a restarted Raydeck adopts the one already running).

    root/registry/config.yml     storage folder and address
    root/registry/registry.json  pid, the pid's start time (/proc) and port
    root/registry/data/          the images
    root/registry/registry.log   its output

Only this machine can reach it (127.0.0.1), which is what the local cloud's nodes are.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .base import PermanentCloudError, PermanentErrorKind, TransientCloudError

REGISTRY_BINARY = "docker-registry"
START_TIMEOUT = 15.0


def process_start_time(pid: int) -> int | None:
    """When the process started (field 22 of /proc/<pid>/stat): with the pid, it tells
    our process from another one given a recycled pid. None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        return int(raw[raw.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _running(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / "registry.json").read_text())
    except (OSError, ValueError):
        return None
    if process_start_time(record.get("pid", -1)) != record.get("start_time"):
        return None
    return record if isinstance(record, dict) else None


def ensure_registry(root: Path) -> str:
    """The address (127.0.0.1:port) of the cloud's registry, started if it is not running."""
    if shutil.which(REGISTRY_BINARY) is None:
        raise PermanentCloudError(
            "The local cloud builds images into Debian's docker-registry, which is not "
            "installed on this machine: apt-get install docker-registry",
            kind=PermanentErrorKind.INVALID_REQUEST,
        )
    folder = root / "registry"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(folder):
        record = _running(folder)
        if record is not None and _answers(record["port"]):
            return f"127.0.0.1:{record['port']}"
        if record is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record["pid"], signal.SIGKILL)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        (folder / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        with open(folder / "registry.log", "ab") as log:
            process = subprocess.Popen(  # noqa: S603
                [REGISTRY_BINARY, "serve", str(folder / "config.yml")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the worker that started it
                env={"PATH": os.environ.get("PATH", os.defpath)},
            )
        (folder / "registry.json").write_text(
            json.dumps(
                {"pid": process.pid, "start_time": process_start_time(process.pid), "port": port}
            )
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if _answers(port):
                return f"127.0.0.1:{port}"
            if process.poll() is not None:
                break
            time.sleep(0.1)
        raise TransientCloudError(
            f"The local cloud's registry did not start on port {port}; see "
            f"{folder / 'registry.log'}."
        )


def stop_registry(root: Path) -> None:
    """Stop the cloud's registry (its images stay on disk)."""
    folder = root / "registry"
    if not folder.is_dir():
        return
    with _locked(folder):
        record = _running(folder)
        if record is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(record["pid"], signal.SIGTERM)
        for _ in range(50):
            if process_start_time(record["pid"]) is None:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(record["pid"], os.WNOHANG)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(record["pid"], signal.SIGKILL)
