"""The JSON API as a script or the CLI sees it: token authentication, tenant isolation,
the role table, one error shape, keyset pages and filters, idempotent creates, the rate
limit, and every endpoint's answer. Real PostgreSQL and Redis when DATABASE_URL and
REDIS_URL are set."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import services
from accounts.choices import OrgRole, ProjectRole
from accounts.models import ApiToken, AuditEvent, IdempotencyKey
from clusters.choices import ClusterState, NodeRole, NodeState
from clusters.models import Cluster, ClusterEvent, ComputeConfig
from tests.conftest import Tenant, client_for
from tests.factories import (
    ClusterFactory,
    ComputeConfigVersionFactory,
    ContainerImageFactory,
    NodeFactory,
    ProjectFactory,
    ProjectMembershipFactory,
    ServiceAccountFactory,
)

from .conftest import ApiClient, as_role, assert_error, token_secret

pytestmark = pytest.mark.django_db


def org_path(tenant: Tenant, rest: str = "") -> str:
    return f"/orgs/{tenant.org.slug}{rest}"


def new_cluster(client: ApiClient, tenant: Tenant, name: str = "api-one", **extra: Any) -> Any:
    body = {"name": name, "project": tenant.project.slug, **extra}
    return client.post(org_path(tenant, "/clusters"), body)


# --- Authentication ------------------------------------------------------------------------


def test_no_token_bad_token_or_a_session_is_401_in_the_error_shape(alpha: Tenant) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer rdk_not-a-real-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        answer = ApiClient(None).get("/me", **headers)
        assert_error(answer, 401, "unauthenticated")
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    # A signed-in browser session is no API credential.
    response = client_for(alpha.owner).get(f"/api/v1/orgs/{alpha.org.slug}/clusters")
    assert response.status_code == 401


def test_revoked_and_expired_tokens_stop_working_at_once(alpha: Tenant) -> None:
    secret = token_secret(alpha, OrgRole.MEMBER)
    client = ApiClient(secret)
    assert client.get("/me").status == 200
    token = ApiToken.objects.get(user=alpha.member, name="api member")
    services.token_revoke(token=token, actor=alpha.member)
    assert_error(client.get("/me"), 401, "unauthenticated")

    secret = token_secret(alpha, OrgRole.ADMIN)
    ApiToken.objects.filter(user=alpha.admin).update(expires_at=timezone.now() - timedelta(1))
    assert_error(ApiClient(secret).get("/me"), 401, "unauthenticated")


def test_a_removed_member_s_token_is_refused(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.MEMBER)
    alpha.memberships[OrgRole.MEMBER].delete()
    assert_error(client.get("/me"), 401, "unauthenticated")


def test_me_names_the_holder_the_token_and_records_its_use(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.ADMIN)
    answer = client.get("/me", REMOTE_ADDR="203.0.113.7")
    assert answer.status == 200
    assert answer.body["user"]["email"] == alpha.admin.email
    assert answer.body["user"]["kind"] == "person"
    assert answer.body["token"]["name"] == "api admin"
    assert answer.body["token"]["read_only"] is False
    assert answer.body["organization"] == {
        "slug": alpha.org.slug,
        "name": alpha.org.name,
        "role": "admin",
    }
    token = ApiToken.objects.get(user=alpha.admin)
    assert token.last_used_at is not None
    assert token.last_used_ip == "127.0.0.1"  # REMOTE_ADDR of the test client


# --- Read-only tokens and roles -------------------------------------------------------------


def test_a_read_only_token_reads_and_never_writes(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.OWNER, read_only=True)
    assert client.get(org_path(alpha, "/clusters")).status == 200
    before = Cluster.objects.count()
    assert_error(new_cluster(client, alpha), 403, "permission_denied")
    assert_error(
        client.post(org_path(alpha, "/projects"), {"name": "Nope"}), 403, "permission_denied"
    )
    url = org_path(alpha, f"/clusters/{alpha.cluster.uuid}/terminate")
    assert_error(client.post(url), 403, "permission_denied")
    assert Cluster.objects.count() == before


def test_a_viewer_s_token_is_read_only(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.VIEWER)
    assert client.get("/me").body["token"]["read_only"] is True
    assert_error(new_cluster(client, alpha), 403, "permission_denied")


def test_members_create_clusters_only_in_their_projects(alpha: Tenant) -> None:
    member = as_role(alpha, OrgRole.MEMBER)
    created = new_cluster(member, alpha)
    assert created.status == 201, created.body
    other = ProjectFactory(organization=alpha.org, slug="not-mine")
    # A project the member is not in does not exist for them.
    answer = member.post(org_path(alpha, "/clusters"), {"name": "x", "project": other.slug})
    assert_error(answer, 422, "validation_error")
    assert "project" in answer.body["error"]["details"]
    assert_error(member.get(org_path(alpha, "/projects/not-mine")), 404, "not_found")
    # A reader of a project sees it and cannot create in it.
    ProjectMembershipFactory(project=other, user=alpha.member, role=ProjectRole.READER)
    member = as_role(alpha, OrgRole.MEMBER, name="again")
    assert member.get(org_path(alpha, "/projects/not-mine")).status == 200
    answer = member.post(org_path(alpha, "/clusters"), {"name": "x", "project": other.slug})
    assert_error(answer, 403, "permission_denied")


def test_the_audit_log_is_for_owners_and_admins(alpha: Tenant) -> None:
    assert_error(
        as_role(alpha, OrgRole.MEMBER).get(org_path(alpha, "/audit-events")),
        403,
        "permission_denied",
    )
    admin = as_role(alpha, OrgRole.ADMIN)
    new_cluster(admin, alpha, "audited")
    answer = admin.get(org_path(alpha, "/audit-events"), {"action": "cluster."})
    assert answer.status == 200
    assert [e["action"] for e in answer.body["items"]] == ["cluster.create"]
    assert answer.body["items"][0]["actor"] == alpha.admin.email
    assert answer.body["items"][0]["target"]["repr"] == "audited"


def test_api_writes_are_audited_with_the_caller_s_address(alpha: Tenant) -> None:
    created = new_cluster(as_role(alpha, OrgRole.MEMBER), alpha, "from-api")
    event = AuditEvent.objects.get(verb="cluster.create", target_repr="from-api")
    assert event.actor == alpha.member
    assert event.ip == "127.0.0.1"
    assert created.body["created_by"] == alpha.member.email


def test_compute_configs_org_wide_need_an_admin_a_project_s_need_a_writer(alpha: Tenant) -> None:
    body = {
        "name": "gpu",
        "cloud": str(alpha.cloud.pk),
        "head": {"cpus": 2, "memory_mb": 4096},
        "worker_groups": [{"name": "gpu", "min": 0, "max": 4, "cpus": 8, "spot": True}],
    }
    member = as_role(alpha, OrgRole.MEMBER)
    assert_error(member.post(org_path(alpha, "/compute-configs"), body), 403, "permission_denied")
    answer = member.post(
        org_path(alpha, "/compute-configs"), {**body, "project": alpha.project.slug}
    )
    assert answer.status == 201, answer.body
    assert answer.body["project"] == alpha.project.slug
    assert answer.body["worker_groups"][0]["max"] == 4
    # The autoscaler's downscale delay is kept (default when not given), as stored.
    assert answer.body["worker_groups"][0]["downscale_delay_seconds"] == 300
    slow = member.post(
        org_path(alpha, "/compute-configs"),
        {
            **body,
            "name": "slow",
            "project": alpha.project.slug,
            "worker_groups": [{"name": "gpu", "max": 2, "downscale_delay_seconds": 900}],
        },
    )
    assert slow.status == 201, slow.body
    stored = ComputeConfig.objects.get(pk=slow.body["id"]).latest.worker_groups
    assert stored[0]["downscale_delay_seconds"] == 900
    assert answer.body["head"] == {"instance_type": "", "cpus": 2.0, "memory_mb": 4096}
    admin = as_role(alpha, OrgRole.ADMIN)
    answer = admin.post(org_path(alpha, "/compute-configs"), {**body, "name": "org-wide"})
    assert answer.status == 201
    got = admin.get(org_path(alpha, f"/compute-configs/{answer.body['id']}"))
    assert got.body == answer.body
    assert AuditEvent.objects.filter(verb="compute_config.create").count() == 3
    # And a cluster can use it.
    cluster = new_cluster(admin, alpha, "on-gpu", compute_config=answer.body["id"])
    assert cluster.status == 201, cluster.body
    assert cluster.body["compute_config"] == answer.body["id"]


def test_a_change_to_a_compute_config_is_its_next_version(alpha: Tenant, bravo: Tenant) -> None:
    member = as_role(alpha, OrgRole.MEMBER)
    made = member.post(
        org_path(alpha, "/compute-configs"),
        {
            "name": "cpu",
            "project": alpha.project.slug,
            "cloud": str(alpha.cloud.pk),
            "worker_groups": [{"name": "cpu", "max": 2}],
        },
    )
    path = org_path(alpha, f"/compute-configs/{made.body['id']}")
    before = new_cluster(member, alpha, "before", compute_config=made.body["id"])
    assert before.status == 201, before.body

    wider = [{"name": "cpu", "max": 8, "downscale_delay_seconds": 60}]
    changed = member.patch(path, {"worker_groups": wider, "max_uptime_minutes": 120})
    assert changed.status == 200, changed.body
    assert changed.body["version"] == 2 and changed.body["max_uptime_minutes"] == 120
    assert changed.body["worker_groups"][0]["max"] == 8
    assert changed.body["head"] == made.body["head"]  # what was not sent stays
    assert member.get(path).body == changed.body
    assert member.patch(path, {"worker_groups": wider}).body["version"] == 2  # no change
    assert member.patch(path, {"max_uptime_minutes": None}).body["version"] == 3  # no limit
    cluster = member.get(org_path(alpha, f"/clusters/{before.body['id']}")).body
    assert cluster["compute_config_version"] == 1  # clusters keep their version

    refused = member.patch(path, {"worker_groups": [{"name": "cpu", "min": 3, "max": 1}]})
    assert_error(refused, 422, "validation_error")
    assert "worker_groups.0" in refused.body["error"]["details"]
    assert_error(member.patch(path, {"region": None}), 422, "validation_error")
    assert_error(member.patch(path, [None, None]), 422, "validation_error")  # not an object
    assert "cloud" in member.patch(path, {"cloud": "999999"}).body["error"]["details"]
    assert member.get(path).body["version"] == 3  # refusals saved nothing
    assert_error(
        as_role(alpha, OrgRole.VIEWER).patch(path, {"zone": "b"}), 403, "permission_denied"
    )
    assert_error(
        as_role(bravo, OrgRole.OWNER).patch(
            f"/orgs/{bravo.org.slug}/compute-configs/{made.body['id']}", {"zone": "b"}
        ),
        404,
        "not_found",
    )
    assert AuditEvent.objects.filter(verb="compute_config.update").count() == 2


def test_tokens_are_listed_never_made_or_revoked_with_a_token(alpha: Tenant) -> None:
    member = as_role(alpha, OrgRole.MEMBER)
    mine = member.get(org_path(alpha, "/tokens")).body["items"]
    assert {t["owner"] for t in mine} == {alpha.member.email}
    assert all("secret" not in t and "hash" not in str(t) for t in mine)
    everyone = as_role(alpha, OrgRole.OWNER).get(org_path(alpha, "/tokens")).body["items"]
    assert {alpha.member.email, alpha.owner.email} <= {t["owner"] for t in everyone}
    assert_error(
        member.post(org_path(alpha, "/tokens"), {"name": "more"}), 403, "permission_denied"
    )
    own_id = mine[0]["id"]
    assert_error(member.delete(org_path(alpha, f"/tokens/{own_id}")), 403, "permission_denied")
    assert ApiToken.objects.get(pk=own_id).revoked_at is None


def test_a_service_account_token_reads_and_writes_within_its_role(alpha: Tenant) -> None:
    account = ServiceAccountFactory(organization=alpha.org, name="ci", role=OrgRole.ADMIN)
    _, secret = services.token_create(
        organization=alpha.org,
        actor=alpha.owner,
        name="ci",
        days=5,
        read_only=False,
        service_account=account,
    )
    client = ApiClient(secret)
    me = client.get("/me").body
    assert me["user"]["kind"] == "service_account" and me["user"]["name"] == "ci"
    listed = client.get(org_path(alpha, "/clusters")).body["items"]
    assert [c["id"] for c in listed] == [str(alpha.cluster.uuid)]
    assert {t["name"] for t in client.get(org_path(alpha, "/tokens")).body["items"]} >= {"ci"}
    # An admin service account creates and terminates clusters, as an admin may.
    created = new_cluster(client, alpha, name="from-ci")
    assert created.status == 201, created.body
    cluster = Cluster.objects.get(uuid=created.body["id"])
    assert cluster.created_by is None
    event = AuditEvent.objects.get(verb="cluster.create", target_id=str(cluster.pk))
    assert event.actor is None and event.actor_email == "service account ci"
    stopped = client.post(org_path(alpha, f"/clusters/{created.body['id']}/terminate"))
    assert stopped.status == 202, stopped.body
    # A read-only token of the same account cannot.
    _, read_only = services.token_create(
        organization=alpha.org,
        actor=alpha.owner,
        name="ci-ro",
        days=5,
        read_only=True,
        service_account=account,
    )
    assert_error(new_cluster(ApiClient(read_only), alpha, name="ro"), 403, "permission_denied")
    # A member service account joins no project: it sees none of them, creates in none.
    robot = ServiceAccountFactory(organization=alpha.org, name="robot", role=OrgRole.MEMBER)
    _, secret = services.token_create(
        organization=alpha.org,
        actor=alpha.owner,
        name="r",
        days=5,
        read_only=False,
        service_account=robot,
    )
    assert ApiClient(secret).get(org_path(alpha, "/clusters")).body["items"] == []
    assert new_cluster(ApiClient(secret), alpha, name="robot-one").status in (403, 404, 422)


# --- Tenant isolation (the URL walk in tests/console covers every route) ------------------


def test_a_person_in_two_organizations_uses_each_token_in_its_own(
    alpha: Tenant, bravo: Tenant
) -> None:
    from tests.factories import MembershipFactory

    MembershipFactory(organization=bravo.org, user=alpha.owner, role=OrgRole.OWNER)
    client = as_role(alpha, OrgRole.OWNER)  # a token of alpha
    assert client.get(org_path(alpha, "/clusters")).status == 200
    assert_error(client.get(org_path(bravo, "/clusters")), 404, "not_found")
    assert_error(client.get(org_path(bravo)), 404, "not_found")
    url = org_path(alpha, f"/clusters/{bravo.cluster.uuid}")
    assert_error(client.get(url), 404, "not_found")
    assert [o["slug"] for o in client.get("/orgs").body["items"]] == [alpha.org.slug]
    # Bodies naming another organization's objects are refused like missing ones.
    answer = new_cluster(client, alpha, cloud=str(bravo.cloud.pk))
    assert_error(answer, 422, "validation_error")
    answer = client.post(org_path(alpha, "/clusters"), {"name": "x", "project": bravo.project.slug})
    assert_error(answer, 422, "validation_error")


def test_the_service_s_rules_come_back_on_their_fields(alpha: Tenant) -> None:
    """The API resolves ids and calls cluster_create, whose refusals name the field."""
    elsewhere = ProjectFactory(organization=alpha.org, slug="elsewhere")
    theirs = ComputeConfigVersionFactory(
        cloud=alpha.cloud, config__name="Theirs", config__project=elsewhere
    )
    boxed = ContainerImageFactory(organization=alpha.org, name="Boxed", image_uri="acme/ray:1")
    client = as_role(alpha, OrgRole.ADMIN)
    answer = new_cluster(client, alpha, compute_config=str(theirs.config_id), image=str(boxed.pk))
    assert_error(answer, 422, "validation_error")
    details = answer.body["error"]["details"]
    assert "Theirs belongs to another project" in details["compute_config"][0]
    assert "not containers" in details["image"][0]
    answer = new_cluster(client, alpha, compute_config="999999")
    assert_error(answer, 422, "validation_error")
    assert "compute_config" in answer.body["error"]["details"]
    assert not Cluster.objects.filter(name="api-one").exists()


def test_a_project_s_url_name_is_derived_and_checked_by_the_service(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.ADMIN)
    made = client.post(org_path(alpha, "/projects"), {"name": "Data Science"})
    assert made.status == 201, made.body
    assert made.body["slug"] == "data-science"
    again = client.post(org_path(alpha, "/projects"), {"name": "Other", "slug": "data-science"})
    assert_error(again, 422, "validation_error")
    assert "already exists" in again.body["error"]["details"]["slug"][0]
    nameless = client.post(org_path(alpha, "/projects"), {"name": "!!!"})
    assert_error(nameless, 422, "validation_error")
    assert "slug" in nameless.body["error"]["details"]


# --- Validation errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/clusters", {"limit": 0}, "limit"),
        ("/clusters", {"limit": 201}, "limit"),
        ("/clusters", {"state": "sleeping"}, "state"),
        ("/clusters", {"cloud": "abc"}, "cloud"),
        ("/clusters", {"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ("/projects", {"cursor": "%%%"}, "cursor"),
    ],
)
def test_bad_query_parameters_are_validation_errors(
    alpha: Tenant, path: str, params: dict[str, Any], field: str
) -> None:
    answer = as_role(alpha, OrgRole.MEMBER).get(org_path(alpha, path), params)
    assert_error(answer, 422, "validation_error")
    assert field in answer.body["error"]["details"]


def test_bad_bodies_are_validation_errors_with_the_field(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.MEMBER)
    answer = client.post(org_path(alpha, "/clusters"), {"project": alpha.project.slug})
    assert_error(answer, 422, "validation_error")
    assert answer.body["error"]["details"]["name"]
    answer = client.post(org_path(alpha, "/clusters"), "{not json")
    assert_error(answer, 422, "validation_error")
    assert "body" in answer.body["error"]["details"]
    answer = new_cluster(client, alpha, name="x" * 101)
    assert_error(answer, 422, "validation_error")
    assert "name" in answer.body["error"]["details"]
    assert new_cluster(client, alpha, name="twice").status == 201
    answer = new_cluster(client, alpha, name="twice")
    assert_error(answer, 422, "validation_error")
    assert "already live" in answer.body["error"]["details"]["name"][0]
    answer = new_cluster(client, alpha, image="999999")
    assert_error(answer, 422, "validation_error")
    assert "image" in answer.body["error"]["details"]
    answer = client.post(org_path(alpha, "/projects"), {"name": "P", "slug": "Not A Slug!"})
    assert_error(answer, 422, "validation_error")
    assert "slug" in answer.body["error"]["details"]
    groups = [{"name": "w", "min": 3, "max": 1}]
    answer = client.post(
        org_path(alpha, "/compute-configs"),
        {
            "name": "c",
            "cloud": str(alpha.cloud.pk),
            "project": alpha.project.slug,
            "worker_groups": groups,
        },
    )
    assert_error(answer, 422, "validation_error")
    assert "worker_groups.0" in answer.body["error"]["details"]


def test_unknown_paths_and_methods_answer_in_the_error_shape(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.MEMBER)
    assert_error(client.get("/no/such/thing"), 404, "not_found")
    assert_error(client.call("put", "/me"), 405, "method_not_allowed")
    assert_error(client.get(org_path(alpha, "/clusters/not-a-uuid")), 404, "not_found")
    assert_error(client.get(org_path(alpha, "/clouds/99999999999999999999")), 404, "not_found")


def test_a_cluster_of_an_unverified_cloud_is_refused_with_the_reason(alpha: Tenant) -> None:
    alpha.cloud.state = "unverified"
    alpha.cloud.save(update_fields=["state"])
    answer = new_cluster(as_role(alpha, OrgRole.MEMBER), alpha, cloud=str(alpha.cloud.pk))
    assert_error(answer, 422, "validation_error")
    assert "not verified" in answer.body["error"]["details"]["cloud"][0]
    answer = new_cluster(as_role(alpha, OrgRole.MEMBER, name="b"), alpha)
    assert_error(answer, 422, "validation_error")
    assert "no verified cloud" in answer.body["error"]["details"]["cloud"][0]


# --- Pages and filters ----------------------------------------------------------------------


def test_cluster_pages_walk_everything_once_in_constant_queries(alpha: Tenant) -> None:
    for i in range(120):
        ClusterFactory(
            project=alpha.project,
            cloud=alpha.cloud,
            name=f"c{i:03}",
            compute_config=alpha.cluster.compute_config,
            image=alpha.cluster.image,
        )
    client = as_role(alpha, OrgRole.MEMBER)
    client.get("/me")  # the token's last use is written once a minute; not in the count
    seen, cursor, counts = [], None, []
    while True:
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(org_path(alpha, "/clusters"), params)
        counts.append(len(queries))
        assert answer.status == 200
        seen += [c["id"] for c in answer.body["items"]]
        cursor = answer.body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 121
    assert len(counts) == 3 and len(set(counts)) == 1, counts
    assert counts[0] <= 4, counts
    created = list(Cluster.objects.order_by("-created_at", "-pk").values_list("uuid", flat=True))
    assert seen == [str(u) for u in created]


def test_cluster_filters(alpha: Tenant) -> None:
    other_project = ProjectFactory(organization=alpha.org, slug="second")
    running = ClusterFactory(
        project=other_project, cloud=alpha.cloud, name="r", state=ClusterState.RUNNING
    )
    client = as_role(alpha, OrgRole.OWNER)

    def ids(**params: Any) -> set[str]:
        return {c["id"] for c in client.get(org_path(alpha, "/clusters"), params).body["items"]}

    assert ids(state="running") == {str(running.uuid)}
    assert ids(project="second") == {str(running.uuid)}
    assert ids(project=alpha.project.slug) == {str(alpha.cluster.uuid)}
    assert ids(cloud=str(alpha.cloud.pk)) == {str(alpha.cluster.uuid), str(running.uuid)}
    assert ids(cloud="424242") == set()


def test_every_list_answers_a_page(alpha: Tenant) -> None:
    ClusterEvent.objects.create(
        organization=alpha.org, cluster=alpha.cluster, step="queued", message="Queued."
    )
    client = as_role(alpha, OrgRole.OWNER)
    cluster = f"/clusters/{alpha.cluster.uuid}"
    for rest in (
        "/members",
        "/projects",
        "/clouds",
        "/compute-configs",
        "/images",
        "/clusters",
        "/audit-events",
        "/tokens",
        f"{cluster}/events",
        f"{cluster}/nodes",
    ):
        answer = client.get(org_path(alpha, rest))
        assert answer.status == 200, (rest, answer.body)
        assert set(answer.body) == {"items", "next_cursor"}, rest
        assert answer.body["items"], rest
    answer = client.get(org_path(alpha, "/members"), {"limit": 2})
    rest = client.get(org_path(alpha, "/members"), {"cursor": answer.body["next_cursor"]})
    emails = [m["user"]["email"] for m in answer.body["items"] + rest.body["items"]]
    assert sorted(emails) == sorted(u.email for u in alpha.users.values())


# --- Clusters: create, get, terminate, events, nodes, logs ------------------------------------


def test_create_get_and_terminate_a_cluster(
    alpha: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    client = as_role(alpha, OrgRole.MEMBER)
    with django_capture_on_commit_callbacks() as enqueued:
        created = new_cluster(client, alpha, "lifecycle")
    assert created.status == 201
    assert len(enqueued) == 1  # the reconciler, once the row is committed
    body = created.body
    assert body["state"] == "pending" and body["desired_state"] == "running"
    assert body["project"] == alpha.project.slug and body["cloud"] == str(alpha.cloud.pk)
    assert body["url"].endswith(
        f"/o/{alpha.org.slug}/clusters/{Cluster.objects.get(uuid=body['id']).pk}/"
    )
    assert client.get(org_path(alpha, f"/clusters/{body['id']}")).body == body

    url = org_path(alpha, f"/clusters/{body['id']}/terminate")
    assert_error(as_role(alpha, OrgRole.VIEWER).post(url), 403, "permission_denied")
    with django_capture_on_commit_callbacks() as enqueued:
        answer = client.post(url)
    assert answer.status == 202
    assert answer.body["desired_state"] == "terminated"
    assert len(enqueued) == 1
    assert client.post(url).status == 202  # asking again changes nothing
    assert AuditEvent.objects.filter(verb="cluster.terminate").count() == 1
    events = client.get(org_path(alpha, f"/clusters/{body['id']}/events")).body["items"]
    assert [e["step"] for e in events] == ["queued", "terminate requested"]
    after = client.get(
        org_path(alpha, f"/clusters/{body['id']}/events"), {"after": events[0]["id"]}
    ).body["items"]
    assert [e["step"] for e in after] == ["terminate requested"]


def test_nodes_and_logs(alpha: Tenant) -> None:
    cluster = ClusterFactory(project=alpha.project, cloud=alpha.cloud, state=ClusterState.RUNNING)
    head = NodeFactory(
        cluster=cluster,
        state=NodeState.READY,
        private_address="10.0.0.5",
        log_tail="\n".join(f"line {i}" for i in range(300)),
        usage={"cpu_percent": 12.5},
    )
    worker = NodeFactory(
        cluster=cluster,
        role=NodeRole.WORKER,
        group="workers",
        state=NodeState.READY,
        log_tail="worker says hi",
    )
    ClusterEvent.objects.create(
        organization=alpha.org, cluster=cluster, node=head, step="node ready", message="Ray is up."
    )
    client = as_role(alpha, OrgRole.VIEWER)
    base = org_path(alpha, f"/clusters/{cluster.uuid}")
    nodes = client.get(f"{base}/nodes").body["items"]
    assert [(n["id"], n["role"]) for n in nodes] == [
        (str(head.uuid), "head"),
        (str(worker.uuid), "worker"),
    ]
    assert nodes[0]["usage"] == {"cpu_percent": 12.5}
    logs = client.get(f"{base}/logs", {"lines": 3}).body
    assert logs == {"node": str(head.uuid), "lines": ["line 297", "line 298", "line 299"]}
    assert client.get(f"{base}/logs", {"node": str(worker.uuid)}).body["lines"] == [
        "worker says hi"
    ]
    # Another cluster's node is not this cluster's.
    assert_error(client.get(f"{base}/logs", {"node": str(alpha.node.uuid)}), 404, "not_found")
    events = client.get(f"{base}/events").body["items"]
    assert events[-1]["node"] == str(head.uuid)


# --- Idempotency keys --------------------------------------------------------------------------


def test_the_same_create_twice_with_a_key_makes_one_cluster(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.MEMBER)
    key = {"Idempotency-Key": "create-once-1"}
    first = client.post(
        org_path(alpha, "/clusters"), {"name": "once", "project": alpha.project.slug}, **key
    )
    again = ApiClient(client.secret).post(  # a new connection, as after a restart
        org_path(alpha, "/clusters"), {"name": "once", "project": alpha.project.slug}, **key
    )
    assert first.status == again.status == 201
    assert again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Cluster.objects.filter(name="once").count() == 1
    assert IdempotencyKey.objects.filter(key="create-once-1").count() == 1
    # The same key with another body is a conflict, and creates nothing.
    other = client.post(
        org_path(alpha, "/clusters"), {"name": "other", "project": alpha.project.slug}, **key
    )
    assert_error(other, 422, "idempotency_conflict")
    assert not Cluster.objects.filter(name="other").exists()
    # Keys belong to their token: another token's same key is a new request.
    answer = as_role(alpha, OrgRole.ADMIN).post(
        org_path(alpha, "/clusters"), {"name": "once-b", "project": alpha.project.slug}, **key
    )
    assert answer.status == 201


def test_a_failed_create_is_not_kept_so_its_retry_can_succeed(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.MEMBER)
    key = {"Idempotency-Key": "retry-me"}
    alpha.cloud.state = "unverified"
    alpha.cloud.save(update_fields=["state"])
    body = {"name": "later", "project": alpha.project.slug}
    assert client.post(org_path(alpha, "/clusters"), body, **key).status == 422
    alpha.cloud.state = "active"
    alpha.cloud.save(update_fields=["state"])
    assert client.post(org_path(alpha, "/clusters"), body, **key).status == 201
    assert client.post(org_path(alpha, "/clusters"), body, **key).status == 201
    assert Cluster.objects.filter(name="later").count() == 1


def test_idempotent_projects_and_compute_configs(alpha: Tenant) -> None:
    client = as_role(alpha, OrgRole.ADMIN)
    for path, body in (
        ("/projects", {"name": "Twice"}),
        ("/compute-configs", {"name": "twice", "cloud": str(alpha.cloud.pk)}),
    ):
        first = client.post(org_path(alpha, path), body, **{"Idempotency-Key": path})
        again = client.post(org_path(alpha, path), body, **{"Idempotency-Key": path})
        assert first.status == again.status == 201
        assert first.body == again.body
    assert ComputeConfig.objects.filter(name="twice").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_make_one_cluster(tenant_a: Tenant) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite in memory has one connection for all threads")
    from .conftest import verified

    alpha = verified(tenant_a)
    secret = token_secret(alpha, OrgRole.MEMBER)
    body = {"name": "racing", "project": alpha.project.slug}
    answers: list[Any] = []

    def create() -> None:
        try:
            client = ApiClient(secret)
            answers.append(
                client.post(org_path(alpha, "/clusters"), body, **{"Idempotency-Key": "race"})
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [a.status for a in answers] == [201] * 6
    assert len({a.body["id"] for a in answers}) == 1
    assert Cluster.objects.filter(name="racing").count() == 1


def test_idempotency_keys_are_checked(alpha: Tenant) -> None:
    answer = as_role(alpha, OrgRole.MEMBER).post(
        org_path(alpha, "/clusters"),
        {"name": "k", "project": alpha.project.slug},
        **{"Idempotency-Key": "x" * 256},
    )
    assert_error(answer, 422, "validation_error")
    assert "Idempotency-Key" in answer.body["error"]["details"]


# --- Rate limit ------------------------------------------------------------------------------


def test_a_token_over_its_rate_limit_gets_429_with_retry_after(
    alpha: Tenant, settings: Any
) -> None:
    settings.RAYDECK_API_RATE_LIMIT = 5
    settings.RAYDECK_API_RATE_WINDOW = 3600
    busy, calm = as_role(alpha, OrgRole.MEMBER), as_role(alpha, OrgRole.ADMIN)
    statuses = [busy.get("/me").status for _ in range(5)]
    assert statuses == [200] * 5
    answer = busy.get("/me")
    assert_error(answer, 429, "rate_limited")
    retry_after = int(answer.headers["Retry-After"])
    assert 0 < retry_after <= 3600
    assert_error(new_cluster(busy, alpha), 429, "rate_limited")
    assert calm.get("/me").status == 200  # the limit is per token


# --- The document and the reference page -------------------------------------------------------


def test_the_openapi_document_describes_every_endpoint() -> None:
    from tests.console.test_security import api_routes

    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    documented = set(document["paths"])
    routed = {"/" + r.pattern.replace("<", "{").replace(">", "}") for r in api_routes()}
    routed -= {"/api/v1/docs", "/api/v1/openapi.json"}
    assert documented == routed
    assert document["components"]["securitySchemes"]["TokenAuth"]["scheme"] == "bearer"
    assert "/api/v1/me" in documented and len(documented) >= 20


def test_the_declared_routes_are_the_routers_own() -> None:
    """console/api/urls.py declares the routes so that a process starts without ninja;
    they must be exactly the patterns ninja builds from the routers."""
    from console.api import endpoints, urls

    built = [(str(p.pattern), p.name) for p in endpoints.api_patterns]
    paste = "\n".join(f'    ("{route}", "{name}"),' for route, name in built)
    assert list(urls.ROUTES) == built, f"console/api/urls.py ROUTES should read:\n{paste}"
    assert (urls.APP_NAME, urls.NAMESPACE) == (endpoints.APP_NAME, endpoints.NAMESPACE)


def test_the_reference_page_uses_only_vendored_assets() -> None:
    response = Client().get("/api/v1/docs")
    assert response.status_code == 200
    page = response.content.decode()
    assert "//" not in page.replace("<!doctype", "").split("<body>")[0].replace("/static/", "")
    for asset in (
        "vendor/swagger-ui/swagger-ui-bundle.js",
        "vendor/swagger-ui/swagger-ui.css",
        "vendor/swagger-ui/LICENSE",
        "console/api-docs.js",
    ):
        assert finders.find(asset), asset
        if not asset.endswith("LICENSE"):
            assert f"/static/{asset}" in page
    assert "/api/v1/openapi.json" in page
    assert "Content-Security-Policy" in response.headers


# --- The address of a running cluster (clusters/access.py, from branch gateway) -------------


def test_the_address_of_a_running_cluster_for_ray_job_submit(alpha: Tenant) -> None:
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from clusters import access

    cluster = ClusterFactory(project=alpha.project, cloud=alpha.cloud, state=ClusterState.RUNNING)
    NodeFactory(
        cluster=cluster,
        state=NodeState.READY,
        private_address="10.1.2.3",
        ray_ports={"gcs": 6379, "dashboard": 8265, "gateway": 8266},
    )
    url = org_path(alpha, f"/clusters/{cluster.uuid}/address")
    answer = as_role(alpha, OrgRole.MEMBER).get(url)
    assert answer.status == 200, answer.body
    body = answer.body
    assert body["job_address"] == "https://10.1.2.3:8266"
    assert body["dashboard_url"] == "https://10.1.2.3:8266/"
    assert body["headers"] == {"Authorization": f"Bearer {body['token']}"}
    key = load_pem_public_key(access.access_key(cluster).public_key.encode())
    claims = jwt.decode(
        body["token"],
        key,
        algorithms=["EdDSA"],  # type: ignore[arg-type]
        audience=access.audience(cluster),
    )
    assert claims["sub"] == access.subject(alpha.member)
    assert AuditEvent.objects.filter(verb="cluster.token", target_id=str(cluster.pk)).count() == 1
    # Reaching a cluster runs code on it: not for viewers, nor read-only tokens.
    assert_error(as_role(alpha, OrgRole.VIEWER).get(url), 403, "permission_denied")
    assert_error(as_role(alpha, OrgRole.OWNER, read_only=True).get(url), 403, "permission_denied")
    # Not running: a conflict, with no token handed out.
    assert_error(
        as_role(alpha, OrgRole.MEMBER, name="b").get(
            org_path(alpha, f"/clusters/{alpha.cluster.uuid}/address")
        ),
        409,
        "conflict",
    )
    assert AuditEvent.objects.filter(verb="cluster.token").count() == 1
