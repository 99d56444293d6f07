"""The cluster pages: create with scoped choices, the filtered list, the live cluster
page, terminate and restart, node logs, roles and isolation, and the support admin."""

from __future__ import annotations

import html
import re
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from raydeck_agent.logs import LogBuffer

from accounts.choices import ProjectRole
from accounts.models import AuditEvent
from accounts.tokens import hash_secret, new_secret
from clouds.choices import CloudState, LaunchAccess
from clouds.models import Cloud
from clusters import live
from clusters.choices import ClusterState, DesiredState, EventLevel, NodeRole, NodeState
from clusters.models import Cluster, ClusterEvent, Node
from clusters.services import agents
from clusters.services.events import record_event
from clusters.services.lifecycle import cluster_create
from tests.conftest import Tenant, activate, client_for, make_tenant, page_text
from tests.factories import (
    CloudFactory,
    ClusterFactory,
    ComputeConfigVersionFactory,
    ContainerImageFactory,
    NodeFactory,
    ProjectFactory,
    ProjectMembershipFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def cloud(tenant_a: Tenant) -> Cloud:
    return activate(tenant_a.cloud)


def create_url(tenant: Tenant) -> str:
    return reverse("cluster_create", args=[tenant.org.slug])


def detail_url(cluster: Cluster) -> str:
    return reverse("cluster_detail", args=[cluster.organization.slug, cluster.pk])


def new_cluster(tenant: Tenant, cloud: Cloud, name: str = "c1", **fields) -> Cluster:
    return ClusterFactory(project=tenant.project, cloud=cloud, name=name, **fields)


# --- Create ----------------------------------------------------------------------------


def test_create_from_the_form_starts_the_cluster(
    tenant_a: Tenant, cloud: Cloud, django_capture_on_commit_callbacks
) -> None:
    client = client_for(tenant_a.member)
    page = page_text(client.get(create_url(tenant_a)))
    # The only project and the only cloud are preselected; the name is suggested.
    assert f'<option value="{tenant_a.project.pk}" selected>' in page
    assert f'<option value="{cloud.pk}" selected>' in page
    assert re.search(rf'value="{tenant_a.project.slug}-[a-z2-9]{{4}}"', page)
    assert f"Default for {cloud.name}" in page

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            create_url(tenant_a),
            {"project": tenant_a.project.pk, "name": "  train-1 ", "cloud": cloud.pk},
        )
    cluster = Cluster.objects.get(name="train-1")
    assert response.status_code == 302 and response["Location"] == detail_url(cluster)
    assert cluster.created_by == tenant_a.member and cluster.state == ClusterState.PENDING
    assert cluster.compute_config.config.name == f"Default for {cloud.name}"
    assert cluster.compute_config.cloud == cloud and cluster.image.organization is None
    assert len(callbacks) == 1  # the reconciler, enqueued once the request committed
    assert AuditEvent.objects.filter(verb="cluster.create", target_id=str(cluster.pk)).exists()
    assert "Cluster train-1 is starting." in page_text(client.get(response["Location"]))


def test_htmx_create_navigates_by_header(tenant_a: Tenant, cloud: Cloud) -> None:
    response = client_for(tenant_a.member).post(
        create_url(tenant_a),
        {"project": tenant_a.project.pk, "name": "hx", "cloud": cloud.pk},
        headers={"HX-Request": "true"},
    )
    assert response["HX-Redirect"] == detail_url(Cluster.objects.get(name="hx"))


def test_an_unverified_cloud_is_refused_with_what_to_do(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.member)
    page = page_text(client.get(create_url(tenant_a)))
    assert "Connect and verify a cloud first" in page
    assert reverse("cloud_list", args=[tenant_a.org.slug]) in page  # members cannot add one
    owner_page = page_text(client_for(tenant_a.owner).get(create_url(tenant_a)))
    assert reverse("cloud_add", args=[tenant_a.org.slug]) in owner_page

    CloudFactory(organization=tenant_a.org, name="ok", state=CloudState.ACTIVE)
    response = client.post(
        create_url(tenant_a),
        {"project": tenant_a.project.pk, "name": "x", "cloud": tenant_a.cloud.pk},
    )
    assert response.status_code == 200
    assert f"The cloud {tenant_a.cloud.name} is not verified. Verify it first." in page_text(
        response
    )
    assert not Cluster.objects.filter(name="x").exists()


