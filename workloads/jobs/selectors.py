"""Reads of jobs, always through `visible_to`: the pages and the API list the same rows."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, QuerySet

from accounts.models import Organization
from clusters.choices import ClusterState, DesiredState
from clusters.models import Cluster

from .choices import ACTIVE_JOB_STATES, FINAL_JOB_STATES, JobState, QueueOrder
from .models import Job, JobAttempt, JobQueue, JobSchedule


def jobs_to_sweep() -> list[int]:
    """Jobs the beat sweep reconciles: those not final, and those whose ended attempt
    still keeps its own cluster (for the head to store its driver log)."""
    keeping = JobAttempt.objects.filter(
        owns_cluster=True,
        state__in=FINAL_JOB_STATES,
        cluster__desired_state=DesiredState.RUNNING,
    ).values_list("job_id", flat=True)
    return sorted({*Job.objects.active().values_list("pk", flat=True), *keeping})


def queue_clusters(*, viewer: Any, organization: Organization) -> QuerySet[Cluster]:
    """The clusters the viewer may queue jobs on: running ones of the organization they
    see, not created for a job's attempt."""
    return (
        Cluster.objects.visible_to(viewer, organization)
        .filter(desired_state=DesiredState.RUNNING)
        .exclude(state__in=[ClusterState.FAILED, ClusterState.TERMINATED])
        .exclude(job_attempts__owns_cluster=True)
        .select_related("project")
        .order_by("project__name", "name")
    )


def job_rows(*, viewer: Any, organization: Organization) -> QuerySet[Job]:
    return Job.objects.visible_to(viewer, organization).select_related(
        "project", "created_by", "cloud", "target_cluster", "schedule"
    )


def job_list(
    *,
    viewer: Any,
    organization: Organization,
    project: str = "",
    state: str = "",
    creator: str = "",
) -> QuerySet[Job]:
    """The jobs the viewer sees, filtered by project slug, state and creator's email."""
    rows = job_rows(viewer=viewer, organization=organization)
    if project:
        rows = rows.filter(project__slug=project)
    if state in JobState.values:
        rows = rows.filter(state=state)
    if creator:
        rows = rows.filter(created_by__email__iexact=creator)
    return rows


def job_attempts(job: Job) -> QuerySet[JobAttempt]:
    return job.attempts.select_related("cluster").order_by("number")


def job_page_changes(job: Job, attempts: list[JobAttempt]) -> bool:
    """Whether the job's page may still change by itself (so it keeps polling): the job
    is not final, or an attempt's driver log is still being stored."""
    return not job.is_final or any(attempt.log_being_stored for attempt in attempts)


# --- A shared cluster's queue ----------------------------------------------------------
# These read rows the caller already reached through `visible_to` (the cluster or job of
# a page) or serve the reconciler, which acts for the cluster itself.

QUEUE_ORDERING = {
    QueueOrder.FIFO: ["created_at", "pk"],
    QueueOrder.PRIORITY: ["-priority", "created_at", "pk"],
}


def queue_of(cluster_id: int) -> JobQueue:
    """The cluster's queue settings (the defaults, unsaved, when nobody set them)."""
    queue = JobQueue.objects.filter(cluster_id=cluster_id).first()
    if queue is None:
        cluster = Cluster.objects.only("organization_id").get(pk=cluster_id)
        queue = JobQueue(cluster_id=cluster_id, organization_id=cluster.organization_id)
    return queue


def attempts_under_way(cluster_id: int) -> QuerySet[JobAttempt]:
    """Attempts that hold a slot of the cluster's queue (handed to the head, not ended)."""
    return JobAttempt.objects.filter(
        cluster_id=cluster_id, owns_cluster=False, state__in=ACTIVE_JOB_STATES
    )


def waiting_jobs(queue: JobQueue) -> QuerySet[Job]:
    """Jobs waiting for a slot of the queue's cluster, next first: unfinished, not being
    stopped, with no attempt under way, and due one (new, or failed with retries left;
    not one whose last attempt ended it and whose reconcile has yet to say so)."""
    under_way = JobAttempt.objects.filter(state__in=ACTIVE_JOB_STATES).values("job_id")
    ended_it = JobAttempt.objects.filter(state__in=FINAL_JOB_STATES - {JobState.FAILED}).values(
        "job_id"
    )
    return (
        Job.objects.filter(target_cluster_id=queue.cluster_id, stop_requested_at__isnull=True)
        .exclude(state__in=FINAL_JOB_STATES)
        .exclude(pk__in=under_way)
        .exclude(pk__in=ended_it)
        .annotate(tries=Count("attempts"))
        .filter(tries__lte=F("max_retries"))
        .order_by(*QUEUE_ORDERING[QueueOrder(queue.order)])
    )


def queue_position(job: Job) -> int | None:
    """The job's place in its cluster's queue (1: next), or None when it is not waiting."""
    if job.target_cluster_id is None or job.is_final:
        return None
    ids = list(waiting_jobs(queue_of(job.target_cluster_id)).values_list("pk", flat=True))
    return ids.index(job.pk) + 1 if job.pk in ids else None


def cluster_queue(cluster_id: int) -> dict[str, Any]:
    """What the cluster page shows of its queue: settings, running and waiting jobs."""
    queue = queue_of(cluster_id)
    running = [
        a.job for a in attempts_under_way(cluster_id).select_related("job", "job__created_by")
    ]
    waiting = list(waiting_jobs(queue).select_related("created_by")[:100])
    return {"queue": queue, "running": running, "waiting": waiting}


def schedule_rows(*, viewer: Any, organization: Organization) -> QuerySet[JobSchedule]:
    return JobSchedule.objects.visible_to(viewer, organization).select_related(
        "project", "created_by", "cloud", "last_job", "target_cluster"
    )


def jobs_keeping_busy(cluster: Cluster) -> list[str]:
    """Why the cluster is in use by Raydeck's jobs (its idle check asks): attempts
    handed to its head, and jobs waiting in its queue."""
    running = JobAttempt.objects.filter(cluster=cluster, state__in=ACTIVE_JOB_STATES).count()
    waiting = waiting_jobs(queue_of(cluster.pk)).count()
    reasons = []
    if running:
        reasons.append(f"{running} Raydeck job{'s' if running != 1 else ''} running")
    if waiting:
        reasons.append(f"{waiting} job{'s' if waiting != 1 else ''} waiting in its queue")
    return reasons
