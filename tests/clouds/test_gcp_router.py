"""The GCP service router through the real google-cloud-compute client against the fake
Compute REST endpoint (gcp_fake.py, the stand-in for GCE: it checks references and
fingerprints as GCE does): a service's URL map and its weighted backend services are
created, re-weighted, drained and deleted."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from cryptography import x509

from clouds import policies
from clouds.choices import CloudKind
from clouds.models import Cloud
from clouds.providers import gcp_firewall, gcp_router
from clouds.providers.base import (
    Backend,
    EndpointSigner,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
)
from clouds.providers.gcp import GcpProvider
from clusters.certificates import trust_bundle_pem

from .gcp_fake import FakeCompute, FakeComputeServer
from .test_aws_router import sign
from .test_gcp_driver import PROJECT, cloud_id, gcp, make_provider, provider

__all__ = ["cloud_id", "gcp", "make_provider", "provider", "sign"]  # the fixtures
pytestmark = pytest.mark.django_db  # the installation's CA signs the endpoints' certificates
SERVICE = uuid.UUID("99999999-8888-7777-6666-555555555555")
NAME = gcp_router.base_name(SERVICE)
ZONES = {"v1": "us-central1-a", "v2": "us-central1-b", "v3": "us-central1-a"}


@pytest.fixture
def fake(gcp: FakeComputeServer) -> FakeCompute:
    """The fake with one head instance per version (an endpoint must be a real VM's)."""
    for version, zone in ZONES.items():
        gcp.fake.put_instance(zone, f"head-{version}", labels={})
    return gcp.fake


def _backends(
    fake: FakeCompute, plain: frozenset[str] = frozenset(), **weights: int
) -> list[Backend]:
    """Each version's head; a negative weight is a draining version; the heads of
    versions in `plain` speak plain HTTP (an agent from before TLS to the head)."""
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
                tls=name not in plain,
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


def _certificates(fake: FakeCompute) -> list[dict[str, Any]]:
    prefix = f"projects/{PROJECT}/global/sslCertificates/{NAME}-tls-"
    return [r for link, r in sorted(fake.lb.items()) if link.startswith(prefix)]


def _endpoints(fake: FakeCompute, version: str) -> list[tuple[str, str, int]]:
    link = f"projects/{PROJECT}/zones/{ZONES[version]}/networkEndpointGroups/{NAME}-{version}"
    return [(e["instance"], e["ipAddress"], e["port"]) for e in fake.endpoints[link]]


def _protocols(fake: FakeCompute) -> dict[str, tuple[str, str]]:
    """Each version's backend service protocol and its health check's type."""
    found = {}
    prefix = f"projects/{PROJECT}/global/backendServices/{NAME}-"
    for link, service in fake.lb.items():
        if link.startswith(prefix):
            [check_link] = service["healthChecks"]
            check = fake.lb[check_link[check_link.find("projects/") :]]
            found[link.removeprefix(prefix)] = (service["protocol"], check["type"])
    return found


def test_create_reweight_drain_remove(
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = provider.router()
    endpoint = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign)
    address = _part(fake, "addresses")
    assert address is not None
    assert endpoint.url == f"https://{address['address']}"
    assert _part(fake, "urlMaps") is None  # nothing to route to yet
    [certificate] = _certificates(fake)
    leaf = x509.load_pem_x509_certificate(certificate["certificate"].encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [address["address"]]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(trust_bundle_pem().encode()))
    assert certificate["type"] == "SELF_MANAGED" and certificate["privateKey"]

    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v1=100))
    assert _weights(fake) == {"v1": 100}
    # HTTPS on 443 with that certificate; port 80 only redirects there.
    https = _part(fake, "forwardingRules", f"{NAME}-https")
    assert https is not None
    assert (https["IPAddress"], https["portRange"]) == (address["address"], "443")
    assert https["target"].endswith(f"/targetHttpsProxies/{NAME}")
    proxy = _part(fake, "targetHttpsProxies")
    assert proxy is not None
    assert [c.rsplit("/", 1)[1] for c in proxy["sslCertificates"]] == [certificate["name"]]
    plain = _part(fake, "forwardingRules")
    assert plain is not None
    assert (plain["IPAddress"], plain["portRange"]) == (address["address"], "80")
    assert plain["target"].endswith(f"/targetHttpProxies/{NAME}-redirect")
    redirect = _part(fake, "urlMaps", f"{NAME}-redirect")
    assert redirect is not None
    assert redirect["defaultUrlRedirect"]["httpsRedirect"] is True
    head = _backends(fake, v1=100)[0]
    assert _endpoints(fake, "v1") == [("head-v1", head.address, 8000)]
    firewall = fake.firewalls[(PROJECT, f"{NAME}-lb")]
    assert firewall["targetTags"] == [gcp_firewall.network_tag(provider.cloud_id)]
    assert firewall["allowed"] == [{"IPProtocol": "tcp", "ports": ["8000"]}]

    router.set_backends(ref=endpoint.ref, backends=_backends(fake, v1=90, v2=10))
    assert _weights(fake) == {"v1": 90, "v2": 10}
    # The hop to the heads is TLS too (their serve gates), health checks included.
    assert _protocols(fake) == {"v1": ("HTTPS", "HTTPS"), "v2": ("HTTPS", "HTTPS")}
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


