"""A GCP cloud's firewall rules by network tag (providers/gcp_firewall.py), through the
real google-cloud-compute client against the fake Compute endpoint (gcp_fake.py, the
stand-in for GCP): the cloud's nodes reach each other, only the cloud's CIDR ranges
reach the gateway port; made once, kept in line, carried by launched instances, removed
with the cloud."""

from __future__ import annotations

import uuid
from typing import Any

from clouds.providers.base import FirewallSpec
from clouds.providers.gcp_firewall import network_tag
from tests.clouds import test_gcp_driver as gcp_driver_tests
from tests.clouds.test_gcp_driver import PROJECT, launch, node_spec

# The driver tests' fixtures: the fake endpoint, a cloud id, a provider factory.
gcp = gcp_driver_tests.gcp
cloud_id = gcp_driver_tests.cloud_id
make_provider = gcp_driver_tests.make_provider

GATEWAY = 8266
CIDRS = ("203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32")


def rules(gcp: Any, cloud: uuid.UUID) -> dict[str, dict[str, Any]]:
    """The cloud's rules as GCE holds them: name -> what each lets in."""
    tag = network_tag(cloud)
    return {
        name: {
            "allowed": sorted(
                (a["IPProtocol"], tuple(a.get("ports", []))) for a in rule.get("allowed", [])
            ),
            "sources": sorted(rule.get("sourceRanges", []) + rule.get("sourceTags", [])),
            "targets": rule.get("targetTags", []),
            "direction": rule.get("direction"),
        }
        for (project, name), rule in gcp.fake.firewalls.items()
        if project == PROJECT and name.startswith(tag)
    }


def test_the_firewall_rules_let_in_only_the_gateway_from_the_clouds_ranges(
    gcp, cloud_id, make_provider
) -> None:
    tag = network_tag(cloud_id)
    provider = make_provider(firewall=FirewallSpec(GATEWAY, CIDRS))
    provider.ensure_firewall()
    expected = {
        f"{tag}-nodes": {
            "allowed": [("icmp", ()), ("tcp", ()), ("udp", ())],
            "sources": [tag],
            "targets": [tag],
            "direction": "INGRESS",
        },
        f"{tag}-gateway": {
            "allowed": [("tcp", (str(GATEWAY),))],
            "sources": ["198.51.100.7/32", "203.0.113.0/24"],
            "targets": [tag],
            "direction": "INGRESS",
        },
        f"{tag}-gateway6": {
            "allowed": [("tcp", (str(GATEWAY),))],
            "sources": ["2001:db8::/32"],
            "targets": [tag],
            "direction": "INGRESS",
        },
    }
    assert rules(gcp, cloud_id) == expected

    # Idempotent: a second run writes nothing.
    writes = len(gcp.fake.calls("POST", "/firewalls")) + len(gcp.fake.calls("PATCH"))
    make_provider(firewall=FirewallSpec(GATEWAY, CIDRS)).ensure_firewall()
    assert len(gcp.fake.calls("POST", "/firewalls")) + len(gcp.fake.calls("PATCH")) == writes
    assert rules(gcp, cloud_id) == expected

    # Launched nodes carry the tag the rules target.
    launch(provider, node_spec())
    [instance] = gcp.fake.instances.values()
    assert instance["tags"]["items"] == [tag]

    # The ranges change: the gateway rule follows; an empty family's rule goes (GCE
    # would read a rule without sources as 0.0.0.0/0).
    make_provider(firewall=FirewallSpec(GATEWAY, ("192.0.2.0/28",))).ensure_firewall()
    now = rules(gcp, cloud_id)
    assert now[f"{tag}-gateway"]["sources"] == ["192.0.2.0/28"]
    assert f"{tag}-gateway6" not in now and now[f"{tag}-nodes"] == expected[f"{tag}-nodes"]

    # Removed with the cloud; another cloud's rules stay.
    other = uuid.uuid4()
    make_provider(cloud_id=other, firewall=FirewallSpec(GATEWAY, CIDRS)).ensure_firewall()
    provider.remove_firewall()
    provider.remove_firewall()  # nothing left: not an error
    assert rules(gcp, cloud_id) == {}
    assert len(rules(gcp, other)) == 3


def test_the_setup_commands_grant_the_firewall_permissions_and_no_more() -> None:
    from clouds.choices import CloudKind
    from clouds.models import Cloud
    from clouds.policies import GCP_FIREWALL_PERMISSIONS, gcp_commands

    commands = gcp_commands(Cloud(kind=CloudKind.GCP, gcp_project_id="acme-ml-123"))
    # The firewall role's own grant (the clusters' custom role comes first).
    granted = [line for line in commands.splitlines() if "--permissions" in line]
    firewall = [line for line in granted if "compute.firewalls.create" in line]
    assert [line.split("--permissions ")[1].split(",") for line in firewall] == [
        GCP_FIREWALL_PERMISSIONS
    ]
    assert not any("admin" in p.lower() for p in GCP_FIREWALL_PERMISSIONS)
    assert "roles/compute.securityAdmin" not in commands  # no broad firewall role
