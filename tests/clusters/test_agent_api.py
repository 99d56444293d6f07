"""The agent API: registration, and heartbeats through both ways in (the full Django
stack, and the lean handler console/wsgi.py sends POST /agent/v1/heartbeat to).

Credentials are per node: whatever a request says, it can only ever affect the node
its token belongs to. Each web process keeps a table of live nodes for
RAYDECK_AGENT_CACHE_SECONDS and batches row writes; the tests either set those to 0
or move the table's clock and flush the batch themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from accounts.tokens import hash_secret, new_secret
from clusters import live
from clusters.choices import ClusterState, DesiredState, NodeRole, NodeState
from clusters.models import Cluster, Node
from clusters.services import agents, lifecycle
from clusters.services.defaults import default_compute_config, default_image
from tests.conftest import Tenant
from tests.wsgi import call_wsgi

pytestmark = pytest.mark.django_db

HEARTBEAT = "/agent/v1/heartbeat"
REGISTER = "/agent/v1/register"
READY_BODY = {
    "state": "ready",
    "ray": {"resources_total": {"CPU": 2.0}, "resources_available": {"CPU": 1.0}},
    "usage": {"cpu_percent": 12.5, "memory_percent": 40.0},
}


@pytest.fixture(autouse=True)
def fresh_tables() -> Iterator[None]:
    """No table of live nodes, pending write or liveness key outlives a test (pks are
    reused)."""
    agents.forget_nodes()
    yield
    agents.flush_heartbeats()
    agents.forget_nodes()
    agents._live_nodes.clock = agents.time.monotonic
    cache.delete_many([live.heartbeat_key(pk) for pk in Node.objects.values_list("pk", flat=True)])


def make_cluster(tenant: Tenant, name: str = "c1") -> Cluster:
    config = default_compute_config(cloud=tenant.cloud, organization=tenant.org, actor=None)
    return Cluster.objects.create(
        organization=tenant.org,
        project=tenant.project,
        name=name,
        cloud=tenant.cloud,
        compute_config=config,
        image=default_image(tenant.cloud),
        state=ClusterState.RUNNING,
    )


def make_node(
    cluster: Cluster, role: str = NodeRole.WORKER, state: str = NodeState.READY
) -> tuple[Node, str]:
    credential = new_secret("rdn")
    node = Node.objects.create(
        organization_id=cluster.organization_id,
        cluster=cluster,
        role=role,
        state=state,
        credential_hash=hash_secret(credential),
        private_address=f"10.0.0.{Node.objects.count() + 1}",
        ray_ports={"gcs": 6379} if role == NodeRole.HEAD else {},
        resources={"resources_total": {"CPU": 2.0}},
    )
    return node, credential


# --- the two ways in ------------------------------------------------------------------

Answer = tuple[int, dict[str, Any], dict[str, str]]


def _json(content: bytes) -> dict[str, Any]:
    try:
        return json.loads(content)
    except ValueError:
        return {}


def via_django(body: bytes, headers: dict[str, str], method: str = "POST") -> Answer:
    response = Client().generic(
        method, HEARTBEAT, body, content_type="application/json", headers=headers
    )
    return response.status_code, _json(response.content), dict(response.items())


def via_wsgi(body: bytes, headers: dict[str, str], method: str = "POST") -> Answer:
    status, content, response_headers = call_wsgi(method, HEARTBEAT, body, headers)
    return status, _json(content), response_headers


@pytest.fixture(params=[via_django, via_wsgi], ids=["django", "lean"])
def post(request: pytest.FixtureRequest) -> Callable[..., Answer]:
    send = request.param

    def heartbeat(credential: str | None, body: Any = READY_BODY, **kwargs: Any) -> Answer:
        headers = {"Authorization": f"Bearer {credential}"} if credential is not None else {}
        headers.update(kwargs.pop("headers", {}))
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return send(raw, headers, **kwargs)

    return heartbeat


# --- registration ---------------------------------------------------------------------


def test_a_bootstrap_token_registers_once(tenant_a: Tenant) -> None:
    cluster = make_cluster(tenant_a)
    node, _ = make_node(cluster, role=NodeRole.HEAD, state=NodeState.BOOTING)
    token = new_secret("rdb")
    Node.objects.filter(pk=node.pk).update(
        bootstrap_token_hash=hash_secret(token), credential_hash=""
    )
    body = {"node_id": str(node.uuid), "address": "10.1.2.3", "ports": {"gcs": 6379}}
    first = Client().post(
        REGISTER,
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert first.status_code == 200
    credential = first.json()["credential"]
    node.refresh_from_db()
    assert node.state == NodeState.REGISTERED
    assert node.credential_hash == hash_secret(credential)
    again = Client().post(
        REGISTER,
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert again.status_code == 401
    node.refresh_from_db()
    assert node.credential_hash == hash_secret(credential)  # not replaced


# --- heartbeats -----------------------------------------------------------------------


def test_a_heartbeat_answers_and_records_liveness(tenant_a: Tenant, post) -> None:
    cluster = make_cluster(tenant_a)
    head, _ = make_node(cluster, role=NodeRole.HEAD)
    worker, credential = make_node(cluster)
    status, answer, _ = post(credential)
    assert status == 200
    assert answer == {
        "action": "run",
        "head_address": f"{head.private_address}:6379",
        "heartbeat_interval": 5,
        "deadman_seconds": 3600,
    }
    agents.flush_heartbeats()
    assert live.last_heartbeat(worker.pk) is not None
    worker.refresh_from_db()
    assert worker.last_heartbeat_at is not None
    assert worker.usage == READY_BODY["usage"]


def test_heartbeats_only_ever_touch_their_own_node(
    tenant_a: Tenant, tenant_b: Tenant, post
) -> None:
    mine = make_cluster(tenant_a)
    node_a, credential_a = make_node(mine)
    theirs = make_cluster(tenant_b)
    node_b, credential_b = make_node(theirs)
    sibling, _ = make_node(mine)  # same cluster as A, its own credential
    before = {n.pk: (n.last_heartbeat_at, n.usage, n.state) for n in (node_a, node_b, sibling)}

    # B's credential, a body that names A: only B is affected, even when it "fails".
    hostile = {
        **READY_BODY,
        "state": "failed",
        "message": "boom",
        "node_id": str(node_a.uuid),
        "cluster_id": str(mine.uuid),
        "usage": {"cpu_percent": 99.0},
    }
    status, _, _ = post(credential_b, hostile)
    assert status == 200
    agents.flush_heartbeats()
    for node in (node_a, sibling):
        node.refresh_from_db()
        assert (node.last_heartbeat_at, node.usage, node.state) == before[node.pk]
        assert live.last_heartbeat(node.pk) is None
    node_b.refresh_from_db()
    assert node_b.state == NodeState.FAILED
    assert node_b.usage == {"cpu_percent": 99.0}
    assert live.last_heartbeat(node_b.pk) is not None

    # And A's credential touches A alone.
    status, _, _ = post(credential_a)
    assert status == 200
    agents.flush_heartbeats()
    node_a.refresh_from_db()
    sibling.refresh_from_db()
    assert node_a.usage == READY_BODY["usage"] and live.last_heartbeat(node_a.pk)
    assert (sibling.last_heartbeat_at, sibling.usage) == before[sibling.pk][:2]
    assert live.last_heartbeat(sibling.pk) is None
    # B's credential is dead now that B failed; it reaches nothing.
    assert post(credential_b)[0] == 401


def test_stop_right_after_terminate_without_the_table(tenant_a: Tenant, post, settings) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 0
    cluster = make_cluster(tenant_a)
    _, credential = make_node(cluster)
    assert post(credential)[1]["action"] == "run"
    lifecycle.cluster_terminate(cluster=cluster, actor=None)
    assert post(credential)[1]["action"] == "stop"


def test_stop_within_the_table_ttl_after_terminate(tenant_a: Tenant, post, settings) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 2.0
    now = [1000.0]
    agents._live_nodes.clock = lambda: now[0]
    cluster = make_cluster(tenant_a)
    _, credential = make_node(cluster)
    assert post(credential)[1]["action"] == "run"
    lifecycle.cluster_terminate(cluster=cluster, actor=None)
    now[0] += 1.0  # inside the TTL: the table may still say "run"
    assert post(credential)[1]["action"] in ("run", "stop")
    now[0] += 1.5  # past it
    assert post(credential)[1]["action"] == "stop"


def test_a_gone_nodes_credential_stops_working_within_the_ttl(
    tenant_a: Tenant, post, settings
) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 2.0
    now = [1000.0]
    agents._live_nodes.clock = lambda: now[0]
    node, credential = make_node(make_cluster(tenant_a))
    assert post(credential)[0] == 200
    Node.objects.filter(pk=node.pk).update(state=NodeState.LOST)
    now[0] += 2.5
    assert post(credential)[0] == 401


def test_a_node_registered_after_the_table_was_loaded_is_found(
    tenant_a: Tenant, post, settings
) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 60.0
    cluster = make_cluster(tenant_a)
    _, first = make_node(cluster)
    assert post(first)[0] == 200  # loads the table
    _, second = make_node(cluster)
    assert post(second)[0] == 200


def test_the_row_is_written_on_change_or_once_a_minute(tenant_a: Tenant, post, settings) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 0
    node, credential = make_node(make_cluster(tenant_a))
    long_ago = timezone.now() - timedelta(seconds=30)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=long_ago)
    assert post(credential)[0] == 200
    agents.flush_heartbeats()
    node.refresh_from_db()
    assert node.last_heartbeat_at == long_ago  # 30 s: the cache has it, the row waits
    assert live.last_heartbeat(node.pk) > long_ago

    changed = {**READY_BODY, "ray": {"resources_total": {"CPU": 4.0}}}
    assert post(credential, changed)[0] == 200
    agents.flush_heartbeats()
    node.refresh_from_db()
    assert node.resources == changed["ray"]  # Ray's resources changed: written

    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=long_ago - timedelta(seconds=31))
    assert post(credential)[0] == 200
    agents.flush_heartbeats()
    node.refresh_from_db()
    assert node.last_heartbeat_at > long_ago  # over a minute: written


def test_batched_writes_land_in_one_flush(tenant_a: Tenant, post, settings) -> None:
    settings.RAYDECK_AGENT_WRITE_BEHIND_SECONDS = 60.0
    cluster = make_cluster(tenant_a)
    nodes = [make_node(cluster) for _ in range(3)]
    agents._rows.written_at = agents.time.monotonic()  # as if it had just written
    # What a job printed (a worker's stdout) is dropped even if an agent sends it.
    lines = ["[agent] one", "[worker-4242.out] SECRET-OUTPUT", "[raylet.out] two", "loose"]
    tail = {**READY_BODY, "log_tail": lines}
    for _, credential in nodes:
        assert post(credential, tail)[0] == 200
    assert Node.objects.filter(last_heartbeat_at__isnull=False).count() == 0
    assert agents.flush_heartbeats() == 3
    for node, _ in nodes:
        node.refresh_from_db()
        assert node.last_heartbeat_at is not None
        assert (
            node.usage == READY_BODY["usage"] and node.log_tail == "[agent] one\n[raylet.out] two"
        )
        assert node.resources == READY_BODY["ray"]


def test_a_ready_report_moves_the_node_at_once(tenant_a: Tenant, post) -> None:
    node, credential = make_node(make_cluster(tenant_a), state=NodeState.REGISTERED)
    assert post(credential)[0] == 200
    node.refresh_from_db()
    assert node.state == NodeState.READY and node.ready_at is not None
    assert node.cluster.events.filter(step="ray started").count() == 1


def test_unknown_and_missing_tokens_are_refused(tenant_a: Tenant, post) -> None:
    node, _ = make_node(make_cluster(tenant_a))
    for credential in (new_secret("rdn"), "", "x" * 5000):
        status, answer, _ = post(credential)
        assert status == 401 and answer["error"]["code"] == "unauthenticated"
    assert post(None)[0] == 401  # no Authorization header at all
    assert post(None, headers={"Authorization": f"Basic {node.credential_hash}"})[0] == 401
    assert post(None, headers={"Authorization": f"Bearer {node.credential_hash}"})[0] == 401
    assert live.last_heartbeat(node.pk) is None


def test_garbage_bodies_are_refused(tenant_a: Tenant, post) -> None:
    _, credential = make_node(make_cluster(tenant_a))
    for body, code in (
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "invalid_body"),
        (b'"ready"', "invalid_body"),
        ({"state": "dancing"}, "invalid_body"),
    ):
        status, answer, _ = post(credential, body)
        assert status == 400, body
        assert answer["error"]["code"] == code
    assert post(credential, b"x" * (300 * 1024))[0] == 413


def test_only_post_is_allowed(tenant_a: Tenant, post) -> None:
    _, credential = make_node(make_cluster(tenant_a))
    assert post(credential, b"", method="GET")[0] == 405


def test_the_lean_path_keeps_the_host_check_and_security_headers(tenant_a: Tenant) -> None:
    _, credential = make_node(make_cluster(tenant_a))
    auth = {"Authorization": f"Bearer {credential}"}
    body = json.dumps(READY_BODY).encode()
    assert via_wsgi(body, {**auth, "Host": "evil.example.com"})[0] == 400
    status, _, headers = via_wsgi(body, auth)
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"] == "application/json"
    assert "Set-Cookie" not in headers


def test_the_lean_path_is_the_one_serving_heartbeats(tenant_a: Tenant, monkeypatch) -> None:
    import console.wsgi

    calls: list[str] = []
    real = console.wsgi.heartbeat_application
    monkeypatch.setattr(
        console.wsgi,
        "heartbeat_application",
        lambda environ, start: calls.append(environ["PATH_INFO"]) or real(environ, start),
    )
    _, credential = make_node(make_cluster(tenant_a))
    assert (
        via_wsgi(json.dumps(READY_BODY).encode(), {"Authorization": f"Bearer {credential}"})[0]
        == 200
    )
    assert calls == [HEARTBEAT]


def test_a_stopping_node_is_told_to_stop(tenant_a: Tenant, post, settings) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 0
    cluster = make_cluster(tenant_a)
    _, credential = make_node(cluster, state=NodeState.TERMINATING)
    status, answer, _ = post(credential)
    assert status == 200 and answer["action"] == "stop"
    Cluster.objects.filter(pk=cluster.pk).update(desired_state=DesiredState.TERMINATED)
    _, other = make_node(cluster)
    assert post(other)[1]["action"] == "stop"


def test_a_stale_table_never_moves_a_node_the_reconciler_moved(
    tenant_a: Tenant, post, settings
) -> None:
    settings.RAYDECK_AGENT_CACHE_SECONDS = 60.0
    node, credential = make_node(make_cluster(tenant_a), state=NodeState.REGISTERED)
    starting = {**READY_BODY, "state": "starting"}
    assert post(credential, starting)[1]["action"] == "run"  # the table has it REGISTERED
    Node.objects.filter(pk=node.pk).update(state=NodeState.TERMINATING)
    status, answer, _ = post(credential)  # "ready", checked against the locked row
    assert status == 200 and answer["action"] == "stop"
    node.refresh_from_db()
    assert node.state == NodeState.TERMINATING


def _handler_answer(body: bytes, headers: dict[str, str]) -> Answer:
    """The same request through HeartbeatHandler (Django, agent middleware) alone."""
    import console.wsgi

    app = console.wsgi.heartbeat_application
    real = app._answer
    app._answer = lambda environ: None  # type: ignore[method-assign]
    try:
        return via_wsgi(body, headers)
    finally:
        app._answer = real  # type: ignore[method-assign]


def test_the_fast_path_answers_as_django_does(tenant_a: Tenant) -> None:
    cluster = make_cluster(tenant_a)
    make_node(cluster, role=NodeRole.HEAD)
    _, credential = make_node(cluster)
    body, auth = json.dumps(READY_BODY).encode(), {"Authorization": f"Bearer {credential}"}
    fast = via_wsgi(body, auth)
    django = _handler_answer(body, auth)
    assert fast[0] == django[0] == 200
    assert fast[1] == django[1]
    assert fast[2] == django[2]


def test_the_fast_path_answers_alone_and_hands_errors_to_django(
    tenant_a: Tenant, monkeypatch
) -> None:
    import console.wsgi

    app = console.wsgi.heartbeat_application
    handed: list[str] = []
    real = app.django
    monkeypatch.setattr(
        app, "django", lambda environ, start: handed.append("django") or real(environ, start)
    )
    _, credential = make_node(make_cluster(tenant_a))
    body = json.dumps(READY_BODY).encode()
    assert via_wsgi(body, {"Authorization": f"Bearer {credential}"})[0] == 200
    assert handed == []
    assert via_wsgi(body, {"Authorization": f"Bearer {new_secret('rdn')}"})[0] == 401
    assert via_wsgi(b"{", {"Authorization": f"Bearer {credential}"})[0] == 400
    assert handed == ["django", "django"]


def test_https_redirect_and_hsts_on_the_lean_path(tenant_a: Tenant, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600
    _, credential = make_node(make_cluster(tenant_a))
    body, auth = json.dumps(READY_BODY).encode(), {"Authorization": f"Bearer {credential}"}
    status, _, headers = via_wsgi(body, auth)
    assert status == 301 and headers["Location"] == f"https://testserver{HEARTBEAT}"
    status, _, headers = via_wsgi(body, {**auth, "X-Forwarded-Proto": "https"})
    assert status == 200 and headers["Strict-Transport-Security"] == "max-age=3600"


# --- orders for the head (clusters/head_orders.py) -------------------------------------


class Recorder:
    """A participant as workloads register one: orders for one cluster, reports kept."""

    topic = "test-topic"

    def __init__(self, cluster_id: int) -> None:
        self.cluster_id = cluster_id
        self.received: list[tuple[int, Any]] = []

    def orders(self, cluster_id: int) -> Any | None:
        return {"submit": ["job-1"]} if cluster_id == self.cluster_id else None

    def receive(self, cluster_id: int, report: Any) -> None:
        self.received.append((cluster_id, report))

    def prompt(self, cluster_id: int, orders: Any | None) -> bool:
        return bool(orders)


@pytest.fixture
def recorder(tenant_a: Tenant) -> Iterator[tuple[Cluster, Recorder]]:
    from clusters import head_orders

    cluster = make_cluster(tenant_a)
    participant = Recorder(cluster.pk)
    head_orders.register(participant)
    yield cluster, participant
    head_orders._participants.pop(participant.topic)


def test_a_head_gets_its_orders_and_its_reports_reach_the_participant(
    tenant_a: Tenant, post, recorder
) -> None:
    cluster, participant = recorder
    _, head_credential = make_node(cluster, role=NodeRole.HEAD)
    body = {**READY_BODY, "reports": {"test-topic": {"job-1": "running"}, "newer": 1}}
    status, answer, _ = post(head_credential, body)
    assert status == 200
    assert answer["orders"] == {"test-topic": {"submit": ["job-1"]}}
    assert participant.received == [(cluster.pk, {"job-1": "running"})]
    # Work in motion: the head heartbeats promptly.
    assert answer["heartbeat_interval"] == settings.RAYDECK_PROMPT_HEARTBEAT_SECONDS


def test_workers_and_other_clusters_heads_get_no_orders(tenant_a: Tenant, post, recorder) -> None:
    cluster, participant = recorder
    _, worker_credential = make_node(cluster)
    other = make_cluster(tenant_a, name="c2")
    _, other_head = make_node(other, role=NodeRole.HEAD)
    for credential in (worker_credential, other_head):
        status, answer, _ = post(credential, {**READY_BODY, "reports": {"test-topic": 1}})
        assert status == 200
        assert "orders" not in answer
        assert answer["heartbeat_interval"] == settings.RAYDECK_HEARTBEAT_SECONDS
    assert participant.received == [(other.pk, 1)]


def test_deeply_nested_bodies_are_refused_after_the_token_not_crashed_on(
    tenant_a: Tenant, post
) -> None:
    _, credential = make_node(make_cluster(tenant_a))
    nested = b"[" * 50_000 + b"]" * 50_000
    status, answer, _ = post(credential, nested)
    assert status == 400 and answer["error"]["code"] == "invalid_body"
    assert "nested" in answer["error"]["message"]
    # Without a valid credential the body is never parsed: the answer is 401.
    status, answer, _ = post(new_secret("rdn"), nested)
    assert status == 401
    # A deep value inside a string is not nesting.
    assert post(credential, {**READY_BODY, "message": "[" * 5000})[0] == 200


def test_registration_checks_the_token_before_the_body(tenant_a: Tenant) -> None:
    nested = b'{"a":' * 20_000 + b"1" + b"}" * 20_000
    unknown = Client().post(
        REGISTER,
        nested,
        content_type="application/json",
        headers={"Authorization": f"Bearer {new_secret('rdb')}"},
    )
    assert unknown.status_code == 401
    node, _ = make_node(make_cluster(tenant_a), role=NodeRole.HEAD, state=NodeState.BOOTING)
    token = new_secret("rdb")
    Node.objects.filter(pk=node.pk).update(bootstrap_token_hash=hash_secret(token))
    deep = Client().post(
        REGISTER,
        nested,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "invalid_body"
