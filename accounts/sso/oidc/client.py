"""Talking to an OpenID Connect IdP: its discovery document and JWKS (checked, and kept
in the shared cache), its user info, and ID-token verification."""

from __future__ import annotations

import hmac
import json
import logging
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from allauth.socialaccount.adapter import get_adapter
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from django.conf import settings
from django.core.cache import cache

from ..outbound import public_host
from .documents import DISCOVERY_CACHE_SECONDS, JWKS_CACHE_SECONDS, cache_key

logger = logging.getLogger(__name__)

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
# A kid the cached JWKS lacks fetches it again at most this often per connection.
JWKS_REFETCH_INTERVAL_SECONDS = 60


class OidcError(OAuth2Error):
    """The sign-in cannot go on; the message is shown as is (it names no secret)."""

    status = 400


class OidcUnavailable(OidcError):
    """The IdP (discovery, keys, token endpoint) did not answer usefully."""

    status = 502


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


def cached_discovery(*, app_id: int, issuer: str) -> dict[str, Any]:
    """`discover(issuer)`, kept in the shared cache for DISCOVERY_CACHE_SECONDS (only a
    document that passed its checks is kept; failures are not)."""
    key = cache_key("discovery", app_id, issuer)
    config = cache.get(key)
    if isinstance(config, dict):
        return config
    config = discover(issuer)
    cache.set(key, config, DISCOVERY_CACHE_SECONDS)
    return config


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
        return cache_key(kind, self.app_id, str(self.jwks_uri))

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


def fetch_userinfo(url: str, access_token: str) -> dict[str, Any]:
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
