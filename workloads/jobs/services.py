"""What users ask of jobs (submit, stop) and how Raydeck runs them (job_reconcile, the
head's reports).

A job's attempts each run on a cluster: one created for the attempt (and terminated
after it, whatever its outcome) or a shared running cluster. The control plane never
connects to a cluster: the "jobs" participant (head.py) puts the attempts to submit or
stop in the head's heartbeat answer, the head's agent submits them to Ray's job API and
reports their status in its next heartbeat (job_attempts_report). job_reconcile, run
by a task on every change and by the beat sweep, moves a job along from what the rows
say: a new attempt after a failure, timeouts, stops, clusters lost or left over. It
holds the job's row lock and makes no cloud call, so a worker killed at any point
leaves rows that the next run picks up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.models import Project, User
from accounts.permissions import has_perm, require
from clouds.models import Cloud
from clouds.providers.base import PermanentCloudError
from clusters.access import LINK_LIFETIME, AccessToken, gateway_address, mint_token
from clusters.choices import ClusterState, DesiredState
from clusters.models import Cluster, ComputeConfigVersion, ContainerImage
from clusters.services.events import record_event
from clusters.services.lifecycle import checked_choice, cluster_create, cluster_terminate
from workloads.models import WorkingDir
from workloads.storage import (
    ArchivedLog,
    archived_log,
    job_log_key,
    job_log_uri,
    working_dir_confirm,
)

from . import live, selectors
from .choices import (
    ACTIVE_JOB_STATES,
    FINAL_JOB_STATES,
    MAX_CONCURRENCY,
    RAY_STATUS,
    JobState,
    QueueOrder,
)
from .models import InvalidTransition, Job, JobAttempt, JobEvent, JobQueue, JobSchedule
from .tasks import FOLLOW_UP_SECONDS, enqueue_job_reconcile, reconcile_job_now

logger = logging.getLogger(__name__)

MAX_RETRIES = 10
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
# A stop (or a timeout) asks the head to stop the driver; past this the attempt counts as
# stopped anyway (its own cluster is terminated, which ends the driver for sure).
STOP_GRACE = timedelta(seconds=20)
# After Raydeck ends an attempt (timeout, stop) its own cluster is kept this long for the
# head to stop the driver and store its log; past it the log is given up on.
LOG_GRACE = timedelta(seconds=30)


def record_job_event(job: Job, step: str, message: str, attempt: int | None = None) -> None:
    JobEvent.objects.create(
        organization_id=job.organization_id,
        job=job,
        attempt=attempt,
        step=step,
        message=message[:1000],
    )


def _clean_env(env_vars: dict[str, Any] | None, pip: list[str] | None) -> dict[str, Any]:
    """Ray's runtime_env from what the user gave, or field-named errors."""
    runtime_env: dict[str, Any] = {}
    if env_vars:
        if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise ValidationError({"env_vars": "Give environment variables as NAME=value."})
        runtime_env["env_vars"] = dict(env_vars)
    if pip:
        if not isinstance(pip, list) or not all(isinstance(p, str) and p.strip() for p in pip):
            raise ValidationError({"pip": "Give pip requirements as a list of strings."})
        runtime_env["pip"] = [p.strip() for p in pip]
    return runtime_env


