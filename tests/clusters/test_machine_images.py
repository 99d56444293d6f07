"""What AWS and GCP nodes boot: the image's per-region AMI or GCP image, else the cloud's
default (on AWS an SSM parameter resolved per region, on GCP an image family), and a
failure that says what to set when there is neither. The boot script the drivers pass
installs the agent from the control plane's package index.

Stand-ins: moto for AWS (in-process `mock_aws()`; moto refuses parameters under the
reserved /aws/ prefix, so the default parameter is a custom one here, resolved by the
same code); for GCP the fake Compute REST endpoint (tests/clouds/gcp_fake.py) behind
the real google-cloud-compute client, built with anonymous credentials instead of
Workload Identity Federation (which would call Google).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from django.core.exceptions import ValidationError
from raydeck_agent.config import EXIT_CONFIG, EXIT_REFUSED

from clouds.choices import CloudKind, CloudState
from clouds.models import Cloud
from clouds.policies import aws_permissions_policy
from clouds.providers import aws_builds, boot
from clouds.providers.base import CloudProvider
from clouds.providers.gcp_build_names import repository_id
from clusters.choices import ClusterState, NodeState
from clusters.models import Cluster, ContainerImage
from clusters.services import lifecycle, reconcile
from tests.clouds.gcp_fake import FakeComputeServer, fake_provider
from tests.clouds.moto_account import moto_account
from tests.conftest import Tenant
from tests.factories import CloudFactory

pytestmark = pytest.mark.django_db

REGION = "eu-west-1"
AMI_PARAMETER = "/raydeck/test/ubuntu-ami"
DEFAULT_AMI = "ami-0a1b2c3d4e5f60718"
IMAGE_AMI = "ami-0fedcba9876543210"
GCP_DEFAULT = "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64"
GCP_OWN = "projects/acme/global/images/family/ray-2"
AGENT_URL = "https://raydeck.example.com"


@pytest.fixture(autouse=True)
def agent_url(settings) -> None:
    settings.RAYDECK_AGENT_URL = AGENT_URL


@pytest.fixture
def moto_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings) -> Iterator[None]:
    settings.RAYDECK_AWS_AMI_PARAMETER = AMI_PARAMETER
    with moto_account(monkeypatch, tmp_path, REGION):
        boto3.client("iam").create_role(RoleName="raydeck", AssumeRolePolicyDocument="{}")
        yield


def aws_cloud(tenant: Tenant, **fields: str) -> Cloud:
    role = "arn:aws:iam::123456789012:role/raydeck"
    return CloudFactory(
        organization=tenant.org,
        kind=CloudKind.AWS,
        region=REGION,
        state=CloudState.ACTIVE,
        aws_role_arn=role,
        aws_external_id="raydeck-ext-0123456789abcdef",
        **fields,
    )


def create(tenant: Tenant, cloud: Cloud, image: ContainerImage | None = None) -> Cluster:
    cluster = lifecycle.cluster_create(
        project=tenant.project, actor=tenant.member, name="c1", cloud=cloud, image=image
    )
    reconcile.cluster_reconcile(cluster_id=cluster.pk)
    cluster.refresh_from_db()
    return cluster


def assert_installs_the_agent_from_the_index(script: str, cluster: Cluster) -> None:
    """The agent comes from the index onto the host and runs inside the cluster's image
    (the built-in one is Ray's public image: pulled without a login)."""
    assert script.startswith("#!/bin/bash\n")
    spec = reconcile.boot_spec(cluster, cluster.nodes.get())
    assert f"\n{boot.agent_install_command(spec)}\n" in script
    assert f"--index-url {AGENT_URL}/agent/v1/simple/ raydeck-agent" in script
    assert spec.image_uri == cluster.image.image_uri and spec.image_uri.startswith("rayproject/")
    assert f'"$engine" pull docker.io/{spec.image_uri} ' in script
    assert f"\nexec {boot.container_command(spec)}" in script  # by the node's unit
    assert " login " not in script and "ray[default]" not in script


def launched_ec2() -> list[dict]:
    ec2 = boto3.client("ec2", region_name=REGION)
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def test_aws_boots_the_regions_default_ami_with_the_agent_boot_script(
    tenant_a: Tenant, moto_aws
) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=AMI_PARAMETER, Value=DEFAULT_AMI, Type="String"
    )
    # Nodes run as an instance profile, so their agents can write the log bucket.
    boto3.client("iam").create_instance_profile(InstanceProfileName="raydeck-nodes")
    cluster = create(tenant_a, aws_cloud(tenant_a, node_identity="raydeck-nodes"))
    assert cluster.state == ClusterState.STARTING
    head = cluster.nodes.get()
    assert head.state == NodeState.BOOTING and head.instance_id.startswith("i-")
    [instance] = launched_ec2()
    assert instance["ImageId"] == DEFAULT_AMI
    assert instance["IamInstanceProfile"]["Arn"].endswith(":instance-profile/raydeck-nodes")
    statements = {s["Sid"]: s for s in aws_permissions_policy(cluster.cloud)["Statement"]}
    assert statements["PassNodeRoleToEc2"]["Action"] == "iam:PassRole"
    data = boto3.client("ec2", region_name=REGION).describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )["UserData"]["Value"]
    assert_installs_the_agent_from_the_index(base64.b64decode(data).decode(), cluster)


