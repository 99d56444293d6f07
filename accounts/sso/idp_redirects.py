"""Sending a browser to its identity provider past the console's Content Security Policy."""

from __future__ import annotations

from urllib.parse import urlparse

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render

from ..models import SsoConnection


def idp_origin(connection: SsoConnection) -> str | None:
    """Where the browser goes to sign in: the SAML sign-on URL's origin, or the OIDC
    issuer's."""
    app_settings = connection.social_app.settings or {}
    url = app_settings.get("idp", {}).get("sso_url") or app_settings.get("server_url") or ""
    parts = urlparse(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def allow_form_posts_to_idp(
    response: HttpResponseBase, connection: SsoConnection
) -> HttpResponseBase:
    """A page with a form that starts a sign-in at `connection`'s IdP: the POST is
    answered with a redirect there, which the CSP's form-action 'self' would block
    (browsers apply it to redirects too). Allow that one origin, on this page only."""
    origin = idp_origin(connection)
    if origin is not None:
        response._csp_update = {"form-action": [origin]}  # type: ignore[attr-defined]
    return response


def leave_for_idp(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """`response`, unless it redirects a form POST to another site (the IdP): the
    console's CSP (`form-action 'self'`) also covers the redirects that follow a form
    submission, so a browser would block it. Such a redirect becomes a page that goes
    to the IdP by itself (meta refresh, which form-action does not cover), with a link.
    `allow_form_posts_to_idp` covers pages that know their IdP in advance; this covers
    "Sign in with SSO" (the IdP is found from what was typed) and OIDC (the authorize
    endpoint may be on another origin than the issuer)."""
    location = response.get("Location", "") if response.status_code in (301, 302, 303) else ""
    if request.method != "POST" or not location:
        return response
    target = urlparse(location)
    if not target.netloc or target.netloc == request.get_host():
        return response
    return render(
        request, "accounts/sso_redirect.html", {"location": location, "idp_host": target.hostname}
    )