def job_definition(
    *,
    project: Project,
    actor: User,
    name: str,
    entrypoint: str,
    cloud: Cloud,
    compute_config: ComputeConfigVersion | None = None,
    image: ContainerImage | None = None,
    working_dir: WorkingDir | None = None,
    env_vars: dict[str, str] | None = None,
    pip: list[str] | None = None,
    max_retries: int = 1,
    timeout_seconds: int | None = None,
    target_cluster: Cluster | None = None,
    priority: int = 0,
) -> dict[str, Any]:
    """What a job of `project` runs, checked: the fields of a Job (or a JobSchedule),
    or every rule broken, as errors on the fields named like the arguments."""
    errors: dict[str, str] = {}
    entrypoint = (entrypoint or "").strip()
    name = (name or "").strip() or entrypoint.split(" ")[0][:100]
    if not entrypoint:
        errors["entrypoint"] = "Give the command to run, such as: python train.py"
    if not 0 <= max_retries <= MAX_RETRIES:
        errors["max_retries"] = f"Give a number of retries from 0 to {MAX_RETRIES}."
    if timeout_seconds is not None and not 1 <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
        errors["timeout_seconds"] = "Give a timeout from 1 second to 30 days, or none."
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        errors["priority"] = f"Give a priority from {MIN_PRIORITY} to {MAX_PRIORITY}."
    if target_cluster is not None:
        cloud = target_cluster.cloud
        if target_cluster.project_id != project.pk:
            errors["cluster"] = f"Choose a cluster of {project.name}."
        elif target_cluster.is_final or target_cluster.desired_state != DesiredState.RUNNING:
            errors["cluster"] = f"The cluster {target_cluster.name} is not running."
    else:
        try:
            compute_config, image = checked_choice(
                project=project,
                actor=actor,
                cloud=cloud,
                compute_config=compute_config,
                image=image,
            )
        except ValidationError as exc:
            errors |= {k: v[0] for k, v in exc.message_dict.items()}
    try:
        runtime_env = _clean_env(env_vars, pip)
    except ValidationError as exc:
        errors |= {k: v[0] for k, v in exc.message_dict.items()}
    if working_dir is not None and not errors:
        if working_dir.organization_id != project.organization_id:
            errors["working_dir"] = "Upload the working directory to this organization."
        elif working_dir.cloud_id != cloud.pk:
            errors["working_dir"] = (
                f"The working directory was uploaded to {working_dir.cloud.name}; this job "
                f"runs on {cloud.name}. Upload it there."
            )
        elif not working_dir_confirm(working_dir=working_dir):
            errors["working_dir"] = "The working directory is not uploaded yet: upload it first."
    if errors:
        raise ValidationError(errors)
    return {
        "name": name,
        "entrypoint": entrypoint,
        "runtime_env": runtime_env,
        "working_dir": working_dir,
        "cloud": cloud,
        "compute_config": compute_config,
        "image": image,
        "max_retries": max_retries,
        "timeout_seconds": timeout_seconds,
        "target_cluster": target_cluster,
        "priority": priority,
    }


# Not durable: the API's Idempotency-Key row commits in the same transaction (and a
# schedule's run submits inside its own).
@transaction.atomic
def job_submit(
    *,
    project: Project,
    actor: User,
    name: str,
    entrypoint: str,
    cloud: Cloud,
    compute_config: ComputeConfigVersion | None = None,
    image: ContainerImage | None = None,
    working_dir: WorkingDir | None = None,
    env_vars: dict[str, str] | None = None,
    pip: list[str] | None = None,
    max_retries: int = 1,
    timeout_seconds: int | None = None,
    target_cluster: Cluster | None = None,
    priority: int = 0,
    schedule: JobSchedule | None = None,
) -> Job:
    """A job of `project`, queued to run. Its rules are job_definition's; a refused
    request writes nothing."""
    require(actor, "job.submit", project)
    definition = job_definition(
        project=project,
        actor=actor,
        name=name,
        entrypoint=entrypoint,
        cloud=cloud,
        compute_config=compute_config,
        image=image,
        working_dir=working_dir,
        env_vars=env_vars,
        pip=pip,
        max_retries=max_retries,
        timeout_seconds=timeout_seconds,
        target_cluster=target_cluster,
        priority=priority,
    )
    job = Job(
        organization_id=project.organization_id,
        project=project,
        created_by=actor,
        schedule=schedule,
        **definition,
    )
    job.full_clean(
        exclude=[
            "project",
            "cloud",
            "compute_config",
            "image",
            "working_dir",
            "target_cluster",
            "schedule",
        ]
    )
    job.save()
    by = f"schedule {schedule.name} of {actor.display_name}" if schedule else actor.display_name
    record_job_event(job, "submitted", f"{by} submitted the job.")
    audit(
        actor=actor,
        verb="job.submit",
        target=job,
        changes={"name": [None, job.name], "entrypoint": [None, job.entrypoint[:200]]},
    )
    enqueue_job_reconcile(job.pk)
    return job


