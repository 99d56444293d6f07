"""accounts/allauth_urls.py declares allauth's URLs itself (MFA's pages imported by their
first request): the same routes, names and views, in the same order, as allauth's own
`allauth.urls` with these settings. When an allauth upgrade changes them, this fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, include
from django.urls.resolvers import get_resolver

from kit.lazy_views import LazyView


def flattened(patterns: Any, prefix: str = "") -> Iterator[tuple[str, str | None, Any]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from flattened(entry.url_patterns, prefix + str(entry.pattern))
        else:
            assert isinstance(entry, URLPattern)
            view = entry.callback
            if isinstance(view, LazyView):
                view = view.view
            yield prefix + str(entry.pattern), entry.name, getattr(view, "view_class", view)


def test_the_same_routes_names_and_views_as_allauths_own() -> None:
    ours = list(flattened(include("accounts.allauth_urls")[0].urlpatterns))
    theirs = list(flattened(include("allauth.urls")[0].urlpatterns))
    assert [(route, name) for route, name, _ in ours] == [
        (route, name) for route, name, _ in theirs
    ]
    for (route, _, our_view), (_, _, their_view) in zip(ours, theirs, strict=True):
        assert our_view is their_view, route
    assert any(name == "mfa_authenticate" for _, name, _ in ours)


def test_the_console_serves_them_under_accounts() -> None:
    match = get_resolver().resolve("/accounts/2fa/authenticate/")
    assert match.url_name == "mfa_authenticate"
