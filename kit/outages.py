"""A dependency that is down (the database, the shared cache, the task queue's broker) is
a 503 with Retry-After, never a 500: the request may be retried as it is (a write whose
transaction did not commit changed nothing; creates take an Idempotency-Key).

Every answer goes through `outage_response`: Django's 500 handler (console/urls.py,
for anything raised in a view or a middleware of the full stack, which the lean paths
hand their failures to) and the JSON API's exception handler (kit/api/errors.py). Pages
get a short HTML page; /api/v1/ and /agent/v1/ get the API's error shape, code
`unavailable`. Agents back off on it (raydeck_agent/api.py reads Retry-After).

What fails open instead of answering 503 is decided per use of the shared cache and
documented where it is used: rate limits count nothing while Redis is down
(kit/ratelimit.py); revocations, the reconcile lease and heartbeats do not
(clusters/live.py, accounts/revocations.py).
"""

from __future__ import annotations

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.html import escape

from .api.errors import error_body

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
JSON_PREFIXES = ("/api/", "/agent/")


def _dependencies() -> tuple[tuple[tuple[type[BaseException], ...], str], ...]:
    # redis's and kombu's errors are looked up, not imported: only a process that loaded
    # them can meet them. The embedded default has no Redis (40 modules, 3 MB a process),
    # and a web process loads kombu with the first task it sends (kit/tasks.py).
    redis = sys.modules.get("redis.exceptions")
    cache = () if redis is None else (redis.ConnectionError, redis.TimeoutError)
    kombu = sys.modules.get("kombu.exceptions")
    broker = () if kombu is None else (kombu.OperationalError,)
    return (
        ((OperationalError, InterfaceError), "the database"),
        (cache, "the shared cache"),
        (broker, "the task queue"),
    )


def dependency_down(exc: BaseException | None) -> str | None:
    """Which dependency `exc` (or an exception it was raised from) says is unreachable,
    or None for any other error."""
    seen: set[int] = set()
    dependencies = _dependencies()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for types, name in dependencies:
            if isinstance(exc, types):
                return name
        exc = exc.__cause__ or exc.__context__
    return None


def outage_response(request: HttpRequest, dependency: str) -> HttpResponse:
    """503, Retry-After, and a message that says what is down and that retrying helps."""
    logger.warning("%s %s: %s is unavailable", request.method, request.path, dependency)
    message = (
        f"Raydeck cannot reach {dependency} right now. Retry in {RETRY_AFTER_SECONDS} seconds."
    )
    if request.path.startswith(JSON_PREFIXES):
        response = HttpResponse(
            error_body("unavailable", message), status=503, content_type="application/json"
        )
    else:
        page = (
            "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            "<title>Raydeck is briefly unavailable</title></head><body>"
            f"<h1>Raydeck is briefly unavailable</h1><p>{escape(message)}</p></body></html>"
        )
        response = HttpResponse(page, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