def test_a_replaced_head_takes_the_old_ones_place(
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner
) -> None:
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    new = fake.put_instance(ZONES["v1"], "head-v1-new", labels={})
    address = new["networkInterfaces"][0]["networkIP"]
    moved = Backend("v1", address, 8000, 100, instance=f"{ZONES['v1']}/head-v1-new")
    router.set_backends(ref=ref, backends=[moved])
    assert _endpoints(fake, "v1") == [("head-v1-new", address, 8000)]


def test_a_run_that_crashed_half_way_is_finished(
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner
) -> None:
    """GCE fails the URL map's insert after the backend services exist: the next call
    finds them by name, makes nothing twice and routes as asked."""
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    fake.fail_next(503, "backendError", "Internal error", method="POST", path=r"/urlMaps$")
    with pytest.raises(TransientCloudError):
        router.set_backends(ref=ref, backends=_backends(fake, v1=50, v3=50))
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    router.set_backends(ref=ref, backends=_backends(fake, v1=50, v3=50))
    assert _weights(fake) == {"v1": 50, "v3": 50}
    assert len(fake.calls("POST", r"/backendServices$")) == 2
    assert len(fake.calls("POST", r"/addresses$")) == 1


def test_errors_say_what_to_do(
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner
) -> None:
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
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
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner, monkeypatch: pytest.MonkeyPatch
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
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    router.set_backends(ref=ref, backends=_backends(fake, v1=-1, v2=100))
    _renew(router, ref, sign, monkeypatch)
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


