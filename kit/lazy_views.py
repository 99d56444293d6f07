"""Views imported by their first request rather than by the URL conf, for the few whose
modules load heavy libraries that no other request needs (SAML's python3-saml, lxml and
xmlsec: 15 MB of every web process, benchmarks/README.md "idle memory"; the JSON API's
ninja and pydantic models, a third of a cold start, "Cold start to /healthz"). Django
builds its URL maps (and `reverse`) from the patterns alone."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

# What Django's URL machinery asks of a view while it builds its maps: answering these
# must not import the view.
_NOT_THE_VIEWS = frozenset({"view_class", "view_initkwargs"})


class LazyView:
    """The view at `dotted` ("module.attribute"), or with `key` the view `key` of the
    mapping at `dotted` (views a library builds, such as ninja's), imported when first
    called or asked for one of its attributes (middleware reads `csrf_exempt` and
    `login_required` off a view before calling it: the view's own decorators answer,
    not a copy here)."""

    def __init__(self, dotted: str, key: str | None = None) -> None:
        self.dotted, self.key = dotted, key
        self.__module__, _, self.__name__ = dotted.rpartition(".")
        if key is not None:
            self.__name__ += f"[{key!r}]"
        self.__qualname__ = self.__name__

    @cached_property
    def view(self) -> Any:
        found = import_string(self.dotted)
        return found if self.key is None else found[self.key]

    def __call__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.view(request, *args, **kwargs)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _NOT_THE_VIEWS:
            raise AttributeError(name)
        return getattr(self.view, name)
