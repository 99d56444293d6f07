"""Formatting for the cluster pages: durations of steps and sizes of machines."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def duration(milliseconds: int | None) -> str:
    """850 → "850 ms", 3200 → "3.2 s", 125000 → "2 min 5 s", 3780000 → "1 h 3 min"."""
    if milliseconds is None:
        return ""
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def megabytes(value: float | None) -> str:
    """Memory given in MB, shown in the unit people think in: "512 MB", "16 GB"."""
    if value is None:
        return "—"
    if value < 1024:
        return f"{value:.0f} MB"
    gigabytes = value / 1024
    return f"{gigabytes:.1f} GB".replace(".0 GB", " GB")


@register.filter
def cpus(value: float | None) -> str:
    """2.0 → "2", 0.5 → "0.5"."""
    if value is None:
        return "—"
    return f"{value:g}" if value == int(value) else f"{value:.1f}"
