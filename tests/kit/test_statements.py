"""kit/statements.py: querysets compiled once and run with new values give what the
ORM gives, on SQLite and on PostgreSQL (where they end up prepared)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from clusters.models import Cluster
from kit.statements import Param, Statement, StatementCache
from tests.conftest import Tenant
from tests.factories import ClusterFactory

pytestmark = pytest.mark.django_db

CREATED_AT = Cluster._meta.get_field("created_at")


def names_after(org_id: int) -> Statement:
    return Statement(
        Cluster.objects.filter(organization_id=org_id, created_at__gt=Param("after", CREATED_AT))
        .filter(name__startswith=Param("prefix"))
        .order_by("created_at", "pk")
        .values("name", "created_at", project_slug=F("project__slug"))
    )


def test_a_statement_answers_what_the_orm_answers(tenant_a: Tenant) -> None:
    base = timezone.now() - timedelta(hours=1)
    for i in range(5):
        cluster = ClusterFactory(project=tenant_a.project, cloud=tenant_a.cloud, name=f"s-{i}")
        Cluster.objects.filter(pk=cluster.pk).update(created_at=base + timedelta(minutes=i))
    statement = names_after(tenant_a.org.pk)
    for minutes, prefix in [(-1, "s-"), (1, "s-"), (3, "s-"), (0, "x-"), (10, "s-")]:
        after = base + timedelta(minutes=minutes)
        expected = list(
            Cluster.objects.filter(
                organization=tenant_a.org, created_at__gt=after, name__startswith=prefix
            )
            .order_by("created_at", "pk")
            .values("name", "created_at", project_slug=F("project__slug"))
        )
        assert statement.rows(after=after, prefix=prefix) == expected
    assert [r["name"] for r in statement.rows(after=base, prefix="s-")] == [
        "s-1",
        "s-2",
        "s-3",
        "s-4",
    ]


def test_a_statement_needs_values_and_all_its_params(tenant_a: Tenant) -> None:
    with pytest.raises(ValueError):
        Statement(Cluster.objects.filter(name=Param("name")))
    statement = names_after(tenant_a.org.pk)
    with pytest.raises(TypeError):
        statement.rows(after=timezone.now())
    with pytest.raises(TypeError):
        statement.rows(after=timezone.now(), prefix="s", other=1)


def test_the_cache_compiles_once_per_key_and_forgets_the_oldest(tenant_a: Tenant) -> None:
    cache, built = StatementCache(size=2), []

    def build(org_id: int) -> object:
        built.append(org_id)
        return Cluster.objects.filter(organization_id=org_id).values("name")

    for key in (1, 1, 2, 1, 3, 2):
        cache.get(("orgs", key), lambda key=key: build(key))
    assert built == [1, 2, 3, 2]  # 2 was the least recently used when 3 came


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL prepares; SQLite not")
def test_a_statement_run_often_is_prepared_on_postgresql(tenant_a: Tenant) -> None:
    statement = names_after(tenant_a.org.pk)
    for _ in range(6):
        statement.rows(after=timezone.now(), prefix="s-")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any('"clusters_cluster"' in sql and "created_at" in sql for sql in prepared)