def test_only_usable_choices_are_offered(tenant_a: Tenant, cloud: Cloud) -> None:
    other_project = ProjectFactory(organization=tenant_a.org, name="Not mine")
    reader_project = ProjectFactory(organization=tenant_a.org, name="Read only")
    ProjectMembershipFactory(project=reader_project, user=tenant_a.member, role=ProjectRole.READER)
    CloudFactory(organization=tenant_a.org, name="Unverified one")
    limited = CloudFactory(
        organization=tenant_a.org,
        name="Limited one",
        state=CloudState.ACTIVE,
        launch_access=LaunchAccess.PROJECTS,
    )
    limited.projects.add(other_project)
    elsewhere = CloudFactory(organization=tenant_a.org, name="Second", state=CloudState.ACTIVE)
    ComputeConfigVersionFactory(cloud=cloud, config__name="Big on local")
    ComputeConfigVersionFactory(cloud=elsewhere, config__name="Only on second")

    client = client_for(tenant_a.member)
    page = page_text(client.get(create_url(tenant_a)))
    assert tenant_a.project.name in page
    for absent in ("Not mine", "Read only", "Unverified one", "Limited one"):
        assert absent not in page
    assert "Second" in page

    # Choosing a cloud asks for its configs (the HTMX request the select makes).
    fields = page_text(
        client.get(
            create_url(tenant_a),
            {"cloud": cloud.pk},
            headers={"HX-Request": "true", "HX-Target": "cloud-fields"},
        )
    )
    assert fields.lstrip().startswith('<div id="cloud-fields">')
    assert "Big on local (v1)" in fields and "Only on second" not in fields
    assert f"Default for {cloud.name}" in fields

    # Admins see every project.
    admin_page = page_text(client_for(tenant_a.admin).get(create_url(tenant_a)))
    assert "Not mine" in admin_page and "Read only" in admin_page


def test_a_config_of_another_cloud_is_refused(tenant_a: Tenant, cloud: Cloud) -> None:
    elsewhere = CloudFactory(organization=tenant_a.org, name="Second", state=CloudState.ACTIVE)
    version = ComputeConfigVersionFactory(cloud=elsewhere, config__name="GPU box")
    response = client_for(tenant_a.member).post(
        create_url(tenant_a),
        {
            "project": tenant_a.project.pk,
            "name": "x",
            "cloud": cloud.pk,
            "compute_config": version.pk,
        },
    )
    assert "GPU box runs on Second, not" in page_text(response)
    assert not Cluster.objects.filter(name="x").exists()


def test_the_rules_of_the_choice_are_the_service_s_on_their_fields(
    tenant_a: Tenant, cloud: Cloud
) -> None:
    """What the form does not check (it only parses), cluster_create refuses, naming the
    field: the console and the API show it there."""
    elsewhere = ProjectFactory(organization=tenant_a.org, name="Elsewhere")
    theirs = ComputeConfigVersionFactory(
        cloud=cloud, config__name="Theirs", config__project=elsewhere
    )
    container = ContainerImageFactory(
        organization=tenant_a.org, name="Boxed", image_uri="acme/ray:1"
    )
    create = {"project": tenant_a.project, "actor": tenant_a.member, "name": "x", "cloud": cloud}
    with pytest.raises(ValidationError) as refused:
        cluster_create(**create, compute_config=theirs, image=container)
    assert "belongs to another project" in refused.value.message_dict["compute_config"][0]
    assert "not containers" in refused.value.message_dict["image"][0]

    chosen = {
        "project": tenant_a.project.pk,
        "name": "x",
        "cloud": cloud.pk,
        "compute_config": theirs.pk,
        "image": container.pk,
    }
    # The owner sees every project's configs, so only the service refuses this one.
    page = page_text(client_for(tenant_a.owner).post(create_url(tenant_a), chosen))
    assert "Theirs belongs to another project" in page
    assert f"{cloud.name} runs nodes as local processes, not containers" in page
    assert not Cluster.objects.filter(name="x").exists()


def test_crafted_choices_of_another_organization_are_refused(
    tenant_a: Tenant, tenant_b: Tenant, cloud: Cloud
) -> None:
    Cloud.objects.filter(pk=tenant_b.cloud.pk).update(state=CloudState.ACTIVE)
    client = client_for(tenant_a.owner)
    for crafted in (
        {"project": tenant_b.project.pk, "cloud": cloud.pk},
        {"project": tenant_a.project.pk, "cloud": tenant_b.cloud.pk},
        {
            "project": tenant_a.project.pk,
            "cloud": cloud.pk,
            "compute_config": tenant_b.cluster.compute_config_id,
        },
    ):
        response = client.post(create_url(tenant_a), {"name": "pwned", **crafted})
        assert response.status_code == 200
        assert "Select a valid choice" in page_text(response)
    assert not Cluster.objects.filter(name="pwned").exists()


