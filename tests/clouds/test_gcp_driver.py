"""The GCP driver against a fake Compute Engine endpoint.

The fake Compute REST endpoint in `gcp_fake.py` (a threaded HTTP server on 127.0.0.1)
stands in for GCP: the driver runs the REAL google-cloud-compute client (REST transport)
pointed at it with `api_endpoint`, so URLs, query parameters, JSON bodies and error
parsing are the library's own. Nothing here reaches the internet.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import aws, identity_pool
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import compute_v1
from google.oauth2 import service_account

from clouds.providers.base import (
    CloudError,
    InstanceState,
    NodeSpec,
    PermanentCloudError,
    PermanentErrorKind,
    TransientCloudError,
    idempotency_key,
)
from clouds.providers.gcp import GcpProvider, federated_credentials, map_google_error

from .gcp_fake import FakeComputeServer, parse_label_filter

PROJECT = "raydeck-test"
ZONES = ["us-central1-a", "us-central1-b"]
IMAGE = "projects/debian-cloud/global/images/family/debian-12"
SERVICE_ACCOUNT = "raydeck@customer-project.iam.gserviceaccount.com"
SECRET_TOKEN = "ya29.secret-access-token-must-never-show"
SECRET_SUBJECT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyYXlkZWNrIn0.c2lnbmF0dXJl"
INSTANCES = r"/zones/[^/]+/instances$"
CONSOLE = "https://raydeck.example.com"
# The console's log page reads a page of a stored log straight from the bucket, from the
# console's origin: the bucket's CORS configuration must allow it (console.js).
RAYDECK_CORS = {
    "origin": [CONSOLE],
    "method": ["GET"],
    "responseHeader": ["Range", "Content-Range", "Content-Length"],
    "maxAgeSeconds": 3600,
}
CUSTOMER_CORS = {"origin": ["https://app.customer.example"], "method": ["PUT"]}


class StaticTokenCredentials(Credentials):
    """A token that looks like Google's, so tests can prove it never leaks."""

    def __init__(self, token: str = SECRET_TOKEN, *, fail: Exception | None = None) -> None:
        super().__init__()
        self._value = token
        self._fail = fail

    @property
    def service_account_email(self) -> str:
        return SERVICE_ACCOUNT

    def refresh(self, request: Any) -> None:
        if self._fail is not None:
            raise self._fail
        self.token = self._value
        # google-auth compares expiry with naive UTC.
        self.expiry = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None)


@pytest.fixture
def gcp() -> Iterator[FakeComputeServer]:
    with FakeComputeServer() as server:
        yield server


@pytest.fixture
def cloud_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
def make_provider(gcp: FakeComputeServer, cloud_id: uuid.UUID) -> Any:
    def make(**overrides: Any) -> GcpProvider:
        options: dict[str, Any] = {
            "cloud_id": cloud_id,
            "project_id": PROJECT,
            "zones": list(ZONES),
            "log_location": "",
            "credentials": StaticTokenCredentials(),
            "api_endpoint": gcp.endpoint,
            "storage_endpoint": gcp.endpoint,
            "poll_interval": 0.01,
            "call_timeout": 5.0,
            "console_origin": CONSOLE,
        }
        options.update(overrides)
        return GcpProvider(**options)

    return make


