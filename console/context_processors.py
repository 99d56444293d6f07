"""What every console page needs: the organizations for the switcher."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from accounts.selectors import organizations_of

    match = request.resolver_match
    return {
        # Lazy: evaluated only by pages that draw the switcher.
        "my_organizations": organizations_of(user),
        "current_org_slug": match.kwargs.get("org_slug") if match else None,
    }