def test_viewers_cannot_create(tenant_a: Tenant, cloud: Cloud) -> None:
    client = client_for(tenant_a.viewer)
    assert client.get(create_url(tenant_a)).status_code == 403
    response = client.post(
        create_url(tenant_a), {"project": tenant_a.project.pk, "name": "x", "cloud": cloud.pk}
    )
    assert response.status_code == 403
    assert not Cluster.objects.filter(name="x").exists()
    page = page_text(client.get(reverse("cluster_list", args=[tenant_a.org.slug])))
    assert "Create a cluster" not in page


def test_a_name_taken_by_a_live_cluster_says_so(tenant_a: Tenant, cloud: Cloud) -> None:
    cluster_create(project=tenant_a.project, actor=tenant_a.member, name="dup", cloud=cloud)
    response = client_for(tenant_a.member).post(
        create_url(tenant_a), {"project": tenant_a.project.pk, "name": "dup", "cloud": cloud.pk}
    )
    assert "A cluster named dup is already live" in page_text(response)


# --- List ------------------------------------------------------------------------------


def test_list_filters(tenant_a: Tenant, cloud: Cloud) -> None:
    second = ProjectFactory(organization=tenant_a.org, name="Second", slug="second")
    other_cloud = CloudFactory(organization=tenant_a.org, name="Other", state=CloudState.ACTIVE)
    new_cluster(tenant_a, cloud, "alpha-run", state=ClusterState.RUNNING)
    ClusterFactory(
        project=second,
        cloud=other_cloud,
        name="beta-fail",
        state=ClusterState.FAILED,
        state_reason="The head node did not start Ray within 5 min.",
    )
    client = client_for(tenant_a.owner)
    url = reverse("cluster_list", args=[tenant_a.org.slug])

    def names(**params) -> set[str]:
        page = page_text(client.get(url, params))
        return set(re.findall(r"<strong>([a-z-]+)</strong></a></td>", page))

    assert names() == {"alpha-run", "beta-fail", "alpha-cluster"}
    assert names(project="second") == {"beta-fail"}
    assert names(state="running") == {"alpha-run"}
    assert names(cloud=other_cloud.pk) == {"beta-fail"}
    assert names(q="ALPHA", state="running") == {"alpha-run"}
    assert names(state="bogus") == {"alpha-run", "beta-fail", "alpha-cluster"}  # ignored
    empty = page_text(client.get(url, {"state": "starting"}))
    assert "No cluster matches these filters" in empty
    page = page_text(client.get(url))
    assert "did not start Ray" in page  # a failure says why, in the list already
    partial = client.get(url, {"q": "beta"}, headers={"HX-Request": "true"})
    assert partial.content.decode().lstrip().startswith('<div id="cluster-table">')


def test_list_empty_state_and_pagination(tenant_a: Tenant, cloud: Cloud, settings) -> None:
    Cluster.objects.all().delete()
    client = client_for(tenant_a.member)
    url = reverse("cluster_list", args=[tenant_a.org.slug])
    page = page_text(client.get(url))
    assert "No clusters yet" in page and create_url(tenant_a) in page
    settings.RAYDECK_PAGE_SIZE = 5
    for i in range(7):
        new_cluster(tenant_a, cloud, f"c{i}", state=ClusterState.RUNNING)
    first = page_text(client.get(url, {"state": "running"}))
    assert "Page 1 of 2" in first and "?state=running&page=2" in first
    second = page_text(client.get(url, {"state": "running", "page": 2}))
    assert "c0" in second and "c6" not in second


def test_list_counts_live_nodes_and_hides_other_projects(tenant_a: Tenant, cloud: Cloud) -> None:
    cluster = new_cluster(tenant_a, cloud, "counted", state=ClusterState.RUNNING)
    NodeFactory(cluster=cluster, state=NodeState.READY)
    NodeFactory(cluster=cluster, role=NodeRole.WORKER, state=NodeState.READY)
    NodeFactory(cluster=cluster, role=NodeRole.WORKER, state=NodeState.TERMINATED)
    hidden = ProjectFactory(organization=tenant_a.org, name="Hidden")
    ClusterFactory(project=hidden, cloud=cloud, name="secret")
    page = page_text(
        client_for(tenant_a.member).get(reverse("cluster_list", args=[tenant_a.org.slug]))
    )
    assert re.search(r"counted</strong>.*?<td class=\"num\">2</td>", page, re.S)
    assert "secret" not in page


