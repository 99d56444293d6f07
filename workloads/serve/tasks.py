"""Background work of Services: thin tasks, and the one function that asks for a pass of
the orchestrator (services/rollout.py). Tasks import their service inside their body,
so services may import enqueue_advance from here (as clusters/tasks.py does)."""

from __future__ import annotations

from django.db import transaction

from clouds.providers.base import TransientCloudError
from kit.tasks import shared_task

from . import live


def enqueue_advance(service_id: int, *, countdown: float = 0, on_commit: bool = False) -> None:
    """Ask for a pass over the service. A request's (on_commit) always goes, once its
    transaction commits; a follow-up goes only if none of the service waits already."""
    if on_commit:
        transaction.on_commit(lambda: advance_service.delay(service_id=service_id))
        return
    if live.claim_queued(service_id, countdown):
        advance_service.apply_async(kwargs={"service_id": service_id}, countdown=countdown)


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(TransientCloudError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def advance_service(self, *, service_id: int) -> None:  # type: ignore[no-untyped-def]
    from .services.rollout import service_advance

    live.release_queued(service_id)
    next_in = service_advance(service_id=service_id, holder=self.request.id)
    if next_in is not None:  # a poll, not a sleep: the worker is free in between
        enqueue_advance(service_id, countdown=next_in)


@shared_task(acks_late=True)
def sweep_services() -> int:
    """Every live service gets a pass, so work lost with a worker (kill -9) or a broker
    restart resumes from its rows."""
    from .services.rollout import services_needing_advance

    ids = services_needing_advance()
    for service_id in ids:
        enqueue_advance(service_id)
    return len(ids)
