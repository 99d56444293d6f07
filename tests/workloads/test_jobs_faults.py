"""A job survives its control plane's crashes: real Celery worker and beat processes, a
real web tier (gunicorn) that the head's agent heartbeats to, a Redis of the test's own
and real Ray on the local cloud (tests/clusters/test_faults.py's harness). No stand-in.

While the attempt's driver runs, the whole Celery worker is killed with SIGKILL and the
web tier is killed and started again: the job still ends `succeeded` (one attempt, the
driver was not run twice), its driver log is stored, and its cluster is terminated with
nothing of it left running.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from typing import Any

from clusters.choices import ClusterState, DesiredState
from clusters.models import Cluster
from tests.clusters import test_faults
from tests.clusters.test_end_to_end import processes_with
from tests.clusters.test_faults import SWEEP_SECONDS, Faults, Proc, free_port
from workloads.jobs.choices import JobState
from workloads.jobs.models import Job
from workloads.jobs.services import job_submit

pytestmark = test_faults.pytestmark  # PostgreSQL, redis-server, bash; real Ray
faults = test_faults.faults  # the harness's fixture

START_SECONDS = 120  # the attempt's cluster and its driver, on a loaded 2-core machine
# Long enough that the kills land while it runs; the job checks it ran exactly once.
DRIVER = (
    "python -c \"import time; print('driver started', flush=True); time.sleep(25); "
    "print('driver done', flush=True)\""
)


def start_web(faults: Faults, port: int) -> Proc:
    argv = [
        *(sys.executable, "-m", "gunicorn", "console.wsgi:application"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread"),
        *("--threads", "4", "--graceful-timeout", "2"),
    ]
    web = Proc(f"web-{time.monotonic_ns()}", argv, faults.env, faults.tmp)
    faults.procs.append(web)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return web
        except OSError:
            assert web.alive(), web.tail()
            time.sleep(0.2)
    raise AssertionError(f"the web tier did not start\n{web.tail()}")


def wait_for(what: str, check: Any, timeout: float, faults: Faults, job: Job) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    job.refresh_from_db()
    story = [f"{job.name}: {job.state} {job.state_reason}"]
    story += [f"  {e.step}: {e.message}" for e in job.events.all()]
    raise AssertionError(
        f"no {what} in {timeout:.0f} s\n" + "\n".join(story) + faults.diagnostics()
    )


def test_job_ends_right_after_a_killed_worker_and_a_web_restart(faults: Faults, settings) -> None:
    port = free_port()
    faults.env["RAYDECK_AGENT_URL"] = f"http://127.0.0.1:{port}"
    faults.env["RAYDECK_JOBS_SWEEP_SECONDS"] = str(SWEEP_SECONDS)
    settings.RAYDECK_AGENT_URL = faults.env["RAYDECK_AGENT_URL"]
    web = start_web(faults, port)
    faults.start_beat()
    worker = faults.start_worker("jobs-1")
    tenant = faults.tenant
    job = job_submit(
        project=tenant.project,
        actor=tenant.member,
        name="survivor",
        entrypoint=DRIVER,
        cloud=tenant.cloud,
        max_retries=0,
    )

    def running() -> bool:
        job.refresh_from_db()
        assert not job.is_final, job.state_reason
        return job.state == JobState.RUNNING

    wait_for("running driver", running, START_SECONDS, faults, job)
    cluster = Cluster.objects.get(job_attempts__job=job)
    faults.clusters.append(cluster)
    faults.all_clusters.append(cluster)

    worker.kill_group()  # SIGKILL: the main process and its pool process
    web.kill_group()
    worker.popen.wait(10)
    web.popen.wait(10)
    faults.say("worker and web tier killed while the driver runs")
    time.sleep(3)  # the head's heartbeats fail meanwhile
    start_web(faults, port)
    faults.start_worker("jobs-2")

    def ended_and_released() -> bool:
        job.refresh_from_db()
        cluster.refresh_from_db()
        return job.is_final and cluster.state == ClusterState.TERMINATED

    wait_for("end with the cluster terminated", ended_and_released, 150, faults, job)
    assert job.state == JobState.SUCCEEDED, job.state_reason
    [attempt] = job.attempts.all()
    assert (attempt.state, attempt.exit_code) == (JobState.SUCCEEDED, 0)
    assert attempt.log_key and attempt.log_bytes > 0  # the driver log was stored first
    assert cluster.desired_state == DesiredState.TERMINATED
    for _ in range(20):  # init reaps the killed group within a second or two
        if not processes_with(str(cluster.uuid)):
            break
        time.sleep(0.5)
    assert processes_with(str(cluster.uuid)) == []
    faults.clusters = []  # terminated by the job itself; finish() stops the processes
    faults.finish()