def test_list_query_count_does_not_grow_with_rows(tenant_a: Tenant, cloud: Cloud) -> None:
    client = client_for(tenant_a.member)
    url = reverse("cluster_list", args=[tenant_a.org.slug])

    def queries_with(count: int) -> int:
        Cluster.objects.all().delete()
        for i in range(count):
            cluster = new_cluster(tenant_a, cloud, f"n{i}", state=ClusterState.RUNNING)
            NodeFactory(cluster=cluster, state=NodeState.READY)
        client.get(url)  # warm the session
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200 and f"n{count - 1}" in page_text(response)
        return len(captured)

    assert queries_with(2) == queries_with(20)


# --- The cluster page ------------------------------------------------------------------


def test_the_page_polls_while_starting_and_refreshes_once_final(
    tenant_a: Tenant, cloud: Cloud
) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.STARTING)
    client = client_for(tenant_a.viewer)
    url = detail_url(cluster)
    page = page_text(client.get(url))
    assert (
        f'<div id="cluster-live" class="cluster-live" hx-get="{url}" hx-trigger="every 2s"' in page
    )
    assert "/terminate/" not in page  # viewers see, they do not act

    live = {"HX-Request": "true", "HX-Target": "cluster-live"}
    partial = client.get(url, headers=live)
    body = page_text(partial)
    assert body.lstrip().startswith('<div id="cluster-live"') and "<html" not in body
    assert 'hx-trigger="every 2s"' in body and "HX-Refresh" not in partial
    assert partial["Vary"] and "HX-Request" in partial["Vary"]

    Cluster.objects.filter(pk=cluster.pk).update(state=ClusterState.TERMINATED)
    final = client.get(url, headers=live)
    assert final["HX-Refresh"] == "true"
    assert "hx-trigger" not in page_text(final)
    assert "hx-trigger" not in page_text(client.get(url)).split('id="cluster-live"')[1]


def test_the_page_shows_nodes_usage_heartbeats_and_timed_events(
    tenant_a: Tenant, cloud: Cloud
) -> None:
    cluster = new_cluster(
        tenant_a, cloud, state=ClusterState.RUNNING, head_address="127.0.0.1:6379"
    )
    head = NodeFactory(
        cluster=cluster,
        state=NodeState.READY,
        instance_id="local-abc",
        private_address="127.0.0.1",
        cpus=2,
        memory_mb=4096,
    )
    NodeFactory(
        cluster=cluster,
        role=NodeRole.WORKER,
        group="gpu",
        state=NodeState.BOOTING,
        usage={"cpu_percent": 5, "memory_percent": 10, "gpus": [{"utilization_percent": 93}]},
    )
    # The latest heartbeat is in the shared cache (the row has it within a minute).
    Node.objects.filter(pk=head.pk).update(
        usage={"cpu_percent": 42.4, "memory_percent": 75},
        last_heartbeat_at=timezone.now() - timedelta(minutes=1),
    )
    cache.set(live.heartbeat_key(head.pk), time.time(), timeout=60)
    ClusterEvent.objects.create(
        organization=tenant_a.org,
        cluster=cluster,
        node=head,
        step="ray started",
        message="Ray is up on the head node.",
        duration_ms=3200,
    )
    record_event(cluster, "cloud call", "The cloud is busy, retrying.", level=EventLevel.WARNING)

    page = page_text(client_for(tenant_a.member).get(detail_url(cluster)))
    assert '<code title="local-abc">local-abc</code>' in page  # the full id on hover
    # Ray's raw ports are not for users: the page shows only the gateway's address.
    assert "127.0.0.1:6379" not in page
    assert 'value="42"' in page and "42%" in page  # the head's CPU bar
    assert 'value="75"' in page  # the head's memory bar
    assert "3.1 GB of 5 GB" in page  # the cluster's: 75% of 4 GB and 10% of 1 GB
    assert 'value="93"' in page and "93% across 1 GPU" in page
    assert "1 minute ago" not in page  # the cached heartbeat, newer than the row's
    assert "took 3.2 s" in page and "Ray is up on the head node." in page
    assert 'class="event event-warning"' in page
    assert reverse("cluster_terminate", args=[tenant_a.org.slug, cluster.pk]) in page


