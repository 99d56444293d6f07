"""`raydeck login` over HTTP: the CLI's start and poll endpoints, the browser's confirm page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from kit.forms import service_errors_on
from kit.ratelimit import over_limit
from kit.types import AuthedRequest
from kit.views import done

from .. import selectors
from ..audit import client_ip
from ..choices import CliHandoffStatus
from ..forms import CliConfirmForm
from ..models import CliHandoff
from ..services import cli_handoff as handoffs
from ..sso.enforcement import sso_blocks
from ..tokens import (
    CLI_HANDOFF_MINUTES,
    CLI_HANDOFF_POLL_INTERVAL_SECONDS,
    CLI_HANDOFF_POLLS_PER_MINUTE,
    CLI_HANDOFF_STARTS_PER_MINUTE,
)


def _json_error(http_status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    """One error shape: {"error": {"code", "message"}} (and any `extra` keys)."""
    return JsonResponse({**extra, "error": {"code": code, "message": message}}, status=http_status)


def _too_many() -> JsonResponse:
    response = _json_error(
        429, "rate_limited", "Too many requests from this address; wait a minute."
    )
    response["Retry-After"] = "60"
    return response


# The two endpoints below are the CLI's, not a browser's: they neither read nor set a
# cookie (no session, no request.user), and the poll token in the body is the only
# credential, so a forged cross-site request has nothing to ride on. Hence no sign-in
# and no CSRF check.
@csrf_exempt
@login_not_required
@require_POST
@never_cache
def cli_handoff_start(request: HttpRequest) -> HttpResponse:
    """POST /cli/handoff: start `raydeck login`. Answers 201 with the one-time `code` to
    show, the `poll_token` to keep, and `verify_url` (a path on this server) for the
    person to open; then poll /cli/handoff/poll every `interval` seconds."""
    if over_limit(f"cli-handoff:{client_ip(request)}", CLI_HANDOFF_STARTS_PER_MINUTE):
        return _too_many()
    handoff, poll_token = handoffs.cli_handoff_start(
        ip=client_ip(request), user_agent=request.headers.get("User-Agent", "")
    )
    return JsonResponse(
        {
            "code": handoff.code,
            "poll_token": poll_token,
            "verify_url": f"{reverse('cli_verify')}?{urlencode({'code': handoff.code})}",
            "expires_in": CLI_HANDOFF_MINUTES * 60,
            "interval": CLI_HANDOFF_POLL_INTERVAL_SECONDS,
        },
        status=201,
    )


POLL_ANSWERS: dict[str, tuple[int, str, str]] = {
    CliHandoffStatus.DELIVERED: (410, "collected", "This sign-in's token was already collected."),
    CliHandoffStatus.DENIED: (410, "denied", "The sign-in was denied in the browser."),
    CliHandoffStatus.EXPIRED: (410, "expired", "The sign-in expired; run `raydeck login` again."),
}


@csrf_exempt  # see cli_handoff_start
@login_not_required
@require_POST
@never_cache
def cli_handoff_poll(request: HttpRequest) -> HttpResponse:
    """POST /cli/handoff/poll with {"poll_token": ...}: 202 {"status": "pending"} until
    the person confirms, then 200 {"token", "organization"} exactly once; 410 after
    that, after a denial or after expiry; 404 for an unknown poll token."""
    if over_limit(f"cli-handoff-poll:{client_ip(request)}", CLI_HANDOFF_POLLS_PER_MINUTE):
        return _too_many()
    if len(request.body) > 4096:
        return _json_error(413, "too_large", "The body is too large.")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _json_error(400, "invalid_json", "The body is not JSON.")
    poll_token = body.get("poll_token") if isinstance(body, dict) else None
    if not isinstance(poll_token, str) or not poll_token:
        return _json_error(400, "invalid_body", 'Send {"poll_token": "..."}.')
    handoff, secret = handoffs.cli_handoff_poll(poll_token=poll_token[:200])
    if handoff is None:
        return _json_error(404, "not_found", "No sign-in has this poll token.")
    if secret is not None and handoff.organization is not None:
        return JsonResponse(
            {"status": "complete", "token": secret, "organization": handoff.organization.slug}
        )
    status = handoff.status
    if status in POLL_ANSWERS:
        code, error, message = POLL_ANSWERS[status]
        return _json_error(code, error, message, status=str(status))
    return JsonResponse({"status": "pending"}, status=202)


@method_decorator(never_cache, name="dispatch")
class CliVerifyView(View):
    """/cli/verify?code=...: the person who ran `raydeck login` checks the code, picks
    the organization and confirms; the CLI then receives a personal token for it."""

    template = "accounts/cli_verify.html"

    def context(self, request: AuthedRequest, code: str) -> tuple[dict[str, Any], int]:
        if not code:
            return {"code": ""}, 200
        handoff = selectors.cli_handoff_by_code(code)
        if handoff is None:
            return {"code": code, "error": "No sign-in has this code. Check for typos."}, 404
        if handoff.status != CliHandoffStatus.PENDING:
            message = handoffs.CLOSED_HANDOFF_MESSAGES[handoff.status]
            done_already = handoff.status in (
                CliHandoffStatus.CONFIRMED,
                CliHandoffStatus.DELIVERED,
            )
            key = "notice" if done_already else "error"
            return {"code": code, key: message, "handoff": handoff}, 410
        return {"code": handoff.code, "handoff": handoff}, 200

    def get(self, request: AuthedRequest) -> HttpResponse:
        context, status = self.context(request, request.GET.get("code", ""))
        if context.get("handoff") and status == 200:
            context["form"] = CliConfirmForm(user=request.user)
        return render(request, self.template, context, status=status)

    def post(self, request: AuthedRequest) -> HttpResponse:
        context, status = self.context(request, request.POST.get("code", ""))
        handoff: CliHandoff | None = context.get("handoff")
        if handoff is None or status != 200:
            return render(request, self.template, context, status=status)
        if request.POST.get("action") == "deny":
            try:
                handoffs.cli_handoff_deny(handoff=handoff, actor=request.user)
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
            else:
                messages.success(request, "Sign-in denied. Nothing was created.")
            return redirect("home")
        form = CliConfirmForm(request.POST, user=request.user)
        if form.is_valid() and sso_blocks(request, form.cleaned_data["organization"]):
            form.add_error(
                "organization",
                f"{form.cleaned_data['organization'].name} requires single sign-on: open one "
                "of its pages, sign in through its identity provider, then confirm again.",
            )
        if form.is_valid():
            organization = form.cleaned_data["organization"]
            with service_errors_on(form):
                handoffs.cli_handoff_confirm(
                    handoff=handoff,
                    organization=organization,
                    actor=request.user,
                    read_only=form.cleaned_data["read_only"],
                )
                return done(
                    request,
                    reverse("token_list", args=[organization.slug]),
                    f"The CLI is signed in to {organization.name} as you. You can close this "
                    "tab and go back to your terminal.",
                )
        return render(request, self.template, {**context, "form": form})
