"""Service accounts: an organization's non-human members, created and disabled by admins."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ..audit import audit
from ..models import (
    SERVICE_ACCOUNT_ROLES,
    Organization,
    ServiceAccount,
    User,
)
from ..permissions import require


@transaction.atomic(durable=True)
def service_account_create(
    *, organization: Organization, name: str, role: str, actor: User
) -> ServiceAccount:
    require(actor, "service_account.manage", organization)
    if role not in dict(SERVICE_ACCOUNT_ROLES):
        raise ValidationError({"role": "A service account can be an admin, a member or a viewer."})
    account = ServiceAccount(
        organization=organization, name=name.strip(), role=role, created_by=actor
    )
    account.full_clean()
    account.save()
    audit(
        actor=actor,
        verb="service_account.create",
        target=account,
        changes={"name": [None, account.name], "role": [None, role]},
    )
    return account


@transaction.atomic(durable=True)
def service_account_disable(*, service_account: ServiceAccount, actor: User) -> ServiceAccount:
    """Disable for good: its tokens are revoked, and it can no longer get new ones."""
    require(actor, "service_account.manage", service_account.organization)
    account = ServiceAccount.objects.select_for_update().get(pk=service_account.pk)
    if account.disabled_at is not None:
        raise ValidationError("This service account is already disabled.")
    now = timezone.now()
    account.disabled_at = now
    account.save(update_fields=["disabled_at"])
    revoked = account.tokens.filter(revoked_at=None).update(revoked_at=now)
    changes: dict[str, list] = {"disabled": [False, True]}
    if revoked:
        changes["unrevoked_api_tokens"] = [revoked, 0]
    audit(actor=actor, verb="service_account.disable", target=account, changes=changes)
    return account