@pytest.fixture
def provider(make_provider: Any) -> GcpProvider:
    return make_provider()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every log line at any level from any logger (pytest's logging plugin is off)."""
    handler = _Collect()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(exc_info)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def node_spec(cluster_id: uuid.UUID | None = None, **overrides: Any) -> NodeSpec:
    fields: dict[str, Any] = {
        "node_id": uuid.uuid4(),
        "cluster_id": cluster_id or uuid.uuid4(),
        "name": "head",
        "instance_type": "n2-standard-4",
        "image": IMAGE,
    }
    fields.update(overrides)
    return NodeSpec(**fields)


def launch(provider: GcpProvider, node: NodeSpec, attempt: int = 0) -> Any:
    return provider.launch(
        node=node,
        boot_script="#!/bin/bash\nray start --head\n",
        idempotency_key=idempotency_key(node.node_id, attempt),
    )


# --- Launch.


def test_launch_inserts_labelled_instance_and_waits(
    gcp: FakeComputeServer, provider: GcpProvider, cloud_id: uuid.UUID
) -> None:
    node = node_spec()
    instance = launch(provider, node)

    name = f"rd-{node.node_id}"
    assert instance.instance_id == f"us-central1-a/{name}"
    assert instance.state == InstanceState.RUNNING
    assert (instance.node_id, instance.cluster_id) == (node.node_id, node.cluster_id)
    assert instance.instance_type == "n2-standard-4"
    assert instance.private_address and instance.public_address is None
    assert instance.launched_at is not None and instance.launched_at.tzinfo is not None

    [insert] = gcp.fake.calls("POST", INSTANCES)
    assert insert.path == f"/compute/v1/projects/{PROJECT}/zones/us-central1-a/instances"
    assert insert.query["requestId"] == idempotency_key(node.node_id)
    body = insert.body or {}
    assert body["name"] == name
    assert body["labels"] == {
        "raydeck-cloud": str(cloud_id),
        "raydeck-cluster": str(node.cluster_id),
        "raydeck-node": str(node.node_id),
    }
    assert body["machineType"] == "zones/us-central1-a/machineTypes/n2-standard-4"
    assert body["metadata"]["items"] == [
        {"key": "startup-script", "value": "#!/bin/bash\nray start --head\n"}
    ]
    [disk] = body["disks"]
    assert disk["boot"] and disk["autoDelete"]
    assert disk["initializeParams"]["sourceImage"] == IMAGE
    [nic] = body["networkInterfaces"]
    assert nic["network"] == "global/networks/default"
    assert "accessConfigs" not in nic  # no external IP by default
    assert body.get("scheduling", {}).get("provisioningModel") != "SPOT"
    # The zone operation was waited on before the instance was read back.
    paths = [r.path for r in gcp.fake.requests]
    wait_at = next(i for i, p in enumerate(paths) if p.endswith("/wait"))
    assert paths.index(insert.path) < wait_at < len(paths) - 1
    assert paths[-1].endswith(f"/instances/{name}")
    # The client authenticated with the credential it was given.
    assert insert.headers.get("authorization") == f"Bearer {SECRET_TOKEN}"


def test_spot_public_ip_zone_and_extra_labels(
    gcp: FakeComputeServer, make_provider: Any, cloud_id: uuid.UUID
) -> None:
    provider = make_provider(public_addresses=True)
    node = node_spec(
        zone="us-central1-b",
        spot=True,
        labels={"Team": "ML Research", "raydeck-cloud": "spoofed", "9bad": "x"},
    )
    instance = launch(provider, node)

    assert instance.instance_id.startswith("us-central1-b/")
    assert instance.public_address
    [insert] = gcp.fake.calls("POST", INSTANCES)
    body = insert.body or {}
    assert body["scheduling"]["provisioningModel"] == "SPOT"
    assert body["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert body["networkInterfaces"][0]["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"
    # User labels are made GCE-valid and can never overwrite Raydeck's own.
    assert body["labels"]["team"] == "ml_research"
    assert body["labels"]["raydeck-cloud"] == str(cloud_id)
    assert "9bad" not in body["labels"]


def test_launch_rejects_unconfigured_zone_and_missing_image(
    gcp: FakeComputeServer, provider: GcpProvider
) -> None:
    with pytest.raises(PermanentCloudError) as zone_error:
        launch(provider, node_spec(zone="europe-west4-a"))
    assert zone_error.value.kind == PermanentErrorKind.INVALID_REQUEST
    with pytest.raises(PermanentCloudError) as image_error:
        launch(provider, node_spec(image=""))
    assert image_error.value.kind == PermanentErrorKind.INVALID_IMAGE
    assert gcp.fake.calls("POST", INSTANCES) == []


def test_relaunch_returns_instance_found_by_label(
    gcp: FakeComputeServer, provider: GcpProvider, cloud_id: uuid.UUID
) -> None:
    node = node_spec()
    first = launch(provider, node)
    again = launch(provider, node)

    assert again == first
    assert len(gcp.fake.calls("POST", INSTANCES)) == 1
    lookup = gcp.fake.calls("GET", INSTANCES)[-1]
    assert parse_label_filter(lookup.query["filter"]) == {
        "raydeck-cloud": str(cloud_id),
        "raydeck-node": str(node.node_id),
    }


def test_request_id_makes_a_lost_insert_response_safe(
    gcp: FakeComputeServer, provider: GcpProvider
) -> None:
    """The insert reaches GCE but its answer is lost, and the label lookup cannot see the
    new instance yet (list is eventually consistent): only requestId prevents a twin."""
    node = node_spec()
    gcp.fake.list_visible = False
    gcp.fake.lose_next_response(method="POST", path=INSTANCES)
    with pytest.raises(TransientCloudError):
        launch(provider, node)

    instance = launch(provider, node)

    assert instance.node_id == node.node_id
    assert len(gcp.fake.instances) == 1
    inserts = gcp.fake.calls("POST", INSTANCES)
    assert len(inserts) == 2
    assert {r.query["requestId"] for r in inserts} == {idempotency_key(node.node_id)}
    assert sum(op["operationType"] == "insert" for op in gcp.fake.operations.values()) == 1


def test_lost_insert_response_then_relaunch_finds_it_by_label(
    gcp: FakeComputeServer, provider: GcpProvider
) -> None:
    node = node_spec()
    gcp.fake.lose_next_response(method="POST", path=INSTANCES)
    with pytest.raises(TransientCloudError):
        launch(provider, node)

    instance = launch(provider, node)

    assert instance.node_id == node.node_id
    assert len(gcp.fake.calls("POST", INSTANCES)) == 1
    assert len(gcp.fake.instances) == 1


def test_name_conflict_returns_the_existing_instance(
    gcp: FakeComputeServer, provider: GcpProvider
) -> None:
    node = node_spec()
    gcp.fake.list_visible = False
    first = launch(provider, node, attempt=0)
    # A different request for the same node: GCE answers 409 alreadyExists.
    second = launch(provider, node, attempt=1)

    assert second.instance_id == first.instance_id
    assert len(gcp.fake.instances) == 1


def test_name_conflict_with_someone_elses_instance_is_refused(
    gcp: FakeComputeServer, provider: GcpProvider
) -> None:
    node = node_spec()
    gcp.fake.put_instance("us-central1-a", f"rd-{node.node_id}", {"owner": "someone"})
    with pytest.raises(PermanentCloudError) as error:
        launch(provider, node)
    assert error.value.kind == PermanentErrorKind.INVALID_REQUEST


def test_slow_operation_is_a_transient_error_not_a_hang(
    gcp: FakeComputeServer, make_provider: Any
) -> None:
    provider = make_provider(operation_timeout=0.3)
    node = node_spec()
    gcp.fake.hold_operations = True
    started = time.monotonic()
    with pytest.raises(TransientCloudError, match="still running"):
        launch(provider, node)
    assert time.monotonic() - started < 5
    assert len(gcp.fake.calls("POST", r"/operations/.+/wait$")) >= 1

    # The retry finds the half-made instance by its label instead of inserting again.
    again = launch(provider, node)
    assert again.state == InstanceState.PENDING
    assert len(gcp.fake.calls("POST", INSTANCES)) == 1


def test_fake_serves_operation_get_to_the_real_client(gcp: FakeComputeServer) -> None:
    """The fake's GET operations route (the driver itself uses `wait`), via the real
    client with anonymous credentials."""
    provider = GcpProvider(
        cloud_id=uuid.uuid4(),
        project_id=PROJECT,
        zones=ZONES,
        credentials=AnonymousCredentials(),
        api_endpoint=gcp.endpoint,
    )
    launch(provider, node_spec())
    [op_name] = [name for (_, _, name) in gcp.fake.operations]
    client = compute_v1.ZoneOperationsClient(
        credentials=AnonymousCredentials(),
        transport="rest",
        client_options={"api_endpoint": gcp.endpoint},
    )
    operation = client.get(project=PROJECT, zone=ZONES[0], operation=op_name)
    assert operation.status == compute_v1.Operation.Status.DONE
    assert "authorization" not in gcp.fake.requests[-1].headers


# --- List, describe, terminate.


def test_list_filters_by_cloud_and_cluster_across_zones(
    gcp: FakeComputeServer, provider: GcpProvider, cloud_id: uuid.UUID
) -> None:
    cluster_a, cluster_b = uuid.uuid4(), uuid.uuid4()
    ours_a = [
        launch(provider, node_spec(cluster_a, zone=zone)) for zone in (*ZONES, "us-central1-a")
    ]
    ours_b = [launch(provider, node_spec(cluster_b, zone=zone)) for zone in ZONES]
    gcp.fake.put_instance(
        "us-central1-a", "foreign", {"raydeck-cloud": str(uuid.uuid4()), "raydeck-cluster": "x"}
    )
    gcp.fake.put_instance("us-central1-b", "unlabelled", {})

    everything = provider.list_instances()
    only_a = provider.list_instances(cluster_id=cluster_a)

    assert {i.instance_id for i in everything} == {i.instance_id for i in ours_a + ours_b}
    assert {i.instance_id for i in only_a} == {i.instance_id for i in ours_a}
    last = gcp.fake.calls("GET", INSTANCES)[-1]
    assert last.query["filter"] == (
        f'(labels.raydeck-cloud = "{cloud_id}") AND (labels.raydeck-cluster = "{cluster_a}")'
    )
    # Two of cluster A's three are in zone a: the fake pages by 2, so paging was followed.
    assert any("pageToken" in r.query for r in gcp.fake.calls("GET", INSTANCES))


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("PROVISIONING", InstanceState.PENDING),
        ("STAGING", InstanceState.PENDING),
        ("RUNNING", InstanceState.RUNNING),
        ("STOPPING", InstanceState.STOPPING),
        ("SUSPENDING", InstanceState.STOPPING),
        ("REPAIRING", InstanceState.PENDING),
        ("STOPPED", InstanceState.STOPPED),
        ("SUSPENDED", InstanceState.STOPPED),
        ("TERMINATED", InstanceState.STOPPED),
        ("SOMETHING_NEW", InstanceState.UNKNOWN),
    ],
)
def test_state_mapping(
    gcp: FakeComputeServer, provider: GcpProvider, cloud_id: uuid.UUID, status: str, state: str
) -> None:
    gcp.fake.put_instance("us-central1-b", "rd-x", {"raydeck-cloud": str(cloud_id)}, status)
    described = provider.describe(instance_id="us-central1-b/rd-x")
    assert described is not None and described.state == state
    assert [i.state for i in provider.list_instances()] == [state]


