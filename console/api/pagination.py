"""Keyset pages: `?limit=` (1..200) and an opaque `?cursor=` holding the sort values of
the last row sent. One query per page however deep the client goes, and rows added
meanwhile neither repeat nor shift the next page."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet
from ninja import Field, Schema
from pydantic import create_model

from .errors import invalid
from .schema import Out

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class PageParams(Schema):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Rows per page.")
    cursor: str | None = Field(
        None, description="`next_cursor` of the previous page; absent for the first page."
    )


_page_models: dict[type, type[Out]] = {}


def page_of(item: type[Out]) -> type[Out]:
    """The schema of a page of `item`s: {"items": [...], "next_cursor": str | null}."""
    if item not in _page_models:
        name = item.__name__.removesuffix("Out") + "Page"
        _page_models[item] = create_model(  # type: ignore[call-overload]
            name,
            __base__=Out,
            items=(list[item], ...),  # type: ignore[valid-type]
            next_cursor=(str | None, None),
        )
    return _page_models[item]


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


def keyset_page(
    queryset: QuerySet, params: PageParams, order: Sequence[str]
) -> tuple[list[Any], str | None]:
    """A page of `queryset` in `order` (model fields, "-" for descending; the last one
    must be unique, e.g. "pk") after `params.cursor`, and the cursor of the next page."""
    names = [o.lstrip("-") for o in order]
    rows = queryset.order_by(*order)
    if params.cursor:
        values = _decode(params.cursor, queryset.model, names)
        after = Q()
        for i, name in enumerate(names):
            op = "lt" if order[i].startswith("-") else "gt"
            step = Q(**{f"{name}__{op}": values[i]})
            for prev_name, prev_value in zip(names[:i], values[:i], strict=True):
                step &= Q(**{prev_name: prev_value})
            after |= step
        rows = rows.filter(after)
    items = list(rows[: params.limit + 1])
    if len(items) <= params.limit:
        return items, None
    items = items[: params.limit]
    last = items[-1]
    if isinstance(last, dict):  # a .values() queryset
        return items, _encode([last[n] for n in names])
    return items, _encode([getattr(last, n) for n in names])
