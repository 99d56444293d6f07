"""The security group of an AWS cloud: one per cloud, in the region's default VPC, named
and tagged after the cloud, created at the first launch and removed with the cloud.

It lets the cloud's nodes reach each other on every port (Ray's GCS, raylets, object
managers and workers talk node to node), and lets in from outside only the gateway port
(FirewallSpec.gateway_port, TCP) from the cloud's CIDR ranges. Nothing else reaches a
node. `ensure` is idempotent: a second run finds the group by its tag and only adds or
revokes the rules that differ. Rules a service's load balancer adds (described
ROUTER_RULE, aws_router.py) are its own and left alone here.
"""

from __future__ import annotations

import uuid
from typing import Any

from .base import TAG_CLOUD, FirewallSpec

GROUP_PREFIX = "raydeck-"
ROUTER_RULE = "Raydeck service router"


def group_name(cloud_id: uuid.UUID) -> str:
    return f"{GROUP_PREFIX}{cloud_id}"


def _find(ec2: Any, cloud_id: uuid.UUID) -> dict[str, Any] | None:
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": f"tag:{TAG_CLOUD}", "Values": [str(cloud_id)]},
            {"Name": "group-name", "Values": [group_name(cloud_id)]},
        ]
    )["SecurityGroups"]
    return groups[0] if groups else None


def _wanted(group_id: str, spec: FirewallSpec) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "IpProtocol": "-1",
            "UserIdGroupPairs": [{"GroupId": group_id, "Description": "node to node"}],
        }
    ]
    v4 = [c for c in spec.gateway_cidrs if ":" not in c]
    v6 = [c for c in spec.gateway_cidrs if ":" in c]
    if v4 or v6:
        rules.append(
            {
                "IpProtocol": "tcp",
                "FromPort": spec.gateway_port,
                "ToPort": spec.gateway_port,
                "IpRanges": [{"CidrIp": c, "Description": "Raydeck gateway"} for c in v4],
                "Ipv6Ranges": [{"CidrIpv6": c, "Description": "Raydeck gateway"} for c in v6],
            }
        )
    return rules


def _flatten(permissions: list[dict[str, Any]]) -> set[tuple[str, int | None, int | None, str]]:
    """(protocol, from, to, source) for each source of each rule, to compare rule sets."""
    flat = set()
    for p in permissions:
        key = (str(p["IpProtocol"]), p.get("FromPort"), p.get("ToPort"))
        for r in p.get("IpRanges", []):
            flat.add((*key, r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            flat.add((*key, r["CidrIpv6"]))
        for r in p.get("UserIdGroupPairs", []):
            if r.get("Description") != ROUTER_RULE:
                flat.add((*key, "sg:" + r["GroupId"]))
    return flat


def router_ports(ec2: Any, group_id: str, source: str) -> set[int]:
    """The ports on which the group lets in the router group `source`."""
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return {
        int(p["FromPort"])
        for p in group.get("IpPermissions", [])
        if p.get("FromPort") is not None
        and any(
            r["GroupId"] == source and r.get("Description") == ROUTER_RULE
            for r in p.get("UserIdGroupPairs", [])
        )
    }


def _permission(rule: tuple[str, int | None, int | None, str]) -> dict[str, Any]:
    protocol, low, high, source = rule
    permission: dict[str, Any] = {"IpProtocol": protocol}
    if low is not None:
        permission["FromPort"], permission["ToPort"] = low, high
    if source.startswith("sg:"):
        permission["UserIdGroupPairs"] = [{"GroupId": source[3:]}]
    elif ":" in source:
        permission["Ipv6Ranges"] = [{"CidrIpv6": source}]
    else:
        permission["IpRanges"] = [{"CidrIp": source}]
    return permission


def ensure(ec2: Any, cloud_id: uuid.UUID, spec: FirewallSpec) -> str:
    """The cloud's security group id, created or brought in line with `spec`."""
    group = _find(ec2, cloud_id)
    if group is None:
        tags = [{"Key": TAG_CLOUD, "Value": str(cloud_id)}, {"Key": "Name", "Value": "Raydeck"}]
        group_id = ec2.create_security_group(
            GroupName=group_name(cloud_id),
            Description="Raydeck nodes: node to node, and the gateway port from allowed ranges",
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
        )["GroupId"]
        group = {"GroupId": group_id, "IpPermissions": []}
    group_id = str(group["GroupId"])
    have = _flatten(group.get("IpPermissions", []))
    want = _flatten(_wanted(group_id, spec))
    if extra := have - want:
        ec2.revoke_security_group_ingress(
            GroupId=group_id, IpPermissions=[_permission(r) for r in sorted(extra, key=str)]
        )
    if missing := want - have:
        ec2.authorize_security_group_ingress(
            GroupId=group_id, IpPermissions=[_permission(r) for r in sorted(missing, key=str)]
        )
    return group_id


def remove(ec2: Any, cloud_id: uuid.UUID) -> bool:
    """Delete the cloud's security group; False when there was none."""
    group = _find(ec2, cloud_id)
    if group is None:
        return False
    ec2.delete_security_group(GroupId=group["GroupId"])
    return True
