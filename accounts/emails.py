"""Emails the accounts app sends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

if TYPE_CHECKING:
    from .models import Invitation


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
