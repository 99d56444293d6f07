"""The API's busiest read, the cluster list (CLIs, scripts and dashboards poll it), on a
lean WSGI path (kit/lean.py): the same token check, rate limit, organization and
permission checks, query (clusters.selectors.cluster_page) and JSON rendering as the ninja
endpoint, without Django's middleware chain, URL resolver and ninja's dispatch.

It answers only a 200 it is sure of; a missing or bad token, another organization,
invalid parameters, the rate limit and every error go to the full Django application,
which answers them in the API's error shape as for any other endpoint.

Loaded with the API, by the first request it handles (console/wsgi.py): its schemas are
the endpoints'. `handles` lives in console/wsgi.py, which needs it on every request.
"""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied
from django.core.handlers.wsgi import WSGIRequest
from pydantic import ValidationError

from accounts.api_auth import check_rate, identity_of
from accounts.api_context import organization_of
from accounts.permissions import token_may
from clusters.api import ClusterFilters, ClusterOut
from clusters.selectors import cluster_page
from kit.api.errors import ApiError
from kit.api.pagination import page_of
from kit.lean import LeanApp, WsgiApp

from .endpoints import api

CLUSTER_LIST = re.compile(r"/api/v1/orgs/(?P<org>[^/]+)/clusters")
_PAGE = page_of(ClusterOut)
_FILTERS = tuple(ClusterFilters.model_fields)


class ApiReadApp(LeanApp):
    # The full stack's headers on a JSON 200 of the API, but Vary: Cookie (no cookie
    # is read here): HTTPS and host checks, HSTS, nosniff, framing and CSP.
    middleware = (
        *LeanApp.middleware,
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "csp.middleware.CSPMiddleware",
    )
    content_type = "application/json; charset=utf-8"
    request_ids = True

    def __init__(self, django: WsgiApp) -> None:
        self._django = django
        super().__init__()

    def fallback(self) -> WsgiApp:
        # The process's own Django application: a second one would index the static
        # files again (WhiteNoise) and hold a second middleware chain.
        return self._django

    def answer(self, request: WSGIRequest) -> bytes | None:
        match = CLUSTER_LIST.fullmatch(request.path_info)
        if match is None:
            return None
        identity = identity_of(request)
        if identity is None:
            return None
        try:
            page = ClusterFilters.model_validate(
                {name: request.GET[name] for name in _FILTERS if name in request.GET}
            )
        except ValidationError:
            return None
        org = match["org"]
        try:
            # Refusals before the request is counted, so Django counts them once.
            if not token_may(identity, "project.list", organization_of(identity, org)):
                return None
            check_rate(identity)
            result = cluster_page(
                identity, org, page, project=page.project, state=page.state, cloud=page.cloud
            )
        except (ApiError, PermissionDenied):
            return None
        data = _PAGE.model_validate(result).model_dump()
        return api.renderer.render(request, data, response_status=200)
