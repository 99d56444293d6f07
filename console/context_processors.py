"""What every console page needs: the organizations for the switcher."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    match = request.resolver_match
    return {
        # Loaded once per request (User.current_memberships), shared with role checks.
        "my_organizations": [m.organization for m in user.current_memberships()],
        "current_org_slug": match.kwargs.get("org_slug") if match else None,
    }