def test_usage_bars_follow_each_heartbeat_not_the_minutely_row(
    tenant_a: Tenant, cloud: Cloud, settings
) -> None:
    """The row keeps usage once a minute; the page reads the shared cache, which every
    heartbeat updates, so a change shows on the next poll (2 s), not a minute later."""
    settings.RAYDECK_AGENT_CACHE_SECONDS = 0
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    credential = new_secret("rdn")
    written = timezone.now() - timedelta(seconds=10)
    head = NodeFactory(
        cluster=cluster,
        state=NodeState.READY,
        cpus=2,
        memory_mb=4096,
        credential_hash=hash_secret(credential),
        last_heartbeat_at=written,
        usage={"cpu_percent": 10, "memory_percent": 20},
    )
    agents.forget_nodes()
    try:
        for cpu, memory in ((55, 30), (87, 64)):
            agents._liveness.written_at = float("-inf")  # a quiet installation: at once
            response = Client().post(
                "/agent/v1/heartbeat",
                {"state": "ready", "usage": {"cpu_percent": cpu, "memory_percent": memory}},
                content_type="application/json",
                headers={"Authorization": f"Bearer {credential}"},
            )
            assert response.status_code == 200
        head.refresh_from_db()
        assert head.usage == {"cpu_percent": 10, "memory_percent": 20}  # the row waits
        page = page_text(client_for(tenant_a.member).get(detail_url(cluster)))
        assert 'value="87"' in page and "87%" in page and 'value="64"' in page
        assert "10%" not in page

        cache.delete_many([live.heartbeat_key(head.pk), live.usage_key(head.pk)])
        page = page_text(client_for(tenant_a.member).get(detail_url(cluster)))
        assert 'value="10"' in page  # the cache lost it (a Redis restart): the row's
    finally:
        agents.flush_heartbeats()
        agents.forget_nodes()
        cache.delete_many([live.heartbeat_key(head.pk), live.usage_key(head.pk)])


def test_a_failure_says_what_happened_and_what_to_do(tenant_a: Tenant, cloud: Cloud) -> None:
    cluster = new_cluster(
        tenant_a,
        cloud,
        state=ClusterState.FAILED,
        desired_state=DesiredState.TERMINATED,
        state_reason="The worker node did not register its agent after the instance started "
        "within 5 min. Check that nodes can reach Raydeck's address (RAYDECK_AGENT_URL).",
    )
    page = page_text(client_for(tenant_a.member).get(detail_url(cluster)))
    assert 'class="flash flash-error failure"' in page
    assert "What happened:</strong> The worker node did not register" in page
    assert "What to do:</strong> Once nodes can reach Raydeck's address" in page
    assert "/restart/" in page and "hx-trigger" not in page.split('id="cluster-live"')[1]


def test_the_page_query_count_does_not_grow_with_nodes_or_events(
    tenant_a: Tenant, cloud: Cloud
) -> None:
    client = client_for(tenant_a.member)

    def queries_with(count: int) -> int:
        cluster = new_cluster(tenant_a, cloud, f"q{count}", state=ClusterState.RUNNING)
        for _ in range(count):
            node = NodeFactory(
                cluster=cluster,
                role=NodeRole.WORKER,
                state=NodeState.READY,
                usage={"cpu_percent": 10},
                log_tail="x" * 1000,
                last_heartbeat_at=timezone.now(),
            )
            record_event(
                cluster,
                "ray started",
                "Ray is up.",
                node=node,
                since=timezone.now() - timedelta(seconds=2),
            )
        url = detail_url(cluster)
        client.get(url)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url, headers={"HX-Request": "true", "HX-Target": "cluster-live"})
        assert response.status_code == 200
        return len(captured)

    assert queries_with(2) == queries_with(25)


def test_only_the_latest_events_are_shown(tenant_a: Tenant, cloud: Cloud) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    start = timezone.now() - timedelta(hours=1)
    ClusterEvent.objects.bulk_create(
        ClusterEvent(
            organization=tenant_a.org,
            cluster=cluster,
            step="step",
            message=f"event number {i}.",
            created_at=start + timedelta(seconds=i),
        )
        for i in range(130)
    )
    page = page_text(client_for(tenant_a.member).get(detail_url(cluster)))
    assert "event number 129." in page and "event number 30." in page
    assert "event number 29." not in page and "The latest 100 events." in page
    assert page.index("event number 30.") < page.index("event number 129.")  # oldest first


# --- Terminate and restart -------------------------------------------------------------


