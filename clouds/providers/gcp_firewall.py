"""The firewall rules of a GCP cloud, by network tag: every node of the cloud carries the
tag `raydeck-<cloud uuid>`, and the cloud's rules (named after it) let those nodes reach
each other on every port and let in from outside only the gateway port (TCP) from the
cloud's CIDR ranges: one rule for IPv4 ranges and one for IPv6 (GCE does not mix them).
A gateway rule without ranges is deleted rather than left empty (GCE reads an ingress
rule without sources as 0.0.0.0/0). `ensure` is idempotent: rules are created when
missing, patched when different, and left alone otherwise.
"""

from __future__ import annotations

import uuid
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from .base import FirewallSpec

PREFIX = "raydeck-"


def network_tag(cloud_id: uuid.UUID) -> str:
    return f"{PREFIX}{cloud_id}"


def rule_names(cloud_id: uuid.UUID) -> dict[str, str]:
    base = network_tag(cloud_id)
    return {"nodes": f"{base}-nodes", "gateway": f"{base}-gateway", "gateway6": f"{base}-gateway6"}


def wanted_rules(
    cloud_id: uuid.UUID, network: str, spec: FirewallSpec
) -> dict[str, dict[str, Any]]:
    """name -> the rule's fields (as GCE's JSON names them), or {} for "must not exist"."""
    tag = network_tag(cloud_id)
    names = rule_names(cloud_id)
    common = {"network": network, "direction": "INGRESS", "target_tags": [tag]}
    rules: dict[str, dict[str, Any]] = {
        names["nodes"]: {
            **common,
            "description": "Raydeck: the cloud's nodes reach each other",
            "allowed": [("tcp", []), ("udp", []), ("icmp", [])],
            "source_tags": [tag],
            "source_ranges": [],
        }
    }
    for key, ranges in (
        ("gateway", [c for c in spec.gateway_cidrs if ":" not in c]),
        ("gateway6", [c for c in spec.gateway_cidrs if ":" in c]),
    ):
        rules[names[key]] = (
            {
                **common,
                "description": "Raydeck: the gateway port from the cloud's allowed ranges",
                "allowed": [("tcp", [str(spec.gateway_port)])],
                "source_tags": [],
                "source_ranges": sorted(ranges),
            }
            if ranges
            else {}
        )
    return rules


def _body(name: str, fields: dict[str, Any]) -> compute_v1.Firewall:
    return compute_v1.Firewall(
        name=name,
        network=fields["network"],
        direction=fields["direction"],
        description=fields["description"],
        target_tags=fields["target_tags"],
        source_tags=fields["source_tags"],
        source_ranges=fields["source_ranges"],
        allowed=[
            compute_v1.Allowed(I_p_protocol=protocol, ports=ports)
            for protocol, ports in fields["allowed"]
        ],
    )


def _same(existing: compute_v1.Firewall, fields: dict[str, Any]) -> bool:
    have = {
        "allowed": sorted((a.I_p_protocol, list(a.ports)) for a in existing.allowed),
        "source_tags": sorted(existing.source_tags),
        "source_ranges": sorted(existing.source_ranges),
        "target_tags": sorted(existing.target_tags),
    }
    want = {
        "allowed": sorted((p, list(ports)) for p, ports in fields["allowed"]),
        "source_tags": sorted(fields["source_tags"]),
        "source_ranges": sorted(fields["source_ranges"]),
        "target_tags": sorted(fields["target_tags"]),
    }
    return have == want


class Firewalls:
    """The calls, on the clients the driver made (same credentials, endpoint, timeouts)."""

    def __init__(
        self,
        firewalls: compute_v1.FirewallsClient,
        operations: compute_v1.GlobalOperationsClient,
        project: str,
        timeout: float,
    ) -> None:
        self.firewalls = firewalls
        self.operations = operations
        self.project = project
        self.timeout = timeout

    def _get(self, name: str) -> compute_v1.Firewall | None:
        try:
            return self.firewalls.get(project=self.project, firewall=name, timeout=self.timeout)
        except gexc.NotFound:
            return None

    def _wait(self, operation: Any) -> None:
        name = getattr(operation, "name", "")
        if name:
            self.operations.wait(project=self.project, operation=name, timeout=self.timeout)

    def ensure(self, cloud_id: uuid.UUID, network: str, spec: FirewallSpec) -> None:
        for name, fields in wanted_rules(cloud_id, network, spec).items():
            existing = self._get(name)
            if not fields:
                if existing is not None:
                    self._delete(name)
                continue
            if existing is None:
                try:
                    self._wait(
                        self.firewalls.insert_unary(
                            project=self.project,
                            firewall_resource=_body(name, fields),
                            timeout=self.timeout,
                        )
                    )
                except gexc.Conflict:
                    continue  # another worker made it a moment ago
            elif not _same(existing, fields):
                self._wait(
                    self.firewalls.patch_unary(
                        project=self.project,
                        firewall=name,
                        firewall_resource=_body(name, fields),
                        timeout=self.timeout,
                    )
                )

    def _delete(self, name: str) -> bool:
        try:
            self._wait(
                self.firewalls.delete_unary(
                    project=self.project, firewall=name, timeout=self.timeout
                )
            )
        except gexc.NotFound:
            return False
        return True

    def remove(self, cloud_id: uuid.UUID) -> int:
        """Delete every rule of the cloud; how many there were."""
        return sum(self._delete(name) for name in rule_names(cloud_id).values())
