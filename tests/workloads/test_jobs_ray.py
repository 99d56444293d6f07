"""Jobs on the local cloud with real Ray, from submit to nothing left.

Real parts throughout: the working directory is zipped and uploaded through its signed
URL to the local cloud's storage (served by this test's live server), each attempt
gets a cluster of its own whose nodes run the real agent and real Ray, and the head's
agent submits the attempt to Ray's job API from its heartbeat's orders and reports back.
The reconcilers (jobs and clusters) are driven by calling them as their tasks do;
Celery's own part is in test_jobs_faults.py. Three jobs run at once, so the three
stories (a retry that succeeds, a timeout, a stop) share the machine's time.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from clouds.choices import CloudState
from clouds.models import Cloud
from clusters import head_orders
from clusters.choices import ClusterState, DesiredState
from clusters.models import Cluster
from clusters.services import reconcile
from tests.clusters.test_end_to_end import drive as drive_cluster
from tests.clusters.test_end_to_end import processes_with
from tests.conftest import Tenant, make_tenant
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job
from workloads.jobs.services import job_logs, job_reconcile, job_stop, job_submit
from workloads.models import WorkingDir
from workloads.storage import working_dir_request_upload

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]
DEADLINE_SECONDS = 300

# Fails (exit 3) the first time, leaving a marker; succeeds when the marker is there.
FLAKY = """
import os, sys
marker = os.environ["MARKER"]
if not os.path.exists(marker):
    open(marker, "w").close()
    print("first try: failing on purpose", flush=True)
    sys.exit(3)
print("second try: done", flush=True)
"""


# Prints a line, then runs until Raydeck ends it (a timeout or a stop).
SLEEPER = "python -c 'import time; print(\"{said}\", flush=True); time.sleep(600)'"


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def upload(tenant: Tenant, body: bytes) -> WorkingDir:
    assert tenant.cloud is not None
    answer = working_dir_request_upload(
        project=tenant.project,
        cloud=tenant.cloud,
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        actor=tenant.member,
    )
    assert answer.upload is not None
    request = urllib.request.Request(  # noqa: S310 - the live server
        answer.upload.url, data=body, method="PUT", headers=answer.upload.headers
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        assert response.status == 200
    return answer.working_dir


def drive(jobs: list[Job], deadline: float, until: Any) -> None:
    """Run the jobs' and their clusters' reconcilers until `until()` holds."""
    while time.monotonic() < deadline:
        for job in jobs:
            job_reconcile(job_id=job.pk)
        live = Cluster.objects.exclude(
            state__in=[ClusterState.TERMINATED, ClusterState.FAILED]
        ).values_list("pk", flat=True)
        for cluster_id in live:
            reconcile.cluster_reconcile(cluster_id=cluster_id)
        if until():
            return
        time.sleep(0.5)
    story = []
    for job in jobs:
        job.refresh_from_db()
        story.append(f"{job.name}: {job.state} {job.state_reason}")
        story += [f"  {e.step}: {e.message}" for e in job.events.all()]
        for attempt in job.attempts.select_related("cluster"):
            cluster = attempt.cluster
            if cluster is not None:
                story += [f"    {n.role}: {n.log_tail[-1500:]}" for n in cluster.nodes.all()]
    raise AssertionError("jobs stuck:\n" + "\n".join(story))


def stored_log(job: Job) -> str:
    """The ended attempt's driver log, read from the cloud's storage as a user would."""
    assert job.created_by is not None
    archive = job_logs(job=job, actor=job.created_by).archive
    assert archive is not None, job.name
    url, headers = archive.download.url, archive.download.headers
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - the live server
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.read().decode()


@pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash")
def test_retry_timeout_and_stop_each_end_right_and_leave_nothing(
    live_server: Any, settings: Any, tmp_path: Path
) -> None:
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_BASE_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("jobs")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    working_dir = upload(tenant, zipped({"flaky.py": FLAKY}))
    marker = tmp_path / "marker"

    def submit(name: str, entrypoint: str, **options: Any) -> Job:
        return job_submit(
            project=tenant.project,
            actor=tenant.member,
            name=name,
            entrypoint=entrypoint,
            cloud=tenant.cloud,
            **options,
        )

    flaky = submit(
        "flaky",
        "python flaky.py",
        working_dir=working_dir,
        env_vars={"MARKER": str(marker)},
        max_retries=1,
    )
    slow = submit("slow", SLEEPER.format(said="slow-said-hello"), timeout_seconds=3)
    stopped = submit("stopped", SLEEPER.format(said="stopped-said-hello"), max_retries=0)
    jobs = [flaky, slow, stopped]
    deadline = time.monotonic() + DEADLINE_SECONDS

    def stop_is_running() -> bool:
        stopped.refresh_from_db()
        return stopped.state == JobState.RUNNING or stopped.is_final

    drive(jobs, deadline, stop_is_running)
    job_stop(job=stopped, actor=tenant.member)

    def all_done() -> bool:
        ended = all(j.is_final for j in Job.objects.filter(pk__in=[j.pk for j in jobs]))
        clusters = Cluster.objects.filter(job_attempts__job__in=jobs)
        return ended and not clusters.exclude(state=ClusterState.TERMINATED).exists()

    drive(jobs, deadline, all_done)
    for job in jobs:
        job.refresh_from_db()
    assert (flaky.state, slow.state, stopped.state) == (
        JobState.SUCCEEDED,
        JobState.TIMED_OUT,
        JobState.STOPPED,
    ), [(j.name, j.state, j.state_reason) for j in jobs]

    first, second = flaky.attempts.order_by("number")
    assert (first.state, first.exit_code) == (JobState.FAILED, 3)
    assert "exit code 3" in first.reason
    assert (second.state, second.exit_code) == (JobState.SUCCEEDED, 0)
    assert first.cluster_id != second.cluster_id
    assert "timeout of 3 s" in slow.state_reason
    assert f"Stopped by {tenant.member.display_name}" in stopped.state_reason
    # An attempt Raydeck ended (timeout, stop) keeps its cluster until the head has
    # stored the driver log: it is readable after the cluster is gone.
    for job, said in ((slow, "slow-said-hello"), (stopped, "stopped-said-hello")):
        attempt = job.attempts.get()
        assert attempt.log_key, (job.name, attempt.reason)
        assert said in stored_log(job), job.name
    steps = list(flaky.events.values_list("step", flat=True))
    assert steps[0] == "submitted" and steps[-1] == "succeeded"

    clusters = Cluster.objects.filter(job_attempts__job__in=jobs).distinct()
    assert clusters.count() == 4
    assert all(c.desired_state == DesiredState.TERMINATED for c in clusters)
    for cluster in clusters:
        for _ in range(20):  # init reaps the killed group within a second or two
            if not processes_with(str(cluster.uuid)):
                break
            time.sleep(0.5)
        assert processes_with(str(cluster.uuid)) == [], cluster.name


# Each run notes when its driver starts and ends, so the test reads the real overlap.
SPAN = """
import sys, time
log = sys.argv[1]
with open(log, "a") as out:
    out.write(f"{sys.argv[2]} start {time.time()}\\n")
