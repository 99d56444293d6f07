"""What every endpoint asks of the request: the organization in the URL (only the
token's own, else 404), the principal to scope querysets with, and permission checks
through accounts.permissions (the one role table)."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import Organization, ServiceAccount, User
from accounts.permissions import token_require
from accounts.tokens import TokenIdentity
from kit.api.errors import ApiError, not_found


def identity(request: HttpRequest) -> TokenIdentity:
    return request.auth  # type: ignore[attr-defined]  # set by TokenAuth


def organization(request: HttpRequest, slug: str) -> Organization:
    return organization_of(identity(request), slug)


def organization_of(token: TokenIdentity, slug: str) -> Organization:
    """The organization of the URL: a token acts in its own organization only, so any
    other slug is a 404, whether it exists or not."""
    if slug != token.organization.slug:
        raise not_found("organization")
    return token.organization


def viewer(request: HttpRequest) -> Any:
    """Whom querysets are scoped to (`visible_to`): the token's person or service account."""
    return identity(request).principal


def require(request: HttpRequest, perm: str, obj: Any) -> None:
    """PermissionDenied (403) unless the token may use `perm` on `obj`; callers reach
    `obj` through `visible_to` first, so other organizations' objects are 404s before."""
    token_require(identity(request), perm, obj)


def actor(request: HttpRequest) -> User:
    """Who a change is recorded as. Services and the audit log record people; a service
    account's token can read, and changes need a person's token for now."""
    principal = identity(request).principal
    if not isinstance(principal, User):
        raise ApiError(
            403,
            "Service-account tokens can only read through the API for now; "
            "use a personal token to make changes.",
        )
    return principal


def writer(request: HttpRequest) -> User | ServiceAccount:
    """Who a change is made by where a service account may make it too (cluster
    lifecycle): the token's person or service account, whose role the service checks
    and whose name the audit log records."""
    return identity(request).principal


def console_url(path: str) -> str:
    return settings.RAYDECK_BASE_URL.rstrip("/") + path


def one_or_404(rows: QuerySet, what: str, **lookup: Any) -> Any:
    """The row of `rows` (already scoped by `visible_to`) that matches `lookup`, or the
    API's 404, in the same words whether it never existed or is another
    organization's."""
    found = rows.filter(**lookup).first()
    if found is None:
        raise not_found(what)
    return found


NO_UUID = "00000000-0000-0000-0000-000000000000"  # never made by uuid4


def int_id(value: str) -> int:
    """An integer id from the client, or 0 (no row has it) for anything else, so a bad
    id is a plain 404 rather than a database error."""
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return 0


def uuid_id(value: str) -> str:
    """A UUID id from the client, or one no row has for anything else."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return NO_UUID
