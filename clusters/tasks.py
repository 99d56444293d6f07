"""Background work of the clusters app: thin tasks, ids in, a service out."""

from celery import shared_task

from clouds.providers.base import TransientCloudError


@shared_task(
    acks_late=True,
    autoretry_for=(TransientCloudError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=8,
)
def reconcile_cluster(*, cluster_id: int) -> str:
    from .services.reconcile import cluster_reconcile

    outcome = cluster_reconcile(cluster_id=cluster_id)
    if outcome.requeue_in is not None:
        # A poll, not a sleep: the worker is free in between.
        reconcile_cluster.apply_async(kwargs={"cluster_id": cluster_id},
                                      countdown=outcome.requeue_in)  # fmt: skip
    return outcome.summary


@shared_task(acks_late=True)
def sweep_clusters() -> int:
    """Re-enqueue every cluster that is not final (work lost with a worker or a broker
    restart is picked up again; the reconcile lease prevents doubles)."""
    from .services.reconcile import clusters_needing_reconcile

    ids = clusters_needing_reconcile()
    for cluster_id in ids:
        reconcile_cluster.delay(cluster_id=cluster_id)
    return len(ids)


@shared_task(acks_late=True)
def sweep_orphans() -> int:
    from .services.reconcile import orphans_sweep

    return orphans_sweep()
