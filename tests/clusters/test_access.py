"""Access tokens and what the head agent is told (clusters/access.py), without Ray: keys,
claims, who may get a token, the console's buttons, and revocations in heartbeat
answers after each change that takes access away. The gateway itself, on a real
cluster, is tested in test_gateway.py."""

from __future__ import annotations

import html
import re
import threading
import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.urls import reverse

from accounts.choices import OrgRole, ProjectRole
from accounts.models import AuditEvent
from accounts.services import (
    membership_change_role,
    membership_remove,
    project_member_change_role,
    project_member_remove,
    user_deactivate,
)
from accounts.tokens import hash_secret, new_secret
from clusters import access
from clusters.choices import NodeRole
from clusters.models import Cluster, ClusterAccessKey, ComputeConfigVersion, Node
from clusters.services import agents, lifecycle
from tests.clusters.test_agent_api import make_cluster, make_node
from tests.conftest import Tenant, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    agents.forget_nodes()
    yield
    agents.flush_heartbeats()
    agents.forget_nodes()


def running(tenant: Tenant) -> Cluster:
    cluster = make_cluster(tenant, name="acc")
    head, _ = make_node(cluster, role=NodeRole.HEAD)
    head.ray_ports = {"gcs": 6379, "dashboard": 8265, "gateway": 8266}
    head.private_address = "10.1.2.3"
    head.save(update_fields=["ray_ports", "private_address"])
    return cluster


def chart_queries(page: str) -> list[str]:
    """The PromQL of each chart on a cluster page, in order."""
    return [html.unescape(q) for q in re.findall(r'class="chart"[^>]* data-query="([^"]*)"', page)]


def decode(token: str, cluster: Cluster) -> dict:
    key = load_pem_public_key(access.access_key(cluster).public_key.encode())
    return jwt.decode(token, key, algorithms=["EdDSA"], audience=access.audience(cluster))  # type: ignore[arg-type]


def test_a_new_cluster_gets_its_own_key_pair_with_the_private_half_encrypted(
    tenant_a: Tenant,
) -> None:
    tenant_a.cloud.state = "active"
    tenant_a.cloud.save()
    one = lifecycle.cluster_create(
        project=tenant_a.project, actor=tenant_a.member, name="k1", cloud=tenant_a.cloud
    )
    two = lifecycle.cluster_create(
        project=tenant_a.project, actor=tenant_a.member, name="k2", cloud=tenant_a.cloud
    )
    keys = {k.cluster_id: k for k in ClusterAccessKey.objects.all()}
    assert set(keys) == {one.pk, two.pk}
    assert keys[one.pk].public_key != keys[two.pk].public_key
    for key in keys.values():
        assert "PRIVATE KEY" not in key.private_key_encrypted  # sealed, not PEM
        assert key.public_key.startswith("-----BEGIN PUBLIC KEY-----")


def test_an_older_cluster_gets_its_key_on_first_use(tenant_a: Tenant) -> None:
    cluster = running(tenant_a)
    assert not ClusterAccessKey.objects.filter(cluster=cluster).exists()
    assert access.access_key(cluster) == access.access_key(cluster)
    assert ClusterAccessKey.objects.filter(cluster=cluster).count() == 1


@pytest.mark.django_db(transaction=True)
def test_racing_first_uses_make_one_key(tenant_a: Tenant) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("threads with their own connections need PostgreSQL (set DATABASE_URL)")
    cluster = running(tenant_a)
    found: list[str] = []
    barrier = threading.Barrier(4)

    def first_use() -> None:
        try:
            barrier.wait()
            found.append(access.access_key(cluster).public_key)
        finally:
            connection.close()

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 4 and len(set(found)) == 1
    assert ClusterAccessKey.objects.filter(cluster=cluster).count() == 1


def test_token_claims(tenant_a: Tenant) -> None:
    cluster = running(tenant_a)
    link = access.mint_token(user=tenant_a.member, cluster=cluster, lifetime=access.LINK_LIFETIME)
    claims = decode(link.token, cluster)
    assert jwt.get_unverified_header(link.token)["alg"] == "EdDSA"
    assert claims["aud"] == f"raydeck-cluster:{cluster.uuid}"
    assert claims["sub"] == str(tenant_a.member.pk)
    assert 299 <= claims["exp"] - claims["iat"] <= 300
    assert claims["jti"] == link.jti
    tool = access.cluster_address(tenant_a.member, cluster)
    claims = decode(tool["token"], cluster)
    assert 3599 <= claims["exp"] - claims["iat"] <= 3600
    assert tool["job_address"] == "https://10.1.2.3:8266"
    assert tool["dashboard_url"] == "https://10.1.2.3:8266/"
    with pytest.raises(ValueError):
        access.mint_token(user=tenant_a.member, cluster=cluster, lifetime=timedelta(hours=2))


