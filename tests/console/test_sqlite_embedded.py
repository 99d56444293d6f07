"""The embedded default (console.settings.local) keeps its data in SQLite and runs a web
process, a worker and beat side by side. Two reconcilers terminating clusters in the same
second must both finish: no `database is locked`. Real SQLite file, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
import django; django.setup()
from clouds.choices import CloudState
from clusters.choices import ClusterState, DesiredState, NodeState
from tests.factories import (
    CloudFactory, ClusterFactory, MembershipFactory, NodeFactory, OrganizationFactory,
    ProjectFactory, UserFactory,
)
org = OrganizationFactory(slug="embedded")
owner = UserFactory(email="owner@embedded.test")
MembershipFactory(organization=org, user=owner, role="owner")
project = ProjectFactory(organization=org)
cloud = CloudFactory(organization=org, state=CloudState.ACTIVE)
for i in range(16):
    cluster = ClusterFactory(
        project=project, cloud=cloud, state=ClusterState.RUNNING,
        desired_state=DesiredState.RUNNING,
    )
    for role in ("head", "worker"):
        node = NodeFactory(cluster=cluster, role=role, state=NodeState.READY)
        node.instance_id = f"local-{node.uuid}"
        node.save(update_fields=["instance_id"])
"""

# One worker: from the same instant as the other, terminate its share and reconcile each.
WORKER = """
import sys, time, django; django.setup()
from accounts.models import User
from clusters.models import Cluster
from clusters.services.lifecycle import cluster_terminate
from clusters.services.reconcile import cluster_reconcile
start, share = float(sys.argv[1]), int(sys.argv[2])
owner = User.objects.get(email="owner@embedded.test")
ids = list(Cluster.objects.order_by("pk").values_list("pk", flat=True))[share::2]
while time.time() < start:
    time.sleep(0.001)
for cluster_id in ids:
    cluster_terminate(cluster=Cluster.objects.get(pk=cluster_id), actor=owner)
    cluster_reconcile(cluster_id=cluster_id)
for cluster_id in ids:  # the second pass moves the cluster to terminated
    cluster_reconcile(cluster_id=cluster_id)
"""


def test_two_reconcilers_terminating_at_once_on_the_embedded_default(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DJANGO_SETTINGS_MODULE": "console.settings.local",
        "RAYDECK_VAR_DIR": str(tmp_path / "var"),
        "PYTHONPATH": str(ROOT),
    }

    for folder in ("broker/queue", "broker/processed", "broker/control", "cache"):
        (tmp_path / "var" / folder).mkdir(parents=True)  # as `manage.py serve` does

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True
        )

    migrate = python("manage.py", "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr
    setup = python("-c", SETUP)
    assert setup.returncode == 0, setup.stderr

    start = str(time.time() + 3)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, start, str(share)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in (0, 1)
    ]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert "database is locked" not in stderr
        assert worker.returncode == 0, stderr[-3000:]

    states = python(
        "-c",
        "import django; django.setup(); from clusters.models import Cluster; "
        "print(sorted(set(Cluster.objects.values_list('state', flat=True))))",
    )
    assert states.stdout.strip() == "['terminated']", states.stderr
