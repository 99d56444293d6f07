"""What the account pages share: HTMX's live validation posts a form without saving it."""

from __future__ import annotations

from kit.types import AuthedRequest


def is_validation_only(request: AuthedRequest) -> bool:
    """HTMX live validation posts the form with this flag; nothing is saved."""
    return bool(request.htmx) and request.POST.get("_validate") == "1"
