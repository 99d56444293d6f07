"""One exception hierarchy for everything the SDK can raise.

Every answer of the API that is not a success carries
`{"error": {"code", "message", "details"}}`; `error_from_response` turns it into the
subclass of `ApiError` that its status and code name, so callers catch what they mean
(`except raydeck.NotFound`) and the CLI maps each class to one exit code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class RaydeckError(Exception):
    """Anything the SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RaydeckError):
    """No server URL or token is known, or the config file is unreadable."""


class NotSignedIn(ConfigError):
    """No token is known for the server or the organization asked for."""


class ConnectionFailed(RaydeckError):
    """The server could not be reached (refused, DNS, TLS, timeout) after the retries."""


class WaitTimeout(RaydeckError):
    """A wait (for a cluster, for a browser sign-in) ran past its deadline."""


class ClusterFailed(RaydeckError):
    """The cluster being waited for ended in `failed` (or was terminated) instead."""

    def __init__(self, message: str, *, cluster: Any = None) -> None:
        super().__init__(message)
        self.cluster = cluster


class LoginFailed(RaydeckError):
    """The browser sign-in was denied, expired or already collected."""


class ApiError(RaydeckError):
    """The API answered with an error. `status` is the HTTP status, `code` the API's
    snake_case code, `details` its details (for validation: {field: [messages]})."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, {self.message!r})"


class BadRequest(ApiError):
    """400 and any other 4xx without a class of its own."""


class Unauthenticated(ApiError):
    """401: the token is missing, unknown, revoked or expired."""


class PermissionDenied(ApiError):
    """403: the token's person may not do this in their organization (or it is read-only)."""


class NotFound(ApiError):
    """404: no such object, or it belongs to another organization (the API cannot tell)."""


class Conflict(ApiError):
    """409: the object is not in a state that allows this (e.g. no address until running)."""


class ValidationFailed(ApiError):
    """422 validation_error: `details` maps each field to its messages."""

    def field_messages(self) -> list[str]:
        lines: list[str] = []
        for field, messages in self.details.items():
            items = messages if isinstance(messages, list) else [messages]
            lines.extend(f"{field}: {m}" for m in items)
        return lines


class IdempotencyConflict(ApiError):
    """422 idempotency_conflict: the Idempotency-Key was used before with another body."""


class RateLimited(ApiError):
    """429: `retry_after` says how many seconds to wait."""


class ServerError(ApiError):
    """5xx: the server failed; the request may be retried."""


_BY_CODE: dict[str, type[ApiError]] = {
    "unauthenticated": Unauthenticated,
    "permission_denied": PermissionDenied,
    "not_found": NotFound,
    "conflict": Conflict,
    "validation_error": ValidationFailed,
    "idempotency_conflict": IdempotencyConflict,
    "rate_limited": RateLimited,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: ValidationFailed,
    429: RateLimited,
}
_DEFAULT_MESSAGES = {
    401: "The server refused the token (unknown, revoked or expired).",
    403: "You are not allowed to do this.",
    404: "Not found.",
    409: "The request conflicts with the object's current state.",
    422: "The request is not valid.",
    429: "Too many requests; try again later.",
}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], *, request: str = ""
) -> ApiError:
    """The exception for an error answer, whatever its body: the API's error shape, or
    (from a proxy, a crash page, a server without this API) anything else, which still
    gets a readable message naming the `request` ("GET /api/v1/me")."""
    code = message = ""
    details: dict[str, Any] = {}
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        raw_details = error.get("details")
        details = raw_details if isinstance(raw_details, dict) else {}
    if status >= 500:
        cls: type[ApiError] = ServerError
    else:
        cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or BadRequest
    if not message:
        message = _DEFAULT_MESSAGES.get(status) or f"The server answered HTTP {status}."
        if request:
            message += f" (The answer to {request} is not in the API's error shape.)"
    return cls(
        message,
        status=status,
        code=code or f"http_{status}",
        details=details,
        retry_after=_retry_after(headers),
    )