def test_terminate_asks_first_then_requests_it(
    tenant_a: Tenant, cloud: Cloud, django_capture_on_commit_callbacks
) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    client = client_for(tenant_a.member)
    url = reverse("cluster_terminate", args=[tenant_a.org.slug, cluster.pk])
    confirm = page_text(client.get(url))
    assert f"Terminate the cluster {cluster.name}?" in confirm and 'method="post"' in confirm
    cluster.refresh_from_db()
    assert cluster.desired_state == DesiredState.RUNNING  # asking changed nothing

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(url)
    assert response["Location"] == detail_url(cluster)
    cluster.refresh_from_db()
    assert cluster.desired_state == DesiredState.TERMINATED
    assert len(callbacks) == 1
    assert AuditEvent.objects.filter(verb="cluster.terminate", actor=tenant_a.member).exists()
    page = page_text(client.get(detail_url(cluster)))
    assert f"Terminating {cluster.name}." in page and "Terminating…" in page


def test_viewers_cannot_terminate_or_restart(tenant_a: Tenant, cloud: Cloud) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    client = client_for(tenant_a.viewer)
    url = reverse("cluster_terminate", args=[tenant_a.org.slug, cluster.pk])
    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    restart = reverse("cluster_restart", args=[tenant_a.org.slug, tenant_a.cluster.pk])
    assert client.post(restart).status_code == 403
    cluster.refresh_from_db()
    assert cluster.desired_state == DesiredState.RUNNING


def test_restart_a_terminated_cluster(
    tenant_a: Tenant, cloud: Cloud, django_capture_on_commit_callbacks
) -> None:
    cluster = tenant_a.cluster
    client = client_for(tenant_a.member)
    page = page_text(client.get(detail_url(cluster)))
    assert "/restart/" in page and "/terminate/" not in page
    assert (
        client.get(reverse("cluster_restart", args=[tenant_a.org.slug, cluster.pk])).status_code
        == 405
    )
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("cluster_restart", args=[tenant_a.org.slug, cluster.pk]))
    assert response["Location"] == detail_url(cluster)
    cluster.refresh_from_db()
    assert cluster.state == ClusterState.PENDING and cluster.desired_state == DesiredState.RUNNING
    assert len(callbacks) == 1
    # Restarting again while it is live says why not, instead of failing.
    again = client.post(
        reverse("cluster_restart", args=[tenant_a.org.slug, cluster.pk]), follow=True
    )
    assert "Only a terminated or failed cluster can be restarted." in page_text(again)


def test_restart_on_a_cloud_no_longer_verified_says_so(tenant_a: Tenant) -> None:
    response = client_for(tenant_a.member).post(
        reverse("cluster_restart", args=[tenant_a.org.slug, tenant_a.cluster.pk]), follow=True
    )
    assert "is not verified. Verify it first." in page_text(response)
    tenant_a.cluster.refresh_from_db()
    assert tenant_a.cluster.state == ClusterState.TERMINATED


# --- Node logs -------------------------------------------------------------------------


def test_node_log_as_a_page_and_as_a_partial(tenant_a: Tenant, cloud: Cloud) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    node = NodeFactory(
        cluster=cluster,
        state=NodeState.READY,
        log_tail="raylet started\nERROR something <b>odd</b>",
    )
    client = client_for(tenant_a.viewer)
    url = reverse("cluster_node_log", args=[tenant_a.org.slug, cluster.pk, node.pk])
    page = client.get(url).content.decode()
    assert "<html" in page and "ERROR something &lt;b&gt;odd&lt;/b&gt;" in page
    partial = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in partial and "raylet started" in partial

    # A node is only reached through its own cluster.
    other = reverse("cluster_node_log", args=[tenant_a.org.slug, cluster.pk, tenant_a.node.pk])
    assert client.get(other).status_code == 404


def stored_tail(*lines: tuple[str, str]) -> str:
    """(file label, line) pairs as a node's heartbeats store them: labelled by the agent's
    own buffer, joined one a line."""
    buffer = LogBuffer()
    for label, line in lines:
        buffer.add(label, line)
    return "\n".join(buffer.tail(len(lines)))


def ray_line(level: str, process: str, message: str) -> str:
    """A line as Ray's C++ processes write it, with its level letter."""
    return f"[2026-12-07 03:00:02,100 {level} 41 41] ({process}) {message}"


