"""OpenID Connect sign-in through allauth's OpenID Connect provider, hardened.

One allauth SocialApp per organization (provider "openid_connect", provider_id
"oidc-<slug>"): `settings["server_url"]` is the issuer, `client_id` the IdP's client id
and `secret` the client secret encrypted with console.crypto (never shown again).

allauth alone would: send PKCE only when configured, send and check no nonce, skip the
ID token's signature in the code flow (it came over TLS), answer a token without `kid`
with a KeyError (a 500) and a JWKS endpoint that fails with an exception it does not
catch. So:

- `RaydeckOidcProvider` (allauth's `provider_class` setting) always adds PKCE S256 and
  a fresh nonce (kept in allauth's per-browser state) to the authorization request, and
  reads the IdP's discovery document through `discover`, which requires the exact
  issuer the owner configured (mix-up defence) and https endpoints.
- `callback` (mounted at allauth's callback path) pops the state, redeems the code
  with the PKCE verifier, and verifies the ID token itself (`verify_id_token`):
  signature by a key from the IdP's JWKS chosen by `kid`, an asymmetric algorithm the
  IdP advertises (never `none` or HMAC), issuer, audience (and `azp`), expiry, nonce.
  Every failure is an error page (`OidcError`), never a 500, and signs nobody in.
- The discovery document (checked) and the JWKS are kept in the shared cache
  (`cached_discovery`, `IdpKeys`): an hour and ten minutes. A token whose `kid` the
  cached JWKS lacks fetches the JWKS once more (the IdP may have rotated its keys), at
  most once per sign-in and once a minute per connection, so made-up kids cannot turn
  Raydeck into a flood at the IdP.
- The person is identified by (connection, `sub`) and handed to accounts.sso.flow,
  exactly like SAML: the email links to an existing account only on a verified domain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from allauth.socialaccount.adapter import get_adapter
from allauth.socialaccount.internal import statekit
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from allauth.socialaccount.providers.oauth2.utils import generate_code_challenge
from allauth.socialaccount.providers.openid_connect.provider import OpenIDConnectProvider
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.sites.models import Site
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from console.crypto import InvalidToken, decrypt, encrypt

from ..audit import audit
from ..choices import SsoProtocol
from ..models import Organization, SsoConnection, User
from ..permissions import require
from .flow import finish_sso_sign_in, sso_error
from .idp_redirects import leave_for_idp
from .outbound import public_host
from .services import IdpClaims, SsoRefused, connection_for_app

logger = logging.getLogger(__name__)

OIDC_PROVIDER = "openid_connect"
NONCE_STATE_KEY = "raydeck_oidc_nonce"
# Discovery documents, JWKS and token answers are small; refuse anything far larger.
MAX_IDP_DOCUMENT_BYTES = 512 * 1024
# Clock drift allowed on exp/iat/nbf.
LEEWAY_SECONDS = 60
# Signature algorithms an ID token may use: asymmetric only, so neither `none` nor an
# HMAC keyed with a public key (algorithm confusion) can pass.
ACCEPTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")
# How long the shared cache keeps an IdP's discovery document and its JWKS.
DISCOVERY_CACHE_SECONDS = 60 * 60
JWKS_CACHE_SECONDS = 10 * 60
# A kid the cached JWKS lacks fetches it again at most this often per connection.
JWKS_REFETCH_INTERVAL_SECONDS = 60


class OidcError(OAuth2Error):
    """The sign-in cannot go on; the message is shown as is (it names no secret)."""

    status = 400


class OidcUnavailable(OidcError):
    """The IdP (discovery, keys, token endpoint) did not answer usefully."""

    status = 502


# --- Talking to the IdP ----------------------------------------------------------------


def check_endpoint_url(url: Any, what: str) -> str:
    """`url` if Raydeck may call it: https on a public address (an owner must not make
    Raydeck read its own network), or http/https on loopback when the installation
    allows it (a local IdP in development and tests)."""
    if not isinstance(url, str) or not url:
        raise OidcUnavailable(f"The identity provider gave no {what}.")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if settings.RAYDECK_SSO_ALLOW_HTTP_LOOPBACK and parts.scheme in ("http", "https"):
        try:
            if ip_address("127.0.0.1" if host == "localhost" else host).is_loopback:
                return url
        except ValueError:
            pass
    if parts.scheme != "https" or not host:
        raise OidcUnavailable(f"The identity provider's {what} must be an https:// address.")
    if not public_host(host):
        raise OidcUnavailable(
            f"The identity provider's {what} is not at a public internet address."
        )
    return url


def _get_json(url: Any, what: str) -> dict[str, Any]:
    url = check_endpoint_url(url, what)
    try:
        with (
            get_adapter().get_requests_session() as session,
            session.get(
                url, allow_redirects=False, stream=True, headers={"Accept": "application/json"}
            ) as response,
        ):
            body = response.raw.read(MAX_IDP_DOCUMENT_BYTES + 1, decode_content=True)
            status = response.status_code
    except requests.RequestException as exc:
        logger.warning("OIDC %s at %s unreachable: %r", what, url, exc)
        raise OidcUnavailable(f"Raydeck could not reach the identity provider's {what}.") from exc
    if status != 200:
        raise OidcUnavailable(f"The identity provider's {what} answered with HTTP {status}.")
    if len(body) > MAX_IDP_DOCUMENT_BYTES:
        raise OidcUnavailable(f"The identity provider's {what} is too large.")
    try:
        data = json.loads(body)
    except ValueError:
        raise OidcUnavailable(f"The identity provider's {what} is not JSON.") from None
    if not isinstance(data, dict):
        raise OidcUnavailable(f"The identity provider's {what} is not a JSON object.")
    return data


def discover(issuer: str) -> dict[str, Any]:
    """The IdP's discovery document, checked: it names exactly `issuer` (so one IdP's
    answers cannot pass for another's), has the endpoints a code flow needs at https
    addresses, and supports PKCE S256 when it lists PKCE methods at all."""
    check_endpoint_url(issuer, "issuer")
    config = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery")
    if config.get("issuer") != issuer:
        raise OidcUnavailable(
            f"The identity provider says its issuer is {str(config.get('issuer'))[:200]!r}, "
            f"not {issuer!r}."
        )
    for key in REQUIRED_ENDPOINTS:
        check_endpoint_url(config.get(key), key.replace("_", " "))
    if config.get("userinfo_endpoint"):
        check_endpoint_url(config["userinfo_endpoint"], "userinfo endpoint")
    methods = config.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise OidcUnavailable("The identity provider does not support PKCE with S256.")
    return config


def _cache_key(kind: str, app_id: int, url: str) -> str:
    """Per allauth app (one organization's connection) and per URL, so a changed
    issuer or jwks_uri never finds the old IdP's documents."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    return f"raydeck:oidc:{kind}:{app_id}:{digest}"


def cached_discovery(*, app_id: int, issuer: str) -> dict[str, Any]:
    """`discover(issuer)`, kept in the shared cache for DISCOVERY_CACHE_SECONDS (only a
    document that passed its checks is kept; failures are not)."""
    key = _cache_key("discovery", app_id, issuer)
    config = cache.get(key)
    if isinstance(config, dict):
        return config
    config = discover(issuer)
    cache.set(key, config, DISCOVERY_CACHE_SECONDS)
    return config


def forget_idp_documents(*, app_id: int, issuer: str) -> None:
    """Drop the cached discovery document and JWKS of an app (its IdP was saved again
    or removed), so the next sign-in reads them afresh."""
    key = _cache_key("discovery", app_id, issuer)
    config = cache.get(key)
    keys = [key]
    if isinstance(config, dict) and isinstance(config.get("jwks_uri"), str):
        keys.append(_cache_key("jwks", app_id, config["jwks_uri"]))
    cache.delete_many(keys)


class IdpKeys:
    """An IdP's signing keys (its JWKS) for one sign-in, through the shared cache.

    Fetched when the cache has none, kept JWKS_CACHE_SECONDS. When a token names a kid
    the cached JWKS lacks, the JWKS is fetched again, since IdPs rotate keys, but only
    when this sign-in fetched nothing yet and no refetch for this connection happened
    within JWKS_REFETCH_INTERVAL_SECONDS (a bogus kid is refused with the cached keys)."""

    def __init__(self, *, app_id: int, jwks_uri: Any) -> None:
        self.app_id = app_id
        self.jwks_uri = jwks_uri
        self.fetched = False

    def _key(self, kind: str) -> str:
        return _cache_key(kind, self.app_id, str(self.jwks_uri))

    def _fetch(self) -> dict[str, Any]:
        self.fetched = True
        jwks = _get_json(self.jwks_uri, "signing keys (JWKS)")
        if not isinstance(jwks.get("keys"), list):
            raise OidcUnavailable("The identity provider's signing keys (JWKS) list no keys.")
        cache.set(self._key("jwks"), jwks, JWKS_CACHE_SECONDS)
        return jwks

    def _may_refetch(self) -> bool:
        if self.fetched:
            return False
        # add() is atomic (SET NX in Redis): one refetch per interval, whoever asks.
        return bool(cache.add(self._key("jwks-refetch"), True, JWKS_REFETCH_INTERVAL_SECONDS))

    def signing_key(self, kid: str, alg: str) -> Any:
        jwks = cache.get(self._key("jwks"))
        if not isinstance(jwks, dict):
            jwks = self._fetch()
        elif not _publishes(jwks, kid) and self._may_refetch():
            logger.info(
                "OIDC kid %r not in app %s's cached JWKS: refetching", kid[:80], self.app_id
            )
            jwks = self._fetch()
        return _signing_key(jwks, kid, alg)


def _publishes(jwks: dict[str, Any], kid: str) -> bool:
    keys = jwks.get("keys")
    return isinstance(keys, list) and any(isinstance(k, dict) and k.get("kid") == kid for k in keys)


def _signing_key(jwks: dict[str, Any], kid: str, alg: str) -> Any:
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise OidcUnavailable("The identity provider's signing keys (JWKS) list no keys.")
    matching = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid]
    if len(matching) != 1:
        raise OidcError(
            "The ID token was signed with a key the identity provider does not publish "
            f"(kid {kid[:80]!r})."
        )
    jwk = matching[0]
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
        raise OidcError("The ID token's key is not meant for this signature algorithm.")
    try:
        return jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise OidcError("The identity provider's signing key could not be used.") from exc


