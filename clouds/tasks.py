"""Background work of the clouds app: thin tasks, ids in, a service out."""

from typing import Any

from kit.tasks import shared_task

from .providers.base import TransientCloudError


# Cloud errors become failed checks the user can read (and re-run), so no retry here.
@shared_task(acks_late=True)
def verify_cloud(*, verification_id: int) -> None:
    from .services import cloud_verify_run

    cloud_verify_run(verification_id=verification_id)


@shared_task(acks_late=True)
def reverify_clouds() -> None:
    from .services import clouds_reverify_all, verifications_expire_stuck

    verifications_expire_stuck()
    clouds_reverify_all()


@shared_task(
    acks_late=True, autoretry_for=(TransientCloudError,), retry_backoff=True, max_retries=10
)
def remove_cloud_firewall(*, driver: dict[str, Any]) -> None:
    from .services import cloud_firewall_remove

    cloud_firewall_remove(driver=driver)
