"""Revoking what a person was issued for an organization (today: the short-lived tokens
of clusters' access gateways, clusters/access.py), in one place.

`access_revoke` is called by every service that takes a membership or a role away or
changes it (accounts/services/), inside that service's transaction. The revocations
of the last hour (no token lives longer) are read on the heartbeat path, so they are
cached; a revocation clears the cache when it commits.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from .models import AccessRevocation, Organization, User

# Longer than any token that a revocation must stop lives (clusters/access.py).
REVOCATION_WINDOW = timedelta(hours=1, minutes=5)
# The cache is written by revocations (`set`, once committed) and filled by readers only
# when empty (`add`), so a reader that read the database before a revocation committed
# cannot overwrite the newer list. The lifetime bounds any other surprise.
CACHE_SECONDS = 60


def _cache_key(organization_id: int) -> str:
    return f"raydeck:revoked:{organization_id}"


def _load(organization_id: int) -> dict[str, float]:
    rows = AccessRevocation.objects.filter(
        organization_id=organization_id,
        revoked_at__gte=timezone.now() - REVOCATION_WINDOW,
    ).values_list("user_id", "revoked_at")
    return {str(user_id): at.timestamp() for user_id, at in rows}


def access_revoke(*, user: User, organization: Organization) -> None:
    """From now on, nothing issued to `user` for `organization` before now counts.
    Call it inside the transaction of the change that takes access away."""
    AccessRevocation.objects.update_or_create(
        organization=organization, user=user, defaults={"revoked_at": timezone.now()}
    )
    org_id = organization.pk
    transaction.on_commit(lambda: cache.set(_cache_key(org_id), _load(org_id), CACHE_SECONDS))


def recent_revocations(organization_id: int) -> dict[str, float]:
    """{user id: epoch seconds} of the revocations that can still matter."""
    key = _cache_key(organization_id)
    revoked = cache.get(key)
    if revoked is None:
        revoked = _load(organization_id)
        cache.add(key, revoked, CACHE_SECONDS)
    return revoked
