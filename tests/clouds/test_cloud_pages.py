"""Registering clouds from the console: the add flow per kind, the setup instructions,
verification recorded and shown, edits, deletion, and roles."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from clouds import policies, services
from clouds.choices import CloudKind, CloudState, VerificationState
from clouds.models import Cloud
from clouds.providers.base import CheckResult
from clusters.models import ComputeConfig
from tests.conftest import Tenant, client_for
from tests.factories import remove_workloads

pytestmark = pytest.mark.django_db
PRINCIPAL = "arn:aws:iam::111122223333:role/raydeck-installation"
ROLE = "arn:aws:iam::444455556666:role/raydeck-control-plane"


@pytest.fixture(autouse=True)
def _installation(settings, tmp_path: Path) -> None:
    settings.RAYDECK_AWS_PRINCIPAL_ARN = PRINCIPAL
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "local-cloud"


def add_aws(tenant: Tenant, name: str = "Prod AWS") -> Cloud:
    return services.cloud_create(
        organization=tenant.org,
        actor=tenant.admin,
        kind=CloudKind.AWS,
        name=name,
        region="eu-west-1",
        log_location="s3://acme-logs/raydeck",
    )


def test_aws_flow_shows_what_to_create_then_takes_the_role_arn(
    tenant_a: Tenant, django_capture_on_commit_callbacks
) -> None:
    client = client_for(tenant_a.admin)
    org = tenant_a.org.slug
    response = client.post(
        reverse("cloud_create", args=[org, "aws"]),
        {
            "name": "Prod AWS",
            "region": "eu-west-1",
            "log_location": "s3://acme-logs/raydeck",
            "launch_access": "all",
        },
    )
    cloud = Cloud.objects.get(name="Prod AWS")
    assert response["Location"] == reverse("cloud_setup", args=[org, cloud.pk])
    assert cloud.state == CloudState.UNVERIFIED and cloud.aws_external_id.startswith("raydeck-")
    page = html.unescape(client.get(response["Location"]).content.decode())
    assert cloud.aws_external_id in page and str(cloud.uuid) in page and PRINCIPAL in page
    assert "AWSTemplateFormatVersion" in page and 'resource "aws_iam_role"' in page
    assert 'data-copy="#doc-terraform"' in page

    bad = client.post(response["Location"], {"aws_role_arn": "my-role"})
    assert "Paste the role" in bad.content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        client.post(response["Location"], {"aws_role_arn": ROLE})
    cloud.refresh_from_db()
    assert cloud.aws_role_arn == ROLE and cloud.state == CloudState.VERIFYING
    assert len(callbacks) == 1  # the verification task, enqueued once committed
    assert cloud.verifications.get().state == VerificationState.RUNNING


def test_each_aws_cloud_gets_its_own_external_id(tenant_a: Tenant, tenant_b: Tenant) -> None:
    ids = {
        add_aws(tenant_a, "one").aws_external_id,
        add_aws(tenant_a, "two").aws_external_id,
        add_aws(tenant_b, "one").aws_external_id,
    }
    assert len(ids) == 3


def test_permissions_policy_limits_writes_to_this_clouds_tag(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)
    policy = policies.aws_permissions_policy(cloud)
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["ManageOwnInstances"]["Condition"] == {
        "StringEquals": {"ec2:ResourceTag/raydeck-cloud": str(cloud.uuid)}
    }
    assert statements["LaunchTaggedInstances"]["Condition"] == {
        "StringEquals": {"aws:RequestTag/raydeck-cloud": str(cloud.uuid)}
    }
    assert statements["LogObjects"]["Resource"] == "arn:aws:s3:::acme-logs/raydeck*"
    trust = policies.aws_trust_policy(cloud)["Statement"][0]
    assert trust["Principal"] == {"AWS": PRINCIPAL}
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": cloud.aws_external_id}}
    json.dumps(policy)  # valid JSON documents


def test_gcp_flow_shows_gcloud_commands(tenant_a: Tenant) -> None:
    client = client_for(tenant_a.owner)
    org = tenant_a.org.slug
    response = client.post(
        reverse("cloud_create", args=[org, "gcp"]),
        {
            "name": "GCP",
            "gcp_project_id": "acme-ml-123",
            "region": "us-central1",
            "zones": "us-central1-a, us-central1-b",
            "launch_access": "all",
        },
    )
    cloud = Cloud.objects.get(name="GCP")
    assert cloud.zones == ["us-central1-a", "us-central1-b"]
    page = client.get(response["Location"]).content.decode()
    assert "gcloud iam workload-identity-pools create raydeck" in page and "acme-ml-123" in page
    wrong_zone = client.post(
        reverse("cloud_create", args=[org, "gcp"]),
        {
            "name": "GCP 2",
            "gcp_project_id": "acme-ml-123",
            "region": "us-central1",
            "zones": "europe-west1-b",
            "launch_access": "all",
        },
    )
    assert "is not in region us-central1" in wrong_zone.content.decode()


def test_local_cloud_is_verified_straight_away(
    tenant_a: Tenant, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = client_for(tenant_a.owner).post(
            reverse("cloud_create", args=[tenant_a.org.slug, "local"]),
            {"name": "Laptop", "launch_access": "all"},
        )
    cloud = Cloud.objects.get(name="Laptop")
    assert response["Location"] == reverse("cloud_detail", args=[tenant_a.org.slug, cloud.pk])
    assert cloud.state == CloudState.VERIFYING and len(callbacks) == 1


def test_installation_can_disable_the_local_cloud(tenant_a: Tenant) -> None:
    with override_settings(RAYDECK_LOCAL_CLOUD_ENABLED=False):
        with pytest.raises(ValidationError, match="does not allow"):
            services.cloud_create(
                organization=tenant_a.org, actor=tenant_a.owner, kind=CloudKind.LOCAL, name="Nope"
            )
        page = client_for(tenant_a.owner).get(reverse("cloud_add", args=[tenant_a.org.slug]))
        assert "does not allow clusters on its own machine" in page.content.decode()


def test_aws_needs_the_installation_identity(tenant_a: Tenant) -> None:
    with (
        override_settings(RAYDECK_AWS_PRINCIPAL_ARN=""),
        pytest.raises(ValidationError, match="RAYDECK_AWS_PRINCIPAL_ARN"),
    ):
        add_aws(tenant_a)


def test_members_and_viewers_see_clouds_but_cannot_change_them(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)
    for user in (tenant_a.member, tenant_a.viewer):
        client = client_for(user)
        assert (
            client.get(reverse("cloud_detail", args=[tenant_a.org.slug, cloud.pk])).status_code
            == 200
        )
        assert client.get(reverse("cloud_add", args=[tenant_a.org.slug])).status_code == 403
        assert (
            client.post(reverse("cloud_delete", args=[tenant_a.org.slug, cloud.pk])).status_code
            == 403
        )
        with pytest.raises(PermissionDenied):
            services.cloud_update(cloud=cloud, actor=user, name="hacked")
    assert Cloud.objects.filter(pk=cloud.pk, name="Prod AWS").exists()


def test_recorded_verification_sets_state_and_explains_failures(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)
    services.cloud_update(cloud=cloud, actor=tenant_a.admin, aws_role_arn=ROLE)
    verification = cloud.verifications.get()
    services._record_verification(
        verification_id=verification.pk,
        results=[
            CheckResult("Assume role", True, "Raydeck assumed the role."),
            CheckResult(
                "Log bucket", False, "The bucket acme-logs does not exist in this account."
            ),
        ],
    )
    cloud.refresh_from_db()
    assert cloud.state == CloudState.ERROR
    assert cloud.state_reason == "Log bucket: The bucket acme-logs does not exist in this account."
    page = (
        client_for(tenant_a.member)
        .get(reverse("cloud_detail", args=[tenant_a.org.slug, cloud.pk]))
        .content.decode()
    )
    assert "does not exist in this account" in page and "Raydeck assumed the role." in page
    # Recording again (a duplicate task run) changes nothing.
    services._record_verification(verification_id=verification.pk, results=[])
    assert cloud.verifications.get().checks.count() == 2


def test_polling_partial_reloads_the_page_once_final(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)
    services.cloud_update(cloud=cloud, actor=tenant_a.admin, aws_role_arn=ROLE)
    client = client_for(tenant_a.member)
    url = reverse("cloud_detail", args=[tenant_a.org.slug, cloud.pk])
    headers = {"HX-Request": "true", "HX-Target": "verification"}
    running = client.get(url, headers=headers)
    assert 'hx-trigger="every 2s"' in running.content.decode()
    assert "HX-Refresh" not in running
    services._record_verification(
        verification_id=cloud.verifications.get().pk,
        results=[CheckResult("Assume role", True, "ok")],
    )
    final = client.get(url, headers=headers)
    assert final["HX-Refresh"] == "true" and "every 2s" not in final.content.decode()


def test_a_second_verify_joins_the_running_one(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)
    services.cloud_update(cloud=cloud, actor=tenant_a.admin, aws_role_arn=ROLE)
    first = cloud.verifications.get()
    assert services.cloud_verify_request(cloud=cloud, actor=tenant_a.admin) == first


def test_stuck_verification_is_failed_so_it_can_run_again(tenant_a: Tenant, time_machine) -> None:
    cloud = add_aws(tenant_a)
    services.cloud_update(cloud=cloud, actor=tenant_a.admin, aws_role_arn=ROLE)
    time_machine.move_to(timezone.now() + timedelta(minutes=20))
    assert services.verifications_expire_stuck() == 1
    cloud.refresh_from_db()
    assert cloud.state == CloudState.ERROR
    assert services.cloud_verify_request(cloud=cloud, actor=tenant_a.admin).state == "running"


def test_changing_the_role_reverifies_and_is_audited(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)
    services.cloud_update(cloud=cloud, actor=tenant_a.admin, aws_role_arn=ROLE)
    services._record_verification(
        verification_id=cloud.verifications.get().pk,
        results=[CheckResult("Assume role", True, "ok")],
    )
    other = ROLE.replace("raydeck-control-plane", "other")
    services.cloud_update(cloud=cloud, actor=tenant_a.admin, aws_role_arn=other)
    cloud.refresh_from_db()
    assert cloud.state == CloudState.VERIFYING
    event = AuditEvent.objects.filter(verb="cloud.update").latest("created_at")
    assert event.changes == {"aws_role_arn": [ROLE, other]}


def test_launch_access_limited_to_chosen_projects(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = client_for(tenant_a.owner)
    client.post(
        reverse("cloud_create", args=[tenant_a.org.slug, "local"]),
        {"name": "Limited", "launch_access": "projects", "projects": [tenant_a.project.pk]},
    )
    cloud = Cloud.objects.get(name="Limited")
    assert list(cloud.projects.all()) == [tenant_a.project]
    crafted = client.post(
        reverse("cloud_create", args=[tenant_a.org.slug, "local"]),
        {"name": "Crafted", "launch_access": "projects", "projects": [tenant_b.project.pk]},
    )
    assert crafted.status_code == 200 and not Cloud.objects.filter(name="Crafted").exists()


def test_delete_asks_first_and_is_audited(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)
    client = client_for(tenant_a.owner)
    url = reverse("cloud_delete", args=[tenant_a.org.slug, cloud.pk])
    assert "Nothing in your account is deleted" in client.get(url).content.decode()
    client.post(url)
    assert not Cloud.objects.filter(pk=cloud.pk).exists()
    assert AuditEvent.objects.filter(verb="cloud.delete", target_id=str(cloud.pk)).exists()


def test_duplicate_names_are_refused_with_a_message(tenant_a: Tenant) -> None:
    add_aws(tenant_a)
    with pytest.raises(ValidationError, match="already exists"):
        add_aws(tenant_a)


def test_cloud_list_empty_state_and_query_count(
    tenant_a: Tenant, django_assert_max_num_queries
) -> None:
    from clusters.models import Cluster, ComputeConfig

    # The tenants' workloads, (terminated) clusters and configs hold on to the clouds.
    remove_workloads()
    Cluster.objects.all().delete()
    ComputeConfig.objects.all().delete()
    Cloud.objects.all().delete()
    client = client_for(tenant_a.viewer)
    url = reverse("cloud_list", args=[tenant_a.org.slug])
    assert "No clouds yet" in client.get(url).content.decode()
    for i in range(12):
        add_aws(tenant_a, f"c{i}")
    with django_assert_max_num_queries(12):
        assert "c11" in client.get(url).content.decode()


def test_a_cloud_with_live_clusters_cannot_be_deleted(tenant_a: Tenant) -> None:
    from clusters.services.lifecycle import cluster_create

    Cloud.objects.filter(pk=tenant_a.cloud.pk).update(state=CloudState.ACTIVE)
    tenant_a.cloud.refresh_from_db()
    cluster_create(
        project=tenant_a.project, actor=tenant_a.member, name="busy", cloud=tenant_a.cloud
    )
    client = client_for(tenant_a.owner)
    url = reverse("cloud_delete", args=[tenant_a.org.slug, tenant_a.cloud.pk])
    assert "1 cluster(s) on this cloud are not terminated" in client.get(url).content.decode()
    response = client.post(url)
    assert response.status_code == 409
    assert "Terminate them first" in response.content.decode()
    assert Cloud.objects.filter(pk=tenant_a.cloud.pk).exists()


def test_a_cloud_with_only_ended_clusters_can_be_deleted(tenant_a: Tenant) -> None:
    """The tenant's cluster, job and service on this cloud have ended and its schedule is
    paused (tests/conftest.py); its stopped workspace keeps files in the cloud's storage,
    so it holds the cloud until it is deleted, as an active schedule does until paused."""
    from clusters.models import Cluster
    from workloads.jobs.models import Job, JobSchedule
    from workloads.serve.models import Service

    ended = Cluster.objects.filter(cloud=tenant_a.cloud).count()
    assert ended
    JobSchedule.objects.filter(pk=tenant_a.job_schedule.pk).update(paused=False)
    delete_url = reverse("cloud_delete", args=[tenant_a.org.slug, tenant_a.cloud.pk])
    owner = client_for(tenant_a.owner)
    refused = html.unescape(owner.post(delete_url, follow=True).content.decode())
    assert "still has 1 workspace, 1 active schedule" in refused
    assert Cloud.objects.filter(pk=tenant_a.cloud.pk).exists()
    tenant_a.workspace.delete()
    JobSchedule.objects.filter(pk=tenant_a.job_schedule.pk).update(paused=True)
    response = owner.post(delete_url)
    assert response.status_code == 302
    assert not Job.objects.filter(organization=tenant_a.org).exists()
    assert not Service.objects.filter(organization=tenant_a.org).exists()
    assert not JobSchedule.objects.filter(organization=tenant_a.org).exists()
    assert not Cloud.objects.filter(pk=tenant_a.cloud.pk).exists()
    assert not Cluster.objects.filter(organization=tenant_a.org).exists()
    # The clusters app removed them (clouds imports nothing of it); the audit says how many.
    event = AuditEvent.objects.get(verb="cloud.delete", target_id=str(tenant_a.cloud.pk))
    assert event.changes["ended_clusters_removed"] == [ended, 0]


def test_least_privilege_pass_role_and_log_bucket(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)
    cloud.node_identity = "arn:aws:iam::123456789012:instance-profile/raydeck-nodes"
    statements = {s["Sid"]: s for s in policies.aws_permissions_policy(cloud)["Statement"]}
    # iam:PassRole for the nodes' role only, never "*".
    assert statements["PassNodeRoleToEc2"]["Resource"] == (
        "arn:aws:iam::123456789012:role/raydeck-nodes"
    )
    # The control plane never reads the logs the nodes ship: it reads only its own
    # storage (working directories, stored job logs), through URLs the role signs.
    reading = [s for s in statements.values() if "s3:GetObject" in json.dumps(s["Action"])]
    assert [(s["Sid"], s["Action"], s["Resource"]) for s in reading] == [
        ("ReadOwnStorage", ["s3:GetObject"], "arn:aws:s3:::acme-logs/raydeck/raydeck-storage/*")
    ]


def test_gcp_grants_a_narrow_role_and_no_read_on_the_log_bucket(tenant_a: Tenant) -> None:
    cloud = add_aws(tenant_a)  # the commands are derived from the row alone
    cloud.gcp_project_id = "acme-ml"
    cloud.log_location = "gs://acme-logs/raydeck"
    cloud.node_identity = "nodes@acme-ml.iam.gserviceaccount.com"
    commands = policies.gcp_commands(cloud)
    for broad in ("roles/compute.instanceAdmin", "roles/storage.objectAdmin", "roles/editor"):
        assert broad not in commands
    assert "storage.objects.list" not in commands
    # Objects are read only under the image builds' log folder (their logs).
    folder = f"acme-logs/objects/raydeck/raydeck-builds/{cloud.uuid}/"
    for line in commands.splitlines():
        if "storage.objects.get" in line:
            assert line.strip() == "--permissions storage.objects.get"
    reads = [c for c in commands.split("\ngcloud ") if "roles/raydeckBuildLogs" in c]
    assert reads and all(folder in c for c in reads if "add-iam-policy-binding" in c)
    # ... and under Raydeck's own storage, whose URLs it signs as the service account.
    storage = "acme-logs/objects/raydeck/raydeck-storage/"
    reads = [c for c in commands.split("\ngcloud ") if "roles/raydeckStorage" in c]
    assert reads and all(storage in c for c in reads if "add-iam-policy-binding" in c)
    assert "--permissions iam.serviceAccounts.signBlob" in commands
    [signing] = [c for c in commands.split("\ngcloud ") if "roles/raydeckSignUrls" in c]
    sa = f"raydeck-{str(cloud.uuid)[:8]}@acme-ml.iam.gserviceaccount.com"
    assert signing.startswith(f"iam service-accounts add-iam-policy-binding {sa} ")
    assert "--permissions compute.instances.create," in commands
    # The service account user role on the nodes' account only, not the project.
    assert (
        "add-iam-policy-binding nodes@acme-ml.iam.gserviceaccount.com \\\n"
        in commands.replace("    ", "")
        or "service-accounts add-iam-policy-binding nodes@acme-ml.iam.gserviceaccount.com"
        in commands
    )
    assert "projects add-iam-policy-binding acme-ml \\\n    --member serviceAccount:" in commands
    assert "roles/iam.serviceAccountUser" in commands


def test_the_log_bucket_cors_permissions_are_granted_on_that_bucket_only(
    tenant_a: Tenant,
) -> None:
    """Verification sets Raydeck's CORS rule on the log bucket (for the console's log
    page): the setup documents allow that on the log bucket and nowhere else."""
    cloud = add_aws(tenant_a)
    cors_actions = {"s3:GetBucketCORS", "s3:PutBucketCORS"}
    granting = [
        s
        for s in policies.aws_permissions_policy(cloud)["Statement"]
        if cors_actions & set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]
    assert [(s["Sid"], s["Resource"]) for s in granting] == [
        ("LogBucket", "arn:aws:s3:::acme-logs")
    ]
    assert cors_actions <= set(granting[0]["Action"])

    cloud.gcp_project_id = "acme-ml"
    cloud.log_location = "gs://acme-logs/raydeck"
    steps = policies.gcp_commands(cloud).split("\ngcloud ")
    [created] = [c for c in steps if "storage.buckets.update" in c]
    role = created.split()[3]  # iam roles create <role>
    assert role.startswith("raydeckLogBucket")
    [bound] = [c for c in steps if f"roles/{role}" in c]
    assert bound.startswith("storage buckets add-iam-policy-binding gs://acme-logs ")


def test_a_new_cloud_comes_with_default_cpu_and_gpu_compute_configs(tenant_a: Tenant) -> None:
    aws = add_aws(tenant_a, "gpu-land")
    configs = {
        c.name: c.latest
        for c in ComputeConfig.objects.filter(organization=tenant_a.org, versions__cloud=aws)
    }
    assert set(configs) == {"Default for gpu-land", "GPU default for gpu-land"}
    [gpu_group] = configs["GPU default for gpu-land"].worker_groups
    assert gpu_group["gpus"] == 1 and gpu_group["instance_type"] == "g5.xlarge"
    assert gpu_group["min"] == 0
    assert configs["Default for gpu-land"].worker_groups[0]["gpus"] == 0
    # The local cloud has no GPU machine to offer: its CPU default only.
    local = services.cloud_create(
        organization=tenant_a.org, actor=tenant_a.owner, kind="local", name="here"
    )
    names = set(ComputeConfig.objects.filter(versions__cloud=local).values_list("name", flat=True))
    assert names == {"Default for here"}


def test_gateway_ranges_on_the_aws_form(tenant_a: Tenant) -> None:
    """Who may reach the clusters: CIDR ranges, a clear error on the field for a bad one
    or for the whole internet without the confirmation (nothing saved), kept otherwise."""
    client = client_for(tenant_a.admin)
    url = reverse("cloud_create", args=[tenant_a.org.slug, "aws"])
    form = {"name": "Edge AWS", "region": "eu-west-1", "launch_access": "all"}
    for cidrs, expected in [
        ("203.0.113.5/24", "is not a CIDR range"),
        ("0.0.0.0/0", "whole internet"),
    ]:
        response = client.post(url, {**form, "gateway_cidrs": cidrs})
        assert response.status_code == 200
        assert expected in html.unescape(response.content.decode())
        assert not Cloud.objects.filter(name="Edge AWS").exists()
    client.post(url, {**form, "gateway_cidrs": "203.0.113.0/24,\n198.51.100.7/32"})
    cloud = Cloud.objects.get(name="Edge AWS")
    assert cloud.gateway_cidrs == ["203.0.113.0/24", "198.51.100.7/32"]
    edit = client.get(reverse("cloud_edit", args=[tenant_a.org.slug, cloud.pk]))
    assert "203.0.113.0/24\n198.51.100.7/32" in html.unescape(edit.content.decode())
    client.post(
        url,
        {
            **form,
            "name": "Open AWS",
            "gateway_cidrs": "0.0.0.0/0",
            "gateway_open_to_internet": "on",
        },
    )
    assert Cloud.objects.get(name="Open AWS").gateway_open_to_internet
