"""Background work of the clusters app: thin tasks, ids in, a service out."""

import time

from celery import shared_task
from celery.utils import uuid
from django.core.cache import cache

from clouds.providers.base import TransientCloudError

# At most one follow-up reconcile waits in the queue per cluster: the self-requeues
# and the periodic sweep go through schedule_reconcile(), which skips a second one.
# The key holds the waiting task's id and only that task clears it, so a reconcile
# enqueued directly (a user's request, an agent's report) runs at once without
# starting a second chain of follow-ups.
QUEUED_KEY = "raydeck:reconcile-queued:{}"
QUEUED_SLACK_SECONDS = 30


def _waiting(key: str) -> tuple[str, float] | None:
    """(task id, when due) of the follow-up waiting, if any."""
    value = cache.get(key)
    return value if isinstance(value, tuple) and len(value) == 2 else None


def schedule_reconcile(cluster_id: int, countdown: int = 0, *, sooner_wins: bool = False) -> bool:
    """Enqueue a reconcile unless one is already waiting; True when enqueued.

    With `sooner_wins`, one waiting to run more than a second later than `countdown`
    is taken over: it still runs (once) when due, but no longer continues the chain.
    """
    key = QUEUED_KEY.format(cluster_id)
    task_id, due = uuid(), time.time() + countdown
    timeout = countdown + QUEUED_SLACK_SECONDS
    if not cache.add(key, (task_id, due), timeout):
        waiting = _waiting(key)
        if not sooner_wins or (waiting is not None and waiting[1] <= due + 1):
            return False
        cache.set(key, (task_id, due), timeout)
    reconcile_cluster.apply_async(
        kwargs={"cluster_id": cluster_id}, countdown=countdown, task_id=task_id
    )
    return True


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(TransientCloudError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=8,
)
def reconcile_cluster(self, *, cluster_id: int) -> str:  # type: ignore[no-untyped-def]
    from .services.reconcile import cluster_reconcile

    queued_key = QUEUED_KEY.format(cluster_id)
    waiting = _waiting(queued_key)
    if waiting is not None and waiting[0] == self.request.id:
        cache.delete(queued_key)  # the waiting follow-up was this one: a new one may queue
    outcome = cluster_reconcile(cluster_id=cluster_id, holder=self.request.id)
    if outcome.requeue_in is not None:
        # A poll, not a sleep: the worker is free in between.
        schedule_reconcile(cluster_id, countdown=outcome.requeue_in, sooner_wins=True)
    return outcome.summary


@shared_task(acks_late=True)
def sweep_clusters() -> int:
    """Re-enqueue every cluster that is not final, so work lost with a worker or a
    broker restart is picked up again (a cluster with a reconcile already waiting is
    skipped; the lease prevents two running at once)."""
    from .services.reconcile import clusters_needing_reconcile

    return sum(schedule_reconcile(cluster_id) for cluster_id in clusters_needing_reconcile())


@shared_task(acks_late=True)
def sweep_orphans() -> int:
    from .services.reconcile import orphans_sweep

    return orphans_sweep()


@shared_task(acks_late=True)
def sweep_idle_clusters() -> int:
    """Warn about, and terminate, clusters idle past their timeout or maximum uptime."""
    from .services.idle import idle_sweep

    return idle_sweep()
