"""allauth's social-account hooks. Raydeck does not use allauth's social sign-up or
account connecting: SSO logins finish in accounts.sso (identities keyed by connection
and subject), so everything allauth would do on its own is refused here."""

from __future__ import annotations

from typing import Any

from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.http import HttpRequest


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest, sociallogin: Any) -> bool:
        return False

    def is_auto_signup_allowed(self, request: HttpRequest, sociallogin: Any) -> bool:
        return False
