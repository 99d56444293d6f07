"""/api/v1: the routers of the apps under one NinjaAPI, its OpenAPI document and the
interactive reference page (Swagger UI, vendored under static/vendor/swagger-ui)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from ninja import NinjaAPI

from accounts.api import router as accounts_router
from clouds.api import router as clouds_router
from clusters.api import router as clusters_router

from . import errors
from .auth import TokenAuth

api = NinjaAPI(
    title="Raydeck API",
    version="1",
    description=(
        "Everything the console does, for scripts, the `raydeck` CLI and the SDK. "
        "Authenticate with an API token: `Authorization: Bearer rdk_…`. Errors are always "
        '`{"error": {"code", "message", "details"}}`; lists are pages of '
        '`{"items", "next_cursor"}`; creates accept an `Idempotency-Key` header.'
    ),
    auth=TokenAuth(),
    urls_namespace="api-v1",
    docs_url=None,  # our own page below: no CDN, and our CSP
)
errors.install(api)
api.add_router("", accounts_router)
api.add_router("", clouds_router)
api.add_router("", clusters_router)


@login_not_required
def docs(request: HttpRequest) -> HttpResponse:
    return render(request, "api/docs.html")


def _public(patterns: list[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    """The API authenticates by token, not by session: Django's LoginRequiredMiddleware
    must let its views through (each one checks the token itself)."""
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            pattern.callback.login_required = False  # type: ignore[attr-defined]
    return patterns


api_patterns, _app_name, _namespace = api.urls
urlpatterns = [
    path("docs", docs, name="api_docs"),
    path("", (_public(api_patterns), _app_name, _namespace)),
]
