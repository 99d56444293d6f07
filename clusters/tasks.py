"""Background work of the clusters app: thin tasks, ids in, a service out."""

from celery import shared_task
from django.core.cache import cache

from clouds.providers.base import TransientCloudError

# At most one follow-up reconcile waits in the queue per cluster: the self-requeues
# and the periodic sweep go through schedule_reconcile(), which skips a second one.
QUEUED_KEY = "raydeck:reconcile-queued:{}"
QUEUED_SLACK_SECONDS = 30


def schedule_reconcile(cluster_id: int, countdown: int = 0) -> bool:
    """Enqueue a reconcile unless one is already waiting; True when enqueued."""
    if not cache.add(QUEUED_KEY.format(cluster_id), 1, countdown + QUEUED_SLACK_SECONDS):
        return False
    reconcile_cluster.apply_async(kwargs={"cluster_id": cluster_id}, countdown=countdown)
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

    cache.delete(QUEUED_KEY.format(cluster_id))  # from now on, a new follow-up may queue
    outcome = cluster_reconcile(cluster_id=cluster_id, holder=self.request.id)
    if outcome.requeue_in is not None:
        # A poll, not a sleep: the worker is free in between.
        schedule_reconcile(cluster_id, countdown=outcome.requeue_in)
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
