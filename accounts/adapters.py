"""How allauth fits Raydeck: where sign-in lands, the sign-in audit trail, and password
sign-ins refused where SSO is required."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect


class AccountAdapter(DefaultAccountAdapter):
    def authentication_failed(self, request: HttpRequest, **credentials: Any) -> None:
        from .audit import audit, origin_of

        audit(
            actor=None,
            verb="user.login_failed",
            actor_email=str(credentials.get("email", ""))[:254].lower(),
            origin=origin_of(request),
        )

    def pre_login(self, request: HttpRequest, user: Any, **kwargs: Any) -> HttpResponse | None:
        """Password (and email-link) sign-ins of people whose every organization
        requires SSO are refused: see accounts.sso.enforcement."""
        response = super().pre_login(request, user, **kwargs)
        if response is not None:
            return response
        if "sociallogin" in (kwargs.get("signal_kwargs") or {}):
            return None  # an IdP sign-in: accounts.sso decides
        from allauth.account.internal.stagekit import clear_login

        from .audit import audit, origin_of
        from .sso.enforcement import password_sign_in_refusal

        refusal = password_sign_in_refusal(user)
        if refusal is None:
            return None
        clear_login(request)
        audit(
            actor=user,
            verb="user.password_login_refused",
            target=user,
            changes={"reason": [None, "sso_required"]},
            origin=origin_of(request),
        )
        messages.error(request, refusal)
        return redirect("account_login")
