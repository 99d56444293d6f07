"""Emails the accounts app sends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

if TYPE_CHECKING:
    from .models import Invitation, Organization, User


def absolute_url(path: str) -> str:
    return settings.RAYDECK_BASE_URL.rstrip("/") + path


def send_invitation_email(invitation: Invitation, token: str) -> None:
    context = {
        "invitation": invitation,
        "url": absolute_url(reverse("invitation_accept", kwargs={"token": token})),
    }
    send_mail(
        subject=f"[Raydeck] You are invited to {invitation.organization.name}",
        message=render_to_string("accounts/email/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )


def send_sso_removed_email(*, user: User, organization: Organization) -> None:
    """To a member without a password, once their organization removed single sign-on:
    how to set one (the password reset by email)."""
    context = {
        "user": user,
        "organization": organization,
        "reset_url": absolute_url(reverse("account_reset_password")),
    }
    send_mail(
        subject=f"[Raydeck] Set a password to keep signing in to {organization.name}",
        message=render_to_string("accounts/email/sso_removed.txt", context),
        from_email=None,
        recipient_list=[user.email],
    )
