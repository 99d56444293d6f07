"""The "jobs" participant in heads' heartbeats (clusters/head_orders.py).

Orders, the topic's whole desired state for one cluster:
    {"submit": [{"submission_id", "entrypoint", "runtime_env", "metadata",
                 "log_archive"}, ...],
     "stop": [submission_id, ...]}
`log_archive`: the object URI where the head stores the attempt's whole driver log when
it ends (workloads/storage.py job_log_key), absent for a cloud without storage.
Reports, from the head (raydeck_agent/jobs.py):
    {"submissions": {submission_id: {"status", "message", "exit_code", "log_bytes",
                                     "log_archived"}}}

Cheap on the lean heartbeat path: the orders come from the shared cache (live.py); a
miss is one query on the partial index of active attempts, and a cluster without jobs is
remembered as such for 30 s. An unchanged report writes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from workloads.storage import job_log_key, job_log_uri, working_dir_uri

from . import live
from .choices import ACTIVE_JOB_STATES, JobState
from .models import JobAttempt, JobQueue
from .services import job_attempts_report

# Stops of ended attempts stay in the orders this long, so a head that missed one (or
# was restarted) still stops the driver on a shared cluster.
STOP_ORDERS_FOR = timedelta(minutes=10)


def runtime_env_of(attempt: JobAttempt) -> dict[str, Any]:
    job = attempt.job
    env = dict(job.runtime_env)
    if job.working_dir is not None:
        env["working_dir"] = working_dir_uri(job.working_dir)
    return env


def build_orders(cluster_id: int) -> dict[str, Any]:
    recent = timezone.now() - STOP_ORDERS_FOR
    attempts = (
        JobAttempt.objects.filter(cluster_id=cluster_id)
        .filter(
            Q(state__in=ACTIVE_JOB_STATES)
            | Q(state__in=[JobState.STOPPED, JobState.TIMED_OUT], ended_at__gte=recent)
        )
        .select_related("job__cloud", "job__working_dir__cloud")
        .order_by("pk")
    )
    submit, stop = [], []
    for attempt in attempts:
        job = attempt.job
        if attempt.is_final or job.stop_requested_at is not None:
            stop.append(attempt.submission_id)
        else:
            order = {
                "submission_id": attempt.submission_id,
                "entrypoint": job.entrypoint,
                "runtime_env": runtime_env_of(attempt),
                "metadata": {"raydeck_job": str(job.uuid), "attempt": str(attempt.number)},
            }
            archive = job_log_uri(job.cloud, job_log_key(str(job.uuid), attempt.number))
            if archive:
                order["log_archive"] = archive
            submit.append(order)
    return {"submit": submit, "stop": stop} if submit or stop else {}


class JobsParticipant:
    topic = "jobs"

    def orders(self, cluster_id: int) -> Any | None:
        orders = live.cached_orders(cluster_id)
        if orders is None:
            orders = build_orders(cluster_id)
            live.keep_orders(cluster_id, orders)
        return orders or None

    def prompt(self, cluster_id: int, orders: Any | None) -> bool:
        """Jobs to start or running (a user waits for them), or a queue cluster (a job
        may arrive at any moment and should start within about a second)."""
        if isinstance(orders, dict) and orders.get("submit"):
            return True
        serves = live.cached_serves_queue(cluster_id)
        if serves is None:
            serves = JobQueue.objects.filter(cluster_id=cluster_id).exists()
            live.keep_serves_queue(cluster_id, serves)
        return serves

    def receive(self, cluster_id: int, report: Any) -> None:
        job_attempts_report(cluster_id=cluster_id, report=report)
