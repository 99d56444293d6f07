"""The end of every SSO sign-in, after the protocol view verified the IdP's answer:
the same for SAML and OIDC.

`finish_sso_sign_in(request, connection=..., claims=..., state=...)` either shows the
"test connection" result (when `state` came from the settings page's test button and
the browser belongs to an owner of that organization) or runs the sign-in service,
signs the person in and marks the session as signed in through this connection (the
mark that SSO enforcement looks for, see accounts.sso.enforcement).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from ..audit import audit
from ..models import SsoConnection
from ..permissions import has_perm
from .enforcement import mark_signed_in_through
from .services import IdpClaims, SsoRefused, sso_sign_in, sso_sign_in_preview

# Put in the allauth state by the "test connection" button (see views.SsoTestView).
TEST_STATE_KEY = "raydeck_sso_test"


def sso_error(request: HttpRequest, message: str, status: int, *, detail: str = "") -> HttpResponse:
    """A sign-in that did not happen: a page that says why, never a 500."""
    return render(
        request,
        "accounts/sso_error.html",
        {"message": message, "detail": detail, "organization": None},
        status=status,
    )


def finish_sso_sign_in(
    request: HttpRequest,
    *,
    connection: SsoConnection,
    claims: IdpClaims,
    state: dict[str, Any],
) -> HttpResponse:
    organization = connection.organization
    if TEST_STATE_KEY in state:
        return _finish_test(request, connection, claims, state)
    if not connection.enabled:
        return sso_error(request, f"Single sign-on is switched off for {organization}.", 403)
    try:
        result = sso_sign_in(connection=connection, claims=claims)
    except SsoRefused as exc:
        # The organization's own IdP vouched for this person: worth the owners' attention
        # (forged or malformed answers are only logged: anyone can send those).
        audit(
            actor=None,
            actor_email=claims.email,
            verb="sso.login_refused",
            target=connection,
            changes={"subject": [None, claims.subject], "reason": [None, str(exc)]},
        )
        return sso_error(request, str(exc), 403)
    if not result.has_access or result.user is None:
        return sso_error(
            request,
            f"Your account at the identity provider no longer gives access to "
            f"{organization}. Ask its administrator to add you to a group that does.",
            403,
        )
    login(request, result.user, backend=settings.AUTHENTICATION_BACKENDS[0])
    mark_signed_in_through(request, connection)
    next_url = state.get("next")
    if not next_url or not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = reverse("project_list", args=[organization.slug])
    return redirect(next_url)


def _finish_test(
    request: HttpRequest, connection: SsoConnection, claims: IdpClaims, state: dict[str, Any]
) -> HttpResponse:
    """Show what a sign-in with these claims would do; change nothing but the audit log."""
    user = request.user
    if (
        state.get(TEST_STATE_KEY) != connection.pk
        or not user.is_authenticated
        or not has_perm(user, "sso.manage", connection.organization)
    ):
        return sso_error(request, "This connection test was not started by you.", 403)
    preview = sso_sign_in_preview(connection=connection, claims=claims)
    audit(
        actor=user,
        verb="sso.test",
        target=connection,
        changes={
            "subject": [None, claims.subject],
            "email": [None, claims.email],
            "groups": [None, list(claims.groups)],
            "role": [None, preview.decision.org_role],
        },
    )
    return render(
        request,
        "accounts/sso_test_result.html",
        {
            "organization": connection.organization,
            "org_role": user.org_role(connection.organization),
            "connection": connection,
            "claims": claims,
            "preview": preview,
        },
    )
