"""What every console page needs: the organizations for the switcher, and the one whose
navigation the page shows."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from accounts.views.base import SESSION_CURRENT_ORG


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    match = request.resolver_match
    url_slug = match.kwargs.get("org_slug") if match else None
    # Loaded once per request (User.current_memberships), shared with role checks.
    memberships = user.current_memberships()
    # The URL's organization, else the one last used: pages outside an organization
    # (profile, a 404, a 403) keep the navigation and the switcher of signed-in pages.
    # Only the user's own organizations: another one's slug in the URL shows nothing.
    current = (
        user.membership_in(url_slug or "")
        or user.membership_in(request.session.get(SESSION_CURRENT_ORG, ""))
        or (memberships[0] if memberships else None)
    )
    return {
        "my_organizations": [m.organization for m in memberships],
        "current_org_slug": url_slug,
        "nav_organization": current.organization if current else None,
        "nav_org_role": current.role if current else None,
    }
