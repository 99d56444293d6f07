"""`raydeck schedules …` and `raydeck jobs queue` as a user runs them (the installed
command in a child process) against this test's live server, and the SDK's
`client.schedules` and `client.jobs.queue` beside them. No Ray: nothing runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from raydeck import Client

from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.choices import ClusterState
from tests.conftest import make_tenant
from tests.factories import ClusterFactory
from workloads.jobs.models import Job, JobSchedule

from .conftest import Cli
from .test_commands import secret_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_list_pause_resume_and_delete_a_schedule(cli: Cli, live_server: Any) -> None:
    alpha = make_tenant("alpha")
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    bad = cli(
        "schedules", "create", "--project", alpha.project.slug, "--name", "nightly",
        "--cron", "0 3 * * *", "--timezone", "Mars/Olympus", "--", "python", "train.py", **env,
    )  # fmt: skip
    assert bad.returncode == 1 and "timezone" in bad.stderr
    assert not JobSchedule.objects.filter(name="nightly").exists()

    created = cli(
        "schedules", "create", "--project", alpha.project.slug, "--name", "nightly",
        "--cron", "0 3 * * *", "--timezone", "Europe/Berlin", "-o", "json",
        "--", "python", "train.py", **env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    schedule = json.loads(created.stdout)
    assert (schedule["cron"], schedule["timezone"], schedule["entrypoint"]) == (
        "0 3 * * *",
        "Europe/Berlin",
        "python train.py",
    )
    listed = cli("schedules", "list", **env)
    assert "nightly" in listed.stdout and "Europe/Berlin" in listed.stdout
    paused = cli("schedules", "pause", "nightly", "-o", "json", **env)
    assert json.loads(paused.stdout)["paused"] is True
    assert JobSchedule.objects.get(name="nightly").paused

    client = Client(url=live_server.url, token=env["RAYDECK_TOKEN"], org="alpha")
    resumed = client.schedules.resume(schedule["id"])
    assert (resumed.paused, resumed.next_run_at is not None) == (False, True)
    assert [s.name for s in client.schedules.list()] == ["alpha-schedule", "nightly"]

    deleted = cli("schedules", "delete", "nightly", **env)
    assert deleted.returncode == 0, deleted.stderr
    assert not JobSchedule.objects.filter(name="nightly").exists()


def test_show_and_set_a_clusters_queue_and_submit_with_a_priority(
    cli: Cli, live_server: Any
) -> None:
    alpha = make_tenant("alpha")
    Cloud.objects.filter(pk=alpha.cloud.pk).update(state=CloudState.ACTIVE)
    env = {"RAYDECK_TOKEN": secret_of(alpha), "RAYDECK_ORG": "alpha"}
    cluster = ClusterFactory(
        project=alpha.project, cloud=alpha.cloud, name="shared", state=ClusterState.RUNNING
    )
    set_queue = cli(
        "jobs", "queue", "shared", "--order", "priority", "--max-concurrency", "3", **env
    )
    assert set_queue.returncode == 0, set_queue.stderr
    assert "priority, 3 at once" in set_queue.stdout
    submitted = cli(
        "jobs", "submit", "--project", alpha.project.slug, "--cluster", str(cluster.uuid),
        "--priority", "7", "-o", "json", "--", "python", "train.py", **env,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["priority"] == 7 and Job.objects.get(uuid=job["id"]).target_cluster == cluster

    client = Client(url=live_server.url, token=env["RAYDECK_TOKEN"], org="alpha")
    queue = client.jobs.queue(str(cluster.uuid))
    assert (queue.order, queue.max_concurrency) == ("priority", 3)
    assert [j["id"] for j in queue.waiting or []] == [job["id"]]  # nobody reconciled yet
    assert client.jobs.set_queue(str(cluster.uuid), max_concurrency=1).max_concurrency == 1
    bad = cli("jobs", "queue", "shared", "--max-concurrency", "0", **env)
    assert bad.returncode == 1 and "max_concurrency" in bad.stderr
