"""Jobs on the local cloud: submit -> driver running, (a) for jobs on an already-running
queue cluster, and (b) for a job that needs a cluster of its own, timed against a plain
`ray start --head` + `ray job submit` in the same run.

Run by hand:  .venv/bin/python benchmarks/jobs.py [--jobs 20] [--runs 3]

All real, on loopback, as benchmarks/cluster_start.py sets it up (control_plane): a
temporary PostgreSQL database, a redis-server of this run's own, gunicorn and
`celery worker -B` on production settings, real Ray on the local cloud. A driver (this
file with --drive, a Django process of its own) submits through
workloads.jobs.services.job_submit, as the console, API and CLI do, and polls the
attempt's row every 20 ms until it reads `running`: the head's agent has submitted the
driver to Ray's job API and reported it running in a heartbeat.

(a) A head-only cluster is started and its queue set to 20 jobs at once; then jobs are
    submitted one after another (each sleeps 15 s), each timed from job_submit to its
    attempt running. p50/p95 (goal: p95 <= 2 s).
(b) Per run, alternating: plain Ray, timed from spawning `ray start --head` (the
    agent's flags) until `ray job submit --no-wait` (the CLI) has submitted a driver
    and Ray's job API says it is RUNNING; then Raydeck, from job_submit of a job without
    a target cluster until its attempt runs on the cluster created for it. Medians and
    the difference (goal: within 2 s). The job is then stopped and its cluster
    terminated.

Everything is removed at the end, also on error or Ctrl-C. The LAST line holds the figures:

  queue_p50_s=... queue_p95_s=... ray_job_s=... raydeck_job_s=... overhead_s=... ok=...
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from _harness import PYTHON, ROOT, Group, failure, http, log
from cluster_start import (
    POLL_S,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    begin,
    bench_tenant,
    control_plane,
    http_json,
    plain_ray_start,
    tear_down,
)
from goals import goal

GOAL_QUEUE_P95_S = goal("jobs", "queue_p95_s").limit
GOAL_OVERHEAD_S = goal("jobs", "overhead_s").limit
# Long enough to be seen running (the head reports in its heartbeats), short enough that
# only a few run at once on the head.
QUEUE_JOB = "python -c 'import time; time.sleep(15)'"
# The same driver for Raydeck and plain Ray (the CLI quotes a command's words with shlex).
OWN_COMMAND = ["python", "-c", "import time; time.sleep(600)"]
OWN_JOB = shlex.join(OWN_COMMAND)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


# --- the driver (a Django process of its own) -----------------------------------------


def wait_for(read: Any, wanted: set[str], timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value in wanted:
            return str(value)
        time.sleep(POLL_S)
    raise RuntimeError(f"{what}: not {sorted(wanted)} within {timeout:.0f}s (last: {read()})")


def drive(what: str, count: int) -> None:
    """Time job submissions (`queue`: `count` jobs on a running cluster; `own-<n>`: one
    job with a cluster of its own); print one RESULT line."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from clusters.choices import ClusterState
    from clusters.models import Cluster
    from clusters.services import lifecycle
    from workloads.jobs.choices import FINAL_JOB_STATES, JobState
    from workloads.jobs.models import Job, JobAttempt
    from workloads.jobs.services import job_queue_update, job_stop, job_submit

    user, project, cloud = bench_tenant()
    started = {JobState.RUNNING, *FINAL_JOB_STATES}

    def cluster_state(cluster_id: int) -> str:
        return Cluster.objects.filter(pk=cluster_id).values_list("state", flat=True)[0]

    def attempt_state(job: Job) -> str | None:
        row = JobAttempt.objects.filter(job=job).order_by("-number").values_list("state")
        return row[0][0] if row else None

    def submit(name: str, entrypoint: str, target: Cluster | None = None) -> tuple[Job, float]:
        t0 = time.monotonic()
        job = job_submit(
            project=project,
            actor=user,
            name=name,
            entrypoint=entrypoint,
            cloud=cloud,
            target_cluster=target,
        )
        state = wait_for(lambda: attempt_state(job), started, START_TIMEOUT_S, name)
        if state != JobState.RUNNING:
            job.refresh_from_db()
            raise RuntimeError(f"{name} ended {state} before running: {job.state_reason}")
        return job, time.monotonic() - t0

    if what == "queue":
        cluster = lifecycle.cluster_create(project=project, actor=user, name="queue", cloud=cloud)
        wait_for(
            lambda: cluster_state(cluster.pk), {ClusterState.RUNNING}, START_TIMEOUT_S, "queue"
        )
        job_queue_update(cluster=cluster, actor=user, max_concurrency=count)
        seconds, steps = [], []
        for n in range(count):
            job, took = submit(f"queued-{n}", QUEUE_JOB, cluster)
            seconds.append(round(took, 3))
            steps.append(
                [
                    [e.step, round((e.created_at - job.created_at).total_seconds(), 2)]
                    for e in job.events.all()
                ]
            )
        jobs = Job.objects.filter(target_cluster=cluster)
        wait_for(
            lambda: jobs.exclude(state__in=FINAL_JOB_STATES).count(), {0}, 120, "queued jobs end"
        )
        lifecycle.cluster_terminate(cluster=cluster, actor=None)
        wait_for(lambda: cluster_state(cluster.pk), {ClusterState.TERMINATED}, STOP_TIMEOUT_S, "q")
        print("RESULT " + json.dumps({"seconds": seconds, "steps": steps}), flush=True)
        return

    job, took = submit(what, OWN_JOB)
    attempt = job.attempts.select_related("cluster").get()
    assert attempt.cluster is not None
    submitted = job.created_at
    steps = [
        [f"cluster {e.step}", round((e.created_at - submitted).total_seconds(), 2)]
        for e in attempt.cluster.events.order_by("created_at")
    ]
    t1 = time.monotonic()
    job_stop(job=job, actor=user)
    wait_for(
        lambda: cluster_state(attempt.cluster_id), {ClusterState.TERMINATED}, 120, "stopped job"
    )
    result = {"total_s": round(took, 3), "steps": steps, "stop_s": round(time.monotonic() - t1, 1)}
    print("RESULT " + json.dumps(result), flush=True)