def test_only_writers_and_up_get_tokens(tenant_a: Tenant) -> None:
    cluster = running(tenant_a)
    for user in (tenant_a.owner, tenant_a.admin, tenant_a.member):
        assert access.cluster_address(user, cluster)["token"]
    with pytest.raises(PermissionDenied):
        access.cluster_address(tenant_a.viewer, cluster)  # a reader of the project
    assert AuditEvent.objects.filter(verb="cluster.token").count() == 3


def test_open_buttons(tenant_a: Tenant, tenant_b: Tenant) -> None:
    cluster = running(tenant_a)
    page = reverse("cluster_detail", args=[tenant_a.org.slug, cluster.pk])
    member = client_for(tenant_a.member)
    content = member.get(page).content.decode()
    assert "Ray Dashboard" in content and "https://10.1.2.3:8266" in content
    assert "Jupyter" not in content and "Grafana" not in content
    url = reverse("cluster_open", args=[tenant_a.org.slug, cluster.pk, "dashboard"])
    response = member.post(url)
    assert response.status_code == 200
    assert 'content="0;url=https://10.1.2.3:8266/?token=' in response.content.decode()
    assert AuditEvent.objects.filter(verb="cluster.open", actor=tenant_a.member).count() == 1
    # An app the head did not report is not offered, and asking for it opens nothing.
    jupyter = reverse("cluster_open", args=[tenant_a.org.slug, cluster.pk, "jupyter"])
    assert member.post(jupyter).status_code == 302
    assert AuditEvent.objects.filter(verb="cluster.open").count() == 1
    # Readers see no buttons and may not open; other organizations get 404.
    viewer = client_for(tenant_a.viewer)
    assert "Ray Dashboard" not in viewer.get(page).content.decode()
    assert viewer.post(url).status_code == 403
    assert client_for(tenant_b.owner).post(url).status_code == 404
    # With Jupyter reported by the head, its button appears.
    head = cluster.nodes.get(role=NodeRole.HEAD)
    head.ray_ports = {**head.ray_ports, "jupyter": 8888}
    head.save(update_fields=["ray_ports"])
    assert "Jupyter" in member.get(page).content.decode()


# --- What the head agent is told -----------------------------------------------------


def test_the_head_registers_with_the_clusters_public_key(tenant_a: Tenant) -> None:
    cluster = running(tenant_a)
    head = cluster.nodes.get(role=NodeRole.HEAD)
    worker, _ = make_node(cluster)
    head_answer = agents.registration_answer(agents.Registration("c", head, cluster))
    worker_answer = agents.registration_answer(agents.Registration("c", worker, cluster))
    assert head_answer["access"]["public_key"] == access.access_key(cluster).public_key
    assert head_answer["access"]["audience"] == f"raydeck-cluster:{cluster.uuid}"
    assert "access" not in worker_answer


def heartbeat_access(credential: str) -> dict:
    return agents.node_heartbeat(
        node=agents.node_for_credential(credential), body={"state": "ready"}
    ).get("access")


@pytest.mark.parametrize(
    "change",
    [
        "remove member",
        "change org role",
        "remove from project",
        "change project role",
        "deactivate",
    ],
)
def test_each_change_that_takes_access_away_reaches_the_heads_heartbeat(
    tenant_a: Tenant, tenant_b: Tenant, settings, change: str, django_capture_on_commit_callbacks
) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 0
    cluster = running(tenant_a)
    _, head_credential = make_node(make_cluster(tenant_b, name="other"), role=NodeRole.HEAD)
    head = cluster.nodes.get(role=NodeRole.HEAD)
    credential = new_secret("rdn")
    head.credential_hash = hash_secret(credential)
    head.save(update_fields=["credential_hash"])
    _, worker_credential = make_node(cluster)
    assert heartbeat_access(credential) == {"revoked": {}, "not_before": 0.0}
    member = tenant_a.member
    before = time.time()
    with django_capture_on_commit_callbacks(execute=True):
        if change == "remove member":
            membership_remove(membership=tenant_a.memberships[OrgRole.MEMBER], actor=tenant_a.owner)
        elif change == "change org role":
            membership_change_role(
                membership=tenant_a.memberships[OrgRole.MEMBER],
                role=OrgRole.VIEWER,
                actor=tenant_a.owner,
            )
        elif change == "remove from project":
            project_member_remove(
                project_membership=tenant_a.project_membership, actor=tenant_a.owner
            )
        elif change == "change project role":
            project_member_change_role(
                project_membership=tenant_a.project_membership,
                role=ProjectRole.READER,
                actor=tenant_a.owner,
            )
        else:
            user_deactivate(user=member, actor=tenant_a.owner)
    revoked = heartbeat_access(credential)["revoked"]
    assert list(revoked) == [str(member.pk)]
    assert before <= revoked[str(member.pk)] <= time.time()
    # Workers get no access part; another organization's clusters hear nothing of it.
    assert "access" not in agents.node_heartbeat(
        node=agents.node_for_credential(worker_credential), body={"state": "ready"}
    )
    assert heartbeat_access(head_credential)["revoked"] == {}