def test_aws_boots_the_images_own_ami_for_the_region(tenant_a: Tenant, moto_aws) -> None:
    amis = {REGION: IMAGE_AMI, "us-east-1": DEFAULT_AMI}
    image = ContainerImage(
        organization=tenant_a.org,
        name="acme ray",
        ray_version="2.40.0",
        image_uri="acme/ray:2.40",
        aws_amis=amis,
    )
    image.full_clean()
    image.save()
    create(tenant_a, aws_cloud(tenant_a), image=image)  # no SSM parameter needed
    assert [i["ImageId"] for i in launched_ec2()] == [IMAGE_AMI]


def test_aws_without_an_ami_fails_and_says_what_to_set(tenant_a: Tenant, moto_aws) -> None:
    cluster = create(tenant_a, aws_cloud(tenant_a))  # the parameter does not exist
    assert cluster.state == ClusterState.FAILED
    event = cluster.events.get(step="failed")
    assert event.level == "error"
    for words in (
        f"has no AMI for {REGION}",
        AMI_PARAMETER,
        "does not exist",
        f"Add an AMI id for {REGION} to the image",
        "RAYDECK_AWS_AMI_PARAMETER",
    ):
        assert words in event.message and words in cluster.state_reason
    assert launched_ec2() == []


def test_an_image_with_a_malformed_ami_is_refused() -> None:
    image = ContainerImage(name="x", ray_version="2.40.0", aws_amis={REGION: "ubuntu"})
    with pytest.raises(ValidationError, match="one AMI per region"):
        image.full_clean()


def test_a_malformed_node_identity_is_refused(tenant_a: Tenant) -> None:
    for kind, value, words in (
        (CloudKind.AWS, "arn:aws:iam::1:role/x", "instance profile"),
        (CloudKind.GCP, "nodes", "service account email"),
        (CloudKind.LOCAL, "anything", "run as Raydeck"),
    ):
        cloud = Cloud(
            organization=tenant_a.org,
            name="x",
            kind=kind,
            region="us-central1",
            zones=["us-central1-a"],
            gcp_project_id="raydeck-test",
            node_identity=value,
        )
        with pytest.raises(ValidationError) as caught:
            cloud.full_clean()
        assert words in str(caught.value.message_dict["node_identity"])


@pytest.fixture
def gcp(monkeypatch: pytest.MonkeyPatch, settings) -> Iterator[FakeComputeServer]:
    settings.RAYDECK_GCP_IMAGE = GCP_DEFAULT
    with FakeComputeServer() as server:
        server.fake.images |= {GCP_DEFAULT, GCP_OWN}

        def provider_for(cloud: Cloud) -> CloudProvider:
            return fake_provider(server, cloud, image=settings.RAYDECK_GCP_IMAGE)

        monkeypatch.setattr(reconcile, "provider_for", provider_for)
        yield server


def gcp_cloud(tenant: Tenant, **fields: str) -> Cloud:
    return CloudFactory(
        organization=tenant.org,
        kind=CloudKind.GCP,
        region="us-central1",
        zones=["us-central1-a"],
        gcp_project_id="raydeck-test",
        state=CloudState.ACTIVE,
        **fields,
    )


def inserted(server: FakeComputeServer) -> list[dict]:
    return [call.body for call in server.fake.calls("POST", r"/instances$")]


def test_gcp_boots_the_default_family_with_the_agent_startup_script(
    tenant_a: Tenant, gcp: FakeComputeServer
) -> None:
    nodes_account = "nodes@raydeck-test.iam.gserviceaccount.com"
    cluster = create(tenant_a, gcp_cloud(tenant_a, node_identity=nodes_account))
    assert cluster.nodes.get().state == NodeState.BOOTING
    [body] = inserted(gcp)
    assert body["disks"][0]["initializeParams"]["sourceImage"] == GCP_DEFAULT
    assert [a["email"] for a in body["serviceAccounts"]] == [nodes_account]
    [item] = [i for i in body["metadata"]["items"] if i["key"] == "startup-script"]
    assert_installs_the_agent_from_the_index(item["value"], cluster)


