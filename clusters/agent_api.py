"""The agent API (/agent/v1/): separate from the user API, authenticated only by node
tokens, each call confined to the node (and so the cluster) its token belongs to; and,
open to all, the simple package index nodes install the agent from (/agent/v1/simple/)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import ResolverMatch, path
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from kit.django_internals import install_middleware
from kit.jsonbody import BodyError, load_object
from kit.lean import LeanApp

from .agent_package import PROJECT_NAME, agent_wheel
from .services import agents

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def agent_endpoint(
    authenticate: Callable[[str], Any],
) -> Callable[[Callable[[HttpRequest, Any, dict[str, Any]], dict[str, Any]]], Any]:
    """Token in, JSON body in, JSON out; no cookies, so no CSRF and no session. The
    token is checked (`authenticate` returns who it is) before the body is read, and the
    body is parsed with bounds: nobody without a credential gets the parser's time."""

    def decorate(
        view: Callable[[HttpRequest, Any, dict[str, Any]], dict[str, Any]],
    ) -> Callable[[HttpRequest], HttpResponse]:
        @csrf_exempt
        @login_not_required
        @require_POST
        def wrapper(request: HttpRequest) -> HttpResponse:
            token = _bearer(request)
            if not token:
                return _error(401, "unauthenticated", "Send the node token as a Bearer token.")
            try:
                caller = authenticate(token)
                if len(request.body) > MAX_BODY_BYTES:
                    return _error(413, "too_large", "The body is too large.")
                try:
                    body = load_object(request.body)
                except BodyError as exc:
                    return _error(400, exc.code, str(exc))
                return JsonResponse(view(request, caller, body))
            except agents.AgentAuthError as exc:
                return _error(401, "unauthenticated", str(exc))
            except agents.AgentRequestError as exc:
                return _error(400, "invalid_body", str(exc))

        return wrapper

    return decorate


@agent_endpoint(agents.bootstrap_token_checked)
def register(request: HttpRequest, token: str, body: dict[str, Any]) -> dict[str, Any]:
    return agents.registration_answer(agents.node_register(bootstrap_token=token, body=body))


@agent_endpoint(agents.node_for_credential)
def heartbeat(
    request: HttpRequest, node: agents.HeartbeatNode, body: dict[str, Any]
) -> dict[str, Any]:
    return agents.node_heartbeat(node=node, body=body)


# --- The agent package: a PEP 503 simple index that AWS/GCP boot scripts install from ---
# Open to anyone (a node has no credential before it registers); it serves the agent's
# wheel and nothing else.


def _simple_page(title: str, links: list[tuple[str, str]]) -> HttpResponse:
    anchors = "\n".join(f'    <a href="{escape(h)}">{escape(text)}</a><br>' for h, text in links)
    page = (
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
        f'content="1.0">\n    <title>{escape(title)}</title>\n  </head>\n  <body>\n'
        f"{anchors}\n  </body>\n</html>\n"
    )
    return HttpResponse(page, content_type="text/html; charset=utf-8")


@csrf_exempt  # reads only (GET): nothing to forge; other methods get a plain 405
@login_not_required
@require_GET
def simple_index(request: HttpRequest) -> HttpResponse:
    return _simple_page("Simple index", [(f"{PROJECT_NAME}/", PROJECT_NAME)])


@csrf_exempt  # reads only (GET): nothing to forge; other methods get a plain 405
@login_not_required
@require_GET
def simple_project(request: HttpRequest) -> HttpResponse:
    wheel = agent_wheel()
    return _simple_page(
        f"Links for {PROJECT_NAME}", [(f"{wheel.filename}#sha256={wheel.sha256}", wheel.filename)]
    )


@csrf_exempt  # reads only (GET): nothing to forge; other methods get a plain 405
@login_not_required
@require_GET
def simple_file(request: HttpRequest, filename: str) -> HttpResponse:
    wheel = agent_wheel()
    if filename != wheel.filename:
        raise Http404("No such file.")
    response = HttpResponse(wheel.data, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{wheel.filename}"'
    return response


urlpatterns = [
    path("register", register, name="agent_register"),
    path("heartbeat", heartbeat, name="agent_heartbeat"),
    path("simple/", simple_index, name="agent_simple_index"),
    path(f"simple/{PROJECT_NAME}/", simple_project, name="agent_simple_project"),
    path(f"simple/{PROJECT_NAME}/<str:filename>", simple_file, name="agent_simple_file"),
]

HEARTBEAT_PATH = "/agent/v1/heartbeat"  # console/urls.py mounts urlpatterns at agent/v1/
# The middleware that means something to a token-only JSON API (kit/lean.py); the
# others handle cookies (sessions, CSRF, login, messages, allauth, session expiry, audit
# context) or HTML pages (CSP, framing, htmx): the agent API reads no cookie and
# authenticates every request by its Bearer token.
AGENT_MIDDLEWARE = LeanApp.middleware


class HeartbeatHandler(WSGIHandler):
    """Django's own handler (request_started/finished, so database connections are
    checked and recycled as for any request; errors become logged 500s) running the
    `heartbeat` view behind AGENT_MIDDLEWARE only. HeartbeatApp hands it every request
    it does not answer itself."""

    def load_middleware(self, is_async: bool = False) -> None:
        install_middleware(self, [m for m in settings.MIDDLEWARE if m in AGENT_MIDDLEWARE])

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        match = ResolverMatch(
            heartbeat, (), {}, url_name="agent_heartbeat", route="agent/v1/heartbeat"
        )
        request.resolver_match = match
        return match


class HeartbeatApp(LeanApp):
    """The WSGI application for HEARTBEAT_PATH alone (console/wsgi.py routes that exact
    path here). It answers a heartbeat that Django would answer with 200: a POST with a
    Bearer token, a JSON object of at most MAX_BODY_BYTES, a credential that belongs to
    a live node and a valid state. Anything else goes to HeartbeatHandler, which
    answers exactly as the full stack does (401, 400, 405, 413, redirect, logged 500)."""

    method = "POST"

    def fallback(self) -> HeartbeatHandler:
        return HeartbeatHandler()

    def answer(self, request: WSGIRequest) -> bytes | None:
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        token = token.strip()
        length = request.META.get("CONTENT_LENGTH") or ""
        if scheme.lower() != "bearer" or not token or not length.isdigit():
            return None
        if int(length) > MAX_BODY_BYTES:
            return None
        raw = request.body
        request.environ["wsgi.input"] = io.BytesIO(raw)  # for Django, should it answer after all
        try:
            node = agents.node_for_credential(token)
            answer = agents.node_heartbeat(node=node, body=load_object(raw))
        except (agents.AgentAuthError, agents.AgentRequestError, BodyError):
            return None
        return json.dumps(answer).encode()
