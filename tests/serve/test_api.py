"""The Services API: deploys, versions, traffic, rollback, tokens and terminate, by role,
with bad input refused on its field and nothing written. No Ray here: the orchestrator
is not run (test_serve_end_to_end.py runs it for real)."""

from __future__ import annotations

import pytest
from django.test import TestCase

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clusters.models import Cluster
from tests.api.conftest import as_role, assert_error, verified
from tests.conftest import Tenant, activate
from tests.factories import CloudFactory
from workloads.serve.choices import ServiceState, VersionState
from workloads.serve.models import Service, ServiceToken, ServiceVersion

pytestmark = pytest.mark.django_db
CONFIG = {"import_path": "echo_app:build", "args": {"version": "v1"}}


@pytest.fixture
def alpha(tenant_a: Tenant) -> Tenant:
    return verified(tenant_a)


@pytest.fixture
def bravo(tenant_b: Tenant) -> Tenant:
    return verified(tenant_b)


def deploy_body(tenant: Tenant, **changes: object) -> dict:
    return {
        "name": "echo",
        "project": tenant.project.slug,
        "serve_config": CONFIG,
        "cloud": str(tenant.cloud.pk),
        **changes,
    }


def counts() -> tuple[int, int, int, int]:
    return (
        Service.objects.count(),
        ServiceVersion.objects.count(),
        Cluster.objects.count(),
        ServiceToken.objects.count(),
    )


def test_deploy_creates_a_service_with_a_token_then_versions(alpha: Tenant) -> None:
    api = as_role(alpha, OrgRole.MEMBER)
    with TestCase.captureOnCommitCallbacks(execute=False) as callbacks:
        first = api.post(f"/orgs/{alpha.org.slug}/services", deploy_body(alpha))
    assert first.status == 201, first.body
    assert callbacks  # the orchestrator is asked once the deploy commits
    body = first.body
    assert body["token"].startswith("rds_")
    assert body["service"]["state"] == "deploying"
    assert body["version"]["number"] == 1
    assert body["version"]["serve_config"] == {
        "applications": [
            {
                "name": "default",
                "import_path": "echo_app:build",
                "route_prefix": "/",
                "args": {"version": "v1"},
            }
        ]
    }
    service = Service.objects.get(uuid=body["service"]["id"])
    token = ServiceToken.objects.get(service=service)
    assert body["token"] not in str(token.__dict__)  # only its hash is kept
    version = service.versions.get()
    assert version.cluster.name == "echo-v1"
    assert AuditEvent.objects.filter(verb="service.create").count() == 1

    # The first version is still starting: a second deploy must wait.
    again = api.post(f"/orgs/{alpha.org.slug}/services", deploy_body(alpha))
    assert_error(again, 422, "validation_error")
    assert "still rolling out" in again.body["error"]["details"]["name"][0]

    # Once it serves, the same name deploys v2 (no new token, same service).
    Service.objects.filter(pk=service.pk).update(
        state=ServiceState.RUNNING, current_version=version
    )
    ServiceVersion.objects.filter(pk=version.pk).update(state=VersionState.HEALTHY, weight=100)
    second = api.post(
        f"/orgs/{alpha.org.slug}/services",
        deploy_body(alpha, serve_config={**CONFIG, "args": {"version": "v2"}}, max_latency_ratio=5),
    )
    assert second.status == 201, second.body
    assert second.body["service"]["max_latency_ratio"] == 5  # v2 is judged by it
    assert second.body["token"] is None
    assert second.body["service"]["id"] == str(service.uuid)
    assert second.body["version"]["number"] == 2
    listed = api.get(f"/orgs/{alpha.org.slug}/services", {"name": "echo"}).body["items"]
    assert [s["id"] for s in listed] == [str(service.uuid)]
    versions = api.get(f"/orgs/{alpha.org.slug}/services/{service.uuid}/versions").body
    assert [(v["number"], v["state"]) for v in versions] == [(2, "starting"), (1, "healthy")]
    rollout = api.get(f"/orgs/{alpha.org.slug}/services/{service.uuid}").body["rollout"]
    assert rollout["version"] == 2 and rollout["steps"][0] == {"label": "starting", "status": "now"}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"serve_config": {"import_path": "not a path!"}}, "serve_config", "import path"),
        ({"serve_config": {"import_path": "x:y", "port": 1}}, "serve_config", "unknown keys"),
        ({"serve_config": {"applications": []}}, "serve_config", "non-empty"),
        ({"compute_config": "999999"}, "compute_config", "No compute config"),
        ({"image": "999999"}, "image", "No image"),
        ({"cloud": "999999"}, "cloud", "No cloud"),
        ({"canary_steps": [50, 10]}, "canary_steps", "rise"),
        ({"canary_steps": [10, 50]}, "canary_steps", "end at 100"),
        ({"max_latency_ratio": 0.5}, "max_latency_ratio", "greater than or equal to 1"),
    ],
)
def test_bad_deploys_name_their_field_and_write_nothing(
    alpha: Tenant, changes: dict, field: str, words: str
) -> None:
    before = counts()
    answer = as_role(alpha).post(f"/orgs/{alpha.org.slug}/services", deploy_body(alpha, **changes))
    assert_error(answer, 422, "validation_error")
    assert words in " ".join(answer.body["error"]["details"][field]), answer.body
    assert counts() == before


