"""`Idempotency-Key` on creates: the first successful answer to (token, key) is kept in
the database with a hash of the request, so a retry (after a timeout, a crash, a
restart) gets the same answer instead of a second create.

The key's row is inserted in the same transaction as the create. A concurrent
duplicate blocks on the row's unique index until the first commits, then finds the
stored answer; if the first fails, nothing is stored and the retry runs afresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from accounts.models import IdempotencyKey
from kit.api.errors import ApiError, error_response

from .api_auth import SAFE_METHODS, identity_of

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEEP_FOR = timedelta(hours=24)


def _request_hash(request: HttpRequest) -> str:
    digest = hashlib.sha256()
    for part in (request.method or "", request.path):
        digest.update(part.encode() + b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def _replay(record: IdempotencyKey) -> HttpResponse:
    response = HttpResponse(
        record.response_body, status=record.status_code, content_type="application/json"
    )
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(run: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a create operation (apply with ninja's `decorate_view`)."""

    @wraps(run)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = request.headers.get(HEADER)
        identity = identity_of(request) if key is not None else None
        if key is None or identity is None or request.method in SAFE_METHODS:
            return run(request, *args, **kwargs)  # no key, or the operation answers 401
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            return error_response(
                ApiError(
                    422,
                    "The request is not valid.",
                    details={HEADER: [f"Use 1 to {MAX_KEY_LENGTH} characters."]},
                )
            )
        token, request_hash = identity.token, _request_hash(request)
        with transaction.atomic():
            try:
                with transaction.atomic():
                    record = IdempotencyKey.objects.create(
                        token=token,
                        key=key,
                        request_hash=request_hash,
                        status_code=0,
                        response_body="",
                    )
            except IntegrityError:
                record = IdempotencyKey.objects.get(token=token, key=key)
                if record.request_hash != request_hash:
                    return error_response(
                        ApiError(
                            422,
                            "This Idempotency-Key was already used for a different request; "
                            "use a new key for a new request.",
                            code="idempotency_conflict",
                        )
                    )
                return _replay(record)
            response = run(request, *args, **kwargs)
            if response.status_code >= 400:
                # Not kept: the create did not happen, so a retry may try again.
                transaction.set_rollback(True)
                return response
            record.status_code = response.status_code
            record.response_body = response.content.decode()
            record.save(update_fields=["status_code", "response_body"])
            # Housekeeping: this token's keys older than a day are no longer needed.
            IdempotencyKey.objects.filter(
                token=token, created_at__lt=timezone.now() - KEEP_FOR
            ).delete()
        return response

    return wrapper
