"""Where the load balancer cannot check query tokens (AWS's ALB, GCP's URL map), each
version's head does: its serve orders carry the service's live token hashes, a new or
revoked token reaches the heads with the next heartbeat's orders, and the local cloud's
heads (behind HAProxy, which checks tokens itself) get none. No Ray: the orders are
what the heartbeat answer would carry (clusters/head_orders.py)."""

from __future__ import annotations

import pytest
from django.test import TestCase

from accounts.tokens import hash_secret
from clouds.choices import CloudKind
from clouds.models import Cloud
from tests.api.conftest import as_role, verified
from tests.conftest import Tenant
from workloads.serve import live
from workloads.serve.head import ServeParticipant
from workloads.serve.models import ServiceToken, ServiceVersion
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
