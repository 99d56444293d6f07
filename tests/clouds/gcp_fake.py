"""A fake Compute Engine v1 (and GCS bucket metadata) REST endpoint on loopback.

It implements only the paths the real `google-cloud-compute` REST client calls for the
GCP driver, with GCE's JSON shapes and error bodies, so the driver is tested through
the real client library rather than mocks. It is deliberately small: one project's
instances, zone operations, projects/zones get, firewall rules (global; their operations
are done at once), `GET /storage/v1/b/{bucket}` and a PATCH of its `cors` (with
`ifMetagenerationMatch`, as the driver sends it), objects (`alt=media` reads the
`texts` a test stored), Cloud Build's builds (create, get, list by tag, cancel: they
stay queued until a test finishes them with `finish_build`, as Cloud Build would) and
Artifact Registry's repositories (create, delete; operations done at once), and what a
service's load balancer is made of (gcp_router.py): global addresses, health checks,
backend services, URL maps, target HTTP proxies and forwarding rules (insert, get, list,
PUT with the fingerprint GCE checks, delete), zonal network endpoint groups with their
endpoints (an endpoint must be an existing instance's address). References are checked
as GCE does: a resource naming a missing one is a 404, deleting one still named by
another is a 400 `resourceInUseByAnotherResource`. Their operations are done at once.

Knobs for tests:
- `fail_next(...)`: answer the next matching request with an HTTP error (GCE body shape).
- `lose_next_response(...)`: perform the next matching request, then drop the connection
  without answering (the client sees a connection error; the cloud did the work).
- `fail_next_operation(...)`: the next insert/delete operation finishes with an error.
- `hold_operations`: operations stay RUNNING (to test bounded waits).
- `list_visible`: False makes `instances.list` return nothing (a stale list view).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_ZONE_PATH = r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)"
_GLOBAL_PATH = r"/compute/v1/projects/(?P<project>[^/]+)/global"
_LOCATION = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_LB = (
    _GLOBAL_PATH
    + r"/(?P<collection>addresses|healthChecks|backendServices|urlMaps|targetHttpProxies"
    + r"|targetHttpsProxies|sslCertificates|forwardingRules)"
)
_NEG = _ZONE_PATH + r"/networkEndpointGroups"
_KINDS = {
    "addresses": "address",
    "healthChecks": "healthCheck",
    "backendServices": "backendService",
    "urlMaps": "urlMap",
    "targetHttpProxies": "targetHttpProxy",
    "targetHttpsProxies": "targetHttpsProxy",
    "sslCertificates": "sslCertificate",
    "forwardingRules": "forwardingRule",
}
# A reference to a load balancer's part, relative or a full URL: its canonical link.
_LINK = re.compile(
    r"projects/[^/]+/(?:global|zones/[^/]+)/(?:addresses|healthChecks|backendServices|urlMaps"
    r"|targetHttpProxies|targetHttpsProxies|sslCertificates|forwardingRules"
    r"|networkEndpointGroups)/[^/]+$"
)
_BUILD = _LOCATION + r"/builds/(?P<build>[^/:]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(_ZONE_PATH + r"/instances"), "insert"),
    ("GET", re.compile(_ZONE_PATH + r"/instances"), "list"),
    ("GET", re.compile(_ZONE_PATH + r"/instances/(?P<name>[^/]+)"), "get"),
    ("DELETE", re.compile(_ZONE_PATH + r"/instances/(?P<name>[^/]+)"), "delete"),
    ("GET", re.compile(_ZONE_PATH + r"/operations/(?P<op>[^/]+)"), "operation_get"),
    ("POST", re.compile(_ZONE_PATH + r"/operations/(?P<op>[^/]+)/wait"), "operation_wait"),
    ("GET", re.compile(_ZONE_PATH), "zone_get"),
    ("POST", re.compile(_GLOBAL_PATH + r"/firewalls"), "firewall_insert"),
    ("GET", re.compile(_GLOBAL_PATH + r"/firewalls/(?P<name>[^/]+)"), "firewall_get"),
    ("PATCH", re.compile(_GLOBAL_PATH + r"/firewalls/(?P<name>[^/]+)"), "firewall_patch"),
    ("DELETE", re.compile(_GLOBAL_PATH + r"/firewalls/(?P<name>[^/]+)"), "firewall_delete"),
    ("GET", re.compile(_GLOBAL_PATH + r"/operations/(?P<op>[^/]+)"), "global_operation"),
    ("POST", re.compile(_GLOBAL_PATH + r"/operations/(?P<op>[^/]+)/wait"), "global_operation"),
    ("GET", re.compile(r"/compute/v1/projects/(?P<project>[^/]+)"), "project_get"),
    ("GET", re.compile(r"/storage/v1/b/(?P<bucket>[^/]+)"), "bucket_get"),
    ("PATCH", re.compile(r"/storage/v1/b/(?P<bucket>[^/]+)"), "bucket_patch"),
    ("GET", re.compile(r"/storage/v1/b/(?P<bucket>[^/]+)/o"), "object_list"),
    ("GET", re.compile(r"/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)"), "object_get"),
    # Cloud Build (v1, regional) and Artifact Registry (v1).
    ("POST", re.compile(_LOCATION + r"/builds"), "build_create"),
    ("GET", re.compile(_LOCATION + r"/builds"), "build_list"),
    ("GET", re.compile(_BUILD), "build_get"),
    ("POST", re.compile(_BUILD + r":cancel"), "build_cancel"),
    ("POST", re.compile(_LOCATION + r"/repositories"), "repository_create"),
    ("DELETE", re.compile(_LOCATION + r"/repositories/(?P<repo>[^/]+)"), "repository_delete"),
    # A service's load balancer.
    ("POST", re.compile(_LB), "lb_insert"),
    ("GET", re.compile(_LB), "lb_list"),
    ("GET", re.compile(_LB + r"/(?P<name>[^/]+)"), "lb_get"),
    ("PUT", re.compile(_LB + r"/(?P<name>[^/]+)"), "lb_update"),
    ("DELETE", re.compile(_LB + r"/(?P<name>[^/]+)"), "lb_delete"),
    # GCE's path for this one has no "global" in it.
    (
        "POST",
        re.compile(
            r"/compute/v1/projects/(?P<project>[^/]+)/(?P<collection>targetHttpsProxies)"
            r"/(?P<name>[^/]+)/setSslCertificates"
        ),
        "lb_set_certificates",
    ),
    ("POST", re.compile(_NEG), "neg_insert"),
    ("GET", re.compile(_NEG + r"/(?P<name>[^/]+)"), "neg_get"),
    ("DELETE", re.compile(_NEG + r"/(?P<name>[^/]+)"), "neg_delete"),
    (
        "POST",
        re.compile(_NEG + r"/(?P<name>[^/]+)/(?P<verb>attach|detach|list)NetworkEndpoints"),
        "neg_endpoints",
    ),
]

# The label-equality filter syntax the driver sends, e.g.
# `(labels.raydeck-cloud = "…") AND (labels.raydeck-node = "…")`. Anything else is a 400,
# so a driver sending a filter GCE would not understand fails here too.
_FILTER_TERM = re.compile(r'\(?\s*labels\.(?P<key>[a-z][a-z0-9_-]*)\s*=\s*"(?P<value>[^"]*)"\s*\)?')


def parse_label_filter(text: str) -> dict[str, str]:
    """`labels.k = "v"` terms joined by AND (or whitespace) → {k: v}; ValueError otherwise."""
    wanted: dict[str, str] = {}
    rest = text.strip()
    while rest:
        match = _FILTER_TERM.match(rest)
        if not match:
            raise ValueError(f"Invalid list filter expression: {text!r}")
        wanted[match["key"]] = match["value"]
        rest = rest[match.end() :].strip()
        if rest.startswith("AND"):
            rest = rest[3:].strip()
            if not rest:
                raise ValueError(f"Dangling AND in filter: {text!r}")
    return wanted


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    headers: dict[str, str]


@dataclass
class _Failure:
    method: str | None
    path: str | None  # a regex searched in the request path
    status: int = 0
    reason: str = ""
    message: str = ""
    lose_response: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or re.search(self.path, path) is not None
        )


@dataclass
class _OperationFailure:
    code: str
    message: str
    http_status: int = 400


@dataclass
class FakeCompute:
    """State and behaviour; `FakeComputeServer` puts it on a port."""

    projects: set[str] = field(default_factory=lambda: {"raydeck-test"})
    zones: set[str] = field(default_factory=lambda: {"us-central1-a", "us-central1-b"})
    buckets: set[str] = field(default_factory=set)
    # A bucket's CORS entries (Cloud Storage's JSON) and metageneration, which each
    # change of its settings increments.
    bucket_cors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bucket_metageneration: dict[str, int] = field(default_factory=dict)
    # Stored objects' sizes by (bucket, name): what objects.get and objects.list report.
    objects: dict[tuple[str, str], int] = field(default_factory=dict)
    images: set[str] = field(
        default_factory=lambda: {"projects/debian-cloud/global/images/family/debian-12"}
    )
    hold_operations: bool = False
    list_visible: bool = True
    base_url: str = ""
    instances: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    operations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    # Firewall rules by (project, name), as GCE's JSON; their operations finish at once.
    firewalls: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    # Objects' contents by (bucket, name), for `alt=media` reads (build logs).
    texts: dict[tuple[str, str], str] = field(default_factory=dict)
    # Cloud Build's builds by id, as its JSON; Artifact Registry's repositories by name.
    cloud_builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    repositories: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Load balancer parts by their link ("projects/p/global/urlMaps/x"), and each network
    # endpoint group's endpoints (GCE's networkEndpoint JSON) by the group's link.
    lb: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _request_ids: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _op_failures: list[_OperationFailure] = field(default_factory=list)
    _pending: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.RLock = field(default_factory=threading.RLock)

    # --- Knobs.
    def fail_next(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next request matching `method` and the `path` regex with an error."""
        with self.lock:
            self._failures.append(
                _Failure(method, path, status, reason, message or f"HTTP {status}")
            )

    def lose_next_response(self, *, method: str | None = None, path: str | None = None) -> None:
        """Do the next matching request's work, then hang up without answering."""
        with self.lock:
            self._failures.append(_Failure(method, path, lose_response=True))

    def fail_next_operation(self, code: str, message: str, http_status: int = 400) -> None:
        with self.lock:
            self._op_failures.append(_OperationFailure(code, message, http_status))

    # --- Views for assertions.
    def calls(self, method: str, path: str = "") -> list[RecordedRequest]:
        """Recorded requests with this method whose path matches the `path` regex."""
        with self.lock:
            return [r for r in self.requests if r.method == method and re.search(path, r.path)]

    def put_instance(
        self, zone: str, name: str, labels: dict[str, str], status: str = "RUNNING"
    ) -> dict[str, Any]:
        """An instance created outside Raydeck (or by an earlier run)."""
        project = next(iter(sorted(self.projects)))
        with self.lock:
            resource = self._new_instance(project, zone, {"name": name, "labels": labels})
            resource["status"] = status
            return resource

    # --- Dispatch (called by the handler under no lock).
    def handle(
        self, method: str, raw_path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]] | None:
        """(status, JSON body) to answer, or None to drop the connection unanswered."""
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        with self.lock:
            self.requests.append(RecordedRequest(method, split.path, query, body, headers))
            failure = next((f for f in self._failures if f.matches(method, split.path)), None)
            if failure:
                self._failures.remove(failure)
                if not failure.lose_response:
                    return _error(failure.status, failure.reason, failure.message)
            for verb, pattern, action in _ROUTES:
                match = pattern.fullmatch(split.path)
                if verb == method and match:
                    result = getattr(self, f"_{action}")(
                        query=query, body=body, **match.groupdict()
                    )
                    return None if failure else result
        return _error(404, "notFound", f"No route for {method} {split.path}")

    # --- Compute.
    def _check_zone(self, project: str, zone: str) -> tuple[int, dict[str, Any]] | None:
        if project not in self.projects:
            return _error(404, "notFound", f"The resource 'projects/{project}' was not found")
        if zone not in self.zones:
            return _error(400, "invalid", f"Invalid value for field 'zone': '{zone}'.")
        return None

    def _zone_url(self, project: str, zone: str) -> str:
        return f"{self.base_url}/compute/v1/projects/{project}/zones/{zone}"

    def _new_instance(self, project: str, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        number = next(self._counter)
        resource = {
            **copy.deepcopy(body),  # keep the recorded request body as sent
            "kind": "compute#instance",
            "id": str(1000 + number),
            "zone": self._zone_url(project, zone),
            "selfLink": f"{self._zone_url(project, zone)}/instances/{body['name']}",
            "status": "PROVISIONING",
            "creationTimestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        if "machineType" in body:
            resource["machineType"] = (
                f"{self.base_url}/compute/v1/projects/{project}/" + (body["machineType"])
            )
        for nic in resource.setdefault("networkInterfaces", [{}]):
            nic["networkIP"] = f"10.128.0.{number % 250 + 2}"
            for access in nic.get("accessConfigs", []):
                access["natIP"] = f"203.0.113.{number % 250 + 2}"
        self.instances[(project, zone, body["name"])] = resource
        return resource

    def _new_operation(
        self, project: str, zone: str, kind: str, name: str, request_id: str
    ) -> dict[str, Any]:
        op_name = f"operation-{next(self._counter)}"
        op = {
            "kind": "compute#operation",
            "name": op_name,
            "id": str(next(self._counter)),
            "zone": self._zone_url(project, zone),
            "operationType": kind,
            "targetLink": f"{self._zone_url(project, zone)}/instances/{name}",
            "status": "RUNNING",
            "progress": 0,
            "selfLink": f"{self._zone_url(project, zone)}/operations/{op_name}",
        }
        if request_id:
            op["clientOperationId"] = request_id
            self._request_ids[request_id] = (project, zone, op_name)
        self.operations[(project, zone, op_name)] = op
        if self._op_failures:
            self._pending[(project, zone, op_name)] = self._op_failures.pop(0)
        return op

    def _insert(
        self, *, project: str, zone: str, query: dict[str, str], body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        if bad := self._check_zone(project, zone):
            return bad
        request_id = query.get("requestId", "")
        if request_id in self._request_ids:
            # GCE: a repeated requestId returns the original operation, doing nothing new.
            return 200, self.operations[self._request_ids[request_id]]
        body = body or {}
        name = body.get("name", "")
        if (project, zone, name) in self.instances:
            return _error(
                409,
                "alreadyExists",
                f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists",
            )
        for disk in body.get("disks", []):
            image = disk.get("initializeParams", {}).get("sourceImage", "")
            if image and image not in self.images:
                return _error(404, "notFound", f"The resource '{image}' was not found")
        self._new_instance(project, zone, body)
        return 200, self._new_operation(project, zone, "insert", name, request_id)

    def _list(
        self, *, project: str, zone: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        if bad := self._check_zone(project, zone):
            return bad
        try:
            wanted = parse_label_filter(query.get("filter", ""))
        except ValueError as exc:
            return _error(400, "invalid", f"Invalid value for field 'filter': {exc}")
        items = [
            resource
            for (p, z, _), resource in sorted(self.instances.items())
            if p == project
            and z == zone
            and self.list_visible
            and all(resource.get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        # Small pages so the client's pager is exercised.
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("maxResults") or 500), 2)
        page: dict[str, Any] = {
            "kind": "compute#instanceList",
            "items": items[start : start + size],
        }
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return 200, page

    def _get(self, *, project: str, zone: str, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        resource = self.instances.get((project, zone, name))
        if resource is None:
            return _error(
                404,
                "notFound",
                f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found",
            )
        return 200, resource

    def _delete(
        self, *, project: str, zone: str, name: str, query: dict[str, str], **_: Any
    ) -> tuple[int, dict[str, Any]]:
        status, resource = self._get(project=project, zone=zone, name=name)
        if status != 200:
            return status, resource
        resource["status"] = "STOPPING"
        return 200, self._new_operation(project, zone, "delete", name, query.get("requestId", ""))

    def _advance(self, project: str, zone: str, op: dict[str, Any]) -> None:
        """Finish a RUNNING operation (unless held): apply its effect or its failure."""
        if op["status"] == "DONE" or self.hold_operations:
            return
        key = (project, zone, op["name"])
        name = op["targetLink"].rsplit("/", 1)[-1]
        op.update(status="DONE", progress=100)
        failure = self._pending.pop(key, None)
        if failure:
            op["httpErrorStatusCode"] = failure.http_status
            op["httpErrorMessage"] = "BAD REQUEST"
            op["error"] = {"errors": [{"code": failure.code, "message": failure.message}]}
            if op["operationType"] == "insert":
                self.instances.pop((project, zone, name), None)
            return
        if op["operationType"] == "insert" and (project, zone, name) in self.instances:
            self.instances[(project, zone, name)]["status"] = "RUNNING"
        elif op["operationType"] == "delete":
            self.instances.pop((project, zone, name), None)

    def _operation(self, project: str, zone: str, op_name: str) -> tuple[int, dict[str, Any]]:
        op = self.operations.get((project, zone, op_name))
        if op is None:
            return _error(404, "notFound", f"The resource '{op_name}' was not found")
        self._advance(project, zone, op)
        return 200, op

    def _operation_get(self, *, project: str, zone: str, op: str, **_: Any) -> Any:
        return self._operation(project, zone, op)

    def _operation_wait(self, *, project: str, zone: str, op: str, **_: Any) -> Any:
        return self._operation(project, zone, op)

    def _zone_get(self, *, project: str, zone: str, **_: Any) -> tuple[int, dict[str, Any]]:
        if bad := self._check_zone(project, zone):
            return bad
        return 200, {"kind": "compute#zone", "name": zone, "status": "UP"}

    def _project_get(self, *, project: str, **_: Any) -> tuple[int, dict[str, Any]]:
        if project not in self.projects:
            return _error(404, "notFound", f"The resource 'projects/{project}' was not found")
        return 200, {"kind": "compute#project", "name": project, "id": "4242"}

    # --- Firewall rules (global resources; their operations are DONE when returned).
    def _global_op(self, project: str, kind: str, name: str) -> tuple[int, dict[str, Any]]:
        op_name = f"operation-{next(self._counter)}"
        base = f"{self.base_url}/compute/v1/projects/{project}/global"
        op = {
            "kind": "compute#operation",
            "name": op_name,
            "operationType": kind,
            "targetLink": f"{base}/firewalls/{name}",
            "status": "DONE",
            "progress": 100,
            "selfLink": f"{base}/operations/{op_name}",
        }
        self.operations[(project, "global", op_name)] = op
        return 200, op

    def _firewall_missing(self, project: str, name: str) -> tuple[int, dict[str, Any]]:
        return _error(
            404,
            "notFound",
            f"The resource 'projects/{project}/global/firewalls/{name}' was not found",
        )

    def _firewall_insert(self, *, project: str, body: Any, **_: Any) -> Any:
        body = copy.deepcopy(body or {})
        name = body.get("name", "")
        if (project, name) in self.firewalls:
            return _error(409, "alreadyExists", f"The resource '{name}' already exists")
        if not body.get("sourceRanges") and not body.get("sourceTags"):
            body["sourceRanges"] = ["0.0.0.0/0"]  # GCE's default for an ingress rule
        self.firewalls[(project, name)] = {**body, "kind": "compute#firewall"}
        return self._global_op(project, "insert", name)

    def _firewall_get(self, *, project: str, name: str, **_: Any) -> Any:
        rule = self.firewalls.get((project, name))
        return (200, rule) if rule is not None else self._firewall_missing(project, name)

    def _firewall_patch(self, *, project: str, name: str, body: Any, **_: Any) -> Any:
        if (project, name) not in self.firewalls:
            return self._firewall_missing(project, name)
        # PATCH replaces the lists it is given (GCE's semantics for repeated fields).
        self.firewalls[(project, name)].update(copy.deepcopy(body or {}))
        return self._global_op(project, "patch", name)

    def _firewall_delete(self, *, project: str, name: str, **_: Any) -> Any:
        if self.firewalls.pop((project, name), None) is None:
            return self._firewall_missing(project, name)
        return self._global_op(project, "delete", name)

    def _global_operation(self, *, project: str, op: str, **_: Any) -> Any:
        found = self.operations.get((project, "global", op))
        if found is None:
            return _error(404, "notFound", f"The resource '{op}' was not found")
        return 200, found

    # --- A service's load balancer (operations DONE when returned).
    def _lb_op(self, project: str, link: str, kind: str, zone: str = "") -> Any:
        op_name = f"operation-{next(self._counter)}"
        where = f"zones/{zone}" if zone else "global"
        base = f"{self.base_url}/compute/v1/projects/{project}/{where}"
        op = {
            "kind": "compute#operation",
            "name": op_name,
            "operationType": kind,
            "targetLink": f"{self.base_url}/compute/v1/{link}",
            "status": "DONE",
            "progress": 100,
            "selfLink": f"{base}/operations/{op_name}",
        }
        if zone:
            op["zone"] = self._zone_url(project, zone)
        self.operations[(project, zone or "global", op_name)] = op
        return 200, op

    @staticmethod
    def _refs(value: Any, key: str = "") -> set[str]:
        """The canonical links a resource names (its own selfLink aside)."""
        if isinstance(value, dict):
            return {r for k, v in value.items() for r in FakeCompute._refs(v, k)}
        if isinstance(value, list):
            return {r for v in value for r in FakeCompute._refs(v, key)}
        if isinstance(value, str) and key != "selfLink" and (found := _LINK.search(value)):
            return {found.group(0)}
        return set()

    def _lb_write(self, link: str, body: dict[str, Any], kind: str) -> Any:
        for ref in sorted(self._refs(body)):
            if ref not in self.lb:
                return _error(404, "notFound", f"The resource '{ref}' was not found")
        number = next(self._counter)
        resource = {
            **copy.deepcopy(body),
            "kind": f"compute#{kind}",
            "id": str(5000 + number),
            "selfLink": f"{self.base_url}/compute/v1/{link}",
            "fingerprint": f"fp-{number}",
            "creationTimestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        if kind == "address":
            resource.setdefault("address", f"198.51.100.{number % 250 + 2}")
        self.lb[link] = resource
        return None

    def _lb_missing(self, link: str) -> Any:
        return _error(404, "notFound", f"The resource '{link}' was not found")

    def _lb_drop(self, project: str, link: str, zone: str = "") -> Any:
        if link not in self.lb:
            return self._lb_missing(link)
        users = sorted(k for k, r in self.lb.items() if link in self._refs(r))
        if users:
            return _error(
                400,
                "resourceInUseByAnotherResource",
                f"The resource '{link}' is already being used by '{users[0]}'",
            )
        del self.lb[link]
        self.endpoints.pop(link, None)
        return self._lb_op(project, link, "delete", zone)

    def _lb_insert(self, *, project: str, collection: str, body: Any, **_: Any) -> Any:
        body = body or {}
        link = f"projects/{project}/global/{collection}/{body.get('name', '')}"
        if link in self.lb:
            return _error(409, "alreadyExists", f"The resource '{link}' already exists")
        kind = _KINDS[collection]
        if failed := self._lb_write(link, body, kind):
            return failed
        return self._lb_op(project, link, "insert")

    def _lb_list(self, *, project: str, collection: str, query: dict[str, str], **_: Any) -> Any:
        prefix = f"projects/{project}/global/{collection}/"
        items = [r for k, r in sorted(self.lb.items()) if k.startswith(prefix)]
        start = int(query.get("pageToken") or 0)
        page: dict[str, Any] = {"items": items[start : start + 2]}
        if start + 2 < len(items):  # small pages, so the client's pager is exercised
            page["nextPageToken"] = str(start + 2)
        return 200, page

    def _lb_get(self, *, project: str, collection: str, name: str, **_: Any) -> Any:
        link = f"projects/{project}/global/{collection}/{name}"
        return (200, self.lb[link]) if link in self.lb else self._lb_missing(link)

    def _lb_update(self, *, project: str, collection: str, name: str, body: Any, **_: Any) -> Any:
        link = f"projects/{project}/global/{collection}/{name}"
        if link not in self.lb:
            return self._lb_missing(link)
        body = body or {}
        if body.get("fingerprint") != self.lb[link]["fingerprint"]:
            return _error(
                412, "conditionNotMet", "Supplied fingerprint does not match current fingerprint."
            )
        if failed := self._lb_write(link, body, self.lb[link]["kind"].split("#")[1]):
            return failed
        return self._lb_op(project, link, "update")

    def _lb_set_certificates(
        self, *, project: str, collection: str, name: str, body: Any, **_: Any
    ) -> Any:
        """A target HTTPS proxy's certificates, replaced (no fingerprint, as in GCE)."""
        link = f"projects/{project}/global/{collection}/{name}"
        if link not in self.lb:
            return self._lb_missing(link)
        wanted = {**self.lb[link], "sslCertificates": (body or {}).get("sslCertificates", [])}
        if failed := self._lb_write(link, wanted, self.lb[link]["kind"].split("#")[1]):
            return failed
        return self._lb_op(project, link, "setSslCertificates")

    def _lb_delete(self, *, project: str, collection: str, name: str, **_: Any) -> Any:
        return self._lb_drop(project, f"projects/{project}/global/{collection}/{name}")

    def _neg_insert(self, *, project: str, zone: str, body: Any, **_: Any) -> Any:
        if bad := self._check_zone(project, zone):
            return bad
        body = body or {}
        link = f"projects/{project}/zones/{zone}/networkEndpointGroups/{body.get('name', '')}"
        if link in self.lb:
            return _error(409, "alreadyExists", f"The resource '{link}' already exists")
        self._lb_write(
            link, {**body, "zone": self._zone_url(project, zone)}, "networkEndpointGroup"
        )
        self.endpoints[link] = []
        return self._lb_op(project, link, "insert", zone)

    def _neg_get(self, *, project: str, zone: str, name: str, **_: Any) -> Any:
        link = f"projects/{project}/zones/{zone}/networkEndpointGroups/{name}"
        return (200, self.lb[link]) if link in self.lb else self._lb_missing(link)

    def _neg_delete(self, *, project: str, zone: str, name: str, **_: Any) -> Any:
        link = f"projects/{project}/zones/{zone}/networkEndpointGroups/{name}"
        return self._lb_drop(project, link, zone)

    def _neg_endpoints(
        self, *, project: str, zone: str, name: str, verb: str, body: Any, **_: Any
    ) -> Any:
        link = f"projects/{project}/zones/{zone}/networkEndpointGroups/{name}"
        if link not in self.lb:
            return self._lb_missing(link)
        held = self.endpoints[link]
        if verb == "list":
            return 200, {"items": [{"networkEndpoint": e, "healths": []} for e in held]}
        for endpoint in (body or {}).get("networkEndpoints", []):
            instance = self.instances.get((project, zone, endpoint.get("instance", "")))
            if instance is None:
                return _error(
                    400, "invalid", f"Instance '{endpoint.get('instance')}' is not in {zone}."
                )
            if endpoint.get("ipAddress") != instance["networkInterfaces"][0]["networkIP"]:
                return _error(
                    400, "invalid", f"{endpoint.get('ipAddress')} is not the instance's address."
                )
            if verb == "attach" and endpoint not in held:
                held.append(copy.deepcopy(endpoint))
            elif verb == "detach" and endpoint in held:
                held.remove(endpoint)
        return self._lb_op(project, link, verb, zone)

    # --- Storage.
    def _bucket_resource(self, bucket: str) -> dict[str, Any]:
        resource = {
            "kind": "storage#bucket",
            "name": bucket,
            "id": bucket,
            "metageneration": str(self.bucket_metageneration.get(bucket, 1)),
        }
        if self.bucket_cors.get(bucket):
            resource["cors"] = copy.deepcopy(self.bucket_cors[bucket])
        return resource

    def _bucket_get(self, *, bucket: str, **_: Any) -> tuple[int, dict[str, Any]]:
        if bucket not in self.buckets:
            return _error(404, "notFound", "The specified bucket does not exist.")
        return 200, self._bucket_resource(bucket)

    def _bucket_patch(self, *, bucket: str, query: dict[str, str], body: Any, **_: Any) -> Any:
        """Cloud Storage's buckets.patch of `cors` (the list is replaced whole)."""
        if bucket not in self.buckets:
            return _error(404, "notFound", "The specified bucket does not exist.")
        current = self.bucket_metageneration.get(bucket, 1)
        wanted = query.get("ifMetagenerationMatch")
        if wanted is not None and int(wanted) != current:
            return _error(412, "conditionNotMet", "At least one of the pre-conditions failed.")
        if "cors" in (body or {}):
            self.bucket_cors[bucket] = copy.deepcopy(body["cors"])
        self.bucket_metageneration[bucket] = current + 1
        return 200, self._bucket_resource(bucket)

    def _object_resource(self, bucket: str, name: str) -> dict[str, Any]:
        size = self.objects[(bucket, name)]
        return {"kind": "storage#object", "bucket": bucket, "name": name, "size": str(size)}

    def _object_get(self, *, bucket: str, name: str, query: dict[str, str], **_: Any) -> Any:
        name = unquote(name)
        if query.get("alt") == "media":
            if (bucket, name) not in self.texts:
                return _error(404, "notFound", f"No such object: {bucket}/{name}")
            return 200, self.texts[(bucket, name)]
        if (bucket, name) not in self.objects:
            return _error(404, "notFound", f"No such object: {bucket}/{name}")
        return 200, self._object_resource(bucket, name)

    def _object_list(self, *, bucket: str, query: dict[str, str], **_: Any) -> Any:
        """objects.list with `prefix`, two items a page (so paging is exercised)."""
        names = sorted(
            n for b, n in self.objects if b == bucket and n.startswith(query.get("prefix", ""))
        )
        start = int(query.get("pageToken") or 0)
        page = {
            "kind": "storage#objects",
            "items": [self._object_resource(bucket, n) for n in names[start : start + 2]],
        }
        if start + 2 < len(names):
            page["nextPageToken"] = str(start + 2)
        return 200, page

    # --- Cloud Build and Artifact Registry.
    def finish_build(
        self,
        build_id: str,
        status: str,
        *,
        digest: str = "",
        failed_step: int | None = None,
        detail: str = "",
    ) -> None:
        """Play Cloud Build: end the build with `status`; SUCCESS pushes its image with
        `digest`; FAILURE marks step `failed_step` failed with `detail`."""
        with self.lock:
            build = self.cloud_builds[build_id]
            build["status"] = status
            for number, step in enumerate(build.get("steps", [])):
                if failed_step is not None and number == failed_step:
                    step["status"] = "FAILURE"
                elif failed_step is None or number < failed_step:
                    step["status"] = "SUCCESS"
            if status == "SUCCESS":
                build["results"] = {
                    "images": [{"name": name, "digest": digest} for name in build["images"]]
                }
            if detail:
                build["failureInfo"] = {"type": "USER_BUILD_STEP", "detail": detail}

    def _build_create(self, *, project: str, location: str, body: Any, **_: Any) -> Any:
        build_id = f"b{next(self._counter):04d}-0000-4000-8000-000000000000"
        build = {
            **copy.deepcopy(body),
            "id": build_id,
            "projectId": project,
            "status": "QUEUED",
            "name": f"projects/{project}/locations/{location}/builds/{build_id}",
            "createTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        self.cloud_builds[build_id] = build
        return 200, {
            "name": f"projects/{project}/locations/{location}/operations/{build_id}",
            "metadata": {
                "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
                "build": build,
            },
        }

    def _build_list(self, *, query: dict[str, str], **_: Any) -> Any:
        match = re.fullmatch(r'tags="([^"]+)"', query.get("filter", ""))
        if not match:
            return _error(400, "invalid", f"Unsupported filter {query.get('filter')!r}")
        found = [b for b in self.cloud_builds.values() if match[1] in b.get("tags", [])]
        return 200, {"builds": found}

    def _build_get(self, *, build: str, **_: Any) -> Any:
        if build not in self.cloud_builds:
            return _error(404, "notFound", f"Build {build} not found")
        return 200, self.cloud_builds[build]

    def _build_cancel(self, *, build: str, **_: Any) -> Any:
        found = self.cloud_builds.get(build)
        if found is None:
            return _error(404, "notFound", f"Build {build} not found")
        if found["status"] not in ("QUEUED", "PENDING", "WORKING"):
            return _error(400, "failedPrecondition", f"Build {build} is already final")
        found["status"] = "CANCELLED"
        return 200, found

    def _repository_create(
        self, *, project: str, location: str, query: dict[str, str], body: Any, **_: Any
    ) -> Any:
        repo_id = query["repositoryId"]
        name = f"projects/{project}/locations/{location}/repositories/{repo_id}"
        if name in self.repositories:
            return _error(409, "alreadyExists", f"Repository {name} already exists")
        self.repositories[name] = {**copy.deepcopy(body), "name": name}
        operation = f"projects/{project}/locations/{location}/operations/repo-{repo_id}"
        return 200, {
            "name": operation,
            "done": True,
            "response": {
                "@type": "type.googleapis.com/google.devtools.artifactregistry.v1.Repository",
                **self.repositories[name],
            },
        }

    def _repository_delete(self, *, project: str, location: str, repo: str, **_: Any) -> Any:
        name = f"projects/{project}/locations/{location}/repositories/{repo}"
        if self.repositories.pop(name, None) is None:
            return _error(404, "notFound", f"Repository {name} not found")
        return 200, {
            "name": f"projects/{project}/locations/{location}/operations/delete-{repo}",
            "done": True,
            "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
        }


def _error(status: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    """GCE's error body: the client turns `errors[].reason` into exception.errors."""
    return status, {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP names are case-blind
        result = self.server.fake.handle(self.command, self.path, body, headers)
        if result is None:
            self.close_connection = True  # "lost" response: the work is done, no answer
            return
        status, payload = result
        text = isinstance(payload, str)  # an object's content (alt=media)
        data = payload.encode() if text else json.dumps(payload).encode()
        self.send_response(status)
        kind = "text/plain" if text else "application/json"
        self.send_header("Content-Type", f"{kind}; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output (and any Authorization header) out of stderr


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeCompute


class FakeComputeServer:
    """Runs a FakeCompute on 127.0.0.1 at a random port; use as a context manager."""

    def __init__(self, fake: FakeCompute | None = None) -> None:
        self.fake = fake or FakeCompute()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self.fake
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.fake.base_url = self.endpoint
        # A short poll interval so shutdown() (every test's teardown) returns quickly.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeComputeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def fake_provider(server: FakeComputeServer, cloud: Any, **overrides: Any) -> Any:
    """The real GCP driver for `cloud` (a Cloud row), pointed at `server` for Compute,
    Cloud Build, Artifact Registry and Cloud Storage, with anonymous credentials instead
    of Workload Identity Federation (which would call Google)."""
    from google.auth.credentials import AnonymousCredentials

    from clouds.providers.gcp import GcpProvider

    fields: dict[str, Any] = {
        "cloud_id": cloud.uuid,
        "project_id": cloud.gcp_project_id,
        "zones": list(cloud.zones),
        "log_location": cloud.log_location,
        "node_service_account": cloud.node_identity,
        "credentials": AnonymousCredentials(),
        "api_endpoint": server.endpoint,
        "storage_endpoint": server.endpoint,
        "poll_interval": 0.01,
    }
    return GcpProvider(**(fields | overrides))