# What a head node's tail looks like: the agent, Ray's start, the raylet (and its
# periodic state dump), the GCS, the dashboard.
HEAD_TAIL = stored_tail(
    ("agent", "2026-12-07 03:00:01 INFO registered as head"),
    ("ray-start", "Local node IP: 10.0.0.5"),
    ("raylet.out", ray_line("I", "raylet", "main.cc:225: Raylet started")),
    ("raylet.out", ray_line("I", "raylet", "node_manager.cc:1: [state-dump] NodeManager:")),
    ("raylet.out", ray_line("I", "raylet", "node_manager.cc:1: [state-dump] Event stats:")),
    ("gcs_server.out", ray_line("I", "gcs_server", "gcs_server.cc:60: GCS started")),
    ("gcs_server.err", ray_line("E", "gcs_server", "gcs_node_manager.cc:9: node lost")),
    ("dashboard.log", "2026-12-07 03:00:03,000 INFO head.py:1 -- Dashboard head started"),
)
# What the raylet prints when its agent processes end, Raydeck's stop included.
AGENT_GONE = stored_tail(
    (
        "raylet.out",
        ray_line(
            "E",
            "raylet",
            "agent_manager.cc:83: The raylet exited immediately because one Ray agent "
            "failed, agent_name = runtime_env_agent.",
        ),
    ),
    ("raylet.out", "The raylet fate shares with the agent. This can happen because"),
    ("raylet.out", "- The agent is killed by the OS (e.g., out of memory)."),
)


def log_lines(page: str) -> list[str]:
    """The lines in the page's log box, without their markup."""
    box = page.split("<pre>", 1)[1].split("</pre>", 1)[0]
    return [html.unescape(re.sub(r"<[^>]+>", "", line)) for line in box.splitlines() if line]


def test_the_node_log_filters_by_file_and_text_and_hides_state_dumps(
    tenant_a: Tenant, cloud: Cloud
) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    node = NodeFactory(cluster=cluster, state=NodeState.READY, log_tail=HEAD_TAIL)
    client = client_for(tenant_a.viewer)
    url = reverse("cluster_node_log", args=[tenant_a.org.slug, cluster.pk, node.pk])

    every = log_lines(client.get(url).content.decode())
    assert len(every) == 6 and not any("[state-dump]" in line for line in every)
    assert "2 lines of Ray's periodic state dumps hidden" in page_text(client.get(url))
    with_dumps = log_lines(client.get(url, {"dumps": "on"}).content.decode())
    assert len(with_dumps) == 8

    for source, label in [
        ("agent", "[agent]"),
        ("boot", "[ray-start]"),
        ("raylet", "[raylet.out]"),
        ("dashboard", "[dashboard.log]"),
    ]:
        shown = log_lines(client.get(url, {"source": source}).content.decode())
        assert shown and all(line.startswith(label) for line in shown), source
    gcs = log_lines(client.get(url, {"source": "gcs"}).content.decode())
    assert [line.split("]", 1)[0] for line in gcs] == ["[gcs_server.out", "[gcs_server.err"]

    # Search: any case, within the chosen file; an error line is marked as one.
    page = client.get(url, {"source": "gcs", "q": "NODE LOST"}).content.decode()
    assert log_lines(page) == [gcs[1]]
    assert '<span class="log-error">[gcs_server.err]' in page
    nothing = page_text(client.get(url, {"source": "agent", "q": "node lost"}))
    assert "No line of the last 8 matches." in nothing
    # A filter that is no filter (an unknown file) shows everything rather than failing.
    assert len(log_lines(client.get(url, {"source": "nope"}).content.decode())) == 6


