"""From a terminal: sign in, create a cluster on the local cloud with `--wait` (real Ray
processes, real agents registering with this test's live server), list it, read its
logs, get its address and submit a Ray job there, terminate it.

The reconciler is driven from the test, as in tests/clusters/test_end_to_end.py (Celery
itself is covered in tests/clusters/test_faults.py); the CLI only sees the API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from accounts import services
from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.choices import ClusterState
from clusters.models import Cluster
from tests.clusters.test_end_to_end import drive, processes_with
from tests.conftest import make_tenant

from .conftest import Cli

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]
DEADLINE_SECONDS = 240
BASH = shutil.which("bash") or "/bin/bash"
RAY = Path(sys.executable).parent / "ray"
LIFECYCLE_STEPS = ("queued", "instance up", "agent registered", "ray started", "ready")


class Lines:
    """Collects a child's stream line by line with the time each line arrived."""

    def __init__(self, stream) -> None:
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        self.thread.join(timeout=10)
        return "\n".join(line for _, line in self.lines)

    def first(self, phrase: str) -> float | None:
        return next((at for at, line in self.lines if phrase in line), None)


def wait_for_row(name: str, deadline: float) -> Cluster:
    while time.monotonic() < deadline:
        cluster = Cluster.objects.filter(name=name).first()
        if cluster is not None:
            return cluster
        time.sleep(0.2)
    raise AssertionError(f"the CLI created no cluster {name!r}")


@pytest.mark.skipif(not Path(BASH).exists(), reason="the local cloud runs bash")
def test_cluster_from_create_to_terminate(cli: Cli, live_server, settings, tmp_path: Path) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("cli")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    _, secret = services.token_create(
        organization=tenant.org, actor=tenant.member, name="laptop", days=30, read_only=False
    )
    assert cli("login", "--token", secret).returncode == 0
    deadline = time.monotonic() + DEADLINE_SECONDS

    create = cli.start(
        "clusters",
        "create",
        "demo",
        "--project",
        "cli-project",
        "--cloud",
        "cli local",
        "--wait",
        "-o",
        "json",
    )
    progress, result = Lines(create.stderr), Lines(create.stdout)
    try:
        cluster = wait_for_row("demo", deadline)
    except AssertionError:
        create.kill()
        raise AssertionError(progress.text()) from None
    try:
        cluster = drive(cluster, {ClusterState.RUNNING, ClusterState.FAILED}, deadline)
        running_at = time.monotonic()
        assert cluster.state == ClusterState.RUNNING, cluster.state_reason
        assert create.wait(timeout=60) == 0, progress.text()
        created = json.loads(result.text())
        assert (created["id"], created["state"]) == (str(cluster.uuid), "running")
        # The lifecycle steps were printed in order, the first ones while it was starting.
        text = progress.text()
        print(text)  # shown when a later step fails
        times = [progress.first(f"{step}:") for step in LIFECYCLE_STEPS]
        assert None not in times, text
        assert times == sorted(times), text
        assert times[0] < running_at, text
        assert "Traceback" not in text

        listed = json.loads(cli("clusters", "list", "-o", "json").stdout)
        assert {(c["name"], c["state"]) for c in listed} == {
            ("demo", "running"),
            ("cli-cluster", "terminated"),  # the test world's
        }
        running = json.loads(cli("clusters", "list", "--state", "running", "-o", "json").stdout)
        assert [c["id"] for c in running] == [str(cluster.uuid)]
        table = cli("clusters", "list").stdout
        assert "demo" in table and "running" in table

        logs = cli("clusters", "logs", "demo")
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.strip(), "the head's log is empty"

        address = cli("clusters", "address", "demo", "-o", "json")
        assert address.returncode == 0, address.stderr
        job_address = json.loads(address.stdout)["job_address"]
        assert job_address.startswith("https://")
        exports = cli("clusters", "address", "demo", "--env").stdout
        # The gateway speaks HTTPS with the installation's CA, which the CLI pinned: Ray's
        # CLI verifies with it (no --verify false anywhere).
        assert "export REQUESTS_CA_BUNDLE=" in exports and "export SSL_CERT_FILE=" in exports
        assert "verify" not in exports
        job = subprocess.run(
            [BASH, "-c", exports + '\nexec "$RAY" job submit -- "$PY" -c "print(6 * 7)"'],
            env={**cli.env(), "RAY": str(RAY), "PY": sys.executable},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert job.returncode == 0, job.stdout + job.stderr
        assert "42" in job.stdout
        follow = cli.start("clusters", "logs", "demo", "--follow")
        followed = Lines(follow.stdout)
    finally:
        create.kill()
        terminate = cli.start("clusters", "terminate", str(cluster.uuid), "--wait")
        cluster = drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 90)
        _, err = terminate.communicate(timeout=60)
    assert terminate.returncode == 0, err
    assert "is terminated" in err
    # `logs --follow` printed the head's log and stopped by itself once it was gone.
    assert follow.wait(timeout=30) == 0
    assert followed.text().strip()
    assert cluster.state == ClusterState.TERMINATED
    for _ in range(20):
        if not processes_with(str(cluster.uuid)):
            break
        time.sleep(0.5)
    assert processes_with(str(cluster.uuid)) == []

    # A terminated cluster has no address: a conflict, said plainly, exit 1.
    result = cli("clusters", "address", "demo")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "HTTP 409" in result.stderr
