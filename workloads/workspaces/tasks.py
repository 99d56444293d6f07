"""Background work of workspaces: thin tasks, ids in, a service out."""

from kit.sweeps import each
from kit.tasks import shared_task


def enqueue_sync(workspace_id: int) -> None:
    sync_workspace.delay(workspace_id=workspace_id)


@shared_task(acks_late=True)
def sync_workspace(*, workspace_id: int) -> str:
    from .services import workspace_sync

    return workspace_sync(workspace_id=workspace_id)


@shared_task(acks_late=True)
def sweep_workspaces() -> int:
    """Follow every active workspace, so work lost with a worker is picked up again, and
    start those started while their image built, now that it has."""
    from .services import (
        workspace_start_when_built,
        workspace_sync,
        workspaces_to_sync,
        workspaces_waiting_for_image,
    )

    each(
        workspaces_waiting_for_image(),
        lambda pk: workspace_start_when_built(workspace_id=pk),
        what="The start waiting for the image of workspace",
    )
    ids = workspaces_to_sync()
    each(ids, lambda pk: workspace_sync(workspace_id=pk), what="Following workspace")
    return len(ids)
