"""One error shape for every error the API answers, its own and Django's or ninja's:

{"error": {"code": "<snake_case>", "message": "<a sentence>", "details": {...}}}

What raises and writes it is here, free of django-ninja (selectors and middleware use
it in every process); kit/api/handlers.py routes ninja's and Django's exceptions to it
and documents it in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse

from .encoding import dump_json

NON_FIELD = "__all__"

CODE_FOR_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success, raised anywhere below an endpoint."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODE_FOR_STATUS.get(status, "error")
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def not_found(what: str = "object") -> ApiError:
    # The same words whether it never existed or belongs to another organization.
    return ApiError(404, f"No such {what}.")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "The request is not valid.", details={field: [message]})


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    return dump_json({"error": {"code": code, "message": message, "details": details or {}}})


def error_response(error: ApiError) -> HttpResponse:
    response = HttpResponse(
        error_body(error.code, error.message, error.details),
        status=error.status,
        content_type="application/json",
    )
    for name, value in error.headers.items():
        response[name] = value
    return response


def validation_details(exc: DjangoValidationError) -> dict[str, list[str]]:
    """{field: [messages]} of a service's ValidationError; non-field errors under "__all__"."""
    if hasattr(exc, "error_dict"):
        return {field: list(messages) for field, messages in exc.message_dict.items()}
    return {NON_FIELD: list(exc.messages)}