def queue_steps(jobs: list[list[list[Any]]]) -> str:
    """Each event step's median offset from its job's submission, in the order they came."""
    offsets: dict[str, list[float]] = {}
    for events in jobs:
        for step, offset in events:
            offsets.setdefault(step, []).append(offset)
    return ", ".join(f"{step} +{statistics.median(o):.2f}s" for step, o in offsets.items())


def run_driver(what: str, count: int, tmp: Path, env: dict[str, str], groups: list[Group]) -> Any:
    driver = Group(
        f"driver-{what}", [PYTHON, __file__, "--drive", what, "--jobs", str(count)], env, tmp
    )
    groups.append(driver)
    code = driver.wait(timeout=2 * START_TIMEOUT_S + 4 * STOP_TIMEOUT_S + 30 * count)
    line = next((x for x in driver.output().splitlines() if x.startswith("RESULT ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"driver {what} failed ({code}):\n{driver.tail()}")
    return json.loads(line.removeprefix("RESULT "))


# --- plain Ray: ray start + ray job submit --------------------------------------------


def plain_job(run: int, tmp: Path, env: dict[str, str], groups: list[Group]) -> float:
    """Seconds from spawning `ray start --head` until a driver submitted with the CLI's
    `ray job submit` runs."""

    def submit(base: str) -> None:
        submission = f"plain-{run}-{secrets.token_hex(4)}"
        command = [PYTHON, "-m", "ray.scripts.scripts", "job", "submit", "--address", base]
        command += ["--submission-id", submission, "--no-wait", "--", *OWN_COMMAND]
        done = subprocess.run(
            command, env=env, cwd=tmp, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"ray job submit failed:\n{done.stdout}\n{done.stderr}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            status = (http_json(f"{base}/api/jobs/{submission}") or {}).get("status")
            if status == "RUNNING":
                return
            if status in ("FAILED", "STOPPED", "SUCCEEDED"):
                raise RuntimeError(f"the plain job ended {status} before running")
            time.sleep(POLL_S)
        raise RuntimeError("the plain job did not run in time")

    return plain_ray_start(run, tmp, env, groups, and_then=submit)


def plain_queue(count: int, tmp: Path, env: dict[str, str], groups: list[Group]) -> list[float]:
    """Ray's own floor for (a): on a running `ray start --head`, seconds from POSTing each
    of `count` jobs to its job API, one after another, until Ray says RUNNING."""
    seconds: list[float] = []

    def submit_each(base: str) -> None:
        for n in range(count):
            t0 = time.monotonic()
            request = urllib.request.Request(  # noqa: S310 - Ray's dashboard on loopback
                f"{base}/api/jobs/",
                data=json.dumps({"entrypoint": QUEUE_JOB}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with http.open(request, timeout=30) as response:
                submission = json.loads(response.read()).get("submission_id")
            if not submission:
                raise RuntimeError(f"Ray gave plain job {n} no submission id")
            deadline = t0 + START_TIMEOUT_S
            while (http_json(f"{base}/api/jobs/{submission}") or {}).get("status") != "RUNNING":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"plain job {n} did not run in time")
                time.sleep(POLL_S)
            seconds.append(round(time.monotonic() - t0, 3))

    plain_ray_start(0, tmp, env, groups, and_then=submit_each)
    return seconds


# --- main ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs on the queue cluster (20)")
    parser.add_argument("--runs", type=int, default=3, help="own-cluster runs (3)")
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # internal: the Django side
    args = parser.parse_args()
    if args.drive:
        drive(args.drive, args.jobs)
        return 0
    begun = begin("raydeck-jobs-bench-")
    if begun is None:
        return 2
    tmp, marker = begun
    groups: list[Group] = []
    state: dict[str, Any] = {}
    queue: list[float] = []
    plain_queued: list[float] = []
    plain: list[float] = []
    own: list[dict[str, Any]] = []
    failed = False
    try:
        env, base_env = control_plane(tmp, marker, state, groups, "raydeck_jobs")
        queued = run_driver("queue", args.jobs, tmp, env, groups)
        queue = queued["seconds"]
        log(f"(a) {len(queue)} jobs on a running queue cluster: " + ", ".join(map(str, queue)))
        log("(a) where the time goes, median seconds after submit: " + queue_steps(queued["steps"]))
        plain_queued = plain_queue(args.jobs, tmp, base_env, groups)
        log("(a) Ray's own floor, plain job API: " + ", ".join(map(str, plain_queued)))
        for run in range(1, args.runs + 1):
            plain.append(plain_job(run, tmp, base_env, groups))
            log(f"run {run}: plain ray start + ray job submit -> running in {plain[-1]:.2f}s")
            result = run_driver(f"own-{run}", args.jobs, tmp, env, groups)
            own.append(result)
            steps = ", ".join(f"{s} +{o:.2f}s" for s, o in result["steps"])
            log(
                f"run {run}: Raydeck job on its own cluster -> running in "
                f"{result['total_s']:.2f}s (stopped, cluster gone in {result['stop_s']}s); "
                f"{steps}"
            )
    except (KeyboardInterrupt, Exception) as exc:
        failed = failure(exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not stop the cleanup
        failed = tear_down(tmp, marker, state, groups) or failed

    if not queue or not plain_queued or len(own) < args.runs or len(plain) < args.runs:
        print(f"FAILED queue={len(queue)} runs={len(own)}/{args.runs}", flush=True)
        return 1
    q50, q95 = statistics.median(queue), p95(queue)
    ray_q95 = p95(plain_queued)
    ray_s = statistics.median(plain)
    raydeck_s = statistics.median(r["total_s"] for r in own)
    overhead = raydeck_s - ray_s
    ok = q95 <= GOAL_QUEUE_P95_S and overhead <= GOAL_OVERHEAD_S
    print(
        f"queue_jobs={len(queue)} queue_p50_s={q50:.2f} queue_p95_s={q95:.2f} "
        f"goal_queue_p95_s={GOAL_QUEUE_P95_S} ray_queue_p95_s={ray_q95:.2f} "
        f"queue_overhead_p95_s={q95 - ray_q95:.2f} "
        f"ray_job_s={ray_s:.2f} raydeck_job_s={raydeck_s:.2f} "
        f"overhead_s={overhead:.2f} goal_overhead_s={GOAL_OVERHEAD_S} ok={int(ok)} "
        f"runs={args.runs}" + (" errors=1" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
