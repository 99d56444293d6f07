"""Built-in rows stay one per name when first creates race (issue 13, defect 1).

Two people creating their first clusters at the same moment each looked for the built-in
image, found none, and made one: the unique constraint on (organization, name) never
applies to rows without an organization, and from then on every create without an image
was a 500 (MultipleObjectsReturned). The races run on PostgreSQL, two connections, one
thread each, ordered so the second looks before the first commits.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.choices import OrgRole
from clusters.models import Cluster, ComputeConfig, ContainerImage
from clusters.services import lifecycle
from clusters.services.defaults import default_compute_config, default_image
from tests.conftest import Tenant, activate, make_tenant

postgres_only = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"), reason="a race between connections needs PostgreSQL"
)


def first_commits_late(make: Callable[[], Any]) -> list[Any]:
    """Run `make` in two threads (two connections): the first inside a transaction it
    keeps open for a second after making its row, the second starting once the first has
    made it, so the second cannot see the first's row when it looks."""
    from django.db import transaction

    made = threading.Event()
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                results[0] = make()
                made.set()
                time.sleep(1.0)
        except BaseException as exc:
            errors.append(exc)
            made.set()
        finally:
            connections.close_all()

    def second() -> None:
        made.wait(30)
        try:
            results[1] = make()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_racing_first_creates_share_one_built_in_image() -> None:
    tenant = make_tenant("racer")
    cloud = activate(tenant.cloud)
    # As on a new installation: no built-in image yet (the tenant's cluster keeps its own).
    ContainerImage.objects.filter(organization=None).update(deleted_at=timezone.now())

    first, second = first_commits_late(lambda: default_image(cloud))

    assert first.pk == second.pk
    assert ContainerImage.objects.available().filter(organization=None).count() == 1
    # And the next create without an image works (it was a 500 for ever after).
    cluster = lifecycle.cluster_create(
        project=tenant.project, actor=tenant.users[OrgRole.MEMBER], name="after", cloud=cloud
    )
    assert cluster.image_id == first.pk


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_racing_first_creates_share_one_default_compute_config() -> None:
    """The same pattern for compute configs: safe already (organization is never NULL,
    so config_name_per_org applies), and kept so."""
    tenant = make_tenant("racer")
    cloud = activate(tenant.cloud)

    first, second = first_commits_late(
        lambda: default_compute_config(cloud=cloud, organization=tenant.org, actor=None)
    )

    assert first.pk == second.pk
    assert (
        ComputeConfig.objects.filter(organization=tenant.org, name__startswith="Default").count()
        == 1
    )


@pytest.mark.django_db(transaction=True)
def test_the_migration_merges_duplicate_built_in_images_and_repoints_clusters() -> None:
    """Installations that already have duplicates: the oldest stays, clusters that named
    another name it, and the rest go (so the constraint can be made)."""
    tenant: Tenant = make_tenant("dupes")  # today's schema; its rows stay on the way back
    before = [("clusters", "0005_image_validation_and_deletion")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        image_model = apps.get_model("clusters", "ContainerImage")
        cluster_model = apps.get_model("clusters", "Cluster")
        ray = {"ray_version": "2.40.0"}
        kept = image_model.objects.create(organization=None, name="Ray (local)", **ray)
        dupes = [
            image_model.objects.create(organization=None, name="Ray (local)", **ray)
            for _ in range(2)
        ]
        other = image_model.objects.create(organization=None, name="Ray (aws)", **ray)
        # A cluster on a duplicate, written through the historical model.
        cluster_model.objects.filter(pk=tenant.cluster.pk).update(image_id=dupes[1].pk)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())  # through the merge, to today

    names = sorted(
        ContainerImage.objects.filter(
            organization=None, name__in=["Ray (local)", "Ray (aws)"]
        ).values_list("pk", "name")
    )
    assert names == sorted([(kept.pk, "Ray (local)"), (other.pk, "Ray (aws)")])
    assert Cluster.objects.get(pk=tenant.cluster.pk).image_id == kept.pk
