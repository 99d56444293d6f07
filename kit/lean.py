"""Lean WSGI paths for the few requests that come by the thousand: agent heartbeats
(clusters/agent_api.py) and the API's hottest read (console/api/fast.py).

A LeanApp answers only the plain 200 of its route, with Django's own request object,
the checks and response headers of the middleware that matter to a token-only JSON
endpoint, and the same service code as the view; it skips the rest of Django's
request/response machinery (half or more of such a request's time). Any other request,
any error, and anything it is not sure of, it hands to `django`, which answers exactly
as the full stack does (redirects, 4xx, logged 500s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import request_finished, request_started, setting_changed
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from . import logs

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class LeanApp:
    # The middleware (of settings.MIDDLEWARE) whose process_request checks run and whose
    # process_response headers are sent: SecurityMiddleware (HTTPS redirect, HSTS,
    # nosniff) and CommonMiddleware (ALLOWED_HOSTS, disallowed user agents) at least.
    middleware: tuple[str, ...] = (
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
    )
    method = "GET"
    content_type = "application/json"
    # Answer X-Request-ID as kit.logs.RequestIdMiddleware does, where the full stack
    # behind this path has it (the API's; not the agent API's own small stack).
    request_ids = False

    def __init__(self) -> None:
        self._load()
        setting_changed.connect(self._setting_changed, weak=False)

    def fallback(self) -> WsgiApp:
        """The Django application that answers whatever this one does not."""
        raise NotImplementedError

    def answer(self, request: WSGIRequest) -> bytes | None:
        """The body of the 200, or None to let Django answer."""
        raise NotImplementedError

    def _load(self) -> None:
        noop: Callable[[HttpRequest], None] = lambda request: None  # noqa: E731
        self.checks = [import_string(m)(noop) for m in settings.MIDDLEWARE if m in self.middleware]
        self.headers: dict[bool, list[tuple[str, str]]] = {}
        self.django = self.fallback()

    def _setting_changed(self, **kwargs: Any) -> None:  # tests change settings
        self._load()

    def _response_headers(self, request: HttpRequest) -> list[tuple[str, str]]:
        """What the middleware adds to a 200 of content_type, worked out once per scheme."""
        secure = request.is_secure()
        if secure not in self.headers:
            response = HttpResponse(content_type=self.content_type)
            for middleware in reversed(self.checks):
                if hasattr(middleware, "process_response"):
                    response = middleware.process_response(request, response)
            own = ("content-type", "content-length")
            self.headers[secure] = [(k, v) for k, v in response.items() if k.lower() not in own]
        return self.headers[secure]

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request_started.send(sender=self.__class__, environ=environ)
        try:
            answer = self._answer(environ)
        except Exception:  # Django answers, and logs the error if it happens again
            logger.debug("%s failed; Django answers.", type(self).__name__, exc_info=True)
            answer = None
        if answer is None:
            return self.django(environ, start_response)
        try:
            content, headers = answer
            start_response(
                "200 OK",
                [
                    ("Content-Type", self.content_type),
                    ("Content-Length", str(len(content))),
                    *headers,
                ],
            )
            return [content]
        finally:
            request_finished.send(sender=self.__class__)

    def _answer(self, environ: dict[str, Any]) -> tuple[bytes, list[tuple[str, str]]] | None:
        request = WSGIRequest(environ)
        if request.method != self.method:
            return None
        try:
            for middleware in self.checks:
                check = getattr(middleware, "process_request", None)
                if check is not None and check(request) is not None:
                    return None  # a redirect: Django sends it
        except Exception:
            return None  # a host not allowed, say: Django answers and logs it
        content = self.answer(request)
        if content is None:
            return None
        headers = self._response_headers(request)
        if self.request_ids:  # no log line here: this is the hot path
            given = request.headers.get(logs.HEADER, "")
            headers = [*headers, (logs.HEADER, logs.request_id_from(given))]
        return content, headers
