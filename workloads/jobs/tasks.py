"""Background work of the jobs app: thin tasks, ids in, a service out."""

from __future__ import annotations

from clouds.providers.base import TransientCloudError
from kit.tasks import shared_task

from . import live

FOLLOW_UP_SECONDS = 3


def enqueue_job_reconcile(job_id: int, *, follow_up: bool = False, countdown: int = 0) -> None:
    """Ask for a reconcile of the job: at once after the current transaction commits, or
    (a `follow_up`: polling, the sweep) in `countdown` seconds unless one already waits."""
    if not follow_up:
        reconcile_job.delay_on_commit(job_id=job_id)
    elif live.claim_follow_up(job_id, countdown):
        reconcile_job.apply_async(kwargs={"job_id": job_id}, countdown=countdown)


def reconcile_job_now(job_id: int) -> None:
    """Ask for a reconcile of the job at once (outside any transaction's commit)."""
    reconcile_job.delay(job_id=job_id)


@shared_task(
    acks_late=True,
    autoretry_for=(TransientCloudError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=8,
)
def reconcile_job(*, job_id: int) -> str:
    from .services import job_reconcile

    requeue_in = job_reconcile(job_id=job_id)
    if requeue_in is not None:
        enqueue_job_reconcile(job_id, follow_up=True, countdown=requeue_in)
    return f"job {job_id}: requeue in {requeue_in}"


@shared_task(acks_late=True)
def sweep_jobs() -> int:
    """Re-enqueue every job not done with (selectors.jobs_to_sweep), so work lost with a
    worker (kill -9) or a broker restart is picked up again."""
    from .selectors import jobs_to_sweep

    ids = jobs_to_sweep()
    for job_id in ids:
        enqueue_job_reconcile(job_id, follow_up=True, countdown=FOLLOW_UP_SECONDS)
    return len(ids)


@shared_task(acks_late=True)
def run_due_schedules() -> int:
    """Submit a job for each schedule that is due (beat, every 15 s)."""
    from .schedules import run_due_schedules as run

    return run()
