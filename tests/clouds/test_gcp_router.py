"""The GCP service router through the real google-cloud-compute client against the fake
Compute REST endpoint (gcp_fake.py, the stand-in for GCE: it checks references and
fingerprints as GCE does): a service's URL map and its weighted backend services are
created, re-weighted, drained and deleted."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from clouds import policies
from clouds.choices import CloudKind
from clouds.models import Cloud
from clouds.providers import gcp_firewall, gcp_router
from clouds.providers.base import (
    Backend,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
)
from clouds.providers.gcp import GcpProvider

from .gcp_fake import FakeCompute, FakeComputeServer
from .test_gcp_driver import PROJECT, cloud_id, gcp, make_provider, provider

__all__ = ["cloud_id", "gcp", "make_provider", "provider"]  # the fixtures
SERVICE = uuid.UUID("99999999-8888-7777-6666-555555555555")
NAME = gcp_router.base_name(SERVICE)
ZONES = {"v1": "us-central1-a", "v2": "us-central1-b", "v3": "us-central1-a"}


@pytest.fixture
def fake(gcp: FakeComputeServer) -> FakeCompute:
    """The fake with one head instance per version (an endpoint must be a real VM's)."""
    for version, zone in ZONES.items():
        gcp.fake.put_instance(zone, f"head-{version}", labels={})
    return gcp.fake


def _backends(fake: FakeCompute, **weights: int) -> list[Backend]:
    """Each version's head; a negative weight is a draining version."""
    found = []
    for name, weight in weights.items():
        zone = ZONES[name]
        head = fake.instances[(PROJECT, zone, f"head-{name}")]
        found.append(
            Backend(
                name=name,
                address=head["networkInterfaces"][0]["networkIP"],
                port=8000,
                weight=max(weight, 0),
                draining=weight < 0,
                instance=f"{zone}/head-{name}",
            )
        )
    return found


def _part(fake: FakeCompute, collection: str, name: str = NAME) -> dict[str, Any] | None:
    return fake.lb.get(f"projects/{PROJECT}/global/{collection}/{name}")


def _weights(fake: FakeCompute) -> dict[str, int]:
    url_map = _part(fake, "urlMaps")
    assert url_map is not None
    weighted = url_map["defaultRouteAction"]["weightedBackendServices"]
    return {w["backendService"].rsplit("-", 1)[1]: w.get("weight", 0) for w in weighted}


def _endpoints(fake: FakeCompute, version: str) -> list[tuple[str, str, int]]:
    link = f"projects/{PROJECT}/zones/{ZONES[version]}/networkEndpointGroups/{NAME}-{version}"
    return [(e["instance"], e["ipAddress"], e["port"]) for e in fake.endpoints[link]]


def test_create_reweight_drain_remove(
    provider: GcpProvider, fake: FakeCompute, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = provider.router()
    endpoint = router.ensure_endpoint(service_id=SERVICE, ref={})
    address = _part(fake, "addresses")
    assert address is not None
    assert endpoint.url == f"http://{address['address']}"
    assert _part(fake, "urlMaps") is None  # nothing to route to yet

    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v1=100))
    assert _weights(fake) == {"v1": 100}
    rule = _part(fake, "forwardingRules")
    assert rule is not None
    assert (rule["IPAddress"], rule["portRange"]) == (address["address"], "80")
    head = _backends(fake, v1=100)[0]
    assert _endpoints(fake, "v1") == [("head-v1", head.address, 8000)]
    firewall = fake.firewalls[(PROJECT, f"{NAME}-lb")]
    assert firewall["targetTags"] == [gcp_firewall.network_tag(provider.cloud_id)]
    assert firewall["allowed"] == [{"IPProtocol": "tcp", "ports": ["8000"]}]

    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v1=90, v2=10))
    assert _weights(fake) == {"v1": 90, "v2": 10}
    writes = len(fake.requests) - len(fake.calls("GET")) - len(fake.calls("POST", "list"))
    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v1=90, v2=10))
    assert len(fake.requests) - len(fake.calls("GET")) - len(fake.calls("POST", "list")) == writes
    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v1=0, v2=100))
    assert _weights(fake) == {"v1": 0, "v2": 100}

    # Draining: weight 0, the head still there for front ends that have not heard yet,
    # busy for the draining time.
    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v1=-1, v2=100))
    assert _weights(fake) == {"v1": 0, "v2": 100}
    assert _endpoints(fake, "v1") == [("head-v1", head.address, 8000)]
    assert router.in_flight(ref=endpoint.ref, backend="v1") == 1
    assert router.in_flight(ref=endpoint.ref, backend="v2") == 0
    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v1=-1, v2=100))
    assert router.in_flight(ref=endpoint.ref, backend="v1") == 1  # the drain's start kept
    monkeypatch.setattr(gcp_router, "DRAIN_SECONDS", 0)
    assert router.in_flight(ref=endpoint.ref, backend="v1") == 0

    # A stopped version leaves: its backend service and endpoint group go.
    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v2=100))
    assert _weights(fake) == {"v2": 100}
    assert _part(fake, "backendServices", f"{NAME}-v1") is None
    assert not any(link.endswith(f"/networkEndpointGroups/{NAME}-v1") for link in fake.lb)

    router.set_token_hashes(ref=endpoint.ref, token_hashes=["a" * 64])  # the heads check
    router.remove(ref=endpoint.ref)
    assert fake.lb == {}
    assert (PROJECT, f"{NAME}-lb") not in fake.firewalls
    router.remove(ref=endpoint.ref)  # gone already: fine


