"""Structured logs: one JSON object per line, the same for web, worker and beat, with
the request id of the request being served (or of the request that enqueued the task
being run).

- RequestIdMiddleware gives each request an id (the load balancer's `X-Request-ID` when
  it is a plain token, else a new one), answers it in `X-Request-ID`, and logs one line
  per request (method, route, status, milliseconds).
- console/celery.py carries the id in each task message it sends (`raydeck_request_id`)
  and sets it again while the task runs, so the task's lines (and the tasks it sends)
  carry it too; accounts.audit writes it on each audit event.
- JsonFormatter writes every record, and blanks anything shaped like one of Raydeck's
  secrets (API tokens, node credentials, bootstrap tokens, bearer headers) from the
  message, whatever called the logger.

LOGGING in console/settings/base.py picks the format: RAYDECK_LOG_FORMAT=json (the
production default) or plain.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

from .metrics import route_of

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("raydeck_request_id", default="")
HEADER = "X-Request-ID"
_ACCEPTED = re.compile(r"^[A-Za-z0-9._-]{8,64}$")  # a load balancer's id, never anything else
_SECRETS = re.compile(r"\b(rd[kbn]_)[A-Za-z0-9_-]{8,}|(?i:\b(bearer)\s+)[^\s\"',]+")

access_logger = logging.getLogger("raydeck.requests")
# Python's warnings (a library's, Celery's) become log records too, in the same format,
# instead of bare lines on stderr. Imported when LOGGING builds the formatters below.
logging.captureWarnings(True)


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(value: str) -> contextvars.Token[str]:
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token[str]) -> None:
    _request_id.reset(token)


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(given: str) -> str:
    """The id a request goes by: the load balancer's when it is a plain token, else new."""
    return given if _ACCEPTED.match(given) else new_request_id()


def redact(text: str) -> str:
    """`text` with every token-shaped secret blanked (its kind kept)."""
    return _SECRETS.sub(lambda m: f"{m.group(1) or m.group(2) + ' '}[redacted]", text)


# The attributes of every LogRecord: anything else was passed as `extra` and is written.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, the record's
    `extra` fields, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": current_request_id(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    """The plain format, with the request id and secrets blanked as in JSON."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RequestIdFilter(logging.Filter):
    """Gives every record `request_id`, for the plain format's `%(request_id)s`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


class RequestIdMiddleware:
    """The request's id for its log lines, its tasks and its audit events."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = set_request_id(request_id_from(request.headers.get(HEADER, "")))
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[HEADER] = current_request_id()
            route = route_of(request)
            access_logger.info(
                "%s %s %s",
                request.method,
                route,
                response.status_code,
                extra={
                    "method": request.method,
                    "route": route,
                    "status": response.status_code,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            return response
        finally:
            reset_request_id(token)


class ClientErrorsWithoutTraceback(logging.Filter):
    """Django logs every 4xx (a 403, a 404) at WARNING with the exception that caused
    it: a normal refusal then fills the log with a traceback. Keep the line, drop the
    traceback; 5xx keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if record.name.startswith("django.") and isinstance(status, int) and status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
