"""The periodic orphan sweep on AWS and GCP: an instance tagged for an active cloud that
no live Node claims is terminated and recorded, in the cluster's timeline and in the
organization's audit log; an instance a live Node claims, or one tagged for another
cloud, is never touched.

Stand-ins: moto for AWS (in-process `mock_aws()`, the real AWS driver through Raydeck's
`provider_for`); for GCP the fake Compute REST endpoint (tests/clouds/gcp_fake.py)
behind the real google-cloud-compute client (the driver is built as `provider_for`
builds it, but pointed at the fake with anonymous credentials instead of Workload
Identity Federation, which would call Google). The local cloud's sweep is tested with
real processes in test_reconcile.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from google.auth.credentials import AnonymousCredentials

from accounts.models import AuditEvent
from clouds.choices import CloudKind, CloudState
from clouds.models import Cloud
from clouds.providers import aws as aws_driver
from clouds.providers import registry
from clouds.providers.base import CloudProvider, InstanceState, NodeSpec, idempotency_key
from clouds.providers.gcp import GcpProvider
from clusters.choices import ClusterState, NodeState
from clusters.models import Cluster, ClusterEvent
from clusters.services import reconcile
from tests.clouds.gcp_fake import FakeComputeServer
from tests.clouds.moto_account import moto_account
from tests.conftest import Tenant
from tests.factories import CloudFactory, ClusterFactory, ComputeConfigVersionFactory, NodeFactory

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
ACCOUNT = "123456789012"
GCP_PROJECT = "raydeck-test"
GCP_ZONES = ["us-central1-a", "us-central1-b"]
GCP_IMAGE = "projects/debian-cloud/global/images/family/debian-12"


@pytest.fixture
def moto_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    with moto_account(monkeypatch, tmp_path, REGION):
        boto3.client("iam", region_name=REGION).create_role(
            RoleName="raydeck", AssumeRolePolicyDocument="{}"
        )
        yield


@pytest.fixture
def gcp() -> Iterator[FakeComputeServer]:
    with FakeComputeServer() as server:
        yield server


def active_cloud(tenant: Tenant, kind: str, **fields: object) -> Cloud:
    return CloudFactory(
        organization=tenant.org, name=f"{kind} cloud", kind=kind, state=CloudState.ACTIVE, **fields
    )


def running_cluster(tenant: Tenant, cloud: Cloud) -> Cluster:
    version = ComputeConfigVersionFactory(cloud=cloud, head_instance_type="m5.large")
    return ClusterFactory(
        project=tenant.project,
        cloud=cloud,
        compute_config=version,
        state=ClusterState.RUNNING,
        name=f"{cloud.kind}-c",
    )


def spec(cluster_id: uuid.UUID, node_id: uuid.UUID | None = None, **fields: object) -> NodeSpec:
    return NodeSpec(
        node_id=node_id or uuid.uuid4(), cluster_id=cluster_id, name="raydeck-node", **fields
    )  # type: ignore[arg-type]


def launch(provider: CloudProvider, node: NodeSpec) -> str:
    instance = provider.launch(
        node=node, boot_script="#!/bin/bash\ntrue\n", idempotency_key=idempotency_key(node.node_id)
    )
    return instance.instance_id


def states(provider: CloudProvider) -> dict[str, InstanceState]:
    return {i.instance_id: i.state for i in provider.list_instances()}


def assert_leak_recorded(cluster: Cluster, instance_id: str) -> None:
    event = ClusterEvent.objects.get(cluster=cluster, step=reconcile.LEAK_STEP)
    assert instance_id in event.message and event.level == "warning"
    entry = AuditEvent.objects.get(verb="cloud.leaked_instance_terminated")
    assert entry.organization_id == cluster.organization_id
    assert entry.target_type == "cluster" and entry.target_id == str(cluster.pk)
    assert entry.changes["instance_id"] == [instance_id, None]
    assert entry.actor is None and entry.actor_email == "raydeck"


def test_aws_sweep_terminates_only_the_leaked_instance(
    tenant_a: Tenant, moto_aws, settings
) -> None:
    cloud = active_cloud(
        tenant_a,
        CloudKind.AWS,
        region=REGION,
        aws_role_arn=f"arn:aws:iam::{ACCOUNT}:role/raydeck",
        aws_external_id="raydeck-ext-0123456789abcdef",
    )
    cluster = running_cluster(tenant_a, cloud)
    provider = registry.provider_for(cloud)
    image = {"instance_type": "m5.large", "image": "ami-0123456789abcdef0"}
    head = NodeFactory(cluster=cluster, state=NodeState.READY)
    claimed = launch(provider, spec(cluster.uuid, head.uuid, **image))
    leaked = launch(provider, spec(cluster.uuid, **image))  # its row was lost
    # Another cloud in the same account (another installation's): its own cloud tag.
    foreign = aws_driver.AwsProvider(
        cloud_id=uuid.uuid4(), region=REGION, role_arn=cloud.aws_role_arn, external_id="ext-other"
    )
    other = launch(foreign, spec(uuid.uuid4(), **image))
    ec2 = boto3.client("ec2", region_name=REGION)

    settings.RAYDECK_ORPHAN_GRACE_SECONDS = 120
    assert reconcile.orphans_sweep() == 0  # just launched: its row may still be coming

    settings.RAYDECK_ORPHAN_GRACE_SECONDS = 0
    assert reconcile.orphans_sweep() == 1
    found = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert found[leaked] in ("shutting-down", "terminated")
    assert found[claimed] == "running" and found[other] == "running"
    assert_leak_recorded(cluster, leaked)

    assert reconcile.orphans_sweep() == 0  # nothing left to sweep; nothing recorded twice
    assert AuditEvent.objects.filter(verb="cloud.leaked_instance_terminated").count() == 1


def test_gcp_sweep_terminates_only_the_leaked_instance(
    tenant_a: Tenant, gcp: FakeComputeServer, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = active_cloud(
        tenant_a, CloudKind.GCP, region="us-central1", zones=GCP_ZONES, gcp_project_id=GCP_PROJECT
    )
    cluster = running_cluster(tenant_a, cloud)

    def provider_for(for_cloud: Cloud) -> CloudProvider:
        assert for_cloud.kind == CloudKind.GCP
        return GcpProvider(
            cloud_id=for_cloud.uuid,
            project_id=for_cloud.gcp_project_id,
            zones=list(for_cloud.zones),
            credentials=AnonymousCredentials(),
            api_endpoint=gcp.endpoint,
            poll_interval=0.01,
        )

    monkeypatch.setattr(reconcile, "provider_for", provider_for)
    provider = provider_for(cloud)
    machine = {"instance_type": "n2-standard-2", "image": GCP_IMAGE}
    head = NodeFactory(cluster=cluster, state=NodeState.READY)
    worker = NodeFactory(cluster=cluster, role="worker", state=NodeState.BOOTING)
    claimed = launch(provider, spec(cluster.uuid, head.uuid, **machine))
    booting = launch(provider, spec(cluster.uuid, worker.uuid, zone=GCP_ZONES[1], **machine))
    leaked = launch(provider, spec(cluster.uuid, **machine))
    foreign = GcpProvider(
        cloud_id=uuid.uuid4(),
        project_id=GCP_PROJECT,
        zones=GCP_ZONES,
        credentials=AnonymousCredentials(),
        api_endpoint=gcp.endpoint,
        poll_interval=0.01,
    )
    other = launch(foreign, spec(uuid.uuid4(), **machine))

    settings.RAYDECK_ORPHAN_GRACE_SECONDS = 0
    assert reconcile.orphans_sweep() == 1
    assert leaked not in states(provider)  # deleted
    assert set(states(provider)) == {claimed, booting}
    assert other in states(foreign)
    assert_leak_recorded(cluster, leaked)

    # A node that is gone no longer claims its instance (a terminate that was lost).
    worker.state = NodeState.TERMINATED
    worker.save(update_fields=["state"])
    assert reconcile.orphans_sweep() == 1
    assert set(states(provider)) == {claimed}
    assert other in states(foreign)
