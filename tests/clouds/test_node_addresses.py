"""Public or private node addresses, per AWS and GCP cloud: what the drivers ask the
cloud for (AWS against moto, GCP against the fake Compute endpoint of gcp_fake.py), the
head's public address the reconciler learns, the gateway address users reach (the
public one when there is one, else the private one), and the gateway's certificate,
re-issued for an address learned after registration."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from raydeck_agent.gateway import AccessPolicy, Gateway
from raydeck_agent.tls import NodeTLS

from clouds.choices import CloudKind, NodeAddresses
from clouds.forms import AwsCloudForm
from clouds.models import Cloud
from clouds.providers import registry
from clouds.providers.aws import AwsProvider
from clouds.providers.base import idempotency_key
from clusters import access, certificates
from clusters.certificates import head_names
from clusters.choices import NodeState
from clusters.models import GatewayCertificate, Node
from clusters.services import reconcile
from tests.agent.test_gateway import free_port
from tests.clouds import test_aws_driver as aws_driver_tests
from tests.clouds import test_gcp_driver as gcp_driver_tests
from tests.clouds.test_aws_driver import Fake, launch, make_node, make_provider
from tests.clusters.test_certificates import booting, heartbeat, register
from tests.conftest import Tenant
from tests.factories import ClusterFactory, NodeFactory

# The driver tests' fixtures: moto around every test (AWS), the fake Compute endpoint (GCP).
aws = aws_driver_tests.aws
fake = aws_driver_tests.fake
gcp = gcp_driver_tests.gcp
cloud_id = gcp_driver_tests.cloud_id
gcp_provider = gcp_driver_tests.make_provider


def described(account: Fake, instance_id: str) -> dict[str, Any]:
    [reservation] = account.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]


def test_aws_nodes_get_a_public_address_only_when_the_cloud_says_so(fake: Fake) -> None:
    public = launch(make_provider(fake, public_addresses=True), make_node(fake))
    assert described(fake, public.instance_id).get("PublicIpAddress")
    private = launch(make_provider(fake, public_addresses=False), make_node(fake))
    data = described(fake, private.instance_id)
    assert data.get("PrivateIpAddress") and not data.get("PublicIpAddress")
    assert make_provider(fake, public_addresses=False).describe(
        instance_id=private.instance_id
    ).public_address in (None, "")


def test_gcp_nodes_get_an_external_address_only_when_the_cloud_says_so(gcp_provider: Any) -> None:
    node = gcp_driver_tests.node_spec()
    public = gcp_provider(public_addresses=True).launch(
        node=node, boot_script="#!/bin/sh\n", idempotency_key=idempotency_key(node.node_id)
    )
    assert public.public_address and public.private_address
    other = gcp_driver_tests.node_spec()
    private = gcp_provider(public_addresses=False).launch(
        node=other, boot_script="#!/bin/sh\n", idempotency_key=idempotency_key(other.node_id)
    )
    assert private.private_address and private.public_address is None


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [CloudKind.AWS, CloudKind.GCP])
def test_the_clouds_setting_reaches_its_driver(tenant_a: Tenant, kind: str) -> None:
    cloud = Cloud(
        organization=tenant_a.org,
        kind=kind,
        region="us-central1" if kind == CloudKind.GCP else "eu-west-1",
        gcp_project_id="acme-1",
    )
    assert registry.provider_for(cloud).public_addresses  # the default: public
    cloud.node_addresses = NodeAddresses.PRIVATE
    assert not registry.provider_for(cloud).public_addresses


def test_the_form_refuses_an_unknown_choice() -> None:
    form = AwsCloudForm(
        data={"name": "aws", "region": "eu-west-1", "launch_access": "all", "node_addresses": "x"},
        organization=None,  # type: ignore[arg-type]
    )
    assert "node_addresses" in form.errors


@pytest.mark.django_db
def test_users_reach_the_heads_public_address_learned_after_launch(
    fake: Fake, tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = make_provider(fake, public_addresses=True)
    instance = launch(provider, make_node(fake))
    cluster = ClusterFactory(project=tenant_a.project)
    head = NodeFactory(
        cluster=cluster,
        state=NodeState.READY,
        instance_id=instance.instance_id,
        private_address="10.0.0.5",
        ray_ports={"gateway": 8266},
    )
    # Before the cloud has told us: the private address.
    assert access.gateway_address(cluster) == "https://10.0.0.5:8266"
    reconcile._learn_head_address(cluster, provider)
    head.refresh_from_db()
    public = described(fake, instance.instance_id)["PublicIpAddress"]
    assert head.public_address == public
    assert access.gateway_address(cluster) == f"https://{public}:8266"
    assert head_names(head)[:2] == [public, "10.0.0.5"]  # the certificate names it too

    # A private cloud asks nothing and users reach the private address.
    private = make_provider(fake, public_addresses=False)
    calls: list[str] = []
    monkeypatch.setattr(AwsProvider, "describe", lambda self, **kw: calls.append("x"))
    other = ClusterFactory(project=tenant_a.project)
    NodeFactory(
        cluster=other,
        state=NodeState.READY,
        instance_id="i-0123",
        private_address="10.0.0.6",
        ray_ports={"gateway": 8266},
    )
    reconcile._learn_head_address(other, private)
    assert calls == [] and access.gateway_address(other) == "https://10.0.0.6:8266"


def _serves(gateway: Gateway, name: str) -> bool:
    """Whether a client that trusts the installation's CA (what the CLI pins) accepts the
    running gateway's certificate for `name`."""
    client = ssl.create_default_context(cadata=certificates.trust_bundle_pem())
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as raw:
        try:
            client.wrap_socket(raw, server_hostname=name).close()
        except ssl.SSLCertVerificationError:
            return False
    return True