def verify_id_token(
    id_token: Any, *, config: dict[str, Any], client_id: str, nonce: str, keys: IdpKeys
) -> dict[str, Any]:
    """The claims of `id_token` once its signature, algorithm, issuer, audience,
    authorized party, expiry and nonce check out; OidcError otherwise."""
    if not isinstance(id_token, str) or not id_token:
        raise OidcError("The identity provider sent no ID token.")
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise OidcError("The identity provider's ID token is malformed.") from None
    alg = header.get("alg")
    advertised = config.get("id_token_signing_alg_values_supported") or ["RS256"]
    if alg not in ACCEPTED_ALGORITHMS or alg not in advertised:
        raise OidcError(f"The ID token uses a signature algorithm Raydeck does not accept ({alg}).")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise OidcError("The ID token does not name its signing key (no kid).")
    key = keys.signing_key(kid, alg)
    try:
        claims = jwt.decode(
            id_token,
            key=key,
            algorithms=[alg],
            audience=client_id,
            issuer=config["issuer"],
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise OidcError("The ID token has expired. Sign in again.") from None
    except jwt.InvalidAudienceError:
        raise OidcError("The ID token was issued for another application.") from None
    except jwt.InvalidIssuerError:
        raise OidcError("The ID token was issued by another identity provider.") from None
    except jwt.InvalidSignatureError:
        raise OidcError("The ID token's signature is not valid.") from None
    except jwt.PyJWTError as exc:
        raise OidcError(f"The ID token is not valid ({exc}).") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise OidcError("The ID token was issued for another application.")
    token_nonce = claims.get("nonce")
    if not nonce or not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce, nonce):
        raise OidcError("The ID token does not answer this sign-in (wrong nonce). Sign in again.")
    return claims