def test_another_organizations_compute_config_is_unknown(alpha: Tenant, bravo: Tenant) -> None:
    before = counts()
    config_id = str(bravo.cluster.compute_config.config_id)
    answer = as_role(alpha).post(
        f"/orgs/{alpha.org.slug}/services", deploy_body(alpha, compute_config=config_id)
    )
    assert_error(answer, 422, "validation_error")
    assert "compute_config" in answer.body["error"]["details"]
    assert counts() == before


def running(tenant: Tenant) -> Service:
    """The tenant's (terminated) service, running again for a test that acts on it."""
    Service.objects.filter(pk=tenant.service.pk).update(state=ServiceState.RUNNING)
    tenant.service.refresh_from_db()
    return tenant.service


def test_traffic_weight_must_be_a_percentage_during_a_rollout(alpha: Tenant) -> None:
    api = as_role(alpha)
    service = running(alpha)
    url = f"/orgs/{alpha.org.slug}/services/{service.uuid}/traffic"
    # No rollout under way: nothing to pin.
    assert_error(api.post(url, {"canary": 10}), 422, "validation_error")
    current = service.versions.get()
    ServiceVersion.objects.filter(pk=current.pk).update(state=VersionState.HEALTHY, weight=100)
    Service.objects.filter(pk=service.pk).update(current_version=current)
    ServiceVersion.objects.create(
        organization=alpha.org,
        service=service,
        number=2,
        serve_config=current.serve_config,
        config_hash="1" * 64,
        compute_config=current.compute_config,
        image=current.image,
        state=VersionState.HEALTHY,
    )
    for bad in (101, -1):
        answer = api.post(url, {"canary": bad})
        assert answer.status == 422, answer.body
    service.refresh_from_db()
    assert service.pinned_weight is None
    answer = api.post(url, {"canary": 25})
    assert answer.status == 202, answer.body
    assert answer.body["pinned_weight"] == 25
    assert AuditEvent.objects.filter(verb="service.set_traffic").exists()
    # Rollback stops the rollout: traffic back on v1, v2 drains out.
    answer = api.post(f"/orgs/{alpha.org.slug}/services/{service.uuid}/rollback")
    assert answer.status == 202, answer.body
    v2 = service.versions.get(number=2)
    assert (v2.state, v2.weight) == (VersionState.UNHEALTHY, 0)
    assert v2.state_reason.startswith("Rolled back")
    assert service.events.filter(step="rolled back").exists()


def test_viewers_read_but_change_nothing(alpha: Tenant) -> None:
    viewer = as_role(alpha, OrgRole.VIEWER)
    service = running(alpha)
    base = f"/orgs/{alpha.org.slug}/services"
    assert viewer.get(f"{base}/{service.uuid}").status == 200
    before = counts()
    for path, body in (
        (base, deploy_body(alpha)),
        (f"{base}/{service.uuid}/terminate", None),
        (f"{base}/{service.uuid}/rollback", None),
        (f"{base}/{service.uuid}/traffic", {"canary": 10}),
        (f"{base}/{service.uuid}/tokens", {"name": "more"}),
    ):
        answer = viewer.post(path, body)
        assert answer.status in (403, 404), (path, answer.status, answer.body)
    assert counts() == before
    service.refresh_from_db()
    assert service.state == ServiceState.RUNNING


def test_terminate_and_new_tokens(alpha: Tenant) -> None:
    api = as_role(alpha)
    base = f"/orgs/{alpha.org.slug}/services/{running(alpha).uuid}"
    token = api.post(f"{base}/tokens", {"name": "rotation"})
    assert token.status == 201 and token.body["token"].startswith("rds_")
    assert alpha.service.tokens.filter(name="rotation", revoked_at=None).exists()
    answer = api.post(f"{base}/terminate")
    assert answer.status == 202 and answer.body["state"] == "terminating"
    assert api.post(f"{base}/terminate").status == 202  # asking again changes nothing
    assert AuditEvent.objects.filter(verb="service.terminate").count() == 1


def test_a_new_service_without_a_cloud_goes_to_the_preferred_one_else_asks(
    alpha: Tenant,
) -> None:
    """The rule of every create (clusters.selectors.cloud_for_create): the only verified
    cloud, then the project's preference once there are two; with two and no
    preference, the deploy asks for a cloud and writes nothing."""
    api = as_role(alpha, OrgRole.MEMBER)
    admin = as_role(alpha, OrgRole.ADMIN)
    org = f"/orgs/{alpha.org.slug}"
    body = deploy_body(alpha)
    del body["cloud"]
    only = api.post(f"{org}/services", body)
    assert only.status == 201, only.body
    assert only.body["service"]["cloud"] == str(alpha.cloud.pk)

    second = activate(CloudFactory(organization=alpha.org, name="alpha second"))
    before = counts()
    asked = api.post(f"{org}/services", {**body, "name": "two-clouds"})
    assert_error(asked, 422, "validation_error")
    assert "preferred default cloud" in asked.body["error"]["details"]["cloud"][0]
    assert counts() == before

    project = f"{org}/projects/{alpha.project.slug}/default-cloud"
    assert admin.put(project, {"cloud": str(second.pk)}).status == 200
    preferred = api.post(f"{org}/services", {**body, "name": "preferred"})
    assert preferred.status == 201, preferred.body
    assert preferred.body["service"]["cloud"] == str(second.pk)