def test_describe_missing_and_malformed(provider: GcpProvider) -> None:
    assert provider.describe(instance_id="us-central1-a/rd-gone") is None
    with pytest.raises(PermanentCloudError) as error:
        provider.describe(instance_id="no-zone-here")
    assert error.value.kind == PermanentErrorKind.INVALID_REQUEST


def test_terminate_deletes_waits_and_is_idempotent(
    gcp: FakeComputeServer, provider: GcpProvider
) -> None:
    instance = launch(provider, node_spec())

    provider.terminate(instance_id=instance.instance_id)

    [delete] = gcp.fake.calls("DELETE")
    zone, name = instance.instance_id.split("/")
    assert delete.path.endswith(f"/zones/{zone}/instances/{name}")
    assert gcp.fake.requests[-1].path.endswith("/wait")
    assert provider.describe(instance_id=instance.instance_id) is None
    assert provider.list_instances() == []
    provider.terminate(instance_id=instance.instance_id)  # already gone: fine
    assert len(gcp.fake.calls("DELETE")) == 1


@pytest.mark.parametrize("labels", [{}, {"raydeck-cloud": "another-cloud"}])
def test_terminate_refuses_instances_of_other_clouds(
    gcp: FakeComputeServer, provider: GcpProvider, labels: dict[str, str]
) -> None:
    gcp.fake.put_instance("us-central1-a", "customer-db", labels)
    with pytest.raises(PermanentCloudError, match="only deletes instances it launched"):
        provider.terminate(instance_id="us-central1-a/customer-db")
    assert gcp.fake.calls("DELETE") == []
    assert ("raydeck-test", "us-central1-a", "customer-db") in gcp.fake.instances