# --- allauth's provider, hardened ---------------------------------------------------------


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
    # allauth mounts the URLs of the provider's package: keep allauth's.
    package = "allauth.socialaccount.providers.openid_connect"
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


# --- The callback ------------------------------------------------------------------------


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
        userinfo = _userinfo(config["userinfo_endpoint"], token["access_token"])
        if userinfo.get("sub") != claims["sub"]:
            raise OidcError("The identity provider's user info is about someone else.")
        claims = {**userinfo, **claims}
    return IdpClaims.clean(
        subject=claims.get("sub"),
        email=claims.get("email"),
        name=claims.get("name", ""),
        groups=claims.get(groups_claim, ()),
    )


def _userinfo(url: str, access_token: str) -> dict[str, Any]:
    url = check_endpoint_url(url, "userinfo endpoint")
    try:
        with get_adapter().get_requests_session() as session:
            response = session.get(
                url, headers={"Authorization": f"Bearer {access_token}"}, allow_redirects=False
            )
        if response.status_code != 200 or len(response.content) > MAX_IDP_DOCUMENT_BYTES:
            raise OidcUnavailable("The identity provider's user info could not be read.")
        data = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise OidcUnavailable("The identity provider's user info could not be read.") from exc
    if not isinstance(data, dict):
        raise OidcUnavailable("The identity provider's user info could not be read.")
    return data


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


# --- Configuration (the SSO settings page) -----------------------------------------------


def provider_id_for(organization: Organization) -> str:
    return f"oidc-{organization.slug}"


def redirect_uri(request: HttpRequest, provider_id: str) -> str:
    """The callback URL to register at the IdP."""
    return request.build_absolute_uri(
        reverse("openid_connect_callback", kwargs={"provider_id": provider_id})
    )


