"""Web apps the head runs behind its access gateway when the image has them.

JupyterLab: found as `jupyter-lab` next to the node's Python. It listens on loopback
only, under /jupyter/, without a token of its own (the gateway is its authentication).
Its port is chosen before registration and reported with the node's ports, so the
console offers a "Jupyter" link only when it is there. Grafana is not started here
(the gateway would proxy /grafana/ to a "grafana" port if one were reported).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path

logger = logging.getLogger("raydeck_agent")

JUPYTER_PORT = 8888  # on a machine of its own; the local cloud picks a free one
JUPYTER_BASE_URL = "/jupyter/"  # gateway.py APP_PREFIXES


def jupyter_executable(python: str) -> Path | None:
    candidate = Path(python).parent / "jupyter-lab"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plan(python: str, shared_machine: bool) -> dict[str, int]:
    """{app: port} of the apps this node could run, reported when registering."""
    if jupyter_executable(python) is None:
        return {}
    return {"jupyter": _free_port() if shared_machine else JUPYTER_PORT}


class Apps:
    """The app processes of a head node, started once and stopped with the agent."""

    def __init__(self, python: str, ports: dict[str, int], work_dir: Path, log_dir: Path) -> None:
        self.python = python
        self.ports = dict(ports)
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, env: dict[str, str]) -> dict[str, int]:
        """Start what is planned; returns {app: port} of those that started."""
        started: dict[str, int] = {}
        executable = jupyter_executable(self.python)
        port = self.ports.get("jupyter")
        if executable is not None and port:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            command = [
                str(executable),
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--ServerApp.base_url={JUPYTER_BASE_URL}",
                f"--ServerApp.root_dir={self.work_dir}",
                # The gateway authenticates every request; Jupyter asks nothing more.
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                # Requests arrive through the gateway with the browser's Host header.
                "--ServerApp.allow_remote_access=True",
            ]
            try:
                with open(self.log_dir / "jupyter.log", "ab") as log:
                    self.children.append(
                        subprocess.Popen(  # noqa: S603 - our own argv, no shell
                            command,
                            cwd=self.work_dir,
                            env=env,
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            except OSError as exc:
                logger.error("could not start JupyterLab: %s", exc)
            else:
                logger.info("started JupyterLab on 127.0.0.1:%d%s", port, JUPYTER_BASE_URL)
                started["jupyter"] = port
        return started

    def stop(self, grace: float = 5.0) -> None:
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        self.children = []
