"""The support admin's lists at scale: the queries a changelist makes do not grow with
its rows (no N+1), stay few, and never read a whole table for a filter's choices, a
date drill-down or a second count. (Counted on a few rows: what matters at 100,000 is
that the count stays constant and each query is bounded.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import AuditEvent
from clusters.models import ClusterEvent
from tests.conftest import Tenant, client_for
from tests.factories import (
    ApiTokenFactory,
    ClusterFactory,
    MembershipFactory,
    NodeFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

MAX_QUERIES = 12  # session, user, the page's rows, its count, the filters' choices


def more_clusters(tenant: Tenant, n: int) -> None:
    for i in range(n):
        ClusterFactory(project=tenant.project, cloud=tenant.cloud, name=f"more-{i}")


def more_nodes(tenant: Tenant, n: int) -> None:
    assert tenant.cluster is not None
    for _ in range(n):
        NodeFactory(cluster=ClusterFactory(project=tenant.project, cloud=tenant.cloud))


def more_events(tenant: Tenant, n: int) -> None:
    assert tenant.cluster is not None
    for i in range(n):
        ClusterEvent.objects.create(
            cluster=ClusterFactory(project=tenant.project, cloud=tenant.cloud),
            organization=tenant.org,
            step=f"step {i}",
            message="more",
        )


def more_audit_events(tenant: Tenant, n: int) -> None:
    for i in range(n):
        AuditEvent.objects.create(
            organization=tenant.org, actor=tenant.owner, verb=f"thing.{i}", target_repr="x"
        )


def more_tokens(tenant: Tenant, n: int) -> None:
    for _ in range(n):
        ApiTokenFactory(organization=tenant.org, user=tenant.member)


def more_members(tenant: Tenant, n: int) -> None:
    for _ in range(n):
        MembershipFactory(organization=tenant.org, user=UserFactory())


LISTS: dict[str, tuple[Callable[[Tenant, int], None], dict[str, str]]] = {
    "clusters_cluster": (more_clusters, {"state__exact": "terminated"}),
    "clusters_node": (more_nodes, {"state__exact": "terminated"}),
    "clusters_clusterevent": (more_events, {"level__exact": "info"}),
    "accounts_auditevent": (more_audit_events, {"verb": "thing.1"}),
    "accounts_apitoken": (more_tokens, {"read_only__exact": "0"}),
    "accounts_membership": (more_members, {"role__exact": "member"}),
    "accounts_user": (more_members, {"is_active__exact": "1"}),
}


def changelist_queries(client: Client, name: str, params: dict[str, str]) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(f"admin:{name}_changelist"), params)
    assert response.status_code == 200, response.content[:500]
    return [q["sql"] for q in queries.captured_queries]


@pytest.mark.parametrize("name", list(LISTS))
def test_a_changelist_makes_the_same_few_queries_however_many_rows(
    tenant_a: Tenant, tenant_b: Tenant, name: str
) -> None:
    """Listed plainly, searched by text and by uuid, and filtered."""
    add, filters = LISTS[name]
    assert tenant_a.cluster is not None
    variants = [{}, {"q": "alpha"}, {"q": str(tenant_a.cluster.uuid)}, filters]
    staff = client_for(UserFactory(is_staff=True, email="support@raydeck.example"))
    add(tenant_a, 2)
    few = [changelist_queries(staff, name, params) for params in variants]
    add(tenant_b, 25)
    many = [changelist_queries(staff, name, params) for params in variants]
    for params, before, after in zip(variants, few, many, strict=True):
        assert len(after) == len(before), (params, "\n".join(after))
        assert len(after) <= MAX_QUERIES, (params, "\n".join(after))
        for sql in after:
            # A filter's choices or a date drill-down would read the whole table.
            assert "SELECT DISTINCT" not in sql.upper() or "LIMIT" in sql.upper(), sql
            assert "DATE_TRUNC" not in sql.upper(), sql
        counts = [sql for sql in after if "COUNT(*)" in sql.upper()]
        assert len(counts) <= 1, counts  # the page's count only, not the table's too