# --- Error mapping.

QUOTA_MESSAGE = "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1."
STOCKOUT = (
    "The zone 'projects/raydeck-test/zones/us-central1-a' does not have enough resources "
    "available to fulfill the request.  Try a different zone, or try again later."
)


@pytest.mark.parametrize(
    ("status", "reason", "message", "kind", "mentions"),
    [
        (429, "rateLimitExceeded", "Rate Limit Exceeded", None, ""),
        (403, "rateLimitExceeded", "Rate Limit Exceeded", None, ""),
        (500, "backendError", "Internal error", None, ""),
        (502, "", "Bad gateway", None, ""),
        (503, "backendError", "Service unavailable", None, ""),
        (504, "", "Deadline exceeded", None, ""),
        (
            403,
            "forbidden",
            "Required 'compute.instances.create' permission for "
            "'projects/raydeck-test/zones/us-central1-a/instances/rd-x'",
            PermanentErrorKind.PERMISSION,
            "compute.instances.create",
        ),
        (
            403,
            "forbidden",
            "Required 'compute.subnetworks.use' permission for 'projects/raydeck-test'",
            PermanentErrorKind.PERMISSION,
            "compute.subnetworks.use",
        ),
        (403, "accessNotConfigured", "Compute Engine API has not been used", "permission", "API"),
        (403, "quotaExceeded", QUOTA_MESSAGE, PermanentErrorKind.QUOTA, "CPUS"),
        (503, "ZONE_RESOURCE_POOL_EXHAUSTED", STOCKOUT, PermanentErrorKind.CAPACITY, "zone"),
        (
            400,
            "invalid",
            "Invalid value for field 'resource.machineType': 'zones/us-central1-a/machineTypes/"
            "n9-huge'. Machine type with name 'n9-huge' does not exist in zone 'us-central1-a'.",
            PermanentErrorKind.INVALID_REQUEST,
            "n9-huge",
        ),
        (412, "conditionNotMet", "Precondition failed", PermanentErrorKind.INVALID_REQUEST, ""),
    ],
)
def test_insert_http_errors_are_mapped(
    gcp: FakeComputeServer,
    provider: GcpProvider,
    status: int,
    reason: str,
    message: str,
    kind: str | None,
    mentions: str,
) -> None:
    gcp.fake.fail_next(status, reason, message, method="POST", path=INSTANCES)
    with pytest.raises(CloudError) as caught:
        launch(provider, node_spec())
    error = caught.value
    if kind is None:
        assert isinstance(error, TransientCloudError)
    else:
        assert isinstance(error, PermanentCloudError) and error.kind == kind
    assert mentions in error.user_message


