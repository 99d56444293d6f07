"""Job schedules: a job definition submitted as a new job at each time a cron expression
names, in the schedule's time zone.

One beat task (`tasks.run_due_schedules`, every 15 s) submits the runs that are due.
Each schedule keeps `next_run_at`; a run submits one job and moves `next_run_at` to the
first time after *now*, never to the next missed one, so a control plane that was down
for several periods runs a schedule once when it comes back, not once per missed period.
The row is locked (skipping rows another worker holds) while it runs, so two beats or
two workers never submit the same run twice.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.models import Project, User
from accounts.permissions import require
from clouds.models import Cloud
from clusters.models import Cluster, ComputeConfigVersion, ContainerImage
from workloads.models import WorkingDir

from .models import JobSchedule
from .services import job_definition, job_submit

logger = logging.getLogger(__name__)


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone called `name`, or a field-named error."""
    name = (name or "").strip()
    if name not in available_timezones():
        raise ValidationError(
            {"timezone": f"“{name[:64]}” is not a time zone, such as UTC or Europe/Berlin."}
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError({"timezone": f"“{name}” is not a time zone."}) from exc


def next_run(cron: str, zone: str, after: datetime) -> datetime:
    """The first time strictly after `after` that `cron` names in `zone`."""
    try:
        runs = CronSim(cron.strip(), after.astimezone(zone_of(zone)))
        return next(runs).astimezone(ZoneInfo("UTC"))
    except (CronSimError, StopIteration) as exc:
        raise ValidationError(
            {"cron": f"“{cron[:120]}” is not a cron expression ({exc}), such as 0 3 * * *."}
        ) from exc


def _checked_timing(cron: str, zone: str) -> datetime:
    errors: dict[str, str] = {}
    cron = (cron or "").strip()
    try:
        zone_of(zone)
    except ValidationError as exc:
        errors |= {k: v[0] for k, v in exc.message_dict.items()}
    if not cron:
        errors["cron"] = "Give a cron expression, such as 0 3 * * * (every day at 03:00)."
    elif len(cron.split()) != 5:
        errors["cron"] = "Give five fields: minute hour day-of-month month day-of-week."
    if errors:
        raise ValidationError(errors)
    return next_run(cron, zone, timezone.now())


@transaction.atomic(durable=True)
def schedule_create(
    *,
    project: Project,
    actor: User,
    name: str,
    cron: str,
    timezone_name: str = "UTC",
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
) -> JobSchedule:
    """A schedule of `project` (active at once). The job it submits is checked now by
    the same rules as a submit; errors are on the fields named like the arguments."""
    require(actor, "job.schedule", project)
    require(actor, "job.submit", project)
    errors: dict[str, str] = {}
    next_at = None
    try:
        next_at = _checked_timing(cron, timezone_name)
    except ValidationError as exc:
        errors |= {k: v[0] for k, v in exc.message_dict.items()}
    try:
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
    except ValidationError as exc:
        errors |= {k: v[0] for k, v in exc.message_dict.items()}
    if errors:
        raise ValidationError(errors)
    schedule = JobSchedule(
        organization_id=project.organization_id,
        project=project,
        cron=cron.strip(),
        timezone=timezone_name.strip(),
        next_run_at=next_at,
        created_by=actor,
        **definition,
    )
    schedule.full_clean(
        exclude=["project", "cloud", "compute_config", "image", "working_dir", "target_cluster"]
    )
    schedule.save()
    audit(
        actor=actor,
        verb="job_schedule.create",
        target=schedule,
        changes={"cron": [None, schedule.cron], "timezone": [None, schedule.timezone]},
    )
    return schedule


@transaction.atomic(durable=True)
def schedule_pause(*, schedule: JobSchedule, actor: User) -> JobSchedule:
    """No run until resumed (idempotent)."""
    require(actor, "job.schedule", schedule.project)
    schedule = JobSchedule.objects.select_for_update().get(pk=schedule.pk)
    if schedule.paused:
        return schedule
    schedule.paused, schedule.next_run_at = True, None
    schedule.save(update_fields=["paused", "next_run_at", "updated_at"])
    audit(
        actor=actor, verb="job_schedule.pause", target=schedule, changes={"paused": [False, True]}
    )
    return schedule


@transaction.atomic(durable=True)
def schedule_resume(*, schedule: JobSchedule, actor: User) -> JobSchedule:
    """Run again from the next time the cron names; what was missed while paused does
    not run (idempotent)."""
    require(actor, "job.schedule", schedule.project)
    schedule = JobSchedule.objects.select_for_update().get(pk=schedule.pk)
    if not schedule.paused:
        return schedule
    schedule.paused = False
    schedule.next_run_at = next_run(schedule.cron, schedule.timezone, timezone.now())
    schedule.save(update_fields=["paused", "next_run_at", "updated_at"])
    audit(
        actor=actor, verb="job_schedule.resume", target=schedule, changes={"paused": [True, False]}
    )
    return schedule


@transaction.atomic(durable=True)
def schedule_delete(*, schedule: JobSchedule, actor: User) -> None:
    """Remove the schedule; the jobs it submitted stay (and say so no longer)."""
    require(actor, "job.schedule", schedule.project)
    schedule = JobSchedule.objects.select_for_update().get(pk=schedule.pk)
    audit(
        actor=actor,
        verb="job_schedule.delete",
        target=schedule,
        changes={"name": [schedule.name, None], "cron": [schedule.cron, None]},
    )
    schedule.delete()


# --- The beat's part --------------------------------------------------------------------


def run_due_schedules(now: datetime | None = None) -> int:
    """Submit one job for every schedule that is due; returns how many ran."""
    now = now or timezone.now()
    due = JobSchedule.objects.filter(paused=False, next_run_at__lte=now).values_list(
        "pk", flat=True
    )
    return sum(schedule_run_if_due(schedule_id=pk, now=now) for pk in list(due))


@transaction.atomic
def schedule_run_if_due(*, schedule_id: int, now: datetime) -> bool:
    """Run the schedule once if it is still due (another worker may have run it), then
    point it at the first time after now, so runs missed while nobody ran the beat
    collapse into this one. A job the schedule can no longer submit (its creator lost
    access, its cluster is gone) is recorded on the schedule, which stays active."""
    schedule = (
        JobSchedule.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("project", "created_by", "cloud")
        .filter(pk=schedule_id, paused=False, next_run_at__lte=now)
        .first()
    )
    if schedule is None:
        return False
    due_at = schedule.next_run_at
    schedule.last_run_at = now
    schedule.next_run_at = next_run(schedule.cron, schedule.timezone, now)
    schedule.last_error = ""
    try:
        if schedule.created_by is None:
            raise PermissionDenied("The person who created the schedule is no longer here.")
        with transaction.atomic():
            schedule.last_job = job_submit(**_run_arguments(schedule))
    except (ValidationError, PermissionDenied) as exc:
        messages = getattr(exc, "messages", None) or [str(exc)]
        due = f"{due_at:%Y-%m-%d %H:%M} UTC" if due_at else "now"
        schedule.last_error = f"Could not submit the run due {due}: {' '.join(messages)}"[:1000]
        audit(
            actor=None,
            verb="job_schedule.run_failed",
            target=schedule,
            changes={"error": [None, schedule.last_error]},
        )
        logger.info("schedule %s: %s", schedule.pk, schedule.last_error)
    schedule.save(
        update_fields=["last_run_at", "next_run_at", "last_error", "last_job", "updated_at"]
    )
    return True


def _run_arguments(schedule: JobSchedule) -> dict[str, Any]:
    return {
        "project": schedule.project,
        "actor": schedule.created_by,
        "name": schedule.name,
        "entrypoint": schedule.entrypoint,
        "cloud": schedule.cloud,
        "compute_config": schedule.compute_config,
        "image": schedule.image,
        "working_dir": schedule.working_dir,
        "env_vars": schedule.runtime_env.get("env_vars"),
        "pip": schedule.runtime_env.get("pip"),
        "max_retries": schedule.max_retries,
        "timeout_seconds": schedule.timeout_seconds,
        "target_cluster": schedule.target_cluster,
        "priority": schedule.priority,
        "schedule": schedule,
    }
