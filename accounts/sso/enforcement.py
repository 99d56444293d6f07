"""SSO enforcement: an organization that requires single sign-on is used only from a
session signed in through its connection.

How it works with people in several organizations: a password sign-in is a sign-in
of the person, and each organization decides whether it accepts that session.

- Every session remembers which organizations' IdPs it was signed in through
  (`mark_signed_in_through`, set by accounts.sso.flow after an SSO sign-in).
- Every page of an organization that requires SSO (accounts.views.base.OrgView) and the
  CLI hand-off answer a session without that mark with a page that sends the person
  through the organization's IdP (`sso_blocks` / `sso_required_response`); the
  break-glass owner is let through. Sessions opened before SSO was required therefore
  lose the organization at their next request, and so do sessions of people the IdP
  no longer lets in (their membership is removed at their next SSO sign-in).
- A password sign-in is refused outright when every organization of the person
  requires SSO and they are the break-glass owner of none (`password_sign_in_refusal`):
  such a session could open nothing. Otherwise it succeeds and serves the other
  organizations.
- API tokens are not sessions: they keep working while their person is a member
  (removal revokes them); service accounts are not people and are not affected.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_htmx.http import HttpResponseClientRedirect

from ..models import Membership, Organization, SsoConnection, User
from .idp_redirects import allow_form_posts_to_idp

SESSION_SSO = "raydeck_sso"  # {str(organization id): connection id}


def mark_signed_in_through(request: HttpRequest, connection: SsoConnection) -> None:
    marks = dict(request.session.get(SESSION_SSO) or {})
    marks[str(connection.organization_id)] = connection.pk
    request.session[SESSION_SSO] = marks


def signed_in_through(request: HttpRequest, connection: SsoConnection) -> bool:
    marks = request.session.get(SESSION_SSO) or {}
    return marks.get(str(connection.organization_id)) == connection.pk


def connection_of(organization: Organization) -> SsoConnection | None:
    try:
        return organization.sso_connection
    except SsoConnection.DoesNotExist:
        return None


def is_enforced_for(connection: SsoConnection | None, user: User) -> bool:
    return (
        connection is not None
        and connection.enabled
        and connection.enforce_sso
        and connection.break_glass_user_id != user.pk
    )


def sso_blocks(request: HttpRequest, organization: Organization) -> SsoConnection | None:
    """The connection this session must sign in through before it may use
    `organization`, or None when it may."""
    connection = connection_of(organization)
    user = request.user
    if not isinstance(user, User) or not is_enforced_for(connection, user):
        return None
    assert connection is not None  # noqa: S101 (is_enforced_for checked it)
    if signed_in_through(request, connection):
        return None
    return connection


def sso_login_url(request: HttpRequest, connection: SsoConnection, next_url: str) -> str:
    """Where a browser starts signing in through `connection` (SAML or OIDC alike)."""
    provider = connection.social_app.get_provider(request)
    return provider.get_login_url(request, process="login", next=next_url)


def sso_required_response(request: HttpRequest, connection: SsoConnection) -> HttpResponse:
    if getattr(request, "htmx", False):
        # A partial would land inside the page: reload it whole to show why.
        return HttpResponseClientRedirect(request.get_full_path())
    response = render(
        request,
        "accounts/sso_required.html",
        {
            "organization": None,
            "required_org": connection.organization,
            "login_url": sso_login_url(request, connection, request.get_full_path()),
        },
        status=403,
    )
    allow_form_posts_to_idp(response, connection)
    return response


def password_sign_in_refusal(user: User) -> str | None:
    """Why `user` may not sign in with a password at all, or None when they may."""
    memberships = list(
        Membership.objects.filter(user=user).select_related("organization__sso_connection")
    )
    if not memberships:
        return None
    enforced = [
        m.organization for m in memberships if is_enforced_for(connection_of(m.organization), user)
    ]
    if len(enforced) < len(memberships):
        return None
    names = ", ".join(org.name for org in enforced)
    return (
        f"{names} requires single sign-on: sign in through your company's identity "
        "provider instead of with a password."
    )
