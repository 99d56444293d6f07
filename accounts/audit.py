"""Writing the audit log.

`audit()` is called inside the service that makes a change, so the event commits or
rolls back with it. Where the request came from (IP, user agent) is taken from a
context variable that AuditContextMiddleware sets, so services stay free of requests.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.http import HttpRequest, HttpResponse

from kit.logs import current_request_id

from .models import AuditEvent, Organization, ServiceAccount, User


@dataclass(frozen=True)
class RequestOrigin:
    ip: str | None
    user_agent: str


_origin: contextvars.ContextVar[RequestOrigin | None] = contextvars.ContextVar(
    "raydeck_request_origin", default=None
)


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: a proxy in front must be configured to set it (never trust a
    # client-supplied X-Forwarded-For here).
    return request.META.get("REMOTE_ADDR") or None


def origin_of(request: HttpRequest) -> RequestOrigin:
    return RequestOrigin(
        ip=client_ip(request), user_agent=request.headers.get("User-Agent", "")[:300]
    )


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _origin.set(origin_of(request))
        try:
            return self.get_response(request)
        finally:
            _origin.reset(token)


def snapshot(obj: models.Model, fields: Iterable[str]) -> dict[str, Any]:
    """The values of `fields` on `obj`, as JSON-friendly text."""
    values = {}
    for name in fields:
        value = getattr(obj, name)
        if isinstance(value, models.Model):
            value = str(value)
        values[name] = (
            value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        )
    return values


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """{field: [old, new]} for every field whose value changed."""
    return {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}


def audit(
    *,
    actor: User | ServiceAccount | None,
    verb: str,
    target: models.Model | None = None,
    organization: Organization | None = None,
    changes: dict[str, Any] | None = None,
    actor_email: str = "",
    origin: RequestOrigin | None = None,
) -> AuditEvent:
    """Record `verb` done by `actor` to `target`. Call it inside the change's transaction."""
    if organization is None and target is not None:
        organization = _organization_of(target)
    origin = origin or _origin.get() or RequestOrigin(ip=None, user_agent="")
    person = actor if isinstance(actor, User) and actor.is_authenticated else None
    if isinstance(actor, ServiceAccount):  # a service account's token
        actor_email = f"service account {actor.name}"
    return AuditEvent.objects.create(
        organization=organization,
        actor=person,
        actor_email=person.email if person is not None else actor_email,
        verb=verb,
        # model_name is only unset on an Options not yet attached to a model.
        target_type=(target._meta.model_name or "") if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        changes=changes or {},
        ip=origin.ip,
        user_agent=origin.user_agent,
        request_id=current_request_id(),
    )


def _organization_of(target: models.Model) -> Organization | None:
    if isinstance(target, Organization):
        return target
    return getattr(target, "organization", None)
