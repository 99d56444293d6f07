"""Each cloud's firewall: on AWS one security group per cloud (providers/aws_firewall.py),
against moto (the stand-in for AWS, with the fixtures of test_aws_driver.py): nodes reach
each other on every port, and only the cloud's CIDR ranges reach the gateway port; the
group is tagged with the cloud, made once, kept in line, used by launches and removed
with the cloud. And the CIDR ranges a cloud accepts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from accounts.models import AuditEvent
from clouds import services, tasks
from clouds.choices import CloudKind
from clouds.models import Cloud
from clouds.policies import aws_permissions_policy
from clouds.providers.base import TAG_CLOUD, FirewallSpec
from tests.clouds import test_aws_driver as aws_driver_tests
from tests.clouds.test_aws_driver import (
    EXTERNAL_ID,
    REGION,
    ROLE_ARN,
    Fake,
    launch,
    make_node,
    make_provider,
)
from tests.conftest import Tenant

# The driver tests' fixtures: moto around every test, and its fake account.
aws = aws_driver_tests.aws
fake = aws_driver_tests.fake
GATEWAY = 8266
CIDRS = ("203.0.113.0/24", "2001:db8::/32")


def groups(account: Fake, cloud_id: Any) -> list[dict[str, Any]]:
    return account.ec2.describe_security_groups(
        Filters=[{"Name": f"tag:{TAG_CLOUD}", "Values": [str(cloud_id)]}]
    )["SecurityGroups"]


def ingress(group: dict[str, Any]) -> set[tuple[Any, ...]]:
    """(protocol, from port, to port, source) of every rule: the exact set let in."""
    found = set()
    for rule in group["IpPermissions"]:
        key = (rule["IpProtocol"], rule.get("FromPort"), rule.get("ToPort"))
        found |= {(*key, r["CidrIp"]) for r in rule.get("IpRanges", [])}
        found |= {(*key, r["CidrIpv6"]) for r in rule.get("Ipv6Ranges", [])}
        found |= {(*key, "sg:" + r["GroupId"]) for r in rule.get("UserIdGroupPairs", [])}
    return found


def test_the_security_group_lets_in_only_the_gateway_from_the_clouds_ranges(fake) -> None:
    provider = make_provider(fake, firewall=FirewallSpec(GATEWAY, CIDRS))
    provider.ensure_firewall()
    [group] = groups(fake, provider.cloud_id)
    group_id = group["GroupId"]
    assert {t["Key"]: t["Value"] for t in group["Tags"]}[TAG_CLOUD] == str(provider.cloud_id)
    assert ingress(group) == {
        ("-1", None, None, f"sg:{group_id}"),  # node to node, every port
        ("tcp", GATEWAY, GATEWAY, "203.0.113.0/24"),
        ("tcp", GATEWAY, GATEWAY, "2001:db8::/32"),
    }

    # Idempotent: a second run (another worker, a retry) changes nothing.
    make_provider(fake, firewall=FirewallSpec(GATEWAY, CIDRS)).ensure_firewall()
    [again] = groups(fake, provider.cloud_id)
    assert again["GroupId"] == group_id and ingress(again) == ingress(group)

    # Nodes launch into it.
    instance = launch(provider, make_node(fake))
    [described] = fake.instances(**{TAG_CLOUD: str(provider.cloud_id)})
    # On the primary interface, with the address choice (the instance's groups are its).
    [interface] = described["NetworkInterfaces"]
    assert [g["GroupId"] for g in interface["Groups"]] == [group_id]

    # The ranges change: the rules follow, exactly.
    make_provider(fake, firewall=FirewallSpec(GATEWAY, ("198.51.100.7/32",))).ensure_firewall()
    [narrowed] = groups(fake, provider.cloud_id)
    assert ingress(narrowed) == {
        ("-1", None, None, f"sg:{group_id}"),
        ("tcp", GATEWAY, GATEWAY, "198.51.100.7/32"),
    }
    # No ranges at all: nothing from outside, nodes still reach each other.
    make_provider(fake, firewall=FirewallSpec(GATEWAY, ())).ensure_firewall()
    assert ingress(groups(fake, provider.cloud_id)[0]) == {("-1", None, None, f"sg:{group_id}")}

    # Another cloud gets a group of its own; removing one leaves the other.
    other = make_provider(
        fake,
        cloud_id=uuid.uuid4(),
        firewall=FirewallSpec(GATEWAY, CIDRS),
    )
    other.ensure_firewall()
    provider.terminate(instance_id=instance.instance_id)
    provider.remove_firewall()
    provider.remove_firewall()  # gone already: not an error
    assert groups(fake, provider.cloud_id) == []
    assert len(groups(fake, other.cloud_id)) == 1


@pytest.mark.django_db
def test_the_security_group_goes_with_the_cloud(
    fake, tenant_a: Tenant, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    cloud = Cloud.objects.create(
        organization=tenant_a.org,
        name="aws",
        kind=CloudKind.AWS,
        region=REGION,
        aws_role_arn=ROLE_ARN,
        aws_external_id=EXTERNAL_ID,
        gateway_cidrs=list(CIDRS),
    )
    make_provider(
        fake, cloud_id=cloud.uuid, firewall=FirewallSpec(GATEWAY, CIDRS)
    ).ensure_firewall()
    assert len(groups(fake, cloud.uuid)) == 1
    with django_capture_on_commit_callbacks() as callbacks:
        services.cloud_delete(cloud=cloud, actor=tenant_a.owner)
    assert not Cloud.objects.filter(pk=cloud.pk).exists()
    assert AuditEvent.objects.filter(verb="cloud.delete", target_id=str(cloud.pk)).exists()
    # After the commit, the task removes the group (run here as the worker would).
    monkeypatch.setattr(
        tasks.remove_cloud_firewall, "delay", lambda **kw: tasks.remove_cloud_firewall.run(**kw)
    )
    monkeypatch.setattr("clouds.providers.aws.AwsProvider._base_session", lambda self: fake.session)
    for callback in callbacks:
        callback()
    assert groups(fake, cloud.uuid) == []


@pytest.mark.django_db
def test_gateway_ranges_are_checked(tenant_a: Tenant) -> None:
    def errors(cidrs: Any, confirmed: bool = False) -> list[str]:
        cloud = Cloud(
            organization=tenant_a.org,
            name="aws",
            kind=CloudKind.AWS,
            region=REGION,
            gateway_cidrs=cidrs,
            gateway_open_to_internet=confirmed,
        )
        try:
            cloud.full_clean()
        except ValidationError as exc:
            return exc.message_dict.get("gateway_cidrs", [])
        return []

    assert errors(["203.0.113.0/24", "10.0.0.0/8", "2001:db8::/32"]) == []
    for bad in (["203.0.113.5/24"], ["not-a-range"], ["300.1.1.1/32"], "10.0.0.0/8", [8]):
        [message] = errors(bad)
        assert "CIDR" in message, (bad, message)
    [message] = errors(["0.0.0.0/0"])
    assert "whole internet" in message and "Confirm" in message
    assert errors(["::/0"]) != []
    assert errors(["0.0.0.0/0"], confirmed=True) == []
    # Through the service: a clear, field-named error, and nothing saved.
    with pytest.raises(ValidationError) as raised:
        services.cloud_create(
            organization=tenant_a.org,
            actor=tenant_a.owner,
            kind=CloudKind.LOCAL,
            name="open",
            gateway_cidrs=["0.0.0.0/0"],
        )
    assert "gateway_cidrs" in raised.value.message_dict
    assert not Cloud.objects.filter(name="open").exists()


def test_the_generated_policy_grants_the_security_group_and_nothing_wider(settings) -> None:
    cloud = Cloud(kind=CloudKind.AWS, region=REGION)
    statements = {s["Sid"]: s for s in aws_permissions_policy(cloud)["Statement"]}
    tagged = {f"ec2:ResourceTag/{TAG_CLOUD}": str(cloud.uuid)}
    manage = statements["ManageOwnSecurityGroup"]
    assert manage["Condition"] == {"StringEquals": tagged}
    assert set(manage["Action"]) == {
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:DeleteSecurityGroup",
    }
    create = statements["CreateTaggedSecurityGroup"]
    assert create["Condition"] == {"StringEquals": {f"aws:RequestTag/{TAG_CLOUD}": str(cloud.uuid)}}
    assert statements["TagSecurityGroupOnCreate"]["Condition"] == {
        "StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}
    }