@pytest.mark.django_db
def test_a_public_address_learned_after_registration_is_served_at_once(
    fake: Fake, tenant_a: Tenant, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    """The head registered with its private address (its certificate names that); the
    reconciler then learns its public one from the cloud. The next heartbeat answer
    carries a certificate with it, and the running gateway serves it: no restart, no
    waiting for the renewal days later."""
    certificates.forget_ca()
    provider = make_provider(fake, public_addresses=True)
    instance = launch(provider, make_node(fake))
    public = described(fake, instance.instance_id)["PublicIpAddress"]
    node, token = booting(tenant_a)
    Node.objects.filter(pk=node.pk).update(instance_id=instance.instance_id)
    tls = NodeTLS(tmp_path / "node")
    registered = register(node, token, "10.0.0.5", tls.csr("10.0.0.5")).json()
    assert tls.save_certificate(registered["access"]["certificate"])
    credential = registered["credential"]
    gateway = Gateway(
        host="127.0.0.1",
        port=free_port(),
        policy=AccessPolicy.from_pem(str(node.cluster.uuid), registered["access"]["public_key"]),
        upstreams={},
        tls=tls,
    )
    gateway.start()
    try:
        assert _serves(gateway, "10.0.0.5") and not _serves(gateway, public)
        assert "certificate" not in heartbeat(credential, tls.expires_at())["access"]

        with django_capture_on_commit_callbacks(execute=True):
            reconcile._learn_head_address(node.cluster, provider)
        renewed = heartbeat(credential, tls.expires_at())["access"]["certificate"]
        # What the agent does with it (agent.py _renew_certificate): keep, then load.
        assert tls.save_certificate(renewed)
        gateway.reload_certificate()
        assert _serves(gateway, public) and _serves(gateway, "10.0.0.5")
        # Once: the following heartbeats carry no certificate until the renewal is due.
        assert "certificate" not in heartbeat(credential, tls.expires_at())["access"]
        assert GatewayCertificate.objects.get(node=node).names == [public, "10.0.0.5"]
    finally:
        gateway.stop()
        certificates.forget_ca()
