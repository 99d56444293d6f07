"""A version speaks TLS to its load balancer only if its head does: after an upgrade of
Raydeck, the serving version's head still runs the agent its cluster booted with, whose
serve port speaks plain HTTP (its row, from before, says so: migration 0002), while a new
version's head reports that its gate speaks TLS. The rollout records what each head's
report says and the AWS router, against moto (the stand-in for AWS), gives each version a
target group of that protocol in the one weighted rule. No Ray: the reports are what the
heads' heartbeats would bring (workloads/serve/head.py)."""

from __future__ import annotations

from typing import Any

import pytest

from clouds.providers import aws_router
from clusters.choices import NodeState
from tests.api.conftest import verified
from tests.clouds.test_aws_driver import Fake, aws, fake, make_provider
from tests.clouds.test_aws_router import FIREWALL, Account
from tests.conftest import Tenant
from tests.factories import NodeFactory
from workloads.serve.choices import ServiceState, VersionState
from workloads.serve.head import ServeParticipant
from workloads.serve.models import Service, ServiceVersion
from workloads.serve.services import deploy, rollout

__all__ = ["aws", "fake"]  # the fixtures: moto (autouse) and its session
pytestmark = pytest.mark.django_db


def _version(tenant: Tenant, args: dict[str, Any], address: str) -> ServiceVersion:
    """A deploy of "echo" whose cluster's head is up at `address`."""
    version = deploy.service_deploy(
        project=tenant.project,
        actor=tenant.member,
        name="echo",
        serve_config={"import_path": "echo_app:build", "args": args},
        cloud=tenant.cloud,
    ).version
    NodeFactory(
        cluster=version.cluster,
        state=NodeState.READY,
        private_address=address,
        ray_ports={"serve": 8000},
        instance_id=f"i-{address}",
    )
    return version


def _head_reports(version: ServiceVersion, **extra: Any) -> None:
    """The head's serve report, every application running, through the heartbeat's
    participant (the untrusted body cleaned as a real one is)."""
    raw = {"hash": version.config_hash, "applications": {"default": {"status": "RUNNING"}}}
    assert version.cluster_id is not None
    ServeParticipant().receive(version.cluster_id, {**raw, **extra})


def test_an_old_plain_head_and_a_new_tls_head_share_the_load_balancer(
    tenant_a: Tenant, fake: Fake
) -> None:
    tenant = verified(tenant_a)
    v1 = _version(tenant, {"v": 1}, "10.0.1.1")
    # Serving since before the upgrade: its row says plain, as the migration leaves it.
    ServiceVersion.objects.filter(pk=v1.pk).update(
        state=VersionState.HEALTHY, weight=100, head_tls=False
    )
    Service.objects.filter(pk=v1.service_id).update(current_version=v1, state=ServiceState.RUNNING)
    v2 = _version(tenant, {"v": 2}, "10.0.1.2")
    assert v2.head_tls  # a new row: TLS until its head says otherwise

    service = Service.objects.select_related("cloud").get(pk=v1.service_id)
    _head_reports(v1)  # the old agent's report: it never says "tls"
    _head_reports(v2, tls=True)
    rollout._judge_starting(service, ServiceVersion.objects.get(pk=v2.pk))
    rollout._watch_health(ServiceVersion.objects.get(pk=v1.pk))
    v2.refresh_from_db()
    assert (v2.state, v2.head_tls) == (VersionState.HEALTHY, True)
    assert ServiceVersion.objects.get(pk=v1.pk).head_tls is False
    ServiceVersion.objects.filter(pk=v1.pk).update(weight=90)
    ServiceVersion.objects.filter(pk=v2.pk).update(weight=10)

    router = make_provider(fake, firewall=FIREWALL).router()
    ref = router.ensure_endpoint(
        service_id=service.uuid, ref={}, sign=rollout.endpoint_certificate
    ).ref
    Service.objects.filter(pk=service.pk).update(router_ref=ref)
    service.refresh_from_db()
    rollout._route(service, router)

    account = Account(fake)
    assert account.protocols() == {
        aws_router.target_group_name(service.uuid, "v1", tls=False): ("HTTP", "HTTP"),
        aws_router.target_group_name(service.uuid, "v2"): ("HTTPS", "HTTPS"),
    }
    assert account.weights() == {"v1": 90, "v2": 10}


def test_a_head_that_now_speaks_tls_is_followed(tenant_a: Tenant) -> None:
    """A version's head replaced by one booted with a newer agent reports TLS; the row
    follows it, and the load balancer with it."""
    tenant = verified(tenant_a)
    v1 = _version(tenant, {"v": 1}, "10.0.1.1")
    ServiceVersion.objects.filter(pk=v1.pk).update(
        state=VersionState.HEALTHY, weight=100, head_tls=False
    )
    _head_reports(v1, tls=True)
    rollout._watch_health(ServiceVersion.objects.get(pk=v1.pk))
    assert ServiceVersion.objects.get(pk=v1.pk).head_tls is True
    _head_reports(v1, tls="yes")  # not a boolean: not TLS
    rollout._watch_health(ServiceVersion.objects.get(pk=v1.pk))
    assert ServiceVersion.objects.get(pk=v1.pk).head_tls is False


@pytest.mark.django_db(transaction=True)
def test_the_migration_marks_existing_versions_plain(tenant_a: Tenant) -> None:
    """Versions from before the field run on clusters booted with older agents: plain.
    Versions made after it default to TLS (their heads report before they serve)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    tenant = verified(tenant_a)
    old = _version(tenant, {"v": 1}, "10.0.1.1")
    executor = MigrationExecutor(connection)
    executor.migrate([("serve", "0001_services_and_versions")])
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert ServiceVersion.objects.get(pk=old.pk).head_tls is False
    ServiceVersion.objects.filter(pk=old.pk).update(state=VersionState.HEALTHY, weight=100)
    Service.objects.filter(pk=old.service_id).update(
        current_version=old, state=ServiceState.RUNNING
    )
    assert _version(tenant, {"v": 2}, "10.0.1.2").head_tls is True