def test_unknown_image_is_invalid_image(gcp: FakeComputeServer, provider: GcpProvider) -> None:
    with pytest.raises(PermanentCloudError) as error:
        launch(provider, node_spec(image="projects/debian-cloud/global/images/no-such"))
    assert error.value.kind == PermanentErrorKind.INVALID_IMAGE
    assert "projects/debian-cloud/global/images/no-such" in error.value.user_message
    assert gcp.fake.instances == {}


def test_lookup_permission_error_names_list_permission(
    gcp: FakeComputeServer, provider: GcpProvider
) -> None:
    gcp.fake.fail_next(403, "forbidden", "Forbidden", method="GET", path=INSTANCES)
    with pytest.raises(PermanentCloudError) as error:
        launch(provider, node_spec())
    assert error.value.kind == PermanentErrorKind.PERMISSION
    assert "compute.instances.list" in error.value.user_message
    assert SERVICE_ACCOUNT in error.value.user_message


@pytest.mark.parametrize(
    ("code", "message", "http_status", "kind"),
    [
        ("QUOTA_EXCEEDED", QUOTA_MESSAGE, 403, PermanentErrorKind.QUOTA),
        ("ZONE_RESOURCE_POOL_EXHAUSTED", STOCKOUT, 503, PermanentErrorKind.CAPACITY),
        (
            "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
            "resource pool exhausted",
            503,
            PermanentErrorKind.CAPACITY,
        ),
        (
            "RESOURCE_NOT_FOUND",
            "The resource 'projects/debian-cloud/global/images/gone' was not found",
            404,
            PermanentErrorKind.INVALID_IMAGE,
        ),
        (
            "PERMISSIONS_ERROR",
            "Required 'compute.disks.create' permission",
            403,
            PermanentErrorKind.PERMISSION,
        ),
        ("INVALID_FIELD_VALUE", "Invalid value for field", 400, PermanentErrorKind.INVALID_REQUEST),
        ("INTERNAL_ERROR", "Internal error. Please try again", 500, None),
    ],
)
def test_operation_errors_are_mapped(
    gcp: FakeComputeServer,
    provider: GcpProvider,
    code: str,
    message: str,
    http_status: int,
    kind: str | None,
) -> None:
    gcp.fake.fail_next_operation(code, message, http_status)
    with pytest.raises(CloudError) as caught:
        launch(provider, node_spec())
    error = caught.value
    if kind is None:
        assert isinstance(error, TransientCloudError)
    else:
        assert isinstance(error, PermanentCloudError) and error.kind == kind
    if kind == PermanentErrorKind.PERMISSION:
        assert "compute.disks.create" in error.user_message
    assert gcp.fake.instances == {}  # the failed insert left nothing behind


def test_terminate_errors_are_mapped(gcp: FakeComputeServer, provider: GcpProvider) -> None:
    instance = launch(provider, node_spec())
    gcp.fake.fail_next(403, "forbidden", "Forbidden", method="DELETE")
    with pytest.raises(PermanentCloudError) as error:
        provider.terminate(instance_id=instance.instance_id)
    assert error.value.kind == PermanentErrorKind.PERMISSION
    assert "compute.instances.delete" in error.value.user_message
    gcp.fake.fail_next(503, "backendError", "unavailable", method="GET", path=r"/instances/rd-")
    with pytest.raises(TransientCloudError):
        provider.describe(instance_id=instance.instance_id)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (gexc.DeadlineExceeded("slow"), True),
        (gexc.RetryError("gave up", cause=gexc.ServiceUnavailable("x")), True),
        (gexc.ServiceUnavailable("down"), True),
        (gexc.GatewayTimeout("slow"), True),
        (gexc.InternalServerError("oops"), True),
        (gexc.TooManyRequests("slow down"), True),
        (requests.exceptions.ConnectionError("refused"), True),
        (requests.exceptions.ReadTimeout("read timed out"), True),
        (auth_exc.TransportError("dns"), True),
        (gexc.PermissionDenied("denied"), False),
        (gexc.Forbidden("denied"), False),
        (auth_exc.RefreshError("invalid_grant"), False),
    ],
)
def test_map_google_error(exc: Exception, transient: bool) -> None:
    error = map_google_error(exc, action="create instances", permission="compute.instances.create")
    assert isinstance(error, TransientCloudError) is transient
    if not transient:
        assert isinstance(error, PermanentCloudError)
        assert error.kind == PermanentErrorKind.PERMISSION


# --- Verification.


