"""The API's exceptions, routed to the one error shape of kit/api/errors.py, and that
shape in the OpenAPI document."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from pydantic import Field as PydanticField

from .errors import NON_FIELD, ApiError, error_response, not_found, validation_details
from .schema import Out

logger = logging.getLogger(__name__)

# Where ninja found a bad value: the field is the last part of its location.
_LOCATIONS = {"body", "query", "path", "header", "cookie", "form", "file", "payload"}


def _ninja_details(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    details: dict[str, list[str]] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if str(part) not in _LOCATIONS]
        field = ".".join(loc) or NON_FIELD
        details.setdefault(field, []).append(str(error.get("msg", "Invalid value.")))
    return details


def install(api: NinjaAPI) -> None:
    """Route every exception an endpoint can raise to the one shape."""

    @api.exception_handler(ApiError)
    def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        return error_response(exc)

    @api.exception_handler(NinjaValidationError)
    def _ninja_invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        details = _ninja_details(exc.errors)
        return error_response(ApiError(422, "The request is not valid.", details=details))

    @api.exception_handler(DjangoValidationError)
    def _invalid(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
        details = validation_details(exc)
        return error_response(ApiError(422, "The request is not valid.", details=details))

    @api.exception_handler(AuthenticationError)
    def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = error_response(
            ApiError(
                401,
                "Send a valid API token: Authorization: Bearer <token>. "
                "It may be missing, mistyped, expired or revoked.",
            )
        )
        response["WWW-Authenticate"] = 'Bearer realm="raydeck"'
        return response

    @api.exception_handler(PermissionDenied)
    def _denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
        message = str(exc) or "You do not have permission to do this."
        return error_response(ApiError(403, message))

    @api.exception_handler(Http404)
    def _missing(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(not_found())

    @api.exception_handler(HttpError)
    def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400:  # ninja could not parse the body
            return error_response(
                ApiError(
                    422,
                    "The request is not valid.",
                    details={"body": ["Send a JSON object as the body."]},
                )
            )
        return error_response(ApiError(exc.status_code, str(exc) or "The request failed."))

    @api.exception_handler(RequestDataTooBig)
    def _too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024
        message = f"The body is too large: at most {limit} KB."
        return error_response(ApiError(413, message))

    @api.exception_handler(SuspiciousOperation)
    def _malformed(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
        return error_response(ApiError(400, "The request is malformed."))

    @api.exception_handler(Exception)
    def _crash(request: HttpRequest, exc: Exception) -> HttpResponse:
        from ..outages import dependency_down, outage_response

        if dependency := dependency_down(exc):
            return outage_response(request, dependency)
        logger.exception("API request failed: %s %s", request.method, request.path)
        return error_response(ApiError(500, "Something went wrong on our side; try again."))


class ErrorDetail(Out):
    code: str = PydanticField(description="What went wrong, in snake_case: see docs/api.md.")
    message: str = PydanticField(description="A sentence for people.")
    details: dict[str, Any] = PydanticField(
        description="For validation_error: {field: [messages]} (`__all__`: the whole request)."
    )


class ErrorOut(Out):
    error: ErrorDetail


# Every endpoint may answer these (the OpenAPI document says so, so clients and
# schemathesis know the shape): 400 for a body that is not JSON, 413 for one over the
# size limit, both before the endpoint runs.
ERROR_STATUSES = (400, 401, 403, 404, 413, 422, 429, 503)
ERROR_SCHEMA = "ErrorOut"


def answers(ok: Any, *extra_errors: int) -> dict[int, Any]:
    """The responses of an endpoint: `ok` (a schema for 200, or {status: schema}) and
    every error status it can answer.

    An error status maps to None, not to ErrorOut: the handlers above write every error
    body, so ninja never validates one, and a schema there would make ninja build one
    pydantic model per status per endpoint (600 models, a third of the web's start-up).
    `document_errors` puts ErrorOut into the OpenAPI document instead."""
    responses = dict(ok) if isinstance(ok, dict) else {200: ok}
    for status in (*ERROR_STATUSES, *extra_errors):
        responses[status] = None
    return responses


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with ErrorOut as the body of every error answer."""
    schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components[ERROR_SCHEMA] = schema
    body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for status, answer in operation.get("responses", {}).items():
                if int(status) >= 400 and "content" not in answer:
                    answer["content"] = body
    return document
