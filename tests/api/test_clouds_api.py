"""Clouds through the JSON API: create, update, verify and delete with the console's role
checks and rules, audit events, 404 for another organization's cloud, and nothing secret
in any answer. The local cloud is verified for real (its checks run on this machine);
AWS is verified against moto (in-process `mock_aws`), GCP against the fake Compute REST
endpoint of tests/clouds/gcp_fake.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.session import Session as BotocoreSession
from google.auth.credentials import AnonymousCredentials

from accounts.choices import OrgRole
from accounts.models import AuditEvent
from clouds import services
from clouds.models import Cloud
from clouds.providers import registry
from clouds.providers.gcp import GcpProvider
from tests.clouds.gcp_fake import FakeComputeServer
from tests.clouds.moto_account import moto_account
from tests.conftest import Tenant
from tests.factories import ClusterFactory, remove_workloads

from .conftest import ApiClient, as_role, assert_error

pytestmark = pytest.mark.django_db
REGION = "eu-west-1"


def clouds_path(tenant: Tenant, rest: str = "") -> str:
    return f"/orgs/{tenant.org.slug}/clouds{rest}"


def run_verification(cloud_id: str) -> None:
    """What the Celery worker does with the verification the request queued."""
    cloud = Cloud.objects.get(pk=cloud_id)
    services.cloud_verify_run(verification_id=cloud.verifications.latest("started_at").pk)


def test_an_admin_adds_a_local_cloud_and_it_is_verified_for_real(
    alpha: Tenant, tmp_path: Path
) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    body = {"kind": "local", "name": "Laptop", "local_root": str(tmp_path / "nodes")}
    created = admin.post(clouds_path(alpha), body)
    assert created.status == 201, created.body
    cloud = created.body
    assert (cloud["kind"], cloud["name"], cloud["status"]) == ("local", "Laptop", "verifying")
    assert cloud["local_root"] == str(tmp_path / "nodes")
    assert cloud["verification"]["state"] == "running"

    run_verification(cloud["id"])
    shown = admin.get(clouds_path(alpha, f"/{cloud['id']}")).body
    assert shown["status"] == "active", shown["status_reason"]
    assert shown["verification"]["state"] == "passed"
    assert shown["verification"]["checks"] and all(
        c["passed"] for c in shown["verification"]["checks"]
    )
    assert AuditEvent.objects.filter(verb="cloud.create", organization=alpha.org).exists()
    # The organization's clouds list it beside the one it had.
    names = [c["name"] for c in admin.get(clouds_path(alpha)).body["items"]]
    assert "Laptop" in names and alpha.cloud.name in names


def test_update_changes_only_what_is_sent_audits_it_and_verifies_again(
    alpha: Tenant, tmp_path: Path
) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    path = clouds_path(alpha, f"/{alpha.cloud.pk}")
    answer = admin.patch(path, {"name": "Renamed", "launch_access": "projects"})
    assert answer.status == 200, answer.body
    assert answer.body["name"] == "Renamed" and answer.body["launch_access"] == "projects"
    assert answer.body["status"] == "active"  # the name is not how Raydeck reaches it
    answer = admin.patch(path, {"projects": [alpha.project.slug]})
    assert answer.body["projects"] == [alpha.project.slug]
    answer = admin.patch(path, {"local_root": str(tmp_path / "elsewhere")})
    assert answer.body["status"] == "verifying"
    actions = list(
        AuditEvent.objects.filter(organization=alpha.org, verb="cloud.update").values_list(
            "changes", flat=True
        )
    )
    assert any("name" in c for c in actions) and any("local_root" in c for c in actions)


def test_verify_runs_the_checks_again_and_delete_removes_the_cloud(alpha: Tenant) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    remove_workloads()  # they would hold the cloud
    alpha.cluster.state = "terminated"
    alpha.cluster.save(update_fields=["state"])
    path = clouds_path(alpha, f"/{alpha.cloud.pk}")
    verified = admin.post(path + "/verify")
    assert verified.status == 202, verified.body
    assert verified.body["status"] == "verifying"
    run_verification(str(alpha.cloud.pk))
    assert admin.get(path).body["status"] in ("active", "error")

    assert admin.delete(path).status == 204
    assert not Cloud.objects.filter(pk=alpha.cloud.pk).exists()
    assert AuditEvent.objects.filter(verb="cloud.delete", organization=alpha.org).exists()
    assert_error(admin.get(path), 404, "not_found")


def test_delete_is_refused_while_a_cluster_runs_there(alpha: Tenant) -> None:
    ClusterFactory(project=alpha.project, cloud=alpha.cloud, name="busy", state="running")
    answer = as_role(alpha, OrgRole.ADMIN).delete(clouds_path(alpha, f"/{alpha.cloud.pk}"))
    assert_error(answer, 409, "conflict")
    assert "Terminate them first" in answer.body["error"]["message"]
    assert Cloud.objects.filter(pk=alpha.cloud.pk).exists()


def test_viewers_and_members_read_clouds_but_only_admins_change_them(
    alpha: Tenant, tmp_path: Path
) -> None:
    path = clouds_path(alpha, f"/{alpha.cloud.pk}")
    for role in (OrgRole.VIEWER, OrgRole.MEMBER):
        client = as_role(alpha, role)
        assert client.get(clouds_path(alpha)).status == 200
        assert client.get(path).body["name"] == alpha.cloud.name
        assert_error(
            client.post(clouds_path(alpha), {"kind": "local", "name": "x"}),
            403,
            "permission_denied",
        )
        assert_error(client.patch(path, {"name": "mine"}), 403, "permission_denied")
        assert_error(client.post(path + "/verify"), 403, "permission_denied")
        assert_error(client.delete(path), 403, "permission_denied")
    assert Cloud.objects.filter(organization=alpha.org).count() == 1
    assert Cloud.objects.get(pk=alpha.cloud.pk).name == alpha.cloud.name
    owner = as_role(alpha, OrgRole.OWNER)
    assert owner.post(clouds_path(alpha), {"kind": "local", "name": "Owner's"}).status == 201


def test_a_service_account_token_cannot_change_clouds(alpha: Tenant) -> None:
    from accounts.services import service_account_create, token_create

    account = service_account_create(
        organization=alpha.org, actor=alpha.owner, name="robot", role=OrgRole.ADMIN
    )
    _, secret = token_create(
        organization=alpha.org,
        actor=alpha.owner,
        name="t",
        days=1,
        read_only=False,
        service_account=account,
    )
    answer = ApiClient(secret).post(clouds_path(alpha), {"kind": "local", "name": "robot's"})
    assert answer.status == 403
    assert not Cloud.objects.filter(name="robot's").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "moon", "name": "x"}, "kind"),
        ({"kind": "local", "name": ""}, "name"),
        ({"kind": "local", "name": "alpha local"}, "name"),  # taken
        ({"kind": "local", "name": "x", "aws_role_arn": "arn:aws:iam::1:role/r"}, "aws_role_arn"),
        ({"kind": "local", "name": "x", "local_root": "relative/path"}, "local_root"),
        ({"kind": "local", "name": "x", "projects": ["no-such-project"]}, "projects"),
        ({"kind": "local", "name": "x", "launch_access": "everyone"}, "launch_access"),
        ({"kind": "gcp", "name": "x", "region": "us-central1"}, "gcp_project_id"),
        (
            {"kind": "gcp", "name": "x", "gcp_project_id": "acme-1", "region": "mars-1"},
            "region",
        ),
        ({"kind": "aws", "name": "x", "region": "moon-1"}, "region"),
        (
            {"kind": "aws", "name": "x", "region": REGION, "aws_role_arn": "not-an-arn"},
            "aws_role_arn",
        ),
        ({"kind": "aws", "name": "x", "gateway_cidrs": ["0.0.0.0/0"]}, "gateway_cidrs"),
        (
            {"kind": "aws", "name": "x", "region": REGION, "node_addresses": "everywhere"},
            "node_addresses",
        ),
        ({"kind": "local", "name": "x", "node_addresses": "private"}, "node_addresses"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(
    alpha: Tenant, settings: Any, body: dict[str, Any], field: str
) -> None:
    settings.RAYDECK_AWS_PRINCIPAL_ARN = "arn:aws:iam::111122223333:role/raydeck"
    before = Cloud.objects.count()
    audits = AuditEvent.objects.filter(verb__startswith="cloud.").count()
    answer = as_role(alpha, OrgRole.ADMIN).post(clouds_path(alpha), body)
    assert_error(answer, 422, "validation_error")
    assert field in answer.body["error"]["details"], answer.body
    assert Cloud.objects.count() == before
    assert AuditEvent.objects.filter(verb__startswith="cloud.").count() == audits


def test_a_kind_this_installation_cannot_run_is_refused_with_the_reason(
    alpha: Tenant, settings: Any
) -> None:
    settings.RAYDECK_AWS_PRINCIPAL_ARN = ""
    answer = as_role(alpha, OrgRole.ADMIN).post(
        clouds_path(alpha), {"kind": "aws", "name": "x", "region": REGION}
    )
    assert_error(answer, 422, "validation_error")
    assert "RAYDECK_AWS_PRINCIPAL_ARN" in json.dumps(answer.body)
    assert not Cloud.objects.filter(name="x").exists()


def test_a_bad_update_changes_nothing(alpha: Tenant) -> None:
    admin = as_role(alpha, OrgRole.ADMIN)
    path = clouds_path(alpha, f"/{alpha.cloud.pk}")
    for body, field in [
        ({"name": None}, "name"),
        ({"local_root": "relative"}, "local_root"),
        ({"gcp_project_id": "acme"}, "gcp_project_id"),  # not a field of a local cloud
        ({"kind": "aws"}, "kind"),
    ]:
        answer = admin.patch(path, body)
        assert answer.status == 422, (body, answer.body)
        assert field in answer.body["error"]["details"], answer.body
    cloud = Cloud.objects.get(pk=alpha.cloud.pk)
    assert (cloud.name, cloud.local_root, cloud.state) == (alpha.cloud.name, "", "active")
    assert not AuditEvent.objects.filter(verb="cloud.update").exists()


def test_another_organizations_cloud_is_404_for_every_method(alpha: Tenant, bravo: Tenant) -> None:
    client = as_role(bravo, OrgRole.OWNER)
    for path in (
        clouds_path(bravo, f"/{alpha.cloud.pk}"),  # A's id under B's slug
        clouds_path(alpha, f"/{alpha.cloud.pk}"),  # A's slug
    ):
        assert_error(client.get(path), 404, "not_found")
        assert_error(client.patch(path, {"name": "pwned"}), 404, "not_found")
        assert_error(client.post(path + "/verify"), 404, "not_found")
        assert_error(client.delete(path), 404, "not_found")
    assert Cloud.objects.get(pk=alpha.cloud.pk).name == alpha.cloud.name


@pytest.fixture
def moto_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Any):
    settings.RAYDECK_AWS_PRINCIPAL_ARN = "arn:aws:iam::111122223333:role/raydeck"
    with moto_account(monkeypatch, tmp_path, REGION):
        yield


def test_an_aws_cloud_is_set_up_and_verified_against_moto_and_no_credential_is_returned(
    alpha: Tenant, moto_aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="raydeck-control-plane", AssumeRolePolicyDocument="{}"
    )
    handed_out: list[str] = []
    real_create_client = BotocoreSession.create_client

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:  # every credential STS returns
        client = real_create_client(self, *args, **kwargs)

        def keep(parsed: dict[str, Any], **_: Any) -> None:
            creds = parsed.get("Credentials") or {}
            handed_out.extend(
                v
                for k, v in creds.items()
                if k in ("AccessKeyId", "SecretAccessKey", "SessionToken")
            )

        client.meta.events.register("after-call.sts.AssumeRole", keep)
        return client

    monkeypatch.setattr(BotocoreSession, "create_client", spy)
    admin = as_role(alpha, OrgRole.ADMIN)
    created = admin.post(clouds_path(alpha), {"kind": "aws", "name": "AWS", "region": REGION})
    assert created.status == 201, created.body
    assert created.body["status"] == "unverified" and not created.body["identity_configured"]
    assert created.body["aws_external_id"].startswith("raydeck-")  # for the trust policy
    path = clouds_path(alpha, f"/{created.body['id']}")
    assert_error(admin.post(path + "/verify"), 409, "conflict")  # the setup is not finished

    updated = admin.patch(path, {"aws_role_arn": role["Role"]["Arn"]})
    assert updated.body["status"] == "verifying"
    run_verification(created.body["id"])
    answers = [admin.get(path), admin.get(clouds_path(alpha))]
    assert answers[0].body["status"] == "active", answers[0].body["status_reason"]
    assert handed_out, "the test must have seen AWS hand out credentials"
    text = json.dumps([a.body for a in answers] + [created.body, updated.body])
    assert not any(secret in text for secret in handed_out)


def test_a_gcp_cloud_is_verified_against_the_fake_compute_endpoint(
    alpha: Tenant, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.RAYDECK_AWS_PRINCIPAL_ARN = "arn:aws:iam::111122223333:role/raydeck"
    with FakeComputeServer() as gcp:

        def provider_for(cloud: Cloud) -> GcpProvider:  # the real driver, the fake endpoint
            return GcpProvider(
                cloud_id=cloud.uuid,
                project_id=cloud.gcp_project_id,
                zones=list(cloud.zones) or [f"{cloud.region}-a"],
                credentials=AnonymousCredentials(),
                api_endpoint=gcp.endpoint,
                storage_endpoint=gcp.endpoint,
                poll_interval=0.01,
            )

        monkeypatch.setattr(registry, "provider_for", provider_for)
        admin = as_role(alpha, OrgRole.ADMIN)
        body = {
            "kind": "gcp",
            "name": "GCP",
            "gcp_project_id": "raydeck-test",
            "region": "us-central1",
            "zones": ["us-central1-a"],
            "gcp_workload_identity_provider": "projects/123456789/locations/global/"
            "workloadIdentityPools/raydeck/providers/raydeck-aws",
            "gcp_service_account": "raydeck@raydeck-test.iam.gserviceaccount.com",
        }
        created = admin.post(clouds_path(alpha), body)
        assert created.status == 201, created.body
        assert created.body["status"] == "verifying"
        run_verification(created.body["id"])
        shown = admin.get(clouds_path(alpha, f"/{created.body['id']}")).body
    checks = {c["name"]: c["passed"] for c in shown["verification"]["checks"]}
    assert checks.get("Project") and checks.get("List instances"), shown["verification"]
    assert gcp.fake.calls("GET", r"/zones/us-central1-a/instances$")
