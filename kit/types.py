"""Request types for the type checker; nothing here runs differently at request time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest

if TYPE_CHECKING:
    from django_htmx.middleware import HtmxDetails

    from accounts.models import User


class AuthedRequest(HttpRequest):
    """A request to a page that needs sign-in (every page not marked
    `login_not_required`): LoginRequiredMiddleware has already turned anonymous
    visitors away, so `user` is a `User`. `htmx` is set by HtmxMiddleware."""

    user: User
    htmx: HtmxDetails
