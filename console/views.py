"""Wiring shared by every console page: the organization-scoped base view, pagination,
the home redirect and the load balancer probes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Page, Paginator
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseClientRedirect

from accounts.models import Membership, Organization
from accounts.permissions import require
from accounts.sso.enforcement import sso_blocks, sso_required_response
from console.types import AuthedRequest

SESSION_CURRENT_ORG = "raydeck_org"


class OrgView(View):
    """Base of every page under /o/<org_slug>/.

    The organization comes from the URL and is looked up among the organizations the
    user belongs to, so another organization's pages are indistinguishable from
    missing ones (404). An organization that requires SSO answers a session not signed
    in through its IdP with a page that leads there (accounts.sso.enforcement).
    `permission`, when set, is checked against the organization
    (or `permission_target()`) before the handler runs.
    """

    permission: str | None = None
    organization: Organization
    request: AuthedRequest

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # The same object as `request` (set by setup()), typed as signed in.
        user = self.request.user
        # The user's memberships are their visibility (Organization.visible_to); they
        # are loaded once and also serve role checks and the switcher.
        membership = user.membership_in(kwargs["org_slug"])
        if membership is None:
            raise Http404("No such organization.")
        self.organization = membership.organization
        sso_connection = sso_blocks(request, self.organization)
        if sso_connection is not None:
            return sso_required_response(request, sso_connection)
        if request.session.get(SESSION_CURRENT_ORG) != self.organization.slug:
            request.session[SESSION_CURRENT_ORG] = self.organization.slug
        self.load_objects(**kwargs)
        if self.permission:
            require(user, self.permission, self.permission_target())
        return super().dispatch(request, *args, **kwargs)

    def load_objects(self, **kwargs: Any) -> None:
        """Fetch the URL's other objects, each through `visible_to` and inside
        `self.organization` (404 otherwise). Runs before the permission check."""

    def permission_target(self) -> Any:
        return self.organization

    def render(
        self, template: str, context: dict[str, Any] | None = None, status: int = 200
    ) -> HttpResponse:
        base = {
            "organization": self.organization,
            "org_role": self.request.user.org_role(self.organization),
        }
        return render(self.request, template, {**base, **(context or {})}, status=status)

    def partial(self, template: str, name: str) -> str:
        """The named partial of `template` for HTMX requests, the whole page otherwise."""
        if self.request.htmx and not self.request.htmx.boosted:
            return f"{template}#{name}"
        return template


def done(request: HttpRequest, url: str, message: str | None = None) -> HttpResponse:
    """After a successful write: HTMX navigates by header, a plain POST redirects."""
    if message:
        messages.success(request, message)
    if getattr(request, "htmx", False):
        return HttpResponseClientRedirect(url)
    return redirect(url)


def paginate(request: HttpRequest, items: Any, per_page: int | None = None) -> Page:
    paginator = Paginator(items, per_page or settings.RAYDECK_PAGE_SIZE)
    return paginator.get_page(request.GET.get("page"))


def home(request: AuthedRequest) -> HttpResponse:
    """Send the user to the organization they last used, or to onboarding."""
    from accounts.selectors import invitations_for
    from accounts.services.invitations import invitation_token

    slug = request.session.get(SESSION_CURRENT_ORG)
    memberships = Membership.objects.filter(user=request.user).select_related("organization")
    slugs = [m.organization.slug for m in memberships]
    if slug in slugs:
        return redirect("project_list", org_slug=slug)
    invitations = list(invitations_for(request.user))
    for invitation in invitations:
        invitation.token = invitation_token(invitation)
    if slugs and not invitations:
        return redirect("project_list", org_slug=sorted(slugs)[0])
    return render(
        request, "console/welcome.html", {"invitations": invitations, "memberships": memberships}
    )


@login_not_required
@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@login_not_required
@require_GET
@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready when the database and the Celery broker answer."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        from console.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {exc.__class__.__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
