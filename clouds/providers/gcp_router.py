"""The GCP service router (GcpProvider.router()): a global external Application Load
Balancer (EXTERNAL_MANAGED) per service, its URL map splitting traffic by weight.

Per service, each named after it (`rd-<first 20 hex digits of its uuid>`, versions'
resources `rd-<…>-v<n>`):
- a global address: the endpoint's stable IP, reserved first so the URL never changes;
- health checks on Serve's `/-/healthz` at the serving port: HTTPS `<name>-https`, and
  while a version needs it, plain HTTP `<name>` (the one check of services from before
  TLS to the head);
- per version, a zonal network endpoint group (GCE_VM_IP_PORT) in the head's zone
  holding the head's address and Serve port, and a backend service with that group and
  the health check of the protocol the head's port speaks (`Backend.tls`): HTTPS to a
  head whose serve gate speaks TLS with the head's own certificate (serve_gate.py;
  Google's front ends encrypt to it without checking the certificate), plain HTTP to a
  head booted with an agent from before that, which would fail HTTPS checks. A backend
  service's protocol is updated in place when its head's changes; the HTTP check goes
  once no version is plain (GCE refuses to delete one a backend service names);
- a self-managed SSL certificate (`<name>-tls-<issued at>`) for the address, signed by
  the installation's CA (the caller's `sign`); a new one is made once the newest has
  less than ENDPOINT_RENEW_BEFORE_SECONDS to live, and older ones go once the proxy
  serves the new one;
- the URL map whose default route sends each backend service its weight, the target
  HTTPS proxy (TLS 1.2+: GCE's default SSL policy) and its global forwarding rule on
  port 443, made once a version takes traffic (a URL map cannot route nowhere); beside
  them on port 80 a URL map `<name>-redirect` that only redirects to HTTPS, its target
  HTTP proxy and forwarding rule `<name>`;
- a firewall rule letting Google's load balancers and health checkers (GFE_RANGES) reach
  the cloud's nodes (their network tag) on the backend ports.

A draining version gets weight 0 in the URL map but keeps its endpoint: a URL map change
takes a while to reach every Google front end, and one still sending the version
requests must find it serving. GCE reports no requests in flight, so `in_flight` counts
the version busy for DRAIN_SECONDS after its weight went to 0 (written in the backend
service's description, so any worker knows); once stopped, the version leaves the URL
map and its backend service and endpoint group are deleted.

Everything is found by name on every call (the caller's `ref` holds only the service's
id), so a call interrupted half-way is finished by the next. The query token is not
checked here (a URL map cannot hash a header): see docs/architecture.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from cryptography import x509
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from . import gcp_firewall
from .base import (
    ENDPOINT_RENEW_BEFORE_SECONDS,
    Backend,
    Endpoint,
    EndpointSigner,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
    router_service_id,
)

if TYPE_CHECKING:
    from .gcp import GcpProvider

HEALTH_PATH = "/-/healthz"
LISTENER_PORT = 443
REDIRECT_PORT = 80  # plain HTTP only answers with a redirect to HTTPS
DRAIN_SECONDS = 30  # the backend services' connection draining
DRAINING = "draining since "  # a backend service's description while it drains
# Where Google's external Application Load Balancers and health checks connect from.
GFE_RANGES = ["35.191.0.0/16", "130.211.0.0/22"]
SCHEME = "EXTERNAL_MANAGED"


def base_name(service_id: uuid.UUID) -> str:
    return f"rd-{service_id.hex[:20]}"


def health_check_name(name: str, *, tls: bool = True) -> str:
    """The versions' health check: HTTPS, or plain HTTP (named as services from before
    TLS to the head named their one check)."""
    return f"{name}-https" if tls else name


class GcpRouter:
    """Implements clouds.providers.base.ServiceRouter with the provider's credentials,
    endpoint, timeouts and error translation."""

    def __init__(self, provider: GcpProvider, client_kwargs: dict[str, Any]) -> None:
        self.provider = provider
        self.project = provider.project_id
        self.addresses = compute_v1.GlobalAddressesClient(**client_kwargs)
        self.health_checks = compute_v1.HealthChecksClient(**client_kwargs)
        self.groups = compute_v1.NetworkEndpointGroupsClient(**client_kwargs)
        self.backend_services = compute_v1.BackendServicesClient(**client_kwargs)
        self.url_maps = compute_v1.UrlMapsClient(**client_kwargs)
        self.proxies = compute_v1.TargetHttpProxiesClient(**client_kwargs)
        self.https_proxies = compute_v1.TargetHttpsProxiesClient(**client_kwargs)
        self.certificates = compute_v1.SslCertificatesClient(**client_kwargs)
        self.forwarding_rules = compute_v1.GlobalForwardingRulesClient(**client_kwargs)
        self.firewalls = compute_v1.FirewallsClient(**client_kwargs)
        self.global_operations = compute_v1.GlobalOperationsClient(**client_kwargs)

    # -- ServiceRouter --------------------------------------------------------------

    def ensure_endpoint(
        self, *, service_id: uuid.UUID, ref: dict[str, Any], sign: EndpointSigner | None = None
    ) -> Endpoint:
        name = base_name(service_id)
        address = self._get(self.addresses, "addresses", address=name)
        if address is None:
            self._insert(
                self.addresses,
                "addresses",
                address_resource=compute_v1.Address(
                    name=name, description=f"Raydeck service {service_id}"
                ),
            )
            address = self._get(self.addresses, "addresses", address=name)
        self._ensure_health_check(name, tls=True)
        ip = address.address if address is not None else ""
        self._ensure_certificate(name, ip, sign)
        return Endpoint(url=f"https://{ip}", ref={"service_id": str(service_id)})

    def set_backends(self, *, ref: dict[str, Any], backends: list[Backend]) -> None:
        service_id = router_service_id(ref)
        name = base_name(service_id)
        address = self._get(self.addresses, "addresses", address=name)
        if address is None:
            self.ensure_endpoint(service_id=service_id, ref=ref)
            address = self._get(self.addresses, "addresses", address=name)
        plain = any(not b.tls for b in backends)
        if plain:  # a version whose head speaks plain HTTP (its agent is from before TLS)
            self._ensure_health_check(name, tls=False)
        existing = self._backend_services(name)
        for backend in backends:
            self._ensure_version(name, backend, existing.get(backend.name))
        self._allow_load_balancer(name, {b.port for b in backends})
        if any(b.weight > 0 and not b.draining for b in backends):
            self._route(name, backends, address.address if address is not None else "")
        # Only once the URL map no longer names them can the others go.
        for version in set(existing) - {b.name for b in backends}:
            self._delete(
                self.backend_services, "backendServices", backend_service=existing[version].name
            )
            self._delete_groups(f"{name}-{version}")
        # The plain HTTP check once no version needs it: no backend service names it now.
        plain_check = health_check_name(name, tls=False)
        if (
            not plain
            and self._get(self.health_checks, "healthChecks", health_check=plain_check) is not None
        ):
            self._delete(self.health_checks, "healthChecks", health_check=plain_check)

    def set_token_hashes(self, *, ref: dict[str, Any], token_hashes: list[str]) -> None:
        """Nothing: a URL map cannot compare a token's SHA-256 (docs/architecture.md says
        where the token is checked on GCP)."""

    def in_flight(self, *, ref: dict[str, Any], backend: str) -> int:
        """1 for DRAIN_SECONDS after the version began to drain, else 0."""
        name = f"{base_name(router_service_id(ref))}-{backend}"
        found = self._get(self.backend_services, "backendServices", backend_service=name)
        since = _drain_start(found.description if found is not None else "")
        return 1 if since is not None and time.time() - since < DRAIN_SECONDS else 0

    def remove(self, *, ref: dict[str, Any]) -> None:
        if not ref.get("service_id"):
            return
        name = base_name(router_service_id(ref))
        # Users of a resource before the resource: GCE refuses to delete one in use.
        self._delete(self.forwarding_rules, "forwardingRules", forwarding_rule=f"{name}-https")
        self._delete(self.forwarding_rules, "forwardingRules", forwarding_rule=name)
        self._delete(self.https_proxies, "targetHttpsProxies", target_https_proxy=name)
        for proxy in (f"{name}-redirect", name):  # `name`: a proxy made before HTTPS
            self._delete(self.proxies, "targetHttpProxies", target_http_proxy=proxy)
        self._delete(self.url_maps, "urlMaps", url_map=name)
        self._delete(self.url_maps, "urlMaps", url_map=f"{name}-redirect")
        for certificate in self._certificates(name):
            self._delete(self.certificates, "sslCertificates", ssl_certificate=certificate.name)
        for service in self._backend_services(name).values():
            self._delete(self.backend_services, "backendServices", backend_service=service.name)
            self._delete_groups(service.name)
        for tls in (True, False):
            self._delete(
                self.health_checks, "healthChecks", health_check=health_check_name(name, tls=tls)
            )
        self._delete(self.firewalls, "firewalls", firewall=f"{name}-lb")
        self._delete(self.addresses, "addresses", address=name)

    # -- versions -------------------------------------------------------------------

    def _link(self, collection: str, name: str, zone: str = "") -> str:
        where = f"zones/{zone}" if zone else "global"
        return f"projects/{self.project}/{where}/{collection}/{name}"

    def _backend_services(self, name: str) -> dict[str, compute_v1.BackendService]:
        """The service's backend services by version (a scan by name: one made just
        before a crash is in no URL map yet)."""
        found = self._call(
            lambda **kw: list(self.backend_services.list(**kw)),
            "list backendServices",
            project=self.project,
        )
        prefix = f"{name}-"
        return {s.name[len(prefix) :]: s for s in found if s.name.startswith(prefix)}

    def _ensure_version(
        self, name: str, backend: Backend, service: compute_v1.BackendService | None
    ) -> None:
        zone, _, instance = backend.instance.rpartition("/")
        if not zone or not instance:
            raise PermanentCloudError(
                f"Version {backend.name}'s head has no GCE instance on record, so the load "
                "balancer cannot reach it.",
                kind=PermanentErrorKind.INVALID_REQUEST,
            )
        version = f"{name}-{backend.name}"
        group = self._get(
            self.groups, "networkEndpointGroups", network_endpoint_group=version, zone=zone
        )
        if group is None:
            self._insert(
                self.groups,
                "networkEndpointGroups",
                zone=zone,
                network_endpoint_group_resource=compute_v1.NetworkEndpointGroup(
                    name=version,
                    network_endpoint_type="GCE_VM_IP_PORT",
                    network=self.provider.network,
                    subnetwork=self.provider.subnetwork or None,
                    default_port=backend.port,
                ),
            )
        self._set_endpoint(version, zone, instance, backend)
        drain = service.description if service is not None else ""
        if backend.draining and _drain_start(drain) is None:
            drain = f"{DRAINING}{int(time.time())}"
        elif not backend.draining:
            drain = ""
        wanted = compute_v1.BackendService(
            name=version,
            description=drain,
            load_balancing_scheme=SCHEME,
            protocol="HTTPS" if backend.tls else "HTTP",
            health_checks=[self._link("healthChecks", health_check_name(name, tls=backend.tls))],
            connection_draining=compute_v1.ConnectionDraining(draining_timeout_sec=DRAIN_SECONDS),
            backends=[
                compute_v1.Backend(
                    group=self._link("networkEndpointGroups", version, zone),
                    balancing_mode="RATE",
                    max_rate_per_endpoint=10000,
                )
            ],
        )
        if service is None:
            self._insert(self.backend_services, "backendServices", backend_service_resource=wanted)
        elif (
            service.description != drain
            or service.protocol != wanted.protocol  # the head's port changed what it speaks
            or not _same_links(service.health_checks, wanted.health_checks)
            or not _same_links(
                [b.group for b in service.backends], [b.group for b in wanted.backends]
            )
        ):
            wanted.fingerprint = service.fingerprint
            self._apply(
                self.backend_services.update_unary,
                "update backendServices",
                backend_service=version,
                backend_service_resource=wanted,
            )

    def _set_endpoint(self, group: str, zone: str, instance: str, backend: Backend) -> None:
        """The group holds exactly the version's head."""
        listed = self._call(
            lambda **kw: list(self.groups.list_network_endpoints(**kw)),
            "read networkEndpointGroups",
            project=self.project,
            zone=zone,
            network_endpoint_group=group,
        )
        have = {
            (e.network_endpoint.instance, e.network_endpoint.ip_address, e.network_endpoint.port)
            for e in listed
        }
        want = {(instance, backend.address, backend.port)}
        for verb, request, endpoints in (
            ("detach", compute_v1.NetworkEndpointGroupsDetachEndpointsRequest, have - want),
            ("attach", compute_v1.NetworkEndpointGroupsAttachEndpointsRequest, want - have),
        ):
            if endpoints:
                self._apply(
                    getattr(self.groups, f"{verb}_network_endpoints_unary"),
                    f"{verb} networkEndpointGroups",
                    zone=zone,
                    network_endpoint_group=group,
                    **{
                        f"network_endpoint_groups_{verb}_endpoints_request_resource": request(
                            network_endpoints=_endpoints(endpoints)
                        )
                    },
                )

    def _ensure_health_check(self, name: str, *, tls: bool) -> None:
        check = compute_v1.HealthCheck(
            name=health_check_name(name, tls=tls), check_interval_sec=5, timeout_sec=4
        )
        probe = {"request_path": HEALTH_PATH, "port_specification": "USE_SERVING_PORT"}
        if tls:
            check.type_, check.https_health_check = "HTTPS", compute_v1.HTTPSHealthCheck(**probe)
        else:
            check.type_, check.http_health_check = "HTTP", compute_v1.HTTPHealthCheck(**probe)
        self._ensure(
            self.health_checks,
            "healthChecks",
            {"health_check": check.name},
            health_check_resource=check,
        )

    def _delete_groups(self, version: str) -> None:
        for zone in self.provider.zones:
            self._delete(
                self.groups, "networkEndpointGroups", network_endpoint_group=version, zone=zone
            )

    def _allow_load_balancer(self, name: str, ports: set[int]) -> None:
        rule = f"{name}-lb"
        found = self._get(self.firewalls, "firewalls", firewall=rule)
        wanted = compute_v1.Firewall(
            name=rule,
            network=self.provider.network,
            direction="INGRESS",
            description="Raydeck: Google's load balancers reach a service's versions",
            source_ranges=GFE_RANGES,
            target_tags=[gcp_firewall.network_tag(self.provider.cloud_id)],
            allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(p) for p in sorted(ports)])],
        )
        if found is None:
            if ports:
                self._insert(self.firewalls, "firewalls", firewall_resource=wanted)
        elif not ports:
            self._delete(self.firewalls, "firewalls", firewall=rule)
        elif sorted(p for a in found.allowed for p in a.ports) != sorted(str(p) for p in ports):
            self._apply(
                self.firewalls.patch_unary,
                "update firewalls",
                firewall=rule,
                firewall_resource=wanted,
            )

    def _route(self, name: str, backends: list[Backend], ip: str) -> None:
        """The URL map's weights, then the proxy and forwarding rule that serve it."""
        route = compute_v1.HttpRouteAction(
            weighted_backend_services=[
                compute_v1.WeightedBackendService(
                    backend_service=self._link("backendServices", f"{name}-{b.name}"),
                    weight=0 if b.draining else b.weight,
                )
                for b in sorted(backends, key=lambda b: b.name)
            ]
        )
        found = self._get(self.url_maps, "urlMaps", url_map=name)
        if found is None:
            self._insert(
                self.url_maps,
                "urlMaps",
                url_map_resource=compute_v1.UrlMap(name=name, default_route_action=route),
            )
        elif found.default_route_action != route:
            self._apply(
                self.url_maps.update_unary,
                "update urlMaps",
                url_map=name,
                url_map_resource=compute_v1.UrlMap(
                    name=name, default_route_action=route, fingerprint=found.fingerprint
                ),
            )
        held = self._certificates(name)
        if not held:
            raise TransientCloudError("The service's certificate is not there yet.")
        certificate = self._link("sslCertificates", held[-1].name)
        proxy = self._get(self.https_proxies, "targetHttpsProxies", target_https_proxy=name)
        if proxy is None:
            self._insert(
                self.https_proxies,
                "targetHttpsProxies",
                target_https_proxy_resource=compute_v1.TargetHttpsProxy(
                    name=name, url_map=self._link("urlMaps", name), ssl_certificates=[certificate]
                ),
            )
        elif [c[c.find("projects/") :] for c in proxy.ssl_certificates] != [certificate]:
            self._apply(
                self.https_proxies.set_ssl_certificates_unary,
                "setcerts targetHttpsProxies",
                target_https_proxy=name,
                target_https_proxies_set_ssl_certificates_request_resource=(
                    compute_v1.TargetHttpsProxiesSetSslCertificatesRequest(
                        ssl_certificates=[certificate]
                    )
                ),
            )
        self._forwarding_rule(f"{name}-https", ip, LISTENER_PORT, "targetHttpsProxies", name)
        self._redirect(name, ip)
        # Renewed: the certificates the proxy no longer serves go.
        for old in held[:-1]:
            self._delete(self.certificates, "sslCertificates", ssl_certificate=old.name)

    def _forwarding_rule(self, rule: str, ip: str, port: int, proxies: str, proxy: str) -> None:
        """The rule sending `ip:port` to the proxy; one to another proxy (made before
        HTTPS) is deleted and made again (a rule's target cannot be patched)."""
        target = self._link(proxies, proxy)
        found = self._get(self.forwarding_rules, "forwardingRules", forwarding_rule=rule)
        if found is not None and found.target[found.target.find("projects/") :] == target:
            return
        if found is not None:
            self._delete(self.forwarding_rules, "forwardingRules", forwarding_rule=rule)
        self._insert(
            self.forwarding_rules,
            "forwardingRules",
            forwarding_rule_resource=compute_v1.ForwardingRule(
                name=rule,
                I_p_address=ip,
                I_p_protocol="TCP",
                port_range=str(port),
                load_balancing_scheme=SCHEME,
                target=target,
            ),
        )

    def _redirect(self, name: str, ip: str) -> None:
        """Port 80: a URL map that redirects every request to HTTPS, its proxy and rule."""
        redirect = f"{name}-redirect"
        self._ensure(
            self.url_maps,
            "urlMaps",
            {"url_map": redirect},
            url_map_resource=compute_v1.UrlMap(
                name=redirect,
                default_url_redirect=compute_v1.HttpRedirectAction(
                    https_redirect=True, strip_query=False
                ),
            ),
        )
        self._ensure(
            self.proxies,
            "targetHttpProxies",
            {"target_http_proxy": redirect},
            target_http_proxy_resource=compute_v1.TargetHttpProxy(
                name=redirect, url_map=self._link("urlMaps", redirect)
            ),
        )
        self._forwarding_rule(name, ip, REDIRECT_PORT, "targetHttpProxies", redirect)
        # The proxy that served the service over HTTP before HTTPS, now unused.
        if self._get(self.proxies, "targetHttpProxies", target_http_proxy=name) is not None:
            self._delete(self.proxies, "targetHttpProxies", target_http_proxy=name)

    # -- the endpoint's certificate ---------------------------------------------------

    def _certificates(self, name: str) -> list[compute_v1.SslCertificate]:
        """The service's certificates, oldest first (their names end in when issued)."""
        found = self._call(
            lambda **kw: list(self.certificates.list(**kw)),
            "list sslCertificates",
            project=self.project,
        )
        prefix = f"{name}-tls-"
        return sorted(
            (c for c in found if c.name.startswith(prefix)),
            key=lambda c: int(c.name[len(prefix) :] or 0),
        )

    def _ensure_certificate(self, name: str, ip: str, sign: EndpointSigner | None) -> None:
        """A certificate for the address that lasts a while yet; a new one otherwise (a
        self-managed certificate cannot be changed)."""
        held = self._certificates(name)
        if held:
            ends = x509.load_pem_x509_certificate(held[-1].certificate.encode())
            left = ends.not_valid_after_utc.timestamp() - time.time()
            if left > ENDPOINT_RENEW_BEFORE_SECONDS:
                return
        if sign is None:
            raise ValueError("The endpoint needs a certificate and no signer was given.")
        new = sign([ip])
        self._insert(
            self.certificates,
            "sslCertificates",
            ssl_certificate_resource=compute_v1.SslCertificate(
                name=f"{name}-tls-{int(time.time())}",
                type_="SELF_MANAGED",
                certificate=new.certificate_pem + new.chain_pem,
                private_key=new.private_key_pem,
            ),
        )

    # -- calls ----------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], action: str, **kwargs: Any) -> Any:
        """The driver's call (bounded, errors translated); `action` is "<verb> <collection>"
        and names the permission a refusal asks for."""
        return self.provider._call(fn, action=action, permission=_permission(action), **kwargs)

    def _apply(self, fn: Callable[..., Any], action: str, zone: str = "", **kwargs: Any) -> None:
        """A change, waited for until GCE has made it."""
        where = {"zone": zone} if zone else {}
        self._wait(self._call(fn, action, project=self.project, **where, **kwargs), action, zone)

    def _get(self, client: Any, collection: str, **kwargs: Any) -> Any:
        try:
            return self._call(client.get, f"read {collection}", project=self.project, **kwargs)
        except PermanentCloudError as exc:
            if exc.kind == PermanentErrorKind.NOT_FOUND:
                return None
            raise

    def _ensure(self, client: Any, collection: str, key: dict[str, str], **resource: Any) -> None:
        """Make the resource `key` names unless it is there (it is never changed)."""
        if self._get(client, collection, **key) is None:
            self._insert(client, collection, **resource)

    def _insert(self, client: Any, collection: str, zone: str = "", **kwargs: Any) -> None:
        where = {"zone": zone} if zone else {}
        action = f"create {collection}"

        def insert(**call: Any) -> Any:
            try:
                return client.insert_unary(**call)
            except gexc.Conflict:
                return None  # another worker made it a moment ago

        operation = self._call(insert, action, project=self.project, **where, **kwargs)
        if operation is not None:
            self._wait(operation, action, zone)

    def _delete(self, client: Any, collection: str, zone: str = "", **kwargs: Any) -> None:
        where = {"zone": zone} if zone else {}
        action = f"delete {collection}"
        try:
            operation = self._call(
                client.delete_unary, action, project=self.project, **where, **kwargs
            )
        except PermanentCloudError as exc:
            if exc.kind == PermanentErrorKind.NOT_FOUND:
                return
            raise
        self._wait(operation, action, zone)

    def _wait(self, operation: compute_v1.Operation, action: str, zone: str = "") -> None:
        if zone:
            operation = self.provider._wait(operation, zone)
        elif operation.status != compute_v1.Operation.Status.DONE:
            operation = self._call(
                self.global_operations.wait,
                "read globalOperations",
                project=self.project,
                operation=operation.name,
            )
        error = self.provider._operation_error(
            operation, action=action, permission=_permission(action)
        )
        if error is not None:
            raise error


_VERBS = {
    "list": "list",
    "read": "get",
    "create": "create",
    "delete": "delete",
    "update": "update",
    "attach": "attachNetworkEndpoints",
    "detach": "detachNetworkEndpoints",
    "setcerts": "setSslCertificates",
}


# IAM names global addresses and forwarding rules apart from regional ones.
_IAM_COLLECTIONS = {"addresses": "globalAddresses", "forwardingRules": "globalForwardingRules"}


def _permission(action: str) -> str:
    verb, collection = action.split()
    return f"compute.{_IAM_COLLECTIONS.get(collection, collection)}.{_VERBS[verb]}"


def _endpoints(endpoints: set[tuple[str, str, int]]) -> list[compute_v1.NetworkEndpoint]:
    return [
        compute_v1.NetworkEndpoint(instance=i, ip_address=a, port=p)
        for i, a, p in sorted(endpoints)
    ]


def _same_links(have: Iterable[str], want: Iterable[str]) -> bool:
    """GCE answers full URLs for the relative links sent."""
    return [link[link.find("projects/") :] for link in have] == list(want)


def _drain_start(description: str) -> float | None:
    if not description.startswith(DRAINING):
        return None
    try:
        return float(description.removeprefix(DRAINING))
    except ValueError:
        return None