time.sleep(2)
with open(log, "a") as out:
    out.write(f"{sys.argv[2]} end {time.time()}\\n")
"""


def most_at_once(lines: list[str]) -> int:
    """The largest number of drivers running at the same moment, from their notes."""
    moments = sorted(
        (float(at), 1 if what == "start" else -1)
        for _, what, at in (line.split() for line in lines)
    )  # at a tie an end (-1) sorts first: a driver that ended is not still running
    running = most = 0
    for _, step in moments:
        running += step
        most = max(most, running)
    return most


@pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash")
def test_a_queue_cluster_runs_five_jobs_never_more_than_two_at_once(
    live_server: Any, settings: Any, tmp_path: Path
) -> None:
    """One running cluster of the local cloud (real agent, real Ray) with a queue of
    max_concurrency 2 takes five jobs of 2 s each: all succeed on it, the head is handed
    two at once and never more, and never more than two drivers run at once (by the
    drivers' own clocks)."""
    from clusters.services.lifecycle import cluster_create, cluster_terminate
    from workloads.jobs.services import job_queue_update

    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_BASE_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    tenant = make_tenant("queue")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    script, log = tmp_path / "span.py", tmp_path / "spans.log"
    script.write_text(SPAN)
    cluster = cluster_create(
        project=tenant.project, actor=tenant.member, name="shared", cloud=tenant.cloud
    )
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        cluster = drive_cluster(cluster, {ClusterState.RUNNING, ClusterState.FAILED}, deadline)
        assert cluster.state == ClusterState.RUNNING, cluster.state_reason
        job_queue_update(cluster=cluster, actor=tenant.member, max_concurrency=2)
        jobs = [
            job_submit(
                project=tenant.project,
                actor=tenant.member,
                name=f"span-{n}",
                entrypoint=f"python {script} {log} span-{n}",
                cloud=tenant.cloud,
                target_cluster=cluster,
                max_retries=0,
            )
            for n in range(1, 6)
        ]

        handed: list[int] = []  # how many submissions the head's orders held, each turn

        def all_final() -> bool:
            orders = head_orders.collect_orders(cluster.pk).get("jobs", {})
            handed.append(len(orders.get("submit", [])))
            return all(j.is_final for j in Job.objects.filter(pk__in=[j.pk for j in jobs]))

        drive(jobs, deadline, all_final)
        states = [Job.objects.get(pk=j.pk).state for j in jobs]
        assert states == [JobState.SUCCEEDED] * 5, states
        assert max(handed) == 2, handed  # the control plane filled both slots, never more
        lines = log.read_text().splitlines()
        assert len(lines) == 10, lines
        # Ray on a loaded one-CPU head may start the second driver only after the first
        # ended, so the drivers' own clocks are held to the upper bound only.
        assert most_at_once(lines) <= 2, lines
        assert all(j.attempts.get().cluster_id == cluster.pk for j in jobs)
    finally:
        cluster_terminate(cluster=cluster, actor=None, reason="test over")
        drive_cluster(cluster, {ClusterState.TERMINATED}, time.monotonic() + 120)
    for _ in range(20):  # init reaps the killed group within a second or two
        if not processes_with(str(cluster.uuid)):
            break
        time.sleep(0.5)
    assert processes_with(str(cluster.uuid)) == []
