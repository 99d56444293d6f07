"""The roof's own pages: the home redirect, the organization's overview and the load
balancer probes."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.defaults import server_error as django_server_error

from accounts.models import Membership
from accounts.views.base import SESSION_CURRENT_ORG, OrgView
from kit.outages import dependency_down, outage_response
from kit.types import AuthedRequest

from .overview import overview

logger = logging.getLogger(__name__)


def home(request: AuthedRequest) -> HttpResponse:
    """Send the user to the organization they last used, or to onboarding."""
    from accounts.selectors import invitations_for
    from accounts.services.invitations import invitation_token

    slug = request.session.get(SESSION_CURRENT_ORG)
    memberships = Membership.objects.filter(user=request.user).select_related("organization")
    slugs = [m.organization.slug for m in memberships]
    if slug in slugs:
        return redirect("org_overview", org_slug=slug)
    invitations = list(invitations_for(request.user))
    for invitation in invitations:
        invitation.token = invitation_token(invitation)
    if slugs and not invitations:
        return redirect("org_overview", org_slug=sorted(slugs)[0])
    return render(
        request, "console/welcome.html", {"invitations": invitations, "memberships": memberships}
    )


class OverviewView(OrgView):
    """What runs now, what failed lately and, for a new organization, its first steps
    (console/overview.py lists the sections; workloads add theirs there)."""

    permission = "organization.view"

    def get(self, request: AuthedRequest, org_slug: str) -> HttpResponse:
        sections = overview(self.organization, request.user)
        return self.render("console/overview.html", {"sections": sections})


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


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's 500 handler: a database, cache or broker that is down is a 503 with
    Retry-After (kit/outages.py); anything else is the 500 page, in the signed-in layout
    (navigation, switcher) when that renders, else bare (Django's own handler)."""
    import sys

    if dependency := dependency_down(sys.exc_info()[1]):
        return outage_response(request, dependency)
    try:
        return render(request, "500.html", status=500)
    except Exception:  # whatever broke the request may break the layout too
        logger.exception("the 500 page could not render in the console's layout")
        return django_server_error(request)
