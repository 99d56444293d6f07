"""Where the load balancer cannot check query tokens (AWS's ALB, GCP's URL map), each
version's head does: its serve orders carry the service's live token hashes, a new or
revoked token reaches the heads with the next heartbeat's orders, and the local cloud's
heads (behind HAProxy, which checks tokens itself) get none. No Ray: the orders are
what the heartbeat answer would carry (clusters/head_orders.py). And a load balancer
the cloud refuses is said on the service's page."""

from __future__ import annotations

import pytest
from django.test import TestCase

from accounts.tokens import hash_secret
from clouds.choices import CloudKind
from clouds.models import Cloud
from clouds.providers import haproxy
from tests.api.conftest import as_role, verified
from tests.conftest import Tenant, client_for
from workloads.serve import live
from workloads.serve.choices import EventLevel
from workloads.serve.head import ServeParticipant
from workloads.serve.models import ServiceToken, ServiceVersion
from workloads.serve.services import rollout
from workloads.serve.services.deploy import service_token_revoke

pytestmark = pytest.mark.django_db
CONFIG = {"import_path": "echo_app:build", "args": {"version": "v1"}}


def _deploy(tenant: Tenant) -> tuple[ServiceVersion, str]:
    api = as_role(tenant)
    answer = api.post(
        f"/orgs/{tenant.org.slug}/services",
        {"name": "echo", "project": tenant.project.slug, "serve_config": CONFIG},
    )
    assert answer.status == 201, answer.body
    version = ServiceVersion.objects.get(
        service__uuid=answer.body["service"]["id"], number=answer.body["version"]["number"]
    )
    return version, answer.body["token"]


def _orders(version: ServiceVersion) -> dict:
    return ServeParticipant().orders(version.cluster_id)


def test_heads_check_tokens_only_where_the_load_balancer_cannot(tenant_a: Tenant) -> None:
    tenant = verified(tenant_a)
    live.orders_changed()
    version, token = _deploy(tenant)
    local = _orders(version)
    assert local["version"] == version.pk
    assert "token_hashes" not in local  # HAProxy checks them

    Cloud.objects.filter(pk=tenant.cloud.pk).update(kind=CloudKind.AWS)
    live.orders_changed()
    assert _orders(version)["token_hashes"] == [hash_secret(token)]


def test_a_new_and_a_revoked_token_reach_the_heads(tenant_a: Tenant) -> None:
    tenant = verified(tenant_a)
    Cloud.objects.filter(pk=tenant.cloud.pk).update(kind=CloudKind.GCP)
    live.orders_changed()
    version, first = _deploy(tenant)
    assert _orders(version)["token_hashes"] == [hash_secret(first)]

    api = as_role(tenant)
    with TestCase.captureOnCommitCallbacks(execute=True):
        second = api.post(
            f"/orgs/{tenant.org.slug}/services/{version.service.uuid}/tokens", {"name": "two"}
        ).body["token"]
    assert sorted(_orders(version)["token_hashes"]) == sorted(
        [hash_secret(first), hash_secret(second)]
    )

    with TestCase.captureOnCommitCallbacks(execute=True):
        service_token_revoke(
            token=ServiceToken.objects.get(token_hash=hash_secret(first)), actor=tenant.owner
        )
    assert _orders(version)["token_hashes"] == [hash_secret(second)]


def test_a_load_balancer_the_cloud_refuses_is_said_on_the_service_page(
    tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal that retrying will not cure (here the local cloud's HAProxy missing; on
    AWS or GCP a missing permission) becomes one error event with the cloud's words,
    not a failing task nobody sees; the next passes do not repeat it."""
    tenant = verified(tenant_a)
    version, _ = _deploy(tenant)
    monkeypatch.setattr(haproxy.shutil, "which", lambda name: None)
    for _ in range(2):
        assert rollout.service_advance(service_id=version.service_id) == rollout.IDLE_POLL_SECONDS
    events = version.service.events.filter(step="router refused")
    assert [e.level for e in events] == [EventLevel.ERROR]
    assert haproxy.INSTALL_HINT in events[0].message


def test_replicas_are_capped_per_node_where_the_config_always_has_two_workers(
    tenant_a: Tenant,
) -> None:
    """The head's orders carry Serve's max_replicas_per_node for a deployment of 2 or
    more replicas when the version's compute config keeps 2 or more workers; a cap the
    user set, one replica, or fewer workers leave the config as it was."""
    from tests.factories import ComputeConfigVersionFactory
    from workloads.serve.services import deploy

    tenant = verified(tenant_a)
    group = {"name": "serve", "instance_type": "local", "cpus": 1, "memory_mb": 1024}

    def orders_for(workers: int, deployments: list[dict]) -> dict:
        config = ComputeConfigVersionFactory(
            cloud=tenant.cloud, worker_groups=[{**group, "min": workers, "max": 4}]
        )
        version = deploy.service_deploy(
            project=tenant.project,
            actor=tenant.member,
            name=f"spread-{ServiceVersion.objects.count()}",
            serve_config={**CONFIG, "deployments": deployments},
            cloud=tenant.cloud,
            compute_config=config,
        ).version
        live.orders_changed()
        return {d["name"]: d for d in _orders(version)["config"]["applications"][0]["deployments"]}

    spread = orders_for(2, [{"name": "A", "num_replicas": 3}, {"name": "B", "num_replicas": 1}])
    assert spread["A"]["max_replicas_per_node"] == 2  # 3 replicas over 2 workers
    assert "max_replicas_per_node" not in spread["B"]
    own = orders_for(3, [{"name": "A", "num_replicas": 4, "max_replicas_per_node": 4}])
    assert own["A"]["max_replicas_per_node"] == 4  # the user's choice stands
    few = orders_for(1, [{"name": "A", "num_replicas": 2}])
    assert "max_replicas_per_node" not in few["A"]  # one worker: nothing to spread over

    version = ServiceVersion.objects.get(
        serve_config__applications__0__deployments__0__num_replicas=3
    )
    page = client_for(tenant.member).get(f"/o/{tenant.org.slug}/services/{version.service_id}/")
    assert "default/A: at most 2 replicas per node" in page.content.decode()