@transaction.atomic(durable=True)
def job_stop(*, job: Job, actor: User) -> Job:
    """Ask for the job to stop (idempotent): the head stops its driver, its own cluster
    is terminated, and no further attempt starts."""
    require(actor, "job.stop", job.project)
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.is_final or job.stop_requested_at is not None:
        return job
    job.stop_requested_at = timezone.now()
    job.stop_requested_by = actor
    job.save(update_fields=["stop_requested_at", "stop_requested_by", "updated_at"])
    record_job_event(job, "stop requested", f"{actor.display_name} asked to stop the job.")
    audit(actor=actor, verb="job.stop", target=job)
    attempt = job.attempts.filter(state__in=ACTIVE_JOB_STATES).first()
    live.forget_orders(attempt.cluster_id if attempt else None)
    enqueue_job_reconcile(job.pk)
    return job


@transaction.atomic(durable=True)
def job_queue_update(
    *,
    cluster: Cluster,
    actor: User,
    order: str | None = None,
    max_concurrency: int | None = None,
) -> JobQueue:
    """Set how the cluster's queue runs the jobs that target it. Fewer slots never stop
    what runs: new attempts wait until fewer run than the new limit."""
    require(actor, "cluster.update", cluster.project)
    Cluster.objects.select_for_update(of=("self",)).filter(pk=cluster.pk).first()
    queue = selectors.queue_of(cluster.pk)
    before = {"order": queue.order, "max_concurrency": queue.max_concurrency}
    errors = {}
    if order is not None:
        if order not in QueueOrder.values:
            errors["order"] = f"Choose an order: {', '.join(QueueOrder.values)}."
        queue.order = order
    if max_concurrency is not None:
        if not 1 <= max_concurrency <= MAX_CONCURRENCY:
            errors["max_concurrency"] = f"Give a number of jobs from 1 to {MAX_CONCURRENCY}."
        queue.max_concurrency = max_concurrency
    if errors:
        raise ValidationError(errors)
    after = {"order": queue.order, "max_concurrency": queue.max_concurrency}
    if after == before and queue.pk is not None:
        return queue
    queue.full_clean(exclude=["cluster", "organization"])
    queue.save()
    live.forget_serves_queue(cluster.pk)
    changes = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
    audit(actor=actor, verb="cluster.queue_update", target=cluster, changes=changes)
    record_event(
        cluster,
        "queue updated",
        f"{actor.display_name} set the job queue: "
        f"{QueueOrder(queue.order).label.lower()}, {queue.max_concurrency} at once.",
    )
    # More slots: the next jobs in line may start now.
    transaction.on_commit(lambda: _wake_waiting(cluster.pk))
    return queue


# --- Running jobs ----------------------------------------------------------------------


def submission_id(job: Job, number: int) -> str:
    """The Ray job submission id of an attempt: unique, and the same on every retry of
    the submission, so the head never submits an attempt twice."""
    return f"raydeck-{job.uuid.hex[:16]}-{number}"


def _start_attempt(job: Job, number: int) -> JobAttempt:
    """The next attempt, on a new cluster of its own (or the job's target cluster)."""
    attempt = JobAttempt(
        organization_id=job.organization_id,
        job=job,
        number=number,
        submission_id=submission_id(job, number),
        owns_cluster=job.target_cluster_id is None,
        cluster_id=job.target_cluster_id,
    )
    if attempt.owns_cluster:
        if job.created_by is None:
            raise ValidationError("The person who submitted the job is no longer here.")
        attempt.cluster = cluster_create(
            project=job.project,
            actor=job.created_by,
            name=f"job-{job.pk}-attempt-{number}",
            cloud=job.cloud,
            compute_config=job.compute_config,
            image=job.image,
        )
    attempt.save()
    where = (
        f"its own cluster {attempt.cluster.name}"
        if attempt.owns_cluster and attempt.cluster
        else f"cluster {job.target_cluster}"
    )
    record_job_event(job, "attempt started", f"Attempt {number} runs on {where}.", number)
    live.forget_orders(attempt.cluster_id)
    return attempt


