"""A real JupyterLab (this project's Python has it, as the local cloud's image does)
started by the agent's apps.py: a running kernel and an open terminal are activity the
workspace handler reads from Jupyter's API and notes for the idle clock, so the head's
heartbeat says so and the control plane names them in the "why not idle" line."""

from __future__ import annotations

import http.cookiejar
import json
import os
import socket
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from raydeck_agent import activity, apps
from raydeck_agent.orders import HeadContext
from raydeck_agent.workspace import WorkspaceHandler, jupyter_activity

from clusters.live import HeadReport
from clusters.services.idle import report_reasons

pytestmark = pytest.mark.skipif(
    apps.jupyter_executable(sys.executable) is None, reason="JupyterLab is not installed"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def jupyter(tmp_path: Path):
    port = free_port()
    lab = apps.Apps(sys.executable, {"jupyter": port}, tmp_path / "work", tmp_path)
    # Jupyter's state goes to the node's folder (apps.py), never under $HOME.
    assert lab.start({**os.environ, "HOME": str(tmp_path / "home")})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/jupyter/api/status", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        lab.stop()
        raise AssertionError((tmp_path / "jupyter.log").read_text()[-3000:])
    yield port
    lab.stop()


def workspace_handler(node_dir: Path, jupyter_port: int) -> WorkspaceHandler:
    return WorkspaceHandler(
        HeadContext(
            node_dir=node_dir,
            python=sys.executable,
            ray_env={},
            dashboard_url="",
            apps={"jupyter": jupyter_port},
        )
    )


def post(port: int, path: str, body: dict, method: str = "POST") -> dict:
    """A POST (or PUT) as JupyterLab's page sends it: with the _xsrf cookie it was given."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"http://127.0.0.1:{port}/jupyter/lab", timeout=30).read()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/jupyter/{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"},
    )
    with opener.open(request, timeout=60) as response:
        return json.load(response)


def test_kernels_and_terminals_count_as_use_and_are_named(jupyter: int, tmp_path) -> None:
    port = jupyter
    assert jupyter_activity(port, time.time()) == {}  # nothing open yet: nothing to note
    before = time.time() - 1
    post(port, "api/kernels", {"name": "python3"})
    post(port, "api/terminals", {})
    seen = jupyter_activity(port, time.time())
    assert set(seen) == {"kernel", "terminal"} and min(seen.values()) >= before

    handler = workspace_handler(tmp_path, port)
    handler._note_activity()
    clock = activity.IdleClock()
    report = clock.report({"running_jobs": 0, "running_drivers": 0, "pending_demand": []})
    assert report["kernel_last_active_at"] and report["terminal_last_active_at"]

    now = datetime.now(tz=UTC)
    head = HeadReport(
        at=now, ray={}, activity={**report, "running_jobs": 0, "drivers": 0, "pending_demand": 0}
    )
    _, touches = report_reasons(head, now + timedelta(seconds=5))
    assert {"Jupyter kernel active", "Jupyter terminal used"} <= set(touches)


def test_jupyters_state_stays_in_the_nodes_folder_not_home(jupyter: int, tmp_path) -> None:
    """Heads of the local cloud share one machine and one $HOME: a kernel, a terminal
    and a saved notebook (signed in Jupyter's trust database) write nothing there."""
    post(jupyter, "api/kernels", {"name": "python3"})
    post(jupyter, "api/terminals", {})
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    post(jupyter, "api/contents/a.ipynb", {"type": "notebook", "content": notebook}, "PUT")
    assert (tmp_path / "work" / "a.ipynb").is_file()
    state = tmp_path / "jupyter-state"
    assert (state / "data" / "nbsignatures.db").is_file()
    home = tmp_path / "home"
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []
    assert not [p for p in left if "jupyter" in p or "ipython" in p], left


def test_a_workspace_reports_its_files_back_only_once_its_jupyterlab_answers(tmp_path) -> None:
    """The head starts JupyterLab only once Ray is up, and the console shows a workspace
    running once its head reports the files back: that report waits for JupyterLab, so
    "running" still means JupyterLab opens. SSH is not held back meanwhile."""
    port = free_port()
    handler = workspace_handler(tmp_path, port)  # JupyterLab planned there, not started yet
    handler.handle({"id": "w", "files": str(tmp_path / "files")})
    lab = apps.Apps(sys.executable, {"jupyter": port}, tmp_path / "work", tmp_path)
    try:
        time.sleep(1.5)  # the files (none) are back by now; JupyterLab is not up
        assert "restored_at" not in (handler.report() or {})
        assert lab.start({**os.environ, "HOME": str(tmp_path / "home")})
        deadline = time.monotonic() + 90
        while "restored_at" not in (handler.report() or {}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "restored_at" in (handler.report() or {}), (tmp_path / "jupyter.log").read_text()
        assert apps.jupyter_answers(port)
    finally:
        handler.stop()
        lab.stop()
