"""No 500 while a dependency is down (issue 13, defect 5): with PostgreSQL or Redis
unreachable, the console, the API, the API's lean list and the agents' lean heartbeat
answer 503 with Retry-After (the API's error shape under /api/v1/ and /agent/v1/), or
answer normally where a use of the cache fails open (rate limits); and a heartbeat whose
`state` is a list or an object is a 400, not a 500.

Requests go through the real WSGI application (console/wsgi.py: lean paths and Django's
full stack, with its 500 handler), not the test client. "Down" is real: the database
connection and the cache point at a loopback port nothing listens on (connection
refused), as when the server is restarting. PostgreSQL only: the database is swapped
under a live connection.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client

from accounts.choices import OrgRole
from clusters.choices import NodeRole
from clusters.services import agents
from tests.api.conftest import token_secret
from tests.clusters.test_agent_api import make_cluster, make_node
from tests.conftest import Tenant, make_tenant
from tests.wsgi import call_wsgi

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"), reason="swaps PostgreSQL under a live connection"
    ),
]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


@dataclass
class World:
    tenant: Tenant
    api_token: str
    node_credential: str
    session_cookie: str

    def requests(self) -> dict[str, tuple[str, str, bytes, dict[str, str]]]:
        slug = self.tenant.org.slug
        bearer = {"HTTP_AUTHORIZATION": f"Bearer {self.api_token}"}
        beat = json.dumps({"state": "ready", "ray": {"resources_total": {"CPU": 1}}}).encode()
        return {
            "api": ("GET", "/api/v1/me", b"", bearer),
            "api lean list": ("GET", f"/api/v1/orgs/{slug}/clusters", b"", bearer),
            "heartbeat": (
                "POST",
                "/agent/v1/heartbeat",
                beat,
                {"HTTP_AUTHORIZATION": f"Bearer {self.node_credential}"},
            ),
            "console": ("GET", f"/o/{slug}/clusters/", b"", {"HTTP_COOKIE": self.session_cookie}),
        }

    def answers(self) -> dict[str, tuple[int, bytes, dict[str, str]]]:
        agents.forget_nodes()  # the heartbeat must look its node up
        found = {}
        for name, (method, path, body, headers) in self.requests().items():
            found[name] = call_wsgi(method, path, body, _headers(headers))
        return found


def _headers(meta: dict[str, str]) -> dict[str, str]:
    # tests.wsgi takes header names as sent ("Authorization"), not as WSGI keys.
    return {key.removeprefix("HTTP_").title().replace("_", "-"): v for key, v in meta.items()}


@pytest.fixture
def world() -> Iterator[World]:
    tenant = make_tenant("outage")
    cluster = make_cluster(tenant)
    _, credential = make_node(cluster, role=NodeRole.HEAD)
    client = Client()
    client.force_login(tenant.users[OrgRole.MEMBER])
    name = django_settings.SESSION_COOKIE_NAME
    cookie = f"{name}={client.cookies[name].value}"
    yield World(tenant, token_secret(tenant, OrgRole.MEMBER), credential, cookie)
    agents.forget_nodes()


def assert_unavailable(name: str, answer: tuple[int, bytes, dict[str, str]]) -> None:
    status, body, headers = answer
    assert status == 503, (name, status, body[:300])
    assert int(headers["Retry-After"]) > 0
    if name != "console":
        error = json.loads(body)["error"]
        assert error["code"] == "unavailable" and "Retry" in error["message"]


def test_with_postgresql_down_every_path_answers_503_with_retry_after(world: World) -> None:
    ok = world.answers()
    assert {name: answer[0] for name, answer in ok.items()} == {
        "api": 200,
        "api lean list": 200,
        "heartbeat": 200,
        "console": 200,
    }
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = dead_port()
    try:
        down = world.answers()
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    for name, answer in down.items():
        assert_unavailable(name, answer)
    # And back: the same requests work again, nothing to restart.
    assert {name: answer[0] for name, answer in world.answers().items()} == {
        name: 200 for name in ok
    }


def test_with_redis_down_nothing_is_a_500_and_rate_limits_fail_open(world: World, settings) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{dead_port()}/0",
        }
    }
    down = world.answers()
    # A rate limit may go uncounted for a while: the API still answers.
    assert down["api"][0] == 200
    assert down["api lean list"][0] == 200
    # A head's heartbeat carries revocations, which may not fail open: 503, retried.
    assert_unavailable("heartbeat", down["heartbeat"])
    status, _, headers = down["console"]
    assert status == 200 or (status == 503 and "Retry-After" in headers), status


@pytest.mark.parametrize("state", [["ready"], {"ready": True}, 7, None])
def test_a_heartbeat_state_that_is_not_a_string_is_a_400(world: World, state: object) -> None:
    body = json.dumps({"state": state}).encode()
    for _ in ("lean", "again, as Django answers it once the lean path declines"):
        agents.forget_nodes()
        status, content, _ = call_wsgi(
            "POST",
            "/agent/v1/heartbeat",
            body,
            {"Authorization": f"Bearer {world.node_credential}"},
        )
        assert status == 400, content
        assert "state must be one of" in json.loads(content)["error"]["message"]


def test_with_the_task_broker_down_a_request_that_sends_a_task_answers_503(world: World) -> None:
    """A web process loads kombu with its first task (kit/tasks.py); the broker's error
    that a send raises is still known for what it is: 503, Retry-After, not a 500."""
    from tests.clusters.test_faults import celery_broker

    cloud = world.tenant.cloud
    assert cloud is not None
    path = f"/api/v1/orgs/{world.tenant.org.slug}/clouds/{cloud.pk}/verify"
    bearer = {"Authorization": f"Bearer {token_secret(world.tenant, OrgRole.ADMIN)}"}
    with celery_broker(f"redis://127.0.0.1:{dead_port()}/0"):
        answer = call_wsgi("POST", path, b"", bearer)
    assert_unavailable("api", answer)
    assert "the task queue" in json.loads(answer[1])["error"]["message"]
