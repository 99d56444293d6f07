"""Every place Raydeck reaches past Django's documented API, and why, in one file.

The contract: the hot paths (agent heartbeats, the API's cluster list and token lookup,
the per-token rate limit) skip work Django would repeat on every request, and that needs
a handful of Django internals that a minor release may change. They live here and only
here, each behind a small function with a documented meaning, so that an upgrade of
Django (pinned to 5.2.x in pyproject.toml), django's Redis cache backend or psycopg has
one file to re-read. Each function is covered by tests that fail if the internal moves:
tests/kit/test_statements.py (compiled statements on SQLite and PostgreSQL),
tests/clusters/test_agent_api.py and tests/api (the lean paths answer as the full stack
does), tests/accounts/test_tokens.py (rate limits). Nothing else may use a private name
of Django's (`_meta` on models is public API despite its name).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.cache.backends.redis import RedisCache
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.db.models import QuerySet
from django.utils.module_loading import import_string


def install_middleware(handler: WSGIHandler, middleware: Iterable[str]) -> None:
    """Build `handler`'s middleware chain from `middleware` (dotted paths, outermost
    first) instead of settings.MIDDLEWARE: Django's own `load_middleware`, less the
    hooks none of the lean paths' middleware has (view, template response, exception)."""
    handler._view_middleware = []  # type: ignore[attr-defined]
    handler._template_response_middleware = []  # type: ignore[attr-defined]
    handler._exception_middleware = []  # type: ignore[attr-defined]
    chain = convert_exception_to_response(handler._get_response)  # type: ignore[attr-defined]
    for dotted in reversed(list(middleware)):
        chain = convert_exception_to_response(import_string(dotted)(chain))
    handler._middleware_chain = chain  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CompiledQuery:
    """A `.values()` queryset's SQL and parameters as the ORM would send them, its
    column names, and the ORM's converters for the columns that have any."""

    sql: str
    params: tuple[Any, ...]
    names: list[str]
    converters: list[tuple[int, tuple[list[Any], Any]]]


def compile_values_queryset(queryset: QuerySet) -> CompiledQuery:
    """What `list(queryset)` would run and how it would convert the rows, without
    running it (the compiler's select list and converters are internal)."""
    compiler = queryset.query.get_compiler(queryset.db)
    sql, params = compiler.as_sql()
    fields = [s[0] for s in compiler.select[0 : compiler.col_count]]
    query = queryset.query
    names = [*query.extra_select, *query.values_select, *query.annotation_select]
    if len(names) != compiler.col_count:
        raise ValueError("A Statement needs a .values() queryset.")
    converters = list(compiler.get_converters(fields).items())
    return CompiledQuery(sql=sql, params=tuple(params), names=names, converters=converters)


def prepared_cursor(connection: Any) -> Any:
    """Django's cursor (query logging, execute wrappers, error translation) around, on
    PostgreSQL, a server-side-binding psycopg cursor: with the database's OPTIONS
    prepare_threshold set (production settings), psycopg prepares a statement it has
    run that many times on the connection, and PostgreSQL stops planning it anew.
    Django's own cursors bind client-side and are never prepared."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    # Here, not at the top: on SQLite (the embedded default) psycopg would cost every
    # process 12 MB and 40 ms of start for nothing; on PostgreSQL Django loaded it.
    import psycopg

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = psycopg.Cursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)


def redis_client(backend: RedisCache) -> Any:
    """The backend's redis client, made once per backend (Django makes one for every
    call, a third of a counter's cost; backends are per thread, clients thread-safe)."""
    cache_client = backend._cache  # type: ignore[attr-defined]
    client = getattr(cache_client, "_raydeck_client", None)
    if client is None:
        client = cache_client._raydeck_client = cache_client.get_client(write=True)
    return client
