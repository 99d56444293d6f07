"""The API's pages: `?limit=` (1..200) and an opaque `?cursor=` (kit/keyset.py reads
the rows), answered as {"items": [...], "next_cursor": ...}."""

from __future__ import annotations

from ninja import Field, Schema
from pydantic import create_model

from kit.keyset import MAX_LIMIT

from .schema import Out

DEFAULT_LIMIT = 50


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
