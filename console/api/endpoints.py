"""/api/v1's endpoints: the routers of the apps under one NinjaAPI and its OpenAPI
document. Loaded by the API's first request (console/api/urls.py declares the URLs):
ninja and the operations' pydantic models were a third of a web process's start."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from ninja import NinjaAPI

from accounts.api import router as accounts_router
from accounts.api_auth import TokenAuth
from clouds.api import router as clouds_router
from clusters.api import router as clusters_router
from clusters.api_builds import router as image_builds_router
from kit.api import handlers
from kit.api.rendering import ApiRenderer
from workloads.api import router as workloads_router
from workloads.jobs.api import router as jobs_router
from workloads.serve.api import router as services_router
from workloads.workspaces.api import router as workspaces_router

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
    renderer=ApiRenderer(),
    urls_namespace="api-v1",
    docs_url=None,  # our own page below: no CDN, and our CSP
    openapi_url=None,  # our own view below: GET only, built once per process
)
handlers.install(api)
api.add_router("", accounts_router)
api.add_router("", clouds_router)
api.add_router("", clusters_router)
api.add_router("", workloads_router)
api.add_router("", jobs_router)
api.add_router("", workspaces_router)
api.add_router("", services_router)
api.add_router("", image_builds_router)


@login_not_required
@csrf_exempt
@require_GET
def openapi_json(request: HttpRequest) -> HttpResponse:
    """The OpenAPI document, no token needed."""
    global _openapi_document
    if _openapi_document is None:
        document = handlers.document_errors(api.get_openapi_schema(path_prefix="/api/v1/"))
        _openapi_document = json.dumps(document).encode()
    return HttpResponse(_openapi_document, content_type="application/json")


_openapi_document: bytes | None = None


def _token_only(patterns: list[URLPattern | URLResolver]) -> list[URLPattern]:
    """The API authenticates by token and never reads the session: Django's
    LoginRequiredMiddleware and CSRF checks (both about cookies) let its views through,
    and each operation checks the token itself. Ninja's root page is left out."""
    routed = [p for p in patterns if isinstance(p, URLPattern) and p.name != "api-root"]
    for pattern in routed:
        pattern.callback.login_required = False  # type: ignore[attr-defined]
        pattern.callback.csrf_exempt = True  # type: ignore[attr-defined]
    return routed


_ninja_patterns, APP_NAME, NAMESPACE = api.urls
api_patterns = _token_only(_ninja_patterns)
# Each route's view (ninja's patterns of one route share it: it dispatches by method).
views = {str(p.pattern): p.callback for p in reversed(api_patterns)}
