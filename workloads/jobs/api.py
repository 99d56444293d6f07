"""JSON API of jobs: submit (Idempotency-Key like clusters), list, get, stop, attempts,
events and logs. Ids are the job's UUID; ids in a body are resolved through
`visible_to` (clusters.api.choice_of), and the same services as the console's check the
rules and write."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.urls import reverse
from ninja import Field, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status

from accounts import api_context as context
from accounts.api_idempotency import idempotent
from accounts.models import Organization
from clouds.providers.base import TransientCloudError
from clusters.api import CLOUD_WHEN_ABSENT, choice_of
from clusters.models import Cluster
from kit.api.errors import invalid
from kit.api.handlers import answers
from kit.api.pagination import PageParams, page_of
from kit.api.schema import Changes, Out
from kit.keyset import keyset_page
from workloads.api import unavailable, visible_project
from workloads.models import WorkingDir

from . import selectors
from .models import Job, JobAttempt, JobSchedule
from .schedules import schedule_create, schedule_delete, schedule_pause, schedule_resume
from .services import (
    MAX_PRIORITY,
    MAX_RETRIES,
    MAX_TIMEOUT_SECONDS,
    MIN_PRIORITY,
    job_logs,
    job_queue_update,
    job_stop,
    job_submit,
)

router = Router(tags=["jobs"])


class JobIn(Schema):
    project: str = Field(description="The project's slug.")
    entrypoint: str = Field(max_length=10_000, description="The command, e.g. python train.py.")
    name: str = Field("", max_length=100, description="Absent: the entrypoint's first word.")
    cloud: str | None = Field(None, description=CLOUD_WHEN_ABSENT)
    compute_config: str | None = Field(None, description="A compute config's id; absent: default.")
    image: str | None = Field(None, description="An image's id; absent: Raydeck's default.")
    working_dir: str | None = Field(
        None, description="A working dir's id (POST /working-dirs first); absent: none."
    )
    env_vars: dict[str, str] = Field(default_factory=dict)
    pip: list[str] = Field(default_factory=list, max_length=200)
    max_retries: int = Field(1, ge=-(2**31), le=2**31, description=f"0 to {MAX_RETRIES}.")
    timeout_seconds: int | None = Field(
        None, ge=-(2**31), le=2**31, description=f"1 to {MAX_TIMEOUT_SECONDS}; null: none."
    )
    cluster: str | None = Field(
        None, description="A running cluster's id to queue on; absent: a cluster per attempt."
    )
    priority: int = Field(
        0,
        ge=-(2**31),
        le=2**31,
        description=f"{MIN_PRIORITY} to {MAX_PRIORITY}: in a priority queue, higher runs first.",
    )


class JobOut(Out):
    id: str
    name: str
    project: str
    entrypoint: str
    state: str
    state_reason: str
    max_retries: int
    timeout_seconds: int | None
    attempts: int
    cluster: str | None = Field(description="The current (or last) attempt's cluster id.")
    priority: int
    queue_position: int | None = Field(
        description="Its place in its cluster's queue (1: next); null when not waiting."
    )
    schedule: str | None = Field(description="The id of the schedule that submitted it.")
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    url: str


class AttemptOut(Out):
    number: int
    state: str
    reason: str
    exit_code: int | None
    cluster: str | None
    submission_id: str
    started_at: datetime | None
    ended_at: datetime | None


class AttemptList(Out):
    items: list[AttemptOut]


class JobEventOut(Out):
    step: str
    message: str
    attempt: int | None
    created_at: datetime


class JobEventList(Out):
    items: list[JobEventOut]


class LogPageOut(Out):
    number: int
    offset: int
    length: int
    url: str
    headers: dict[str, str] = Field(description="Send these (the page's Range) with the URL.")


class ArchiveOut(Out):
    size: int
    download_url: str = Field(description="The whole log; a signed URL, good until expires_at.")
    expires_at: datetime
    page_count: int
    pages: list[LogPageOut] = Field(description="Up to 100 pages from `page`.")


class LiveOut(Out):
    url: str = Field(description="Ray's job log on the cluster's gateway: GET, JSON {logs}.")
    headers: dict[str, str] = Field(description="The reader's own short-lived token.")
    expires_at: datetime


class JobLogsOut(Out):
    attempt: int
    state: str
    final: bool
    archive: ArchiveOut | None = Field(description="The stored log, once the attempt ended.")
    live: LiveOut | None = Field(description="The running driver's log, read from the head.")
    note: str


class LogParams(Schema):
    attempt: int | None = Field(None, ge=1, le=10_000, description="Absent: the last attempt.")
    page: int = Field(0, ge=0, le=10_000_000, description="The first page to list.")


class JobFilters(PageParams):
    project: str = Field("", description="A project's slug.")
    state: str = Field("", description="pending, starting, running, succeeded, failed, ...")
    creator: str = Field("", description="The submitter's email.")


def attempt_out(attempt: JobAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "state": attempt.state,
        "reason": attempt.reason,
        "exit_code": attempt.exit_code,
        "cluster": str(attempt.cluster.uuid) if attempt.cluster else None,
        "submission_id": attempt.submission_id,
        "started_at": attempt.started_at,
        "ended_at": attempt.ended_at,
    }


def job_out(job: Job, org: Organization) -> dict[str, Any]:
    attempts = list(selectors.job_attempts(job))
    last = attempts[-1] if attempts else None
    return {
        "id": str(job.uuid),
        "name": job.name,
        "project": job.project.slug,
        "entrypoint": job.entrypoint,
        "state": job.state,
        "state_reason": job.state_reason,
        "max_retries": job.max_retries,
        "timeout_seconds": job.timeout_seconds,
        "attempts": len(attempts),
        "cluster": str(last.cluster.uuid) if last and last.cluster else None,
        "priority": job.priority,
        "queue_position": selectors.queue_position(job),
        "schedule": str(job.schedule.uuid) if job.schedule else None,
        "created_by": job.created_by.email if job.created_by else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "url": context.console_url(reverse("job_detail", args=[org.slug, job.pk])),
    }


def _job(request: HttpRequest, org: Organization, id: str, perm: str) -> Job:
    rows = selectors.job_rows(viewer=context.viewer(request), organization=org)
    job = context.one_or_404(rows, "job", uuid=context.uuid_id(id))
    context.require(request, perm, job.project)
    return job


@router.get("/orgs/{org}/jobs", response=answers(page_of(JobOut)))
def job_list(request: HttpRequest, org: str, page: Query[JobFilters]) -> dict[str, Any]:
    """Jobs the token sees, newest first."""
    organization = context.organization(request, org)
    rows = selectors.job_list(
        viewer=context.viewer(request),
        organization=organization,
        project=page.project,
        state=page.state,
        creator=page.creator,
    )
    items, cursor = keyset_page(rows, page, ["-created_at", "-pk"])
    return {"items": [job_out(j, organization) for j in items], "next_cursor": cursor}


def _job_choices(
    request: HttpRequest, organization: Organization, project: Any, body: JobIn
) -> dict[str, Any]:
    """The cloud, config, image, working dir and target cluster a body names, each
    resolved through `visible_to` (an unknown or another organization's id is a 422)."""
    viewer = context.viewer(request)
    cloud, version, image = choice_of(
        request,
        organization,
        project,
        cloud=body.cloud,
        compute_config=body.compute_config,
        image=body.image,
    )
    working_dir = None
    if body.working_dir is not None:
        working_dir = (
            WorkingDir.objects.visible_to(viewer, organization)
            .filter(pk=context.int_id(body.working_dir))
            .first()
        )
        if working_dir is None:
            raise invalid("working_dir", f"No working dir with id “{body.working_dir}” here.")
    target = None
    if body.cluster is not None:
        target = (
            Cluster.objects.visible_to(viewer, organization)
            .filter(uuid=context.uuid_id(body.cluster))
            .first()
        )
        if target is None:
            raise invalid("cluster", f"No cluster with id “{body.cluster}” here.")
    return {
        "cloud": cloud,
        "compute_config": version,
        "image": image,
        "working_dir": working_dir,
        "target_cluster": target,
    }


@router.post("/orgs/{org}/jobs", response=answers({201: JobOut}, 503))
@decorate_view(idempotent)
def job_submit_endpoint(request: HttpRequest, org: str, body: JobIn) -> Status:
    """Submit a job: each attempt runs on a cluster created for it (terminated after),
    or in the queue of `cluster`. Follow `state` (or the events) until it is final."""
    organization = context.organization(request, org)
    project = visible_project(request, organization, body.project)
    context.require(request, "job.submit", project)
    choices = _job_choices(request, organization, project, body)
    try:
        job = job_submit(
            project=project,
            actor=context.actor(request),
            name=body.name,
            entrypoint=body.entrypoint,
            env_vars=body.env_vars,
            pip=body.pip,
            max_retries=body.max_retries,
            timeout_seconds=body.timeout_seconds,
            priority=body.priority,
            **choices,
        )
    except TransientCloudError as exc:
        raise unavailable(exc) from exc
    return Status(201, job_out(job, organization))


@router.get("/orgs/{org}/jobs/{id}", response=answers(JobOut))
def job_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    return job_out(_job(request, organization, id, "project.view"), organization)


@router.post("/orgs/{org}/jobs/{id}/stop", response=answers({202: JobOut}))
def job_stop_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """Stop the job: its driver is stopped and no further attempt starts; asking again
    changes nothing."""
    organization = context.organization(request, org)
    job = _job(request, organization, id, "job.stop")
    job = job_stop(job=job, actor=context.actor(request))
    return Status(202, job_out(_job(request, organization, id, "project.view"), organization))


@router.get("/orgs/{org}/jobs/{id}/attempts", response=answers(AttemptList))
def job_attempt_list(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """Every attempt, first first, with why it ended."""
    organization = context.organization(request, org)
    job = _job(request, organization, id, "project.view")
    return {"items": [attempt_out(a) for a in selectors.job_attempts(job)]}


@router.get("/orgs/{org}/jobs/{id}/events", response=answers(JobEventList))
def job_event_list(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """What happened to the job, oldest first."""
    organization = context.organization(request, org)
    job = _job(request, organization, id, "project.view")
    events = job.events.order_by("created_at", "pk")[:500]
    return {
        "items": [
            {"step": e.step, "message": e.message, "attempt": e.attempt, "created_at": e.created_at}
            for e in events
        ]
    }


@router.get("/orgs/{org}/jobs/{id}/logs", response=answers(JobLogsOut))
def job_log_read(request: HttpRequest, org: str, id: str, params: Query[LogParams]) -> Any:
    """Where to read an attempt's driver log. Ended: `archive`, the whole log in the
    cloud's storage, as signed URLs read page by page (a Range per page) and a download.
    Running: `live`, Ray's log on the cluster's gateway with a short-lived token (for
    those who may access the cluster). The log itself never passes through Raydeck."""
    organization = context.organization(request, org)
    job = _job(request, organization, id, "project.view")
    try:
        logs = job_logs(
            job=job, actor=context.viewer(request), number=params.attempt, first_page=params.page
        )
    except TransientCloudError as exc:
        raise unavailable(exc) from exc
    except ValidationError as exc:
        raise invalid("attempt", " ".join(exc.messages)) from exc
    archive = logs.archive
    live = logs.live
    return {
        "attempt": logs.attempt.number,
        "state": logs.attempt.state,
        "final": logs.attempt.is_final,
        "archive": None
        if archive is None
        else {
            "size": archive.size,
            "download_url": archive.download.url,
            "expires_at": archive.download.expires_at,
            "page_count": archive.page_count,
            "pages": [vars(page) for page in archive.pages],
        },
        "live": None
        if live is None
        else {
            "url": live.url,
            "headers": {"Authorization": f"Bearer {live.token}"},
            "expires_at": live.expires_at,
        },
        "note": logs.note,
    }


# --- A shared cluster's queue -------------------------------------------------------------


class QueuedJobOut(Out):
    id: str
    name: str
    priority: int
    position: int | None = Field(description="1: next; null for a running job.")


class QueueOut(Out):
    cluster: str
    order: str = Field(description="fifo or priority.")
    max_concurrency: int
    running: list[QueuedJobOut]
    waiting: list[QueuedJobOut]


class QueueChanges(Changes):
    order: str | None = Field(None, description="fifo or priority.")
    max_concurrency: int | None = Field(None, ge=-(2**31), le=2**31, description="1 to 100.")


def _queue_cluster(request: HttpRequest, org: Organization, id: str, perm: str) -> Cluster:
    cluster = context.one_or_404(
        Cluster.objects.visible_to(context.viewer(request), org).select_related("project"),
        "cluster",
        uuid=context.uuid_id(id),
    )
    context.require(request, perm, cluster.project)
    return cluster


def queue_out(cluster: Cluster) -> dict[str, Any]:
    queue = selectors.cluster_queue(cluster.pk)

    def row(job: Job, position: int | None) -> dict[str, Any]:
        return {
            "id": str(job.uuid),
            "name": job.name,
            "priority": job.priority,
            "position": position,
        }

    return {
        "cluster": str(cluster.uuid),
        "order": queue["queue"].order,
        "max_concurrency": queue["queue"].max_concurrency,
        "running": [row(j, None) for j in queue["running"]],
        "waiting": [row(j, n) for n, j in enumerate(queue["waiting"], start=1)],
    }


@router.get("/orgs/{org}/clusters/{id}/queue", response=answers(QueueOut))
def cluster_queue_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """The cluster's job queue: its order, how many jobs run at once, which run and
    which wait (next first)."""
    organization = context.organization(request, org)
    return queue_out(_queue_cluster(request, organization, id, "project.view"))


@router.patch("/orgs/{org}/clusters/{id}/queue", response=answers(QueueOut))
def cluster_queue_update(
    request: HttpRequest, org: str, id: str, body: QueueChanges
) -> dict[str, Any]:
    """Change the fields sent. Fewer slots stop nothing that runs: new jobs wait until
    fewer run than the new limit."""
    organization = context.organization(request, org)
    cluster = _queue_cluster(request, organization, id, "cluster.update")
    changes = body.dict(exclude_unset=True)
    for name, value in changes.items():
        if value is None:
            raise invalid(name, "Leave the field out to keep its value; null is not one.")
    job_queue_update(cluster=cluster, actor=context.actor(request), **changes)
    return queue_out(cluster)


# --- Schedules ------------------------------------------------------------------------------


class ScheduleIn(JobIn):
    cron: str = Field(max_length=120, description="Five fields, e.g. 0 3 * * * (03:00 daily).")
    timezone: str = Field("UTC", max_length=64, description="An IANA time zone.")


class ScheduleOut(Out):
    id: str
    name: str
    project: str
    cron: str
    timezone: str
    paused: bool
    entrypoint: str
    cluster: str | None = Field(description="The cluster whose queue its jobs join.")
    next_run_at: datetime | None = Field(description="Null while paused.")
    last_run_at: datetime | None
    last_job: str | None = Field(description="The id of the job its last run submitted.")
    last_error: str
    created_by: str | None
    created_at: datetime
    url: str


class ScheduleFilters(PageParams):
    project: str = Field("", description="A project's slug.")


def schedule_out(schedule: JobSchedule, org: Organization) -> dict[str, Any]:
    return {
        "id": str(schedule.uuid),
        "name": schedule.name,
        "project": schedule.project.slug,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "paused": schedule.paused,
        "entrypoint": schedule.entrypoint,
        "cluster": str(schedule.target_cluster.uuid) if schedule.target_cluster else None,
        "next_run_at": schedule.next_run_at,
        "last_run_at": schedule.last_run_at,
        "last_job": str(schedule.last_job.uuid) if schedule.last_job else None,
        "last_error": schedule.last_error,
        "created_by": schedule.created_by.email if schedule.created_by else None,
        "created_at": schedule.created_at,
        "url": context.console_url(reverse("schedule_detail", args=[org.slug, schedule.pk])),
    }


def _schedule(request: HttpRequest, org: Organization, id: str, perm: str) -> JobSchedule:
    rows = selectors.schedule_rows(viewer=context.viewer(request), organization=org)
    schedule = context.one_or_404(rows, "schedule", uuid=context.uuid_id(id))
    context.require(request, perm, schedule.project)
    return schedule


@router.get("/orgs/{org}/job-schedules", response=answers(page_of(ScheduleOut)), tags=["schedules"])
def schedule_list(request: HttpRequest, org: str, page: Query[ScheduleFilters]) -> dict[str, Any]:
    """Schedules the token sees, by name, with their next and last run."""
    organization = context.organization(request, org)
    rows = selectors.schedule_rows(viewer=context.viewer(request), organization=organization)
    if page.project:
        rows = rows.filter(project__slug=page.project)
    items, cursor = keyset_page(rows, page, ["name", "pk"])
    return {"items": [schedule_out(s, organization) for s in items], "next_cursor": cursor}


@router.post("/orgs/{org}/job-schedules", response=answers({201: ScheduleOut}), tags=["schedules"])
def schedule_create_endpoint(request: HttpRequest, org: str, body: ScheduleIn) -> Status:
    """Submit the job at each time `cron` names in `timezone`. A run missed while the
    control plane was down runs once when it is back, not once per missed time."""
    organization = context.organization(request, org)
    project = visible_project(request, organization, body.project)
    context.require(request, "job.schedule", project)
    choices = _job_choices(request, organization, project, body)
    schedule = schedule_create(
        project=project,
        actor=context.actor(request),
        name=body.name,
        cron=body.cron,
        timezone_name=body.timezone,
        entrypoint=body.entrypoint,
        env_vars=body.env_vars,
        pip=body.pip,
        max_retries=body.max_retries,
        timeout_seconds=body.timeout_seconds,
        priority=body.priority,
        **choices,
    )
    return Status(201, schedule_out(schedule, organization))


@router.get("/orgs/{org}/job-schedules/{id}", response=answers(ScheduleOut), tags=["schedules"])
def schedule_get(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    organization = context.organization(request, org)
    return schedule_out(_schedule(request, organization, id, "project.view"), organization)


@router.post(
    "/orgs/{org}/job-schedules/{id}/pause", response=answers(ScheduleOut), tags=["schedules"]
)
def schedule_pause_endpoint(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """No run until resumed; asking again changes nothing."""
    organization = context.organization(request, org)
    schedule = _schedule(request, organization, id, "job.schedule")
    schedule_pause(schedule=schedule, actor=context.actor(request))
    return schedule_out(_schedule(request, organization, id, "project.view"), organization)


@router.post(
    "/orgs/{org}/job-schedules/{id}/resume", response=answers(ScheduleOut), tags=["schedules"]
)
def schedule_resume_endpoint(request: HttpRequest, org: str, id: str) -> dict[str, Any]:
    """Run again from the next time the cron names (what was missed while paused does
    not run)."""
    organization = context.organization(request, org)
    schedule = _schedule(request, organization, id, "job.schedule")
    schedule_resume(schedule=schedule, actor=context.actor(request))
    return schedule_out(_schedule(request, organization, id, "project.view"), organization)


@router.delete("/orgs/{org}/job-schedules/{id}", response=answers({204: None}), tags=["schedules"])
def schedule_delete_endpoint(request: HttpRequest, org: str, id: str) -> Status:
    """The jobs it submitted stay."""
    organization = context.organization(request, org)
    schedule = _schedule(request, organization, id, "job.schedule")
    schedule_delete(schedule=schedule, actor=context.actor(request))
    return Status(204, None)