def test_a_replaced_head_takes_the_old_ones_place(provider: GcpProvider, fake: FakeCompute) -> None:
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}).ref
    router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    new = fake.put_instance(ZONES["v1"], "head-v1-new", labels={})
    address = new["networkInterfaces"][0]["networkIP"]
    moved = Backend("v1", address, 8000, 100, instance=f"{ZONES['v1']}/head-v1-new")
    router.set_backends(ref=ref, backends=[moved])
    assert _endpoints(fake, "v1") == [("head-v1-new", address, 8000)]


def test_a_run_that_crashed_half_way_is_finished(provider: GcpProvider, fake: FakeCompute) -> None:
    """GCE fails the URL map's insert after the backend services exist: the next call
    finds them by name, makes nothing twice and routes as asked."""
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}).ref
    fake.fail_next(503, "backendError", "Internal error", method="POST", path=r"/urlMaps$")
    with pytest.raises(TransientCloudError):
        router.set_backends(ref=ref, backends=_backends(fake, v1=50, v3=50))
    router.ensure_endpoint(service_id=SERVICE, ref=ref)
    router.set_backends(ref=ref, backends=_backends(fake, v1=50, v3=50))
    assert _weights(fake) == {"v1": 50, "v3": 50}
    assert len(fake.calls("POST", r"/backendServices$")) == 2
    assert len(fake.calls("POST", r"/addresses$")) == 1


def test_errors_say_what_to_do(provider: GcpProvider, fake: FakeCompute) -> None:
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}).ref
    fake.fail_next(403, "forbidden", "Required permission", method="POST", path="/backendServices$")
    with pytest.raises(PermanentCloudError) as denied:
        router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    assert denied.value.kind == PermanentErrorKind.PERMISSION
    assert "compute.backendServices.create" in denied.value.user_message

    unknown = [Backend(name="v1", address="10.0.0.9", port=8000, weight=100)]
    with pytest.raises(PermanentCloudError, match="no GCE instance on record"):
        router.set_backends(ref=ref, backends=unknown)
    with pytest.raises(PermanentCloudError, match="damaged"):
        router.in_flight(ref={"service_id": "nonsense"}, backend="v1")


def test_the_setup_commands_grant_every_permission_the_router_uses(
    provider: GcpProvider, fake: FakeCompute, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call of a service's whole life (and the permission a refusal would name) is
    granted by the roles the cloud's setup page creates."""
    used: set[str] = set()
    call = provider._call

    def record(fn: Any, *, permission: str, **kwargs: Any) -> Any:
        used.add(permission)
        return call(fn, permission=permission, **kwargs)

    monkeypatch.setattr(provider, "_call", record)
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}).ref
    router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    router.set_backends(ref=ref, backends=_backends(fake, v1=-1, v2=100))
    router.set_backends(ref=ref, backends=_backends(fake, v2=100))
    router.remove(ref=ref)

    granted = set(
        policies.GCP_ROUTER_PERMISSIONS
        + policies.GCP_FIREWALL_PERMISSIONS
        + policies.GCP_CLUSTER_PERMISSIONS
    )
    assert "compute.urlMaps.update" in used
    assert used <= granted, used - granted
    commands = policies.gcp_commands(Cloud(kind=CloudKind.GCP, gcp_project_id=PROJECT))
    assert ",".join(policies.GCP_ROUTER_PERMISSIONS) in commands
