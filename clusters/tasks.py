"""Background work of the clusters app: thin tasks, ids in, a service out, and the one
function that enqueues a reconcile.

Each task imports its service inside its body, so that services may import
enqueue_reconcile from here: the task boundary is the one place where the clusters
app's imports point back up (STYLE §7)."""

import uuid
from functools import partial

from django.conf import settings
from django.db import transaction

from clouds.providers.base import TransientCloudError
from kit.tasks import shared_task

from . import live


def enqueue_reconcile(
    cluster_id: int, *, follow_up: bool = False, countdown: int = 0, sooner_wins: bool = False
) -> bool:
    """Ask for a reconcile of the cluster: every caller goes through here. True when a
    task was sent.

    By default (a user's request, an agent's report, the idle check) it is sent once the
    current transaction commits, always, and runs at once. A `follow_up` (the reconciler
    polling in `countdown` seconds, the beat sweep, pending demand) is sent now, and only
    if no other follow-up of the cluster waits in the queue (live.claim_follow_up): with
    `sooner_wins`, one waiting to run more than a second later is taken over.
    """
    if not follow_up:
        # Robust: a broker that is down when the request's write commits is logged, not
        # a failed request (the write stands); the beat sweep enqueues the cluster then.
        # On the changes queue, ahead of the standing backlog of follow-ups.
        send = partial(
            reconcile_cluster.apply_async,
            kwargs={"cluster_id": cluster_id},
            queue=settings.CHANGES_QUEUE,
        )
        transaction.on_commit(send, robust=True)
        return True
    task_id = str(uuid.uuid4())  # Celery's own form of a task id
    if not live.claim_follow_up(cluster_id, task_id, countdown, sooner_wins=sooner_wins):
        return False
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

    live.release_follow_up(cluster_id, self.request.id)
    outcome = cluster_reconcile(cluster_id=cluster_id, holder=self.request.id)
    if outcome.requeue_in is not None:
        # A poll, not a sleep: the worker is free in between.
        enqueue_reconcile(
            cluster_id, follow_up=True, countdown=outcome.requeue_in, sooner_wins=True
        )
    return outcome.summary


@shared_task(acks_late=True)
def sweep_clusters() -> int:
    """Re-enqueue every cluster that is not final, so work lost with a worker or a
    broker restart is picked up again (a cluster with a reconcile already waiting is
    skipped; the lease prevents two running at once)."""
    from .services.reconcile import clusters_needing_reconcile

    return sum(
        enqueue_reconcile(cluster_id, follow_up=True) for cluster_id in clusters_needing_reconcile()
    )


@shared_task(acks_late=True)
def sweep_orphans() -> int:
    from .services.reconcile import orphans_sweep

    return orphans_sweep()


@shared_task(acks_late=True)
def sweep_idle_clusters() -> int:
    """Warn about, and terminate, clusters idle past their timeout or maximum uptime."""
    from .services.idle import idle_sweep

    return idle_sweep()


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(TransientCloudError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=8,
)
def advance_image_build(self, *, build_id: int) -> str:  # type: ignore[no-untyped-def]
    """Start or poll one image build; sent again while it runs (a poll, not a sleep)."""
    from .services.builds import image_build_advance

    outcome = image_build_advance(build_id=build_id)
    if outcome.requeue_in is not None:
        advance_image_build.apply_async(kwargs={"build_id": build_id}, countdown=outcome.requeue_in)
    return outcome.summary


@shared_task(acks_late=True, autoretry_for=(TransientCloudError,), retry_backoff=True)
def stop_image_build(*, build_id: int) -> None:
    from .services.builds import image_build_stop

    image_build_stop(build_id=build_id)


@shared_task(acks_late=True)
def sweep_image_builds() -> int:
    """Send again every build nobody polled lately (its task died with a worker), so no
    build stays queued or building."""
    from .services.builds import builds_needing_advance

    stale = builds_needing_advance()
    for build_id in stale:
        advance_image_build.delay(build_id=build_id)
    return len(stale)
