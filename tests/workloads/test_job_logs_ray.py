"""A job's driver log on the local cloud with real Ray: followed live from the cluster's
gateway, stored in the cloud's storage when the attempt ends, read from there page by
page after the cluster is gone, and never in the control plane's database.

Real parts throughout: the head's agent, Ray, its gateway (TLS from the installation's
CA), the local cloud's storage served by this test's live server, and the `raydeck`
command in a child process. No stand-in. The reconcilers are driven from the test, as
their tasks would run them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from clouds.choices import CloudState
from clouds.models import Cloud
from clusters.choices import ClusterState
from clusters.models import Cluster
from clusters.services import reconcile
from tests.cli.conftest import RAYDECK, Cli
from tests.cli.test_commands import secret_of
from tests.conftest import make_tenant
from tests.workloads.test_jobs_ray import upload, zipped
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job
from workloads.jobs.services import job_reconcile, job_submit
from workloads.storage import LOG_PAGE_BYTES

pytestmark = [
    pytest.mark.ray,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash"),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"), reason="greps PostgreSQL's text columns"
    ),
]
DEADLINE_SECONDS = 300

# The marker is computed when the job runs: nothing the control plane stores (the
# entrypoint, the environment) holds it. A Ray task prints it too (Ray's worker-*.out,
# which heartbeats once carried), then the driver waits for the test's word, and prints
# more than one page of log before its last line.
JOB = """
import os, pathlib, time, ray
marker = "joblog-" + str(int(os.environ["SEED"]) * 7919)
print("first", marker, flush=True)

@ray.remote
def shout(text):
    print(text + "-from-a-task", flush=True)
    return 1

ray.init()
assert ray.get(shout.remote(marker)) == 1
while not pathlib.Path(os.environ["RELEASE"]).exists():
    time.sleep(0.2)
for i in range(PAGES * PAGE_BYTES // 60):
    print(f"line {i:07d} " + "x" * 47, flush=False)
print("last", marker, flush=True)
"""


def drive_until(jobs: list[Job], deadline: float, until: Any, what: str) -> None:
    while time.monotonic() < deadline:
        for job in jobs:
            job_reconcile(job_id=job.pk)
        for cluster_id in Cluster.objects.exclude(
            state__in=[ClusterState.TERMINATED, ClusterState.FAILED]
        ).values_list("pk", flat=True):
            reconcile.cluster_reconcile(cluster_id=cluster_id)
        if until():
            return
        time.sleep(0.5)
    story = []
    for job in jobs:
        job.refresh_from_db()
        story.append(f"{job.name}: {job.state} {job.state_reason}")
        story += [f"  {e.step}: {e.message}" for e in job.events.all()]
    raise AssertionError(f"no {what} in time:\n" + "\n".join(story))


def text_columns_holding(needle: str) -> list[str]:
    """Every text, varchar and JSON column of every table in this database that holds
    `needle` somewhere."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type IN "
            "('text', 'character varying', 'character', 'json', 'jsonb')"
        )
        columns = cursor.fetchall()
        for table, column in columns:
            cursor.execute(
                f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE %s',  # noqa: S608 - names from the catalog
                [f"%{needle}%"],
            )
            if cursor.fetchone()[0]:
                found.append(f"{table}.{column}")
    assert len(columns) > 100, "the catalog query found too few columns to mean anything"
    return found


def api_get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - live server
        return json.loads(response.read())


def fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - a signed URL
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.status, response.read()


def test_driver_log_is_followed_live_then_read_from_storage_and_never_stored_here(
    live_server: Any, settings: Any, tmp_path: Path
) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_BASE_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("joblogs")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    pages = 2
    script = JOB.replace("PAGES", str(pages)).replace("PAGE_BYTES", str(LOG_PAGE_BYTES))
    seed = random.randint(10**6, 10**7)
    marker = f"joblog-{seed * 7919}"
    release = tmp_path / "release"
    job = job_submit(
        project=tenant.project,
        actor=tenant.member,
        name="printer",
        entrypoint="python printer.py",
        cloud=tenant.cloud,
        working_dir=upload(tenant, zipped({"printer.py": script})),
        env_vars={"SEED": str(seed), "RELEASE": str(release)},
        max_retries=0,
    )
    deadline = time.monotonic() + DEADLINE_SECONDS
    cli = Cli(url=live_server.url, config_home=tmp_path / "xdg")
    env = {"RAYDECK_TOKEN": secret_of(tenant), "RAYDECK_ORG": tenant.org.slug}
    assert RAYDECK.exists()

    def running() -> bool:
        job.refresh_from_db()
        return job.state == JobState.RUNNING or job.is_final

    drive_until([job], deadline, running, "running driver")
    # `raydeck jobs logs --follow` reads the running driver's log from the gateway.
    followed = tmp_path / "followed.log"
    with followed.open("wb") as out:
        follower = subprocess.Popen(
            [str(RAYDECK), "jobs", "logs", "--follow", str(job.uuid)],
            env=cli.env(**env),
            stdout=out,
            stderr=subprocess.PIPE,
        )
    try:
        drive_until(
            [job],
            deadline,
            lambda: (
                f"{marker}-from-a-task".encode() in followed.read_bytes()
                or follower.poll() is not None
            ),
            "live tail with the task's line",
        )
        assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
        assert f"first {marker}".encode() in followed.read_bytes()
        release.touch()

        def ended_and_gone() -> bool:
            job.refresh_from_db()
            clusters = Cluster.objects.filter(job_attempts__job=job)
            return job.is_final and not clusters.exclude(state=ClusterState.TERMINATED).exists()

        drive_until([job], deadline, ended_and_gone, "end with the cluster gone")
        _, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert job.state == JobState.SUCCEEDED, job.state_reason
    assert follower.returncode == 0, err

    # The attempt records where its whole log is; the API hands out signed URLs to it.
    attempt = job.attempts.get()
    assert attempt.log_key.endswith("driver.log") and attempt.log_bytes > pages * LOG_PAGE_BYTES
    answer = api_get(
        f"{live_server.url}/api/v1/orgs/{tenant.org.slug}/jobs/{job.uuid}/logs",
        env["RAYDECK_TOKEN"],
    )
    archive = answer["archive"]
    assert answer["final"] and answer["live"] is None
    assert archive["size"] == attempt.log_bytes and archive["page_count"] == pages + 1
    status, whole = fetch(archive["download_url"], {})
    assert status == 200 and len(whole) == archive["size"]
    text = whole.decode()
    assert text.count(f"first {marker}") == 1 and text.rstrip().endswith(f"last {marker}")
    assert f"{marker}-from-a-task" in text  # Ray copies a task's output to its driver's log
    read = b""
    for page in archive["pages"]:
        status, body = fetch(page["url"], page["headers"])
        assert status == 206 and len(body) == page["length"]
        read += body
    assert read == whole
    # What was followed live and then from storage is the log, once.
    assert followed.read_bytes() == whole

    # After the cluster is gone, the CLI reads it from storage.
    printed = cli("jobs", "logs", str(job.uuid), **env)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.encode() == whole

    # The job's output is nowhere in the control plane's database.
    assert text_columns_holding(marker) == []
    assert text_columns_holding("from-a-task") == []
