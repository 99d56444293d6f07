"""Audit events for sign-in, sign-out and account security changes made through allauth."""

from __future__ import annotations

from typing import Any

from allauth.account.signals import email_confirmed, password_changed, password_reset
from allauth.mfa.signals import authenticator_added, authenticator_removed
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver

from kit.middleware import mark_session_authenticated

from .audit import audit, origin_of


@receiver(user_logged_in)
def on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is None:
        return
    mark_session_authenticated(request)
    audit(actor=user, verb="user.login", target=user, origin=origin_of(request))


@receiver(user_logged_out)
def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is not None and user is not None:
        audit(actor=user, verb="user.logout", target=user, origin=origin_of(request))


@receiver(password_changed)
@receiver(password_reset)
def on_password_change(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit(actor=user, verb="user.password_change", target=user, origin=origin_of(request))


@receiver(authenticator_added)
def on_mfa_added(sender: Any, request: Any, user: Any, authenticator: Any, **kwargs: Any) -> None:
    audit(
        actor=user,
        verb="user.mfa_add",
        target=user,
        changes={"authenticator": [None, authenticator.type]},
        origin=origin_of(request),
    )


@receiver(authenticator_removed)
def on_mfa_removed(sender: Any, request: Any, user: Any, authenticator: Any, **kwargs: Any) -> None:
    audit(
        actor=user,
        verb="user.mfa_remove",
        target=user,
        changes={"authenticator": [authenticator.type, None]},
        origin=origin_of(request),
    )


@receiver(password_reset)
def on_password_reset_release_sso(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    from .sso.services import sso_identities_release

    sso_identities_release(user=user, email=user.email)


@receiver(email_confirmed)
def on_email_confirmed(sender: Any, request: Any, email_address: Any, **kwargs: Any) -> None:
    from .sso.services import sso_identities_release

    sso_identities_release(user=email_address.user, email=email_address.email)