def test_a_drained_version_outlives_the_url_maps_propagation(
    provider: GcpProvider,
    fake: FakeCompute,
    sign: EndpointSigner,
    tenant_a: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A URL map change reaches Google's front ends over minutes: a version at weight 0
    keeps its head past the rollout's 60 s drain, until GCP's settle time has passed
    (GcpTraits.router_settle_seconds), even once the backend service says it is idle."""
    from datetime import timedelta

    from django.utils import timezone

    from clouds.providers.registry import traits_for
    from tests.api.conftest import verified
    from workloads.serve.choices import VersionState
    from workloads.serve.models import Service
    from workloads.serve.services import deploy, rollout

    tenant = verified(tenant_a)
    service = deploy.service_deploy(
        project=tenant.project,
        actor=tenant.member,
        name="echo",
        serve_config={"import_path": "echo_app:build"},
        cloud=tenant.cloud,
    ).service
    Cloud.objects.filter(pk=tenant.cloud.pk).update(kind=CloudKind.GCP)
    router = provider.router()
    ref = router.ensure_endpoint(service_id=service.uuid, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(fake, v1=-1, v2=100))  # v1 drains
    Service.objects.filter(pk=service.pk).update(router_ref=ref)
    version = service.versions.get()
    settle = traits_for(CloudKind.GCP).router_settle_seconds
    assert settle > rollout.DRAIN_TIMEOUT_SECONDS

    def drained_for(seconds: float) -> str:
        type(version).objects.filter(pk=version.pk).update(
            state=VersionState.DRAINING,
            drain_started_at=timezone.now() - timedelta(seconds=seconds),
        )
        rollout._drain(Service.objects.select_related("cloud").get(pk=service.pk), router)
        return type(version).objects.get(pk=version.pk).state

    # Past the 60 s that suits an ALB or HAProxy, the backend service still draining.
    assert drained_for(rollout.DRAIN_TIMEOUT_SECONDS + 30) == VersionState.DRAINING
    monkeypatch.setattr(gcp_router, "DRAIN_SECONDS", 0)  # GCE's connection draining over
    assert drained_for(settle - 5) == VersionState.DRAINING
    assert drained_for(settle + 1) == VersionState.STOPPED


def _renew(router: Any, ref: dict[str, Any], sign: EndpointSigner, monkeypatch: Any) -> None:
    """An ensure_endpoint while the certificate is about to end (a second later)."""
    with monkeypatch.context() as patch:
        patch.setattr(gcp_router, "ENDPOINT_RENEW_BEFORE_SECONDS", 10**9)
        later = time.time() + 1  # the new certificate's name
        patch.setattr(gcp_router.time, "time", lambda: later)
        router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)


def test_a_certificate_about_to_end_is_replaced(
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner, monkeypatch: Any
) -> None:
    """A self-managed certificate cannot change: a new one is made, the proxy serves it
    on the next pass, and the old one goes."""
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    [old] = _certificates(fake)
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    assert _certificates(fake) == [old]  # lasts a while yet: kept
    _renew(router, ref, sign, monkeypatch)
    router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    [new] = _certificates(fake)
    assert new["name"] != old["name"]
    proxy = _part(fake, "targetHttpsProxies")
    assert proxy is not None
    assert [c.rsplit("/", 1)[1] for c in proxy["sslCertificates"]] == [new["name"]]


def test_a_service_made_before_https_moves_to_it(
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner
) -> None:
    """Port 80's rule sent the URL map's traffic through a target HTTP proxy (Raydeck
    before HTTPS): the next pass serves HTTPS and points port 80 at the redirect."""
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    base = f"projects/{PROJECT}/global"
    for link in (
        f"{base}/forwardingRules/{NAME}-https",
        f"{base}/targetHttpsProxies/{NAME}",
        f"{base}/forwardingRules/{NAME}",
        f"{base}/targetHttpProxies/{NAME}-redirect",
        f"{base}/urlMaps/{NAME}-redirect",
    ):
        del fake.lb[link]
    fake.lb[f"{base}/targetHttpProxies/{NAME}"] = {
        "name": NAME,
        "urlMap": f"{base}/urlMaps/{NAME}",
        "kind": "compute#targetHttpProxy",
        "fingerprint": "old",
    }
    fake.lb[f"{base}/forwardingRules/{NAME}"] = {
        "name": NAME,
        "portRange": "80",
        "target": f"{base}/targetHttpProxies/{NAME}",
        "kind": "compute#forwardingRule",
        "fingerprint": "old",
    }

    router.set_backends(ref=ref, backends=_backends(fake, v1=100))
    plain = _part(fake, "forwardingRules")
    assert plain is not None
    assert plain["target"].endswith(f"/targetHttpProxies/{NAME}-redirect")
    assert _part(fake, "targetHttpProxies") is None
    assert _part(fake, "forwardingRules", f"{NAME}-https") is not None
    assert _weights(fake) == {"v1": 100}


def test_plain_http_backend_services_move_to_https(
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner
) -> None:
    """A service whose versions were reached over plain HTTP (an HTTP health check named
    after the service, HTTP backend services) moves to HTTPS on the next pass, keeping
    its weights; a pass cut off half-way is finished by the next one."""
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    router.set_backends(ref=ref, backends=_backends(fake, v1=90, v2=10))
    base = f"projects/{PROJECT}/global"
    fake.lb[f"{base}/healthChecks/{NAME}"] = {
        "name": NAME,
        "type": "HTTP",
        "httpHealthCheck": {"requestPath": "/-/healthz", "portSpecification": "USE_SERVING_PORT"},
        "kind": "compute#healthCheck",
        "fingerprint": "old",
    }
    for version in ("v1", "v2"):
        service = fake.lb[f"{base}/backendServices/{NAME}-{version}"]
        service["protocol"] = "HTTP"
        service["healthChecks"] = [f"{base}/healthChecks/{NAME}"]
    del fake.lb[f"{base}/healthChecks/{gcp_router.health_check_name(NAME)}"]
    assert _protocols(fake) == {"v1": ("HTTP", "HTTP"), "v2": ("HTTP", "HTTP")}

    # Cut off after v1 moved, before v2 did: the old check is still in use and stays.
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    fake.fail_next(503, "backendError", "Internal error", method="PUT", path=f"{NAME}-v2$")
    with pytest.raises(TransientCloudError):
        router.set_backends(ref=ref, backends=_backends(fake, v1=90, v2=10))
    assert _protocols(fake) == {"v1": ("HTTPS", "HTTPS"), "v2": ("HTTP", "HTTP")}
    assert _part(fake, "healthChecks") is not None

    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    router.set_backends(ref=ref, backends=_backends(fake, v1=90, v2=10))
    assert _protocols(fake) == {"v1": ("HTTPS", "HTTPS"), "v2": ("HTTPS", "HTTPS")}
    assert _part(fake, "healthChecks") is None  # the plain check went
    assert _weights(fake) == {"v1": 90, "v2": 10}  # still weighted, as before
    assert len(fake.calls("POST", r"/backendServices$")) == 2  # updated, not made again
    router.remove(ref=ref)
    assert fake.lb == {}


def test_an_old_plain_version_keeps_http_beside_a_new_https_one(
    provider: GcpProvider, fake: FakeCompute, sign: EndpointSigner
) -> None:
    """After an upgrade of Raydeck, the serving version's head still runs the agent its
    cluster booted with, whose port speaks plain HTTP: its backend service stays HTTP with
    the HTTP check (made again if it went), the new version's is HTTPS, and the one URL
    map weights both. A pass cut off before the URL map changed is finished by the next;
    once the old version has drained and gone, only HTTPS remains."""
    router = provider.router()
    ref = router.ensure_endpoint(service_id=SERVICE, ref={}, sign=sign).ref
    old = frozenset({"v1"})
    router.set_backends(ref=ref, backends=_backends(fake, plain=old, v1=100))
    assert _protocols(fake) == {"v1": ("HTTP", "HTTP")}
    assert _part(fake, "healthChecks") is not None  # the plain check, by the service's name

    fake.fail_next(503, "backendError", "Internal error", method="PUT", path=f"/urlMaps/{NAME}$")
    with pytest.raises(TransientCloudError):
        router.set_backends(ref=ref, backends=_backends(fake, plain=old, v1=90, v2=10))
    assert _weights(fake) == {"v1": 100}  # the old version still serves everything
    router.ensure_endpoint(service_id=SERVICE, ref=ref, sign=sign)
    router.set_backends(ref=ref, backends=_backends(fake, plain=old, v1=90, v2=10))
    assert _protocols(fake) == {"v1": ("HTTP", "HTTP"), "v2": ("HTTPS", "HTTPS")}
    assert _weights(fake) == {"v1": 90, "v2": 10}
    assert len(fake.calls("POST", r"/backendServices$")) == 2  # nothing made twice

    router.set_backends(ref=ref, backends=_backends(fake, plain=old, v1=-1, v2=100))
    assert _weights(fake) == {"v1": 0, "v2": 100}
    assert _protocols(fake)["v1"] == ("HTTP", "HTTP")  # drains where it served

    router.set_backends(ref=ref, backends=_backends(fake, v2=100))
    assert _protocols(fake) == {"v2": ("HTTPS", "HTTPS")}
    assert _part(fake, "healthChecks") is None  # the plain check went with the last user
    assert _weights(fake) == {"v2": 100}
