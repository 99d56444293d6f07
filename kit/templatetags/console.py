"""Template helpers of the console, loaded everywhere (TEMPLATES builtins)."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from kit import inline_assets

register = template.Library()

_UNITS = [
    (86400 * 365, "year"),
    (86400 * 30, "month"),
    (86400, "day"),
    (3600, "hour"),
    (60, "minute"),
]


def relative(moment: datetime, now: datetime) -> str:
    seconds = int((now - moment).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 45:
        return "just now"
    for size, unit in _UNITS:
        if seconds >= size:
            count = round(seconds / size)
            text = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {text}" if future else f"{text} ago"
    return "in a minute" if future else "a minute ago"


@register.simple_tag
def reltime(moment: datetime | None) -> SafeString | str:
    """A relative time ("3 minutes ago") with the exact UTC time on hover. Written in
    Python rather than as an included template: list pages render it once per row."""
    if moment is None:
        return "—"
    exact = moment.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        exact.isoformat(timespec="seconds"),
        exact.strftime("%Y-%m-%d %H:%M:%S UTC"),
        relative(moment, timezone.now()),
    )


@register.simple_tag
def inline_style(path: str) -> SafeString:
    """A stylesheet of static/ inside the page (kit/inline_assets.py says why)."""
    text = inline_assets.text(settings.RAYDECK_STATIC_DIR, path)
    return format_html("<style>{}</style>", mark_safe(text))  # noqa: S308


@register.simple_tag
def inline_script(path: str) -> SafeString:
    """A script of static/ inside the page, run where it stands (kit/inline_assets.py)."""
    text = inline_assets.text(settings.RAYDECK_STATIC_DIR, path)
    return format_html("<script>{}</script>", mark_safe(text))  # noqa: S308