def test_verify_all_good_and_read_only(gcp: FakeComputeServer, make_provider: Any) -> None:
    gcp.fake.buckets.add("raydeck-logs")
    gcp.fake.bucket_cors["raydeck-logs"] = [RAYDECK_CORS]  # as an earlier verify left it
    provider = make_provider(log_location="gs://raydeck-logs/clusters")

    results = provider.verify()

    assert [(r.name, r.passed) for r in results] == [
        ("Credentials", True),
        ("Project", True),
        ("List instances", True),
        ("Log bucket", True),
        ("Log bucket CORS", True),
    ]
    assert SERVICE_ACCOUNT in results[0].message
    assert {r.method for r in gcp.fake.requests} == {"GET"}  # nothing created or deleted
    buckets = gcp.fake.calls("GET", r"^/storage/v1/b/")
    assert {r.path for r in buckets} == {"/storage/v1/b/raydeck-logs"}
    assert all(r.headers.get("authorization") == f"Bearer {SECRET_TOKEN}" for r in buckets)
    listed = gcp.fake.calls("GET", INSTANCES)
    assert {r.path.split("/")[6] for r in listed} == set(ZONES)
    assert all(parse_label_filter(r.query["filter"]).keys() == {"raydeck-cloud"} for r in listed)


def test_verify_without_log_location(provider: GcpProvider) -> None:
    bucket, cors = provider.verify()[-2:]
    assert bucket.passed and "not configured" in bucket.message.lower()
    assert cors.passed and "nothing to allow" in cors.message


def test_verify_project_forbidden(gcp: FakeComputeServer, provider: GcpProvider) -> None:
    gcp.fake.fail_next(
        403,
        "forbidden",
        "Required 'compute.projects.get' permission for 'projects/raydeck-test'",
        method="GET",
        path=r"/compute/v1/projects/raydeck-test$",
    )
    project = {r.name: r for r in provider.verify()}["Project"]
    assert not project.passed
    assert "compute.projects.get" in project.message
    assert "roles/compute.viewer" in project.message
    assert SERVICE_ACCOUNT in project.message


def test_verify_project_missing(make_provider: Any) -> None:
    project = {r.name: r for r in make_provider(project_id="no-such-project").verify()}["Project"]
    assert not project.passed
    assert "no-such-project was not found" in project.message


def test_verify_unknown_zone(make_provider: Any) -> None:
    project = {r.name: r for r in make_provider(zones=["us-central1-z"]).verify()}["Project"]
    assert not project.passed and "us-central1-z" in project.message


def test_verify_listing_forbidden(gcp: FakeComputeServer, provider: GcpProvider) -> None:
    gcp.fake.fail_next(403, "forbidden", "Forbidden", method="GET", path=INSTANCES)
    listing = {r.name: r for r in provider.verify()}["List instances"]
    assert not listing.passed and "compute.instances.list" in listing.message


def test_verify_missing_bucket(make_provider: Any) -> None:
    bucket = {r.name: r for r in make_provider(log_location="gs://nope/x").verify()}["Log bucket"]
    assert not bucket.passed
    assert "Bucket nope does not exist" in bucket.message


def test_verify_bucket_forbidden_and_malformed(gcp: FakeComputeServer, make_provider: Any) -> None:
    gcp.fake.buckets.add("logs")
    gcp.fake.fail_next(403, "forbidden", "denied", path=r"^/storage/")
    bucket = make_provider(log_location="gs://logs").verify()[-2]
    assert not bucket.passed and "storage.buckets.get" in bucket.message
    malformed = make_provider(log_location="s3://logs/x").verify()[-2]
    assert not malformed.passed and "gs://" in malformed.message


def _cors_check(provider: GcpProvider) -> Any:
    return {r.name: r for r in provider.verify()}["Log bucket CORS"]


def test_verify_adds_raydecks_cors_entry_beside_the_customers(
    gcp: FakeComputeServer, make_provider: Any
) -> None:
    gcp.fake.buckets.add("logs")
    moved = {**RAYDECK_CORS, "origin": ["https://old-console.example.com"]}
    gcp.fake.bucket_cors["logs"] = [CUSTOMER_CORS, moved]
    gcp.fake.bucket_metageneration["logs"] = 7

    cors = _cors_check(make_provider(log_location="gs://logs/raydeck"))

    assert cors.passed, cors.message
    assert "added a CORS entry to bucket logs" in cors.message
    assert cors.change == f"a CORS entry of gs://logs allows {CONSOLE}"
    # The customer's entry kept, Raydeck's for the console's old address replaced.
    assert gcp.fake.bucket_cors["logs"] == [CUSTOMER_CORS, RAYDECK_CORS]
    [patch] = gcp.fake.calls("PATCH", r"^/storage/v1/b/logs$")
    assert patch.query["ifMetagenerationMatch"] == "7"  # no concurrent change is lost


def test_verify_adds_raydecks_cors_entry_to_a_bucket_without_one(
    gcp: FakeComputeServer, make_provider: Any
) -> None:
    gcp.fake.buckets.add("logs")

    cors = _cors_check(make_provider(log_location="gs://logs/raydeck"))

    assert cors.passed, cors.message
    assert gcp.fake.bucket_cors["logs"] == [RAYDECK_CORS]


