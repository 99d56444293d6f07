"""HTTP for the SDK: JSON in and out, the error shape turned into exceptions, and
retries that are safe to make.

What is retried: connection failures, 502/503/504 and 429 (after its Retry-After), for
reads, deletes and creates that carry an Idempotency-Key (the server answers a repeated
key with the first result, so nothing is made twice). Other writes are retried only on
429 and on a refused connection, where the server cannot have acted.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from . import __version__
from .errors import ApiError, ConnectionFailed, RateLimited, ServerError, error_from_response

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_BACKOFF_SECONDS = 8.0
# A Retry-After longer than this is not waited out: the caller hears about it at once.
MAX_RETRY_AFTER_SECONDS = 60.0


class Transport:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        user_agent: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.user_agent = user_agent or f"raydeck-cli/{__version__}"
        # RAYDECK_DEBUG=1: each request's method, URL, status and time on stderr (no bodies:
        # they may hold secrets).
        self.debug = os.environ.get("RAYDECK_DEBUG", "") not in ("", "0")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send one request (with retries) and return the decoded JSON, or None for an
        empty answer. Raises an ApiError subclass or ConnectionFailed."""
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        full = self.url + path + (f"?{urlencode(query, doseq=True)}" if query else "")
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        retry_unsure = method in ("GET", "HEAD", "DELETE") or bool(idempotency_key)
        attempt = 0
        while True:
            try:
                return self._send(method, full, data, headers)
            except RateLimited as exc:
                wait = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                if attempt >= self.retries or wait > MAX_RETRY_AFTER_SECONDS:
                    raise
            except ServerError as exc:
                if attempt >= self.retries or not retry_unsure or exc.status not in RETRY_STATUSES:
                    raise
                wait = self._backoff(attempt)
            except ConnectionFailed as exc:
                refused = isinstance(exc.__cause__, ConnectionRefusedError) or isinstance(
                    getattr(exc.__cause__, "reason", None), ConnectionRefusedError
                )
                if attempt >= self.retries or not (retry_unsure or refused):
                    raise
                wait = self._backoff(attempt)
            attempt += 1
            time.sleep(wait)

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(MAX_BACKOFF_SECONDS, 0.5 * 2.0**attempt) * random.uniform(0.8, 1.2)  # noqa: S311

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Any:
        started = time.monotonic()
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http(s) is checked in config.normalize_url
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status = response.status
                payload = response.read()
                response_headers = dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            status = exc.code
            payload = exc.read()
            response_headers = dict(exc.headers.items()) if exc.headers else {}
        except OSError as exc:  # URLError, refused, reset, TimeoutError
            reason = getattr(exc, "reason", exc)
            raise ConnectionFailed(f"Cannot reach {self.url}: {reason}") from exc
        if self.debug:
            took = (time.monotonic() - started) * 1000
            print(f"raydeck: {method} {url} -> {status} in {took:.0f} ms", file=sys.stderr)
        if status >= 400:
            path = urlsplit(url).path
            raise error_from_response(status, payload, response_headers, request=f"{method} {path}")
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise ApiError(
                f"The server at {self.url} did not answer with JSON (HTTP {status}); "
                "is this the Raydeck URL?",
                status=status,
                code="invalid_response",
            ) from exc
