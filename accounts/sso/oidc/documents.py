"""Where the shared cache keeps an IdP's checked discovery document and its JWKS
(accounts.sso.oidc.client fetches them), and forgetting them when a connection changes:
without requests, which client imports, so saving SSO settings needs no HTTP client."""

from __future__ import annotations

import hashlib

from django.core.cache import cache

# How long the shared cache keeps an IdP's discovery document and its JWKS.
DISCOVERY_CACHE_SECONDS = 60 * 60
JWKS_CACHE_SECONDS = 10 * 60


def cache_key(kind: str, app_id: int, url: str) -> str:
    """Per allauth app (one organization's connection) and per URL, so a changed
    issuer or jwks_uri never finds the old IdP's documents."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    return f"raydeck:oidc:{kind}:{app_id}:{digest}"


def forget_idp_documents(*, app_id: int, issuer: str) -> None:
    """Drop the cached discovery document and JWKS of an app (its IdP was saved again
    or removed), so the next sign-in reads them afresh."""
    key = cache_key("discovery", app_id, issuer)
    config = cache.get(key)
    keys = [key]
    if isinstance(config, dict) and isinstance(config.get("jwks_uri"), str):
        keys.append(cache_key("jwks", app_id, config["jwks_uri"]))
    cache.delete_many(keys)