def test_verify_writes_no_cors_when_an_entry_already_allows_the_console(
    gcp: FakeComputeServer, make_provider: Any
) -> None:
    gcp.fake.buckets.add("logs")
    anyone = {
        "origin": ["*"],
        "method": ["*"],
        "responseHeader": ["range", "content-range", "content-length"],
    }
    gcp.fake.bucket_cors["logs"] = [CUSTOMER_CORS, anyone]

    cors = _cors_check(make_provider(log_location="gs://logs/raydeck"))

    assert cors.passed and cors.change == ""
    assert gcp.fake.calls("PATCH") == []
    assert gcp.fake.bucket_cors["logs"] == [CUSTOMER_CORS, anyone]


def test_verify_without_bucket_update_says_what_to_grant_or_set(
    gcp: FakeComputeServer, make_provider: Any
) -> None:
    gcp.fake.buckets.add("logs")
    gcp.fake.bucket_cors["logs"] = [CUSTOMER_CORS]
    gcp.fake.fail_next(
        403, "forbidden", "Required 'storage.buckets.update' permission", method="PATCH"
    )

    results = {r.name: r for r in make_provider(log_location="gs://logs/raydeck").verify()}

    assert results["Log bucket"].passed
    cors = results["Log bucket CORS"]
    assert not cors.passed
    assert "storage.buckets.update on gs://logs" in cors.message
    assert SERVICE_ACCOUNT in cors.message
    assert json.dumps(RAYDECK_CORS) in cors.message  # or the entry to set by hand
    assert gcp.fake.bucket_cors["logs"] == [CUSTOMER_CORS]


def test_verify_does_not_check_cors_of_a_missing_bucket(make_provider: Any) -> None:
    cors = _cors_check(make_provider(log_location="gs://nope/x"))
    assert not cors.passed and cors.message.startswith("Not checked")


def test_verify_credentials_failure_explains_federation(
    gcp: FakeComputeServer, make_provider: Any, logs: list[str]
) -> None:
    failing = StaticTokenCredentials(
        fail=auth_exc.RefreshError(
            f"Error code invalid_grant: subject_token={SECRET_SUBJECT_TOKEN} was rejected"
        )
    )
    results = make_provider(credentials=failing).verify()

    credentials, *later = results
    assert not credentials.passed
    assert "roles/iam.workloadIdentityUser" in credentials.message
    assert SERVICE_ACCOUNT in credentials.message
    assert [(r.name, r.passed) for r in later] == [
        ("Project", False),
        ("List instances", False),
        ("Log bucket", False),
        ("Log bucket CORS", False),
    ]
    assert all(r.message.startswith("Not checked") for r in later)
    assert gcp.fake.requests == []
    assert not any(SECRET_SUBJECT_TOKEN in text for text in [r.message for r in results] + logs)


# --- Credentials.