def test_gcp_boots_the_images_own_and_fails_clearly_without_any(
    tenant_a: Tenant, gcp: FakeComputeServer, settings
) -> None:
    image = ContainerImage.objects.create(
        organization=tenant_a.org,
        name="acme ray",
        ray_version="2.40.0",
        image_uri="acme/ray:2.40",
        gcp_image=GCP_OWN,
    )
    cloud = gcp_cloud(tenant_a)
    first = create(tenant_a, cloud, image=image)
    assert [b["disks"][0]["initializeParams"]["sourceImage"] for b in inserted(gcp)] == [GCP_OWN]
    lifecycle.cluster_terminate(cluster=first, actor=tenant_a.member)
    for _ in range(5):
        if reconcile.cluster_reconcile(cluster_id=first.pk).requeue_in is None:
            break

    settings.RAYDECK_GCP_IMAGE = ""
    cluster = create(tenant_a, cloud)  # the built-in image names no GCP image
    assert cluster.state == ClusterState.FAILED
    assert "names no GCP boot image" in cluster.state_reason
    assert "RAYDECK_GCP_IMAGE" in cluster.events.get(step="failed").message
    assert len(inserted(gcp)) == 1


DIGEST = "sha256:" + "5e" * 32


def assert_runs_the_built_image(script: str, image_uri: str, login: str) -> None:
    """The node pulls the built image by digest after logging in with its own identity,
    and runs the agent (so Ray) inside it: nothing of Ray goes into the host's Python."""
    pull = f'"$engine" pull {image_uri} && break'
    assert pull in script and image_uri.split("@")[1] == DIGEST
    lines = script.splitlines()
    [pulling] = [n for n, line in enumerate(lines) if pull in line]
    [logging_in] = [n for n, line in enumerate(lines) if login in line]
    assert logging_in < pulling
    # The run script, at every start of the node's unit: the container in the foreground,
    # so the agent's exit code is the unit's.
    [run] = [line for line in lines if line.startswith('exec "$engine" run ')]
    assert run.startswith('exec "$engine" run --name raydeck-node --network host ')
    assert "--detach" not in run and "--restart" not in run  # systemd restarts, not the engine
    assert run.endswith(f" {image_uri} -m raydeck_agent")
    assert lines.index(run) > pulling
    # The unit, enabled (EC2 runs this script once: the unit brings the node back after a
    # reboot) and (re)started, restarting after failures but not the agent's permanent ones.
    unit = script.split(f"cat > {boot.UNIT_PATH} <<'RAYDECK_UNIT_EOF'\n")[1]
    unit = unit.split("RAYDECK_UNIT_EOF\n")[0]
    assert f"ExecStart={boot.RUN_SCRIPT}\n" in unit and "Restart=on-failure\n" in unit
    [prevent] = [line for line in unit.splitlines() if line.startswith("RestartPreventExitStatus=")]
    assert set(prevent.split("=")[1].split()) == {str(EXIT_REFUSED), str(EXIT_CONFIG)}
    assert "WantedBy=multi-user.target" in unit
    assert "systemctl enable raydeck-node.service\n" in script
    assert "import ray" not in script and "ray[default]" not in script
    assert "exec python3" not in script
    # The head installs Prometheus (Debian's; Amazon Linux has none) for the agent to find
    # inside the container.
    assert "|| want prometheus ''\n" in script
    assert f'cp -f "$(command -v prometheus)" {boot.TOOLS_DIR}/\n' in script


def test_aws_nodes_pull_a_built_image_by_digest_with_the_instance_role(
    tenant_a: Tenant, moto_aws
) -> None:
    """Stand-in: moto (the UserData of the launched instance)."""
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=AMI_PARAMETER, Value=DEFAULT_AMI, Type="String")
    cloud = aws_cloud(tenant_a)
    repository = aws_builds.resource_name(cloud.uuid)
    image_uri = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{repository}@{DIGEST}"
    image = ContainerImage.objects.create(
        organization=tenant_a.org, name="built", ray_version="2.40.0", image_uri=image_uri
    )
    create(tenant_a, cloud, image=image)
    [instance] = launched_ec2()
    data = boto3.client("ec2", region_name=REGION).describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )["UserData"]["Value"]
    script = base64.b64decode(data).decode()
    assert_runs_the_built_image(script, image_uri, "docker-credential-ecr-login get")
    assert "|| want amazon-ecr-credential-helper amazon-ecr-credential-helper" in script
    assert f"registry=123456789012.dkr.ecr.{REGION}.amazonaws.com\n" in script


def test_gcp_nodes_pull_a_built_image_by_digest_with_the_vms_service_account(
    tenant_a: Tenant, gcp: FakeComputeServer
) -> None:
    """Stand-in: the fake Compute endpoint (the startup-script metadata)."""
    cloud = gcp_cloud(tenant_a, node_identity="nodes@raydeck-test.iam.gserviceaccount.com")
    host = "us-central1-docker.pkg.dev"
    image_uri = f"{host}/raydeck-test/{repository_id(cloud.uuid)}/ml@{DIGEST}"
    image = ContainerImage.objects.create(
        organization=tenant_a.org, name="built", ray_version="2.40.0", image_uri=image_uri
    )
    create(tenant_a, cloud, image=image)
    [body] = inserted(gcp)
    [item] = [i for i in body["metadata"]["items"] if i["key"] == "startup-script"]
    token = "computeMetadata/v1/instance/service-accounts/default/token"
    assert_runs_the_built_image(item["value"], image_uri, token)
    assert f"registry={host}\nuser=oauth2accesstoken\n" in item["value"]
