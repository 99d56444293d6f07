"""Session lifetime: an idle timeout and an absolute cap on top of Django's sessions."""

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

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
