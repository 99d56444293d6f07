"""Answers under /api/v1/ that no endpoint wrote (an unknown path, a method the path
does not take, a crash outside an endpoint) get the API's error shape too."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .errors import CODE_FOR_STATUS, error_body

API_PREFIX = "/api/v1/"
MESSAGES = {
    400: "The request is malformed.",
    404: "There is no such endpoint; see /api/v1/docs.",
    405: "This endpoint does not take this method.",
    500: "Something went wrong on our side; try again.",
}


class ApiErrorShapeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(API_PREFIX)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            status = response.status_code
            message = MESSAGES.get(status, "The request failed.")
            shaped = HttpResponse(
                error_body(CODE_FOR_STATUS.get(status, "error"), message),
                status=status,
                content_type="application/json",
            )
            for header in ("Allow", "Retry-After", "WWW-Authenticate"):
                if header in response:
                    shaped[header] = response[header]
            return shaped
        return response
