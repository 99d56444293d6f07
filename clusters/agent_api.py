"""The agent API (/agent/v1/): separate from the user API, authenticated only by node
tokens, each call confined to the node (and so the cluster) its token belongs to."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .services import agents

MAX_BODY_BYTES = 256 * 1024


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def agent_endpoint(
    view: Callable[[HttpRequest, str, dict[str, Any]], dict[str, Any]],
) -> Callable[[HttpRequest], HttpResponse]:
    """Token in, JSON body in, JSON out; no cookies, so no CSRF and no session."""

    @csrf_exempt
    @login_not_required
    @require_POST
    def wrapper(request: HttpRequest) -> HttpResponse:
        token = _bearer(request)
        if not token:
            return _error(401, "unauthenticated", "Send the node token as a Bearer token.")
        if len(request.body) > MAX_BODY_BYTES:
            return _error(413, "too_large", "The body is too large.")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _error(400, "invalid_json", "The body is not JSON.")
        if not isinstance(body, dict):
            return _error(400, "invalid_body", "The body must be a JSON object.")
        try:
            return JsonResponse(view(request, token, body))
        except agents.AgentAuthError as exc:
            return _error(401, "unauthenticated", str(exc))
        except agents.AgentRequestError as exc:
            return _error(400, "invalid_body", str(exc))

    return wrapper


@agent_endpoint
def register(request: HttpRequest, token: str, body: dict[str, Any]) -> dict[str, Any]:
    return agents.registration_answer(agents.node_register(bootstrap_token=token, body=body))


@agent_endpoint
def heartbeat(request: HttpRequest, token: str, body: dict[str, Any]) -> dict[str, Any]:
    return agents.node_heartbeat(node=agents.node_for_credential(token), body=body)


urlpatterns = [
    path("register", register, name="agent_register"),
    path("heartbeat", heartbeat, name="agent_heartbeat"),
]