def _end_attempt(job: Job, attempt: JobAttempt, state: str, reason: str) -> None:
    attempt.move_to(state, reason)
    attempt.ended_at = attempt.ended_at or timezone.now()
    attempt.save(update_fields=["state", "reason", "ended_at"])
    record_job_event(job, f"attempt {state}", f"Attempt {attempt.number}: {reason}", attempt.number)
    live.forget_orders(attempt.cluster_id)
    _slot_freed(attempt)


def _end_job(job: Job, state: str, reason: str) -> None:
    job.move_to(state, reason)
    job.ended_at = timezone.now()
    job.save(update_fields=["state", "state_reason", "ended_at", "updated_at"])
    record_job_event(job, state, reason)
    audit(actor=None, verb=f"job.{state}", target=job, changes={"state": [None, state]})


def _release_clusters(job: Job) -> bool:
    """Terminate every cluster created for an attempt that has ended (also after a
    crash between the attempt's end and this), unless the head may still be storing
    the attempt's driver log; True while one is kept for that."""
    leftovers = (
        JobAttempt.objects.filter(
            job=job,
            owns_cluster=True,
            state__in=FINAL_JOB_STATES,
            cluster__desired_state=DesiredState.RUNNING,
        )
        .select_related("cluster")
        .order_by("number")
    )
    now = timezone.now()
    kept = False
    for attempt in leftovers:
        cluster = attempt.cluster
        if cluster is None:  # the filter above joined it; for the type checker
            continue
        if not attempt.log_key and _log_may_come(job, attempt, cluster):
            if now - (attempt.ended_at or now) < LOG_GRACE:
                kept = True
                continue
            attempt.reason = f"{attempt.reason} The driver log could not be saved."[:1000]
            attempt.save(update_fields=["reason"])
            record_job_event(
                job,
                "log not saved",
                f"Attempt {attempt.number}: the head did not store the driver log within "
                f"{int(LOG_GRACE.total_seconds())} s; the log is lost with the cluster.",
                attempt.number,
            )
        cluster_terminate(cluster=cluster, actor=None, reason=f"Job {job.name} is done with it.")
    return kept


def _log_may_come(job: Job, attempt: JobAttempt, cluster: Cluster) -> bool:
    """Whether the head of a cluster that still runs may yet store the driver log of an
    attempt Raydeck ended (a timeout or a stop): its driver ran and the cloud has
    storage. (A failure or success the head reports comes after its log is stored.)"""
    return (
        attempt.state in (JobState.TIMED_OUT, JobState.STOPPED)
        and attempt.started_at is not None
        and cluster.state == ClusterState.RUNNING
        and job_log_uri(job.cloud, job_log_key(str(job.uuid), attempt.number)) is not None
    )


def _stopped_by(job: Job) -> str:
    who = job.stop_requested_by.display_name if job.stop_requested_by else "Raydeck"
    return f"Stopped by {who}."


def _advance_attempt(job: Job, attempt: JobAttempt) -> None:
    """End the attempt when its stop, its timeout or its cluster says so."""
    now = timezone.now()
    cluster = attempt.cluster
    if job.stop_requested_at is not None:
        driver_never_ran = attempt.state == JobState.PENDING
        if driver_never_ran or now - job.stop_requested_at > STOP_GRACE:
            _end_attempt(job, attempt, JobState.STOPPED, _stopped_by(job))
        return
    if (
        job.timeout_seconds is not None
        and attempt.started_at is not None
        and now - attempt.started_at > timedelta(seconds=job.timeout_seconds)
    ):
        _end_attempt(
            job,
            attempt,
            JobState.TIMED_OUT,
            f"Ran past its timeout of {job.timeout_seconds} s; Raydeck stopped it.",
        )
        return
    if cluster is None or cluster.state in (ClusterState.FAILED, ClusterState.TERMINATED):
        detail = f": {cluster.state_reason}" if cluster and cluster.state_reason else ""
        state = cluster.state if cluster else "gone"
        _end_attempt(job, attempt, JobState.FAILED, f"Its cluster {state}{detail}.")
    elif cluster.desired_state == DesiredState.TERMINATED:
        _end_attempt(job, attempt, JobState.FAILED, "Its cluster was terminated.")