@pytest.mark.parametrize(
    "provider_name",
    [
        "projects/123/locations/global/workloadIdentityPools/raydeck/providers/raydeck-oidc",
        "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/raydeck/"
        "providers/raydeck-oidc",
    ],
)
def test_federated_credentials_from_oidc_token_file(
    settings: Any, tmp_path: Path, provider_name: str
) -> None:
    token_file = tmp_path / "token"  # need not exist: read only when a token is needed
    settings.RAYDECK_GCP_SUBJECT_TOKEN_FILE = str(token_file)

    creds = federated_credentials(
        workload_identity_provider=provider_name, service_account=SERVICE_ACCOUNT
    )

    assert isinstance(creds, identity_pool.Credentials)
    info = creds.info
    assert info["audience"] == (
        "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/raydeck/"
        "providers/raydeck-oidc"
    )
    assert info["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert info["token_url"] == "https://sts.googleapis.com/v1/token"
    assert info["service_account_impersonation_url"] == (
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
        f"{SERVICE_ACCOUNT}:generateAccessToken"
    )
    assert info["credential_source"] == {"file": str(token_file)}
    assert creds.service_account_email == SERVICE_ACCOUNT
    assert creds.requires_scopes is False  # cloud-platform scope already set
    _assert_keyless(creds)
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert not creds.valid  # and nothing fetched yet


def test_federated_credentials_from_aws_identity(settings: Any) -> None:
    settings.RAYDECK_GCP_SUBJECT_TOKEN_FILE = ""

    creds = federated_credentials(
        workload_identity_provider="projects/123/locations/global/workloadIdentityPools/p/"
        "providers/aws",
        service_account=SERVICE_ACCOUNT,
    )

    assert isinstance(creds, aws.Credentials)
    info = creds.info
    assert info["audience"] == (
        "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/providers/aws"
    )
    assert info["subject_token_type"] == "urn:ietf:params:aws:token-type:aws4_request"
    assert info["token_url"] == "https://sts.googleapis.com/v1/token"
    assert info["service_account_impersonation_url"].endswith(
        f"/serviceAccounts/{SERVICE_ACCOUNT}:generateAccessToken"
    )
    assert creds.scopes == ["https://www.googleapis.com/auth/cloud-platform"]
    _assert_keyless(creds)


def test_subject_tokens_come_from_the_installation_identity(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first half of the exchange, which needs no network: what Raydeck would hand
    to Google STS. (The STS and impersonation calls themselves are google-auth's.)"""
    wip = "projects/123/locations/global/workloadIdentityPools/p/providers/x"
    token_file = tmp_path / "oidc-token"
    token_file.write_text(SECRET_SUBJECT_TOKEN)  # what the platform projects, not Raydeck
    settings.RAYDECK_GCP_SUBJECT_TOKEN_FILE = str(token_file)
    oidc = federated_credentials(workload_identity_provider=wip, service_account=SERVICE_ACCOUNT)
    assert oidc.retrieve_subject_token(None) == SECRET_SUBJECT_TOKEN

    # AWS: boto3's default chain (here: environment variables) signs GetCallerIdentity.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings.RAYDECK_GCP_SUBJECT_TOKEN_FILE = ""
    from_aws = federated_credentials(
        workload_identity_provider=wip, service_account=SERVICE_ACCOUNT
    )
    subject = from_aws.retrieve_subject_token(None)

    assert "sts.eu-west-1.amazonaws.com" in subject
    assert "GetCallerIdentity" in subject
    assert "x-goog-cloud-target-resource" in subject
    assert "AKIAIOSFODNN7EXAMPLE" in subject  # the key id signs; the secret never travels
    assert "wJalrXUtnFEMI" not in subject


def test_provider_names_federation_in_messages(settings: Any, tmp_path: Path) -> None:
    """When the token exchange fails, what the user reads (the verify check, a launch's
    error) names the service account and the workload identity provider to fix."""
    settings.RAYDECK_GCP_SUBJECT_TOKEN_FILE = str(tmp_path / "token")  # never written
    wip = "projects/123/locations/global/workloadIdentityPools/raydeck/providers/oidc"
    provider = GcpProvider(
        cloud_id=uuid.uuid4(),
        project_id=PROJECT,
        zones=ZONES,
        credentials=federated_credentials(
            workload_identity_provider=wip, service_account=SERVICE_ACCOUNT
        ),
        api_endpoint="http://127.0.0.1:9",  # never reached: the token comes first
    )
    assert provider.service_account == SERVICE_ACCOUNT
    assert provider.workload_identity_provider == wip

    credentials, *skipped = provider.verify()
    assert credentials.name == "Credentials" and not credentials.passed
    for words in (
        f"service account {SERVICE_ACCOUNT}",
        f"workload identity provider {wip}",
        f"roles/iam.workloadIdentityUser on {SERVICE_ACCOUNT}",
    ):
        assert words in credentials.message
    assert [c.passed for c in skipped] == [False, False, False, False]
    assert all("could not get GCP credentials" in c.message for c in skipped)

    with pytest.raises(PermanentCloudError) as caught:
        launch(provider, node_spec())
    assert caught.value.kind == PermanentErrorKind.PERMISSION
    assert f"service account {SERVICE_ACCOUNT}" in caught.value.user_message
    assert f"through workload identity provider {wip}" in caught.value.user_message


def _assert_keyless(creds: Credentials) -> None:
    assert not isinstance(creds, service_account.Credentials)
    assert getattr(creds, "_signer", None) is None
    assert not hasattr(creds, "signer")
    assert "private_key" not in repr(getattr(creds, "info", {}) or {})


# --- Secrets.


def test_no_token_in_messages_or_logs(
    gcp: FakeComputeServer, make_provider: Any, logs: list[str]
) -> None:
    """Drive success and failure paths with a token-bearing credential: the token reaches
    the cloud (Authorization header) but no message or log line."""
    provider = make_provider(log_location="gs://missing-bucket/x")
    messages: list[str] = []
    node = node_spec()
    launch(provider, node)
    for status, reason in [(403, "forbidden"), (503, "backendError"), (400, "invalid")]:
        gcp.fake.fail_next(
            status,
            reason,
            f"Request had Authorization: Bearer {SECRET_TOKEN}",
            method="POST",
            path=INSTANCES,
        )
        with pytest.raises(CloudError) as caught:
            launch(provider, node_spec())
        messages += [caught.value.user_message, caught.value.detail, str(caught.value)]
    messages += [r.message for r in provider.verify()]
    provider.terminate(instance_id=f"us-central1-a/rd-{node.node_id}")

    assert gcp.fake.requests[0].headers["authorization"] == f"Bearer {SECRET_TOKEN}"
    assert logs, "the driver logs what it does"
    leaked = [text for text in messages + logs if "secret-access-token" in text]
    assert leaked == []