def oidc_connection_save(
    *,
    organization: Organization,
    actor: User,
    issuer: str,
    client_id: str,
    client_secret: str,
    groups_attribute: str,
) -> SsoConnection:
    """Create or update the organization's OIDC connection (created switched off).
    The issuer is checked by fetching its discovery document first. An empty
    `client_secret` keeps the stored one; the secret is stored encrypted and never
    returned."""
    require(actor, "sso.manage", organization)
    issuer = issuer.strip()
    try:
        discover(issuer)
    except OidcError as exc:
        # A trailing slash is the most common difference: accept the IdP's spelling.
        alternative = issuer[:-1] if issuer.endswith("/") else issuer + "/"
        try:
            discover(alternative)
        except OidcError:
            raise ValidationError({"issuer": str(exc)}) from None
        issuer = alternative
    with transaction.atomic():
        connection = (
            SsoConnection.objects.select_for_update()
            .select_related("social_app")
            .filter(organization=organization)
            .first()
        )
        if connection is not None and connection.protocol != SsoProtocol.OIDC:
            return _switch_to_oidc(
                connection, actor, issuer, client_id, client_secret, groups_attribute
            )
        if connection is None:
            if not client_secret:
                raise ValidationError({"client_secret": "Enter the client secret."})
            connection = SsoConnection(
                organization=organization,
                protocol=SsoProtocol.OIDC,
                social_app=_new_app(organization, issuer, client_id, client_secret),
                enabled=False,
                groups_attribute=groups_attribute,
                created_by=actor,
            )
            connection.full_clean()
            connection.save()
            changes: dict[str, list] = {
                "protocol": [None, SsoProtocol.OIDC],
                "issuer": [None, issuer],
                "client_id": [None, client_id],
                "client_secret": [None, "set"],
                "groups_attribute": [None, groups_attribute],
            }
            audit(actor=actor, verb="sso.connection_create", target=connection, changes=changes)
            return connection
        app = connection.social_app
        # The owner saved the IdP again: read its documents afresh at the next sign-in.
        app_id = app.pk
        transaction.on_commit(lambda: forget_idp_documents(app_id=app_id, issuer=issuer))
        changes = {}
        if app.settings.get("server_url") != issuer:
            changes["issuer"] = [app.settings.get("server_url"), issuer]
        if app.client_id != client_id:
            changes["client_id"] = [app.client_id, client_id]
        if client_secret:
            changes["client_secret"] = ["set", "replaced"]
            app.secret = encrypt(client_secret)
        app.client_id = client_id
        app.settings = {**app.settings, "server_url": issuer, "oauth_pkce_enabled": True}
        app.save(update_fields=["client_id", "secret", "settings"])
        if connection.groups_attribute != groups_attribute:
            changes["groups_attribute"] = [connection.groups_attribute, groups_attribute]
            connection.groups_attribute = groups_attribute
            connection.full_clean()
            connection.save(update_fields=["groups_attribute", "updated_at"])
        if changes:
            audit(actor=actor, verb="sso.connection_update", target=connection, changes=changes)
        return connection


def _new_app(organization: Organization, issuer: str, client_id: str, secret: str) -> SocialApp:
    provider_id = provider_id_for(organization)
    if SocialApp.objects.filter(provider=OIDC_PROVIDER, provider_id=provider_id).exists():
        provider_id = f"{provider_id}-{organization.pk}"
    app = SocialApp.objects.create(
        provider=OIDC_PROVIDER,
        provider_id=provider_id,
        name=organization.name[:40],
        client_id=client_id,
        secret=encrypt(secret),
        settings={"server_url": issuer, "oauth_pkce_enabled": True},
    )
    app.sites.add(Site.objects.get_current())
    return app


def may_switch_to_oidc(connection: SsoConnection) -> bool:
    return not connection.enabled and not connection.identities.exists()


def _switch_to_oidc(
    connection: SsoConnection,
    actor: User,
    issuer: str,
    client_id: str,
    client_secret: str,
    groups_attribute: str,
) -> SsoConnection:
    """A SAML connection that is off and nobody ever signed in through becomes OIDC (its
    access settings and group mapping stay). Identities are keyed by the connection, so
    one with people would mix SAML NameIDs with OIDC subjects: refused."""
    if not may_switch_to_oidc(connection):
        raise ValidationError(
            "This organization signs in with SAML, and people have used it or it is on. "
            "Switch single sign-on off and remove the SAML connection first."
        )
    if not client_secret:
        raise ValidationError({"client_secret": "Enter the client secret."})
    old_app = connection.social_app
    connection.social_app = _new_app(connection.organization, issuer, client_id, client_secret)
    connection.protocol = SsoProtocol.OIDC
    connection.groups_attribute = groups_attribute
    connection.full_clean()
    connection.save(update_fields=["social_app", "protocol", "groups_attribute", "updated_at"])
    old_app.delete()
    audit(
        actor=actor,
        verb="sso.connection_update",
        target=connection,
        changes={
            "protocol": [SsoProtocol.SAML, SsoProtocol.OIDC],
            "issuer": [None, issuer],
            "client_id": [None, client_id],
            "client_secret": [None, "set"],
            "groups_attribute": [None, groups_attribute],
        },
    )
    return connection
