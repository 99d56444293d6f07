"""Signing in through OIDC: allauth's provider and adapter, hardened (PKCE, nonce, checked
discovery), and the callback that verifies the IdP's answer and hands the person to
accounts.sso.flow."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import requests
from allauth.socialaccount.internal import statekit
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from allauth.socialaccount.providers.oauth2.utils import generate_code_challenge
from allauth.socialaccount.providers.openid_connect.provider import OpenIDConnectProvider
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from kit.crypto import InvalidToken, decrypt

from ..models import SsoConnection
from .flow import finish_sso_sign_in, sso_error
from .idp_redirects import leave_for_idp
from .oidc.client import (
    IdpKeys,
    OidcError,
    OidcUnavailable,
    cached_discovery,
    fetch_userinfo,
    verify_id_token,
)
from .oidc.provider import OIDC_PROVIDER, LazyOidcProvider
from .services import IdpClaims, SsoRefused, connection_for_app

logger = logging.getLogger(__name__)

NONCE_STATE_KEY = "raydeck_oidc_nonce"


class RaydeckOidcAdapter(OpenIDConnectOAuth2Adapter):
    """allauth's adapter bound to one provider instance: its discovery document (checked
    once per request) and its decrypted client secret."""

    def __init__(self, request: HttpRequest, provider: RaydeckOidcProvider) -> None:
        super().__init__(request, provider.app.provider_id)
        self._raydeck_provider = provider

    def get_provider(self) -> RaydeckOidcProvider:
        return self._raydeck_provider

    @property
    def openid_config(self) -> dict[str, Any]:
        return self._raydeck_provider.openid_config()

    def get_client(self, request: HttpRequest, app: SocialApp) -> Any:
        client = super().get_client(request, app)
        client.consumer_secret = self._raydeck_provider.client_secret()
        return client


class RaydeckOidcProvider(OpenIDConnectProvider):
    # allauth registers (and takes the URLs' package from) the stand-in that makes this.
    package = LazyOidcProvider.package
    supports_token_authentication = False  # ID tokens arrive only through `callback`

    def openid_config(self) -> dict[str, Any]:
        if not hasattr(self, "_raydeck_config"):
            self._raydeck_config = cached_discovery(
                app_id=self.app.pk, issuer=self.app.settings.get("server_url", "")
            )
        return self._raydeck_config

    def client_secret(self) -> str:
        try:
            return decrypt(self.app.secret)
        except (InvalidToken, TypeError, ValueError):
            raise OidcUnavailable(
                "Raydeck can no longer read this organization's client secret: an owner "
                "must enter it again on the SSO settings page."
            ) from None

    def get_oauth2_adapter(self, request: HttpRequest) -> RaydeckOidcAdapter:
        return RaydeckOidcAdapter(request, self)

    def get_pkce_params(self) -> dict:
        return generate_code_challenge()  # S256, whatever the app's settings say

    def redirect(
        self,
        request: HttpRequest,
        process: Any,
        next_url: str | None = None,
        data: Any = None,
        **kwargs: Any,
    ) -> HttpResponse:
        try:
            connection_for_app(self.app)
            self.openid_config()
            self.client_secret()
        except SsoRefused as exc:
            return sso_error(request, str(exc), 403)
        except OidcError as exc:
            return sso_error(request, str(exc), exc.status)
        nonce = secrets.token_urlsafe(32)
        auth_params = dict(kwargs.pop("auth_params", None) or self.get_auth_params())
        auth_params["nonce"] = nonce
        kwargs[NONCE_STATE_KEY] = nonce
        response = super().redirect(
            request, process, next_url, data, auth_params=auth_params, **kwargs
        )
        return leave_for_idp(request, response)


def _claims_from(
    connection: SsoConnection, provider: RaydeckOidcProvider, token: dict, nonce: str
) -> IdpClaims:
    config = provider.openid_config()
    claims = verify_id_token(
        token.get("id_token"),
        config=config,
        client_id=provider.app.client_id,
        nonce=nonce,
        keys=IdpKeys(app_id=provider.app.pk, jwks_uri=config.get("jwks_uri")),
    )
    groups_claim = connection.groups_attribute or "groups"
    missing = "email" not in claims or groups_claim not in claims
    if missing and config.get("userinfo_endpoint") and isinstance(token.get("access_token"), str):
        userinfo = fetch_userinfo(config["userinfo_endpoint"], token["access_token"])
        if userinfo.get("sub") != claims["sub"]:
            raise OidcError("The identity provider's user info is about someone else.")
        claims = {**userinfo, **claims}
    return IdpClaims.clean(
        subject=claims.get("sub"),
        email=claims.get("email"),
        name=claims.get("name", ""),
        groups=claims.get(groups_claim, ()),
    )


@login_not_required
@never_cache
@require_GET
def callback(request: HttpRequest, provider_id: str) -> HttpResponse:
    """Where the IdP sends the browser back (allauth's openid_connect_callback path)."""
    app = SocialApp.objects.filter(provider=OIDC_PROVIDER, provider_id=provider_id).first()
    if app is None:
        return sso_error(request, "Single sign-on is not set up for this organization.", 404)
    try:
        connection = connection_for_app(app)
    except SsoRefused as exc:
        return sso_error(request, str(exc), 403)
    provider = app.get_provider(request)
    state_id = request.GET.get("state", "")
    state = (
        statekit.unstash_state(request, provider_id=provider.sub_id, state_id=state_id)
        if state_id
        else None
    )
    if state is None or not state.get(NONCE_STATE_KEY):
        return sso_error(
            request,
            "This sign-in was not started in this browser, or took too long. Sign in again.",
            400,
        )
    if "error" in request.GET or not request.GET.get("code"):
        error = request.GET.get("error", "no code")[:100]
        return sso_error(
            request, "The identity provider did not sign you in.", 400, detail=f"error: {error}"
        )
    try:
        client = provider.get_oauth2_adapter(request).get_client(request, app)
        token = client.get_access_token(
            request.GET["code"], pkce_code_verifier=state.get("pkce_code_verifier")
        )
        claims = _claims_from(connection, provider, token, state[NONCE_STATE_KEY])
    except OidcError as exc:
        logger.warning("OIDC sign-in through %s refused: %s", provider_id, exc)
        return sso_error(request, str(exc), exc.status)
    except requests.RequestException as exc:
        logger.warning("OIDC token endpoint of %s unreachable: %r", provider_id, exc)
        return sso_error(
            request,
            "Raydeck could not reach the identity provider's token endpoint. Try again later.",
            OidcUnavailable.status,
        )
    except OAuth2Error as exc:
        # allauth's message may quote the IdP's answer: log it, show none of it.
        logger.warning("OIDC token request through %s failed: %r", provider_id, exc)
        return sso_error(
            request, "The identity provider did not accept the sign-in code. Sign in again.", 400
        )
    except SsoRefused as exc:
        return sso_error(request, str(exc), 403)
    return finish_sso_sign_in(request, connection=connection, claims=claims, state=state)
