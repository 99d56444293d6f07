"""How allauth fits Raydeck: where sign-in lands, and the sign-in audit trail."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest


class AccountAdapter(DefaultAccountAdapter):
    def authentication_failed(self, request: HttpRequest, **credentials: Any) -> None:
        from .audit import audit, origin_of

        audit(
            actor=None,
            verb="user.login_failed",
            actor_email=str(credentials.get("email", ""))[:254].lower(),
            origin=origin_of(request),
        )
