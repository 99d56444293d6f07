"""The API's error shape becomes one exception class per status/code, each with a
readable message and a stable exit code."""

from __future__ import annotations

import json

import pytest
from raydeck import errors
from raydeck.cli import (
    EXIT_API_ERROR,
    EXIT_AUTH,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UsageError,
    error_message,
    exit_code_for,
)


def body(code: str, message: str, details: dict | None = None) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "details": details or {}}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "code", "cls", "exit_code"),
    [
        (401, "unauthenticated", errors.Unauthenticated, EXIT_AUTH),
        (403, "permission_denied", errors.PermissionDenied, EXIT_AUTH),
        (404, "not_found", errors.NotFound, EXIT_NOT_FOUND),
        (409, "conflict", errors.Conflict, EXIT_API_ERROR),
        (422, "validation_error", errors.ValidationFailed, EXIT_API_ERROR),
        (422, "idempotency_conflict", errors.IdempotencyConflict, EXIT_API_ERROR),
        (429, "rate_limited", errors.RateLimited, EXIT_API_ERROR),
        (400, "bad_request", errors.BadRequest, EXIT_API_ERROR),
        (500, "server_error", errors.ServerError, EXIT_API_ERROR),
    ],
)
def test_each_error_code_has_its_class_and_exit_code(status, code, cls, exit_code) -> None:
    error = errors.error_from_response(status, body(code, "Something."), {})
    assert type(error) is cls
    assert (error.status, error.code, error.message) == (status, code, "Something.")
    assert exit_code_for(error) == exit_code


def test_validation_errors_name_each_field() -> None:
    error = errors.error_from_response(
        422,
        body("validation_error", "Check the fields.", {"name": ["Too long."], "cloud": ["Gone."]}),
        {},
    )
    assert error_message(error).splitlines() == [
        "error: Check the fields. (HTTP 422, validation_error)",
        "  name: Too long.",
        "  cloud: Gone.",
    ]


def test_rate_limit_keeps_retry_after() -> None:
    error = errors.error_from_response(
        429, body("rate_limited", "Slow down."), {"Retry-After": "7"}
    )
    assert error.retry_after == 7
    assert "try again in 7 s" in error_message(error)


def test_unauthenticated_says_how_to_sign_in_again() -> None:
    error = errors.error_from_response(401, body("unauthenticated", "Invalid token."), {})
    assert "raydeck login" in error_message(error)


@pytest.mark.parametrize(
    ("status", "payload", "cls"),
    [
        (502, b"<html>Bad gateway</html>", errors.ServerError),
        (404, b"", errors.NotFound),
        (401, b'{"detail": "no"}', errors.Unauthenticated),
        (418, b"[1, 2]", errors.BadRequest),
    ],
)
def test_answers_without_the_error_shape_still_read_well(status, payload, cls) -> None:
    error = errors.error_from_response(status, payload, {})
    assert type(error) is cls
    assert error.code == f"http_{status}"
    assert error.message and "<html>" not in error.message


def test_errors_outside_the_api_have_exit_codes_too() -> None:
    assert exit_code_for(errors.NotSignedIn("no")) == EXIT_AUTH
    assert exit_code_for(errors.ConfigError("no url")) == EXIT_USAGE
    assert exit_code_for(UsageError("bad file")) == EXIT_USAGE
    assert exit_code_for(errors.WaitTimeout("slow")) == EXIT_TIMEOUT
    assert exit_code_for(errors.ConnectionFailed("down")) == EXIT_UNREACHABLE
    assert exit_code_for(errors.ClusterFailed("failed")) == 6
