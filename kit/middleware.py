"""Session lifetime: an idle timeout and an absolute cap on top of Django's sessions;
addresses with a NUL character refused before any view reads them; a live page whose
session ended reloads instead of drawing the sign-in page inside itself; what the console
sends whole goes compressed."""

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.middleware.gzip import GZipMiddleware
from django.shortcuts import resolve_url

from .api.errors import ApiError, error_response
from .api.middleware import API_PREFIX

SESSION_AUTH_AT = "raydeck_auth_at"
SESSION_SEEN_AT = "raydeck_seen_at"
# Writing the session on every request would cost a database write per page; a
# minute of slack on a 30-minute idle timeout is not worth that.
SEEN_AT_RESOLUTION = 60


class SessionExpiryMiddleware:
    """Ends a signed-in session after RAYDECK_SESSION_IDLE_SECONDS without a request,
    or RAYDECK_SESSION_ABSOLUTE_SECONDS after sign-in, whichever comes first."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            now = time.time()
            session = request.session
            auth_at = session.setdefault(SESSION_AUTH_AT, now)
            seen_at = session.get(SESSION_SEEN_AT, now)
            idle = now - seen_at > settings.RAYDECK_SESSION_IDLE_SECONDS
            too_old = now - auth_at > settings.RAYDECK_SESSION_ABSOLUTE_SECONDS
            if idle or too_old:
                logout(request)
                messages.info(request, "Your session expired. Please sign in again.")
            elif now - seen_at >= SEEN_AT_RESOLUTION or SESSION_SEEN_AT not in session:
                session[SESSION_SEEN_AT] = now
        return self.get_response(request)


def mark_session_authenticated(request: HttpRequest) -> None:
    """Called at sign-in: the absolute lifetime counts from here."""
    now = time.time()
    request.session[SESSION_AUTH_AT] = now
    request.session[SESSION_SEEN_AT] = now


class RefuseNulMiddleware:
    """A NUL character in the query string is never meaningful, and PostgreSQL refuses
    it in any statement (a 500 wherever a filter reaches a query): 400 before any view.
    Under /api/v1/ it is a validation error in the API's error shape, naming the field."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        bad = [name for name, values in request.GET.lists() if any("\x00" in v for v in values)]
        if bad:
            if request.path.startswith(API_PREFIX):  # a field-named validation error
                details = {name: ["A NUL character is not allowed here."] for name in bad}
                return error_response(ApiError(422, "The request is not valid.", details=details))
            return HttpResponseBadRequest(f"The parameter {bad[0]} contains a NUL character.")
        return self.get_response(request)


class HtmxSignInRedirectMiddleware:
    """An HTMX request (a live panel's poll, a swap) that would be sent to the sign-in
    page gets `HX-Refresh` instead: the browser's XHR would follow the redirect and swap
    the whole sign-in page into the panel. Reloaded, the page itself goes to sign-in
    and comes back after it. Sits outside LoginRequiredMiddleware and the session expiry."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.headers.get("HX-Request") == "true"
            and response.status_code in (301, 302, 303, 307, 308)
            and response.get("Location", "").startswith(resolve_url(settings.LOGIN_URL))
        ):
            refresh = HttpResponse(status=204)
            refresh["HX-Refresh"] = "true"
            return refresh
        return response


class CompressMiddleware(GZipMiddleware):
    """Gzip for every whole answer a client accepts it for: pages, live panels and, in
    the embedded default (which serves static files straight from static/, where nothing
    compressed them beforehand), the CSS and scripts, a first visit's largest part.
    Production's static files come pre-compressed (Content-Encoding set: left alone).
    Not a byte range (a stored log's page counts uncompressed bytes), a 304 or a HEAD,
    whose bodies must stay empty. Django pads each answer with random bytes against
    BREACH, and CSRF tokens are masked per response."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if (
            response.status_code != 200
            or request.method == "HEAD"
            or response.has_header("Content-Range")
        ):
            return response
        return super().process_response(request, response)
