"""Helpers every console page uses: pagination and where to go after a write."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_htmx.http import HttpResponseClientRedirect


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
