"""Querysets compiled to SQL once and run many times.

Building and compiling a queryset costs about a millisecond of CPU, several times what
PostgreSQL then spends answering it. For the few reads that run on nearly every API
request (the token lookup, the cluster list), a Statement is compiled once per process
and shape from an ordinary queryset, where `Param("name")` stands for each value that
changes from call to call, and then run with those values. The queryset stays the one
place for the rule (visibility, joins, columns); only the compile is skipped.

Everything a queryset's construction reads must be either a Param or part of the key
the caller caches the Statement under (see `StatementCache`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import Expression, Field, QuerySet

from .django_internals import compile_values_queryset, prepared_cursor


@dataclass(frozen=True)
class _Slot:
    name: str
    field: Field


class Param(Expression):
    """A named placeholder for a value in a queryset that becomes a Statement. With
    `output_field`, the value is prepared for the database as that field prepares it
    (a datetime for SQLite, say); without, it is sent as given."""

    def __init__(self, name: str, output_field: Field | None = None) -> None:
        super().__init__(output_field=output_field or Field())
        self.name = name

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        return "%s", [_Slot(self.name, self.output_field)]


class Statement:
    """The SQL of `queryset` (a `.values()` queryset) with its Params left open.
    `rows(**values)` runs it on the current thread's connection and returns dicts keyed
    by the queryset's column names, converted as the ORM converts them."""

    def __init__(self, queryset: QuerySet) -> None:
        self.alias = queryset.db
        compiled = compile_values_queryset(queryset)
        self.sql, self.params, self.names = compiled.sql, compiled.params, compiled.names
        self.converters = compiled.converters
        self.slots = frozenset(p.name for p in self.params if isinstance(p, _Slot))

    def rows(self, **values: Any) -> list[dict[str, Any]]:
        if set(values) != self.slots:
            raise TypeError(f"Expected values for {sorted(self.slots)}, got {sorted(values)}.")
        connection = connections[self.alias]
        params = [
            p.field.get_db_prep_value(values[p.name], connection) if isinstance(p, _Slot) else p
            for p in self.params
        ]
        with prepared_cursor(connection) as cursor:
            cursor.execute(self.sql, params)
            fetched = cursor.fetchall()
        names = self.names
        if not self.converters:
            return [dict(zip(names, row, strict=True)) for row in fetched]
        out = []
        for raw in fetched:
            row = list(raw)
            for position, (converters, expression) in self.converters:
                value = row[position]
                for convert in converters:
                    value = convert(value, expression, connection)
                row[position] = value
            out.append(dict(zip(names, row, strict=True)))
        return out


class StatementCache:
    """Statements by key, compiled on first use, at most `size` kept (least recently
    used go first). The key must hold every input that changes the queryset's shape
    or its fixed values: for a visibility-scoped query, the organization, the
    principal and its role."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._statements: OrderedDict[Hashable, Statement] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], QuerySet]) -> Statement:
        with self._lock:
            statement = self._statements.get(key)
            if statement is not None:
                self._statements.move_to_end(key)
                return statement
        statement = Statement(build())  # compiled outside the lock: it may query
        with self._lock:
            self._statements[key] = statement
            while len(self._statements) > self.size:
                self._statements.popitem(last=False)
        return statement

    def clear(self) -> None:
        with self._lock:
            self._statements.clear()
