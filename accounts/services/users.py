"""People: edit one's own profile; support deactivates or unlocks an account."""

from __future__ import annotations

from django.db import transaction

from ..audit import audit, changes_between, snapshot
from ..models import User
from ..revocations import access_revoke


@transaction.atomic(durable=True)
def user_update_profile(*, user: User, name: str) -> User:
    before = snapshot(user, ["name"])
    user.name = name.strip()
    user.full_clean(exclude=["password"])
    user.save(update_fields=["name"])
    changes = changes_between(before, snapshot(user, ["name"]))
    if changes:
        audit(actor=user, verb="user.update", target=user, changes=changes)
    return user


@transaction.atomic(durable=True)
def user_deactivate(*, user: User, actor: User) -> User:
    """Support action: the user can no longer sign in, and their sessions end at their
    next request (Django drops the session of an inactive user)."""
    if not user.is_active:
        return user
    user.is_active = False
    user.save(update_fields=["is_active"])
    for membership in user.memberships.select_related("organization"):
        access_revoke(user=user, organization=membership.organization)
    audit(actor=actor, verb="user.deactivate", target=user, changes={"is_active": [True, False]})
    return user


@transaction.atomic(durable=True)
def user_unlock(*, user: User, actor: User, request) -> None:  # type: ignore[no-untyped-def]
    """Support action: clear the failed-sign-in rate limit of this account."""
    from allauth.account.adapter import get_adapter

    # allauth keeps its per-account counter under a key of its own making; this is
    # the call it uses itself after a successful password reset.
    get_adapter()._delete_login_attempts_cached_email(request, email=user.email)
    audit(actor=actor, verb="user.unlock", target=user)
