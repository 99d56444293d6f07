"""Who is calling: an API token in `Authorization: Bearer <token>`, nothing else (no
session, so no CSRF). Read-only tokens may only read, and every token has a rate limit."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.security import HttpBearer

from accounts.audit import client_ip
from accounts.services.tokens import authenticate_token
from accounts.tokens import TokenIdentity
from kit.api.errors import ApiError
from kit.ratelimit import count_request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_IDENTITY = "_raydeck_api_identity"


def identity_of(request: HttpRequest) -> TokenIdentity | None:
    """The identity of the request's token (looked up once per request), or None."""
    if hasattr(request, _IDENTITY):
        return getattr(request, _IDENTITY)
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    identity = None
    if scheme.lower() == "bearer" and secret:
        identity = authenticate_token(secret.strip(), ip=client_ip(request))
    setattr(request, _IDENTITY, identity)
    return identity


def check_rate(identity: TokenIdentity) -> None:
    """At most RAYDECK_API_RATE_LIMIT requests per token in each window of
    RAYDECK_API_RATE_WINDOW seconds, shared by every web process."""
    limit, window = settings.RAYDECK_API_RATE_LIMIT, settings.RAYDECK_API_RATE_WINDOW
    counted = count_request(f"api:{identity.token.pk}", window)
    if counted.count > limit:
        retry_after = max(1, math.ceil(counted.retry_after))
        raise ApiError(
            429,
            f"This token made more than {limit} requests in {window} seconds; "
            f"retry after {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )


class TokenAuth(HttpBearer):
    """ninja's bearer scheme (so the OpenAPI document says how to authenticate), backed
    by accounts.services.tokens.authenticate_token, which records the token's last use."""

    def __call__(self, request: HttpRequest) -> Any:
        identity = identity_of(request)
        if identity is None:
            return None  # ninja answers 401
        check_rate(identity)
        if identity.read_only and request.method not in SAFE_METHODS:
            raise ApiError(403, "This token is read-only: it can only read.")
        return identity

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        raise NotImplementedError  # __call__ does the work
