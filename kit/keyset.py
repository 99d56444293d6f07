"""Keyset pages: a page size (1..200) and an opaque cursor holding the sort values of
the last row sent. One query per page however deep the client goes, and rows added
meanwhile neither repeat nor shift the next page. The API's query parameters and page
schemas are in kit/api/pagination.py; this part needs no API layer, so a Celery worker
that reads a page through a selector does not load django-ninja."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet

from kit.api.errors import invalid
from kit.statements import Param, StatementCache

MAX_LIMIT = 200


class PageRequest(Protocol):
    """What a page is asked for with (kit.api.pagination.PageParams, for one)."""

    @property
    def limit(self) -> int: ...

    @property
    def cursor(self) -> str | None: ...


def _field(model: type[Model], name: str) -> Any:
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


def _encode(values: list[Any]) -> str:
    raw = json.dumps([v.isoformat() if hasattr(v, "isoformat") else str(v) for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str, model: type[Model], names: list[str]) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        if not isinstance(raw, list) or len(raw) != len(names):
            raise ValueError("wrong length")
        return [_field(model, n).to_python(v) for n, v in zip(names, raw, strict=True)]
    except (ValueError, TypeError, UnicodeError, ValidationError, json.JSONDecodeError):
        raise invalid("cursor", "This cursor is not one this list gave out.") from None


def _after(order: Sequence[str], values: Sequence[Any]) -> Q:
    """Rows after the row whose sort values are `values`, in `order`."""
    names = [o.lstrip("-") for o in order]
    after = Q()
    for i, name in enumerate(names):
        op = "lt" if order[i].startswith("-") else "gt"
        step = Q(**{f"{name}__{op}": values[i]})
        for prev_name, prev_value in zip(names[:i], values[:i], strict=True):
            step &= Q(**{prev_name: prev_value})
        after |= step
    return after


def _cut(items: list[Any], limit: int, names: list[str]) -> tuple[list[Any], str | None]:
    """The page (items beyond `limit` were fetched only to learn there is a next page)."""
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    last = items[-1]
    if isinstance(last, dict):  # a .values() queryset
        return items, _encode([last[n] for n in names])
    return items, _encode([getattr(last, n) for n in names])


def keyset_page(
    queryset: QuerySet, params: PageRequest, order: Sequence[str]
) -> tuple[list[Any], str | None]:
    """A page of `queryset` in `order` (model fields, "-" for descending; the last one
    must be unique, e.g. "pk") after `params.cursor`, and the cursor of the next page."""
    names = [o.lstrip("-") for o in order]
    rows = queryset.order_by(*order)
    if params.cursor:
        rows = rows.filter(_after(order, _decode(params.cursor, queryset.model, names)))
    return _cut(list(rows[: params.limit + 1]), params.limit, names)


def compiled_keyset_page(
    statements: StatementCache,
    key: Hashable,
    build: Callable[[], QuerySet],
    model: type[Model],
    params: PageRequest,
    order: Sequence[str],
    **values: Any,
) -> tuple[list[dict[str, Any]], str | None]:
    """keyset_page for a hot list: the `.values()` queryset that `build()` returns (with
    `Param`s for `values`) is compiled once per `key`, page size and first-or-later
    page, and run as a Statement (kit/statements.py). `key` must hold whatever
    else `build` reads."""
    names = [o.lstrip("-") for o in order]
    after = _decode(params.cursor, model, names) if params.cursor else []
    slots = [f"after_{name}" for name in names] if after else []

    def page_query() -> QuerySet:
        rows = build().order_by(*order)
        if slots:
            fields = [_field(model, n) for n in names]
            rows = rows.filter(
                _after(order, [Param(s, f) for s, f in zip(slots, fields, strict=True)])
            )
        return rows[: params.limit + 1]

    statement = statements.get((key, params.limit, bool(slots)), page_query)
    rows = statement.rows(**values, **dict(zip(slots, after, strict=True)))
    return _cut(rows, params.limit, names)
