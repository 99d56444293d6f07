"""Background work of the accounts app: thin tasks, ids in, a service out."""

from importlib import import_module

from django.conf import settings

from kit.tasks import shared_task


@shared_task(acks_late=True)
def clear_expired_sessions() -> None:
    """Delete sessions past their expiry, so the session table does not grow forever."""
    engine = import_module(settings.SESSION_ENGINE)
    engine.SessionStore.clear_expired()


@shared_task(acks_late=True)
def send_sso_removed_emails(*, organization_id: int, user_ids: list[int]) -> None:
    from .sso.services import sso_removal_notify

    sso_removal_notify(organization_id=organization_id, user_ids=user_ids)
