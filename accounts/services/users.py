"""People: edit one's own profile; support deactivates or unlocks an account; the
operator makes a support staff account."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
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


@transaction.atomic(durable=True)
def staff_create(*, email: str, password: str, name: str = "") -> tuple[User, bool]:
    """A support staff account for /admin (staff, not superuser: the admin shows what
    support may see and act on, never customer secrets). An existing person becomes
    staff and keeps their password. Returns the user and whether it was created."""
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": "Enter a valid email address."}) from exc
    user = User.objects.filter(email=email).first()
    created = user is None
    if user is None:
        try:
            validate_password(password, User(email=email, name=name))
        except ValidationError as exc:
            raise ValidationError({"password": exc.messages}) from exc
        user = User.objects.create_user(email=email, password=password, name=name.strip())
    was_staff = user.is_staff
    if not was_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    if created or not was_staff:
        # The operator at the command line has no account: the event names none.
        audit(
            actor=None,
            verb="user.staff_grant",
            target=user,
            changes={"is_staff": [was_staff, True]},
        )
    return user, created
