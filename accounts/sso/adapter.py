"""allauth's social-account hooks. Raydeck does not use allauth's social sign-up,
account linking or connecting: SSO sign-ins finish in accounts.sso.flow (identities
keyed by connection and subject), so everything allauth would do on its own is refused
here, failing closed.

SAML never reaches these hooks (accounts.sso.saml finishes the ACS itself). A protocol
that completes through allauth's `complete_social_login` (the OIDC callback) must, in
`pre_social_login`, find the connection with
`accounts.sso.services.connection_for_app(sociallogin.provider.app)`, build
`IdpClaims` from what the provider verified, and raise
`ImmediateHttpResponse(finish_sso_sign_in(request, connection=..., claims=...,
state=sociallogin.state))`; until it does, the default below refuses.
"""

from __future__ import annotations

from typing import Any

from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.http import HttpRequest


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest, sociallogin: Any) -> bool:
        return False

    def is_auto_signup_allowed(self, request: HttpRequest, sociallogin: Any) -> bool:
        return False

    def pre_social_login(self, request: HttpRequest, sociallogin: Any) -> None:
        from .flow import sso_error

        raise ImmediateHttpResponse(
            sso_error(request, "Single sign-on is not set up for this organization.", 403)
        )
