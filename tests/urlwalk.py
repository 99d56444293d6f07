"""Walk every URL pattern of the project, so new pages are covered by the generic
security tests (isolation, CSRF, no writes on GET) without being listed by hand."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver


@dataclass(frozen=True)
class Route:
    pattern: str  # the full route, e.g. "o/<slug:org_slug>/projects/<slug:project_slug>/"
    name: str
    kwargs: tuple[str, ...]

    @property
    def is_org_scoped(self) -> bool:
        return "org_slug" in self.kwargs


def _walk(patterns: list, prefix: str, outer: tuple[str, ...], namespace: str) -> Iterator[Route]:
    for entry in patterns:
        # Named groups work for path() and re_path() patterns alike.
        names = tuple(entry.pattern.regex.groupindex)
        if isinstance(entry, URLResolver):
            ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), outer + names, ns)
        elif isinstance(entry, URLPattern) and entry.name:
            yield Route(prefix + str(entry.pattern), namespace + entry.name, outer + names)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns, "", (), ""))


def our_routes() -> list[Route]:
    """Every route except Django admin's and allauth's (tested by their projects)."""
    return [r for r in all_routes() if not r.pattern.startswith(("admin/", "accounts/", "static/"))]