def _queue_admits(job: Job, cluster_id: int) -> bool:
    """Whether the job's turn has come on its target cluster: its queue has a free slot
    (attempts under way < max_concurrency) for it among the first waiting jobs, in the
    queue's order. The cluster's row lock makes admissions on one cluster take turns, so
    two reconciles never both take the last slot."""
    Cluster.objects.select_for_update(of=("self",)).filter(pk=cluster_id).first()
    queue = selectors.queue_of(cluster_id)
    free = queue.max_concurrency - selectors.attempts_under_way(cluster_id).count()
    if free <= 0:
        return False
    first_waiting = selectors.waiting_jobs(queue)[:free]
    return job.pk in {j.pk for j in first_waiting}


def _slot_freed(attempt: JobAttempt) -> None:
    """An attempt on a shared cluster ended: once that commits, reconcile the jobs next
    in its queue now rather than at their next follow-up."""
    cluster_id = attempt.cluster_id
    if attempt.owns_cluster or cluster_id is None:
        return

    transaction.on_commit(lambda: _wake_waiting(cluster_id))


def _wake_waiting(cluster_id: int) -> None:
    queue = selectors.queue_of(cluster_id)
    waiting = selectors.waiting_jobs(queue).values_list("pk", flat=True)
    for job_id in waiting[: queue.max_concurrency]:
        reconcile_job_now(job_id)


def job_reconcile(*, job_id: int) -> int | None:
    """Move the job along from what its rows say; seconds until the next look while it
    is not final (None: final, nothing left to do)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None
        attempt = (
            JobAttempt.objects.select_for_update(of=("self",))
            .select_related("cluster")
            .filter(job=job)
            .order_by("-number")
            .first()
        )
        if attempt is not None and not attempt.is_final:
            _advance_attempt(job, attempt)
        if not job.is_final and (attempt is None or attempt.is_final):
            _next_step(job, attempt)
        elif attempt is not None and not job.is_final:
            _follow_attempt(job, attempt)
        keeping = _release_clusters(job)
    return None if job.is_final and not keeping else FOLLOW_UP_SECONDS


def _follow_attempt(job: Job, attempt: JobAttempt) -> None:
    """The job is running while its attempt's driver runs, starting otherwise."""
    state = JobState.RUNNING if attempt.state == JobState.RUNNING else JobState.STARTING
    if job.state == state:
        return
    job.move_to(state)
    fields = ["state", "updated_at"]
    if state == JobState.RUNNING and job.started_at is None:
        job.started_at = attempt.started_at or timezone.now()
        fields.append("started_at")
    job.save(update_fields=fields)


def _next_step(job: Job, last: JobAttempt | None) -> None:
    """After an attempt ended (or before the first): another attempt, or the job's end."""
    if job.stop_requested_at is not None:
        _end_job(job, JobState.STOPPED, _stopped_by(job))
        return
    if last is not None and last.state != JobState.FAILED:
        reasons: dict[str, str] = {
            JobState.SUCCEEDED: f"Attempt {last.number} succeeded.",
            JobState.TIMED_OUT: last.reason,
            JobState.STOPPED: last.reason,
        }
        _end_job(job, last.state, reasons.get(last.state, last.reason))
        return
    number = 1 if last is None else last.number + 1
    if last is not None and number > job.max_retries + 1:
        _end_job(
            job,
            JobState.FAILED,
            f"Attempt {last.number} failed ({last.reason}); no retries left.",
        )
        return
    if job.target_cluster_id is not None:
        target = Cluster.objects.get(pk=job.target_cluster_id)
        if target.is_final or target.desired_state != DesiredState.RUNNING:
            _end_job(
                job,
                JobState.FAILED,
                f"Its cluster {target.name} was terminated before attempt {number} could run.",
            )
            return
        if not _queue_admits(job, target.pk):
            return  # it waits its turn; a slot freeing up (or the follow-up) asks again
    try:
        with transaction.atomic():
            _start_attempt(job, number)
    except (ValidationError, PermissionDenied) as exc:
        messages = getattr(exc, "messages", None) or [str(exc)]
        _end_job(job, JobState.FAILED, f"Could not start attempt {number}: {' '.join(messages)}")
        return
    job.move_to(JobState.STARTING if job.state == JobState.PENDING else job.state)
    job.save(update_fields=["state", "updated_at"])