def test_revoke_all_sets_the_clusters_not_before(
    tenant_a: Tenant, settings, django_capture_on_commit_callbacks
) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 0
    cluster = running(tenant_a)
    assert access.heartbeat_access(cluster.pk)["not_before"] == 0.0
    before = time.time()
    with django_capture_on_commit_callbacks(execute=True):
        client_for(tenant_a.admin).post(
            reverse("cluster_revoke_access", args=[tenant_a.org.slug, cluster.pk])
        )
    assert before <= access.heartbeat_access(cluster.pk)["not_before"] <= time.time()
    assert AuditEvent.objects.filter(verb="cluster.revoke_access").count() == 1
    # Like terminating it: writers and up may, readers may not.
    response = client_for(tenant_a.viewer).post(
        reverse("cluster_revoke_access", args=[tenant_a.org.slug, cluster.pk])
    )
    assert response.status_code == 403


def test_tool_token_page_shows_the_command(tenant_a: Tenant) -> None:
    cluster = running(tenant_a)
    response = client_for(tenant_a.member).post(
        reverse("cluster_token", args=[tenant_a.org.slug, cluster.pk])
    )
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    text = response.content.decode()
    assert "ray job submit --address https://10.1.2.3:8266 --headers" in text
    assert "Authorization&quot;: &quot;Bearer ey" in text


def test_the_charts_get_a_token_for_prometheus_on_the_gateway_or_say_why_not(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    cluster = running(tenant_a)
    page = reverse("cluster_detail", args=[tenant_a.org.slug, cluster.pk])
    url = reverse("cluster_metrics_token", args=[tenant_a.org.slug, cluster.pk])
    member = client_for(tenant_a.member)
    # No Prometheus on the head: the page and the token request say so.
    assert "metrics unavailable: Prometheus is not in this cluster" in member.get(page).text
    answer = member.post(url)
    assert answer.status_code == 409
    assert answer.json() == {
        "unavailable": "metrics unavailable: Prometheus is not in this cluster's image"
    }
    assert not AuditEvent.objects.filter(verb="cluster.token").exists()

    head = cluster.nodes.get(role=NodeRole.HEAD)
    head.ray_ports = {**head.ray_ports, "prometheus": 9090}
    head.save(update_fields=["ray_ports"])
    response = member.get(page)
    # The page may reach the gateway (the charts fetch from it), and says what is absent.
    assert "https://10.1.2.3:8266" in response["Content-Security-Policy"]
    assert 'id="cluster-metrics"' in response.text and "Grafana: not in this image" in response.text
    # What the page asks of Prometheus: Ray's CPU, memory, object store and running
    # tasks; no GPU chart on a cluster without GPUs (no node, no worker group has any).
    assert chart_queries(response.text) == [
        "avg(ray_node_cpu_utilization)",
        "sum(ray_node_mem_used) / 1073741824",
        "sum(ray_object_store_memory) / 1048576",
        'sum(ray_tasks{State="RUNNING"}) or vector(0)',
    ]
    assert "No GPUs on this cluster" in response.text
    # A node that reports GPUs to Ray: GPU use and GPU memory too.
    Node.objects.filter(pk=head.pk).update(resources={"resources_total": {"CPU": 4, "GPU": 1}})
    assert len(chart_queries(member.get(page).text)) == 6
    Node.objects.filter(pk=head.pk).update(resources={})
    # So does a worker group with GPUs (autoscaled from 0, no node yet).
    groups = [{"name": "gpu", "gpus": 1, "min": 0, "max": 2}]
    ComputeConfigVersion.objects.filter(pk=cluster.compute_config_id).update(worker_groups=groups)
    response = member.get(page)
    assert chart_queries(response.text)[4:] == [
        "avg(ray_node_gpus_utilization)",
        "sum(ray_node_gram_used) / 1024",
    ]
    assert "No GPUs on this cluster" not in response.text
    # Grafana where the head runs it: a link beside the others, no "not in this image".
    head.ray_ports = {**head.ray_ports, "grafana": 3000}
    head.save(update_fields=["ray_ports"])
    response = member.get(page)
    assert "Grafana: not in this image" not in response.text
    assert reverse("cluster_open", args=[tenant_a.org.slug, cluster.pk, "grafana"]) in response.text
    answer = member.post(url)
    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["query_url"] == "https://10.1.2.3:8266/prometheus/api/v1/query_range"
    claims = decode(body["token"], cluster)
    assert claims["exp"] - claims["iat"] <= 300  # a link's lifetime: minutes
    [event] = AuditEvent.objects.filter(verb="cluster.token", actor=tenant_a.member)
    assert event.changes["app"] == [None, "metrics"]
    # Readers may not, other organizations see nothing, and a GET mints nothing.
    assert client_for(tenant_a.viewer).post(url).status_code == 403
    assert client_for(tenant_b.owner).post(url).status_code == 404
    assert member.get(url).status_code == 405