def test_the_node_log_downloads_as_filtered(tenant_a: Tenant, cloud: Cloud) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    node = NodeFactory(cluster=cluster, state=NodeState.READY, log_tail=HEAD_TAIL)
    client = client_for(tenant_a.viewer)
    url = reverse("cluster_node_log_download", args=[tenant_a.org.slug, cluster.pk, node.pk])

    response = client.get(url, {"source": "raylet", "dumps": "on"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    assert response["Content-Disposition"].endswith('-raylet.log"')
    body = response.content.decode()
    assert body.splitlines() == [line for line in HEAD_TAIL.splitlines() if "[raylet.out]" in line]
    assert len(client.get(url).content.decode().splitlines()) == 6  # state dumps left out
    # Another organization's member finds nothing there.
    other = client_for(make_tenant("delta").owner)
    assert other.get(url).status_code == 404


def test_the_agent_killed_alarm_after_a_stop_is_explained_not_an_error(
    tenant_a: Tenant, cloud: Cloud
) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.TERMINATED)
    stopped = NodeFactory(
        cluster=cluster, state=NodeState.TERMINATED, log_tail=f"{HEAD_TAIL}\n{AGENT_GONE}"
    )
    client = client_for(tenant_a.viewer)
    url = reverse("cluster_node_log", args=[tenant_a.org.slug, cluster.pk, stopped.pk])
    page = client.get(url).content.decode()
    assert "is expected: Raydeck stopped this node" in html.unescape(page)
    assert page.count('class="log-expected"') == 3
    assert "agent is killed by the OS" in page and 'log-error">[raylet.out]' not in page

    # On a node Raydeck did not stop, the same lines are an error, with no excuse.
    running = new_cluster(tenant_a, cloud, name="c2", state=ClusterState.RUNNING)
    crashed = NodeFactory(cluster=running, state=NodeState.READY, log_tail=AGENT_GONE)
    url = reverse("cluster_node_log", args=[tenant_a.org.slug, running.pk, crashed.pk])
    page = client.get(url).content.decode()
    assert "Raydeck stopped this node" not in page
    assert page.count('class="log-error"') == 3


def test_node_hashes_never_reach_a_page(tenant_a: Tenant, cloud: Cloud) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    node = NodeFactory(
        cluster=cluster,
        state=NodeState.READY,
        log_tail="ok",
        bootstrap_token_hash="b" * 64,
        credential_hash="c" * 64,
    )
    client = client_for(tenant_a.owner)
    log_url = reverse("cluster_node_log", args=[tenant_a.org.slug, cluster.pk, node.pk])
    for url in (detail_url(cluster), log_url):
        body = client.get(url).content.decode()
        assert "b" * 64 not in body and "c" * 64 not in body


# --- Isolation -------------------------------------------------------------------------


def test_another_organizations_cluster_is_not_found(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = client_for(tenant_b.owner)
    cluster, node = tenant_a.cluster, tenant_a.node
    for org in (tenant_a.org.slug, tenant_b.org.slug):
        for url in (
            reverse("cluster_detail", args=[org, cluster.pk]),
            reverse("cluster_terminate", args=[org, cluster.pk]),
            reverse("cluster_node_log", args=[org, cluster.pk, node.pk]),
        ):
            assert client.get(url).status_code == 404
    # B's own cluster with A's node id: still nothing.
    url = reverse("cluster_node_log", args=[tenant_b.org.slug, tenant_b.cluster.pk, node.pk])
    assert client.get(url).status_code == 404
    page = page_text(client.get(reverse("cluster_list", args=[tenant_b.org.slug])))
    assert "bravo-cluster" in page and "alpha-cluster" not in page


def test_a_member_outside_the_project_does_not_see_its_clusters(tenant_a: Tenant) -> None:
    tenant_a.project_membership.delete()
    client = client_for(tenant_a.member)
    assert client.get(detail_url(tenant_a.cluster)).status_code == 404
    page = page_text(client.get(reverse("cluster_list", args=[tenant_a.org.slug])))
    assert "alpha-cluster" not in page


# --- Support admin ---------------------------------------------------------------------


@pytest.fixture
def staff_client() -> Client:
    return client_for(UserFactory(is_staff=True, email="support@raydeck.example"))


def test_admin_force_terminate_is_audited_with_the_staff_member(
    staff_client: Client, tenant_a: Tenant, cloud: Cloud, django_capture_on_commit_callbacks
) -> None:
    cluster = new_cluster(tenant_a, cloud, state=ClusterState.RUNNING)
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            reverse("admin:clusters_cluster_changelist"),
            {"action": "force_terminate", "_selected_action": [cluster.pk, tenant_a.cluster.pk]},
            follow=True,
        )
    assert response.status_code == 200
    assert "Terminating 1 cluster(s)" in page_text(
        response
    ) and "1 already terminated" in page_text(response)
    cluster.refresh_from_db()
    assert cluster.desired_state == DesiredState.TERMINATED and len(callbacks) == 1
    event = AuditEvent.objects.get(verb="cluster.force_terminate")
    assert event.actor_email == "support@raydeck.example"
    assert event.organization == tenant_a.org and event.target_id == str(cluster.pk)
    assert cluster.events.filter(message__contains="support@raydeck.example").exists()


def test_admin_is_read_only_and_hides_node_secrets(
    staff_client: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    Node.objects.filter(pk=tenant_a.node.pk).update(
        credential_hash="c" * 64, bootstrap_token_hash="b" * 64
    )
    listing = page_text(
        staff_client.get(reverse("admin:clusters_cluster_changelist"), {"q": "cluster"})
    )
    assert "alpha-cluster" in listing and "bravo-cluster" in listing
    for url in (
        reverse("admin:clusters_cluster_change", args=[tenant_a.cluster.pk]),
        reverse("admin:clusters_node_change", args=[tenant_a.node.pk]),
    ):
        body = staff_client.get(url).content.decode()
        assert "c" * 64 not in body and "b" * 64 not in body
        assert "alpha node log" not in body
        assert 'name="_save"' not in body
    assert staff_client.get(reverse("admin:clusters_cluster_add")).status_code == 403