# --- The head's reports ------------------------------------------------------------------


def job_attempts_report(*, cluster_id: int, report: Any) -> None:
    """Apply what a head reported of its submissions ({submission_id: {status, message,
    exit_code, log_bytes}}): untrusted input, so only attempts on that cluster move,
    only along allowed transitions; a change asks for the job's reconcile."""
    if not isinstance(report, dict) or not live.report_is_new(cluster_id, report):
        return
    submissions = report.get("submissions")
    if not isinstance(submissions, dict):
        return
    changed_jobs = set()
    reported = JobAttempt.objects.filter(
        cluster_id=cluster_id, submission_id__in=[str(s) for s in list(submissions)[:100]]
    )
    with transaction.atomic():
        # Jobs first, then attempts: the order job_reconcile locks them in.
        job_ids = list(reported.values_list("job_id", flat=True))
        list(Job.objects.select_for_update().filter(pk__in=job_ids).order_by("pk").values("pk"))
        attempts = reported.select_for_update(of=("self",)).select_related("job").order_by("pk")
        for attempt in attempts:
            status = submissions.get(attempt.submission_id)
            if isinstance(status, dict) and _apply_status(attempt, status):
                changed_jobs.add(attempt.job_id)
    for job_id in changed_jobs:
        enqueue_job_reconcile(job_id)


def _apply_status(attempt: JobAttempt, status: dict[str, Any]) -> bool:
    state = RAY_STATUS.get(str(status.get("status")))
    log_bytes = status.get("log_bytes")
    fields = []
    if isinstance(log_bytes, int) and log_bytes > attempt.log_bytes:
        attempt.log_bytes = log_bytes
        fields.append("log_bytes")
    if status.get("log_archived") is True and not attempt.log_key:
        # The head stored the driver log where the orders said: the key is ours, never
        # taken from the report.
        attempt.log_key = job_log_key(str(attempt.job.uuid), attempt.number)
        fields.append("log_key")
    # A log stored after Raydeck ended the attempt frees its kept cluster: reconcile.
    moved = "log_key" in fields and attempt.is_final
    if state is not None and not attempt.is_final and state != attempt.state:
        if state == JobState.RUNNING and attempt.started_at is None:
            attempt.started_at = timezone.now()
            fields.append("started_at")
        if state in FINAL_JOB_STATES:
            exit_code = status.get("exit_code")
            attempt.exit_code = exit_code if isinstance(exit_code, int) else None
            attempt.ended_at = timezone.now()
            fields += ["exit_code", "ended_at", "reason"]
            attempt.reason = _ended_because(
                state, attempt.exit_code, str(status.get("message", ""))
            )
        try:
            attempt.move_to(state)
        except InvalidTransition:
            return False
        fields.append("state")
        moved = True
        job = attempt.job
        record_job_event(
            job, f"attempt {state}", attempt.reason or f"The driver is {state}.", attempt.number
        )
        live.forget_orders(attempt.cluster_id)
        if attempt.is_final:
            _slot_freed(attempt)
    if fields:
        attempt.save(update_fields=fields)
    return moved


def _ended_because(state: str, exit_code: int | None, message: str) -> str:
    # Ray's message may quote what the driver printed: the customer's data, kept out of
    # this database (the head cuts it off too: raydeck_agent/jobs.py job_message).
    message = message.split("last available logs", 1)[0].split("\n", 1)[0].rstrip(" ,:")
    code = f" with exit code {exit_code}" if exit_code is not None else ""
    if state == JobState.SUCCEEDED:
        return f"The driver exited{code or ' with exit code 0'}."
    if state == JobState.STOPPED:
        return "The driver was stopped."
    return f"The driver failed{code}. {message[:500]}".strip()


# Not durable: like job_submit.
@transaction.atomic
def job_submit_again(*, job: Job, actor: User) -> Job:
    """A new job with the same entrypoint, environment, working dir and choices."""
    return job_submit(
        project=job.project,
        actor=actor,
        name=job.name,
        entrypoint=job.entrypoint,
        cloud=job.cloud,
        compute_config=job.compute_config,
        image=job.image,
        working_dir=job.working_dir,
        env_vars=job.runtime_env.get("env_vars"),
        pip=job.runtime_env.get("pip"),
        max_retries=job.max_retries,
        timeout_seconds=job.timeout_seconds,
        target_cluster=job.target_cluster,
        priority=job.priority,
    )


# --- Reading a job's logs ---------------------------------------------------------------

LIVE_LOG_LIFETIME = timedelta(minutes=15)


@dataclass(frozen=True)
class LiveLog:
    """Where the running driver's log is read: Ray's job API behind the head's gateway,
    with a short-lived token of the reader's own (cluster → reader directly)."""

    url: str
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class JobLogs:
    attempt: JobAttempt
    archive: ArchivedLog | None
    live: LiveLog | None
    note: str  # for people: why there is no archive or live tail, if there is neither


def job_logs(
    *, job: Job, actor: User | Any, number: int | None = None, first_page: int = 0
) -> JobLogs:
    """Where `actor` reads the driver log of attempt `number` (the last one by default):
    the archive in the cloud's storage once the attempt ended (signed URLs), the head's
    gateway while it runs (for those who may access the cluster; the token is audited).
    The control plane hands out addresses and never reads the log itself."""
    require(actor, "project.view", job.project)
    attempts = job.attempts.select_related("cluster")
    attempt = (
        attempts.order_by("-number").first()
        if number is None
        else attempts.filter(number=number).first()
    )
    if attempt is None:
        raise ValidationError({"attempt": "The job has no such attempt (yet)."})
    archive = None
    if attempt.is_final:
        key = attempt.log_key or job_log_key(str(job.uuid), attempt.number)
        try:
            archive = archived_log(cloud=job.cloud, key=key, first_page=first_page)
        except PermanentCloudError as exc:
            return JobLogs(attempt, None, None, exc.user_message)
        note = "" if archive else "No driver log was stored for this attempt."
        return JobLogs(attempt, archive, None, note)
    cluster = attempt.cluster
    address = gateway_address(cluster) if cluster is not None else None
    if address is None or attempt.state == JobState.PENDING:
        return JobLogs(attempt, None, None, "The driver has not started yet.")
    if not isinstance(actor, User) or not has_perm(actor, "cluster.access", cluster):
        return JobLogs(attempt, None, None, "The log is readable once the attempt ends.")
    token = _live_token(actor=actor, cluster=cluster, job=job)
    url = f"{address}/api/jobs/{attempt.submission_id}/logs"
    return JobLogs(attempt, None, LiveLog(url, token.token, token.expires_at), "")


@transaction.atomic
def _live_token(*, actor: User, cluster: Cluster, job: Job) -> AccessToken:
    token = mint_token(user=actor, cluster=cluster, lifetime=LIVE_LOG_LIFETIME)
    audit(actor=actor, verb="job.logs", target=job, changes={"token_id": [None, token.jti]})
    return token


@transaction.atomic(durable=True)
def job_live_log_link(*, job: Job, actor: User, number: int) -> str:
    """The head gateway's page that follows a running attempt's driver log (it reloads
    itself until the job ends), with a fresh short link token that the gateway swaps for
    a session; audited like every token handed out. The log goes from the cluster to
    the browser, never through here."""
    attempt = job.attempts.select_related("cluster").filter(number=number).first()
    cluster = attempt.cluster if attempt is not None else None
    if attempt is None or cluster is None:
        raise ValidationError({"attempt": "The job has no such attempt (yet)."})
    require(actor, "cluster.access", cluster)
    address = gateway_address(cluster)
    if attempt.is_final or address is None or attempt.state == JobState.PENDING:
        raise ValidationError({"attempt": "The attempt's driver is not running."})
    token = mint_token(user=actor, cluster=cluster, lifetime=LINK_LIFETIME)
    audit(actor=actor, verb="job.logs", target=job, changes={"token_id": [None, token.jti]})
    query = urlencode({"token": token.token})
    return f"{address}/raydeck/jobs/{attempt.submission_id}/log?{query}"
