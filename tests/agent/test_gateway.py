"""The agent's access gateway (agent/raydeck_agent/gateway.py) in front of a small
aiohttp app that records what reaches it, so the tests see exactly what is proxied.
The same gateway in front of real Ray is tested in tests/clusters/test_gateway.py."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from raydeck_agent import apps
from raydeck_agent.gateway import AccessPolicy, Gateway

CLUSTER = str(uuid.uuid4())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Upstream:
    """An app on a local port that answers anything and remembers what it got."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/ws", self.echo)
        app.router.add_route("*", "/{tail:.*}", self.answer)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        ready.set()
        self._loop.run_forever()

    async def answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": body,
            }
        )
        return web.json_response(
            {"path": request.path_qs, "size": len(body)}, headers={"X-Upstream": "yes"}
        )

    async def echo(self, request: web.Request) -> web.WebSocketResponse:
        self.seen.append(
            {"method": "WS", "path": request.path_qs, "headers": dict(request.headers), "body": b""}
        )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo: {message.data}")
        return ws


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def gateway(key: Ed25519PrivateKey) -> Iterator[tuple[Gateway, Upstream]]:
    upstream = Upstream()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    policy = AccessPolicy.from_pem(CLUSTER, pem.decode())
    gw = Gateway(
        host="127.0.0.1",
        port=free_port(),
        policy=policy,
        upstreams={"dashboard": upstream.port, "grafana": free_port()},
    )
    gw.start()
    yield gw, upstream
    gw.stop()


def token(key: Ed25519PrivateKey, sub: str = "7", **claims: Any) -> str:
    now = time.time()
    body = {
        "aud": f"raydeck-cluster:{CLUSTER}",
        "sub": sub,
        "iat": round(now, 3),
        "exp": int(now + 300),
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode(body, key, algorithm="EdDSA")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def call(
    gw: Gateway,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    data: bytes | None = None,
) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{gw.port}{path}", headers=headers or {}, method=method, data=data
    )
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def test_a_valid_token_is_proxied_without_the_gateways_own_credentials(gateway, key) -> None:
    gw, upstream = gateway
    headers = {
        "Authorization": f"Bearer {token(key)}",
        "Cookie": f"app=1; raydeck_gw_{CLUSTER.replace('-', '')}=x",
    }
    big = b"x" * (3 << 20)  # a working_dir package upload, say
    status, answer, body = call(gw, "/api/packages/a?b=c", headers, method="PUT", data=big)
    assert status == 200 and answer["X-Upstream"] == "yes"
    assert json.loads(body) == {"path": "/api/packages/a?b=c", "size": len(big)}
    got = upstream.seen[-1]["headers"]
    assert "Authorization" not in got  # the token is for the gateway only
    assert got["Cookie"] == "app=1"


def test_refusals_reach_nothing(gateway, key) -> None:
    gw, upstream = gateway
    other = Ed25519PrivateKey.generate()
    for headers in [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {token(key)}"},
        {"Authorization": f"Bearer {token(other)}"},
        {"Authorization": f"Bearer {token(key, aud='raydeck-cluster:' + str(uuid.uuid4()))}"},
        {"Authorization": f"Bearer {token(key, exp=int(time.time()) - 60)}"},
        {"Authorization": f"Bearer {token(key, exp=int(time.time()) + 7200)}"},
        {"Cookie": f"raydeck_gw_{CLUSTER.replace('-', '')}=forged.value"},
    ]:
        status, _, body = call(gw, "/api/jobs/", headers, method="POST", data=b"{}")
        assert status == 401, headers
        assert json.loads(body)["error"]["code"] == "unauthenticated"
    assert upstream.seen == []


def test_clock_leeway(gateway, key) -> None:
    gw, _ = gateway
    now = time.time()
    slightly = token(key, iat=now + 5, exp=int(now) - 5)  # within the 10 s leeway
    assert call(gw, "/", {"Authorization": f"Bearer {slightly}"})[0] == 200
    late = token(key, iat=now - 300, exp=int(now) - 30)
    assert call(gw, "/", {"Authorization": f"Bearer {late}"})[0] == 401


def test_a_link_becomes_a_cookie_once(gateway, key) -> None:
    gw, upstream = gateway
    link = token(key)
    status, headers, _ = call(gw, f"/logs?node=a&token={link}&x=1")
    assert status == 303 and headers["Location"] == "/logs?node=a&x=1"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith(f"raydeck_gw_{CLUSTER.replace('-', '')}=")
    assert call(gw, "/logs?node=a&x=1", {"Cookie": cookie})[0] == 200
    assert "token" not in upstream.seen[-1]["path"]
    assert call(gw, f"/?token={link}")[0] == 401  # used


def test_revocations_apply_to_tokens_and_sessions(gateway, key) -> None:
    gw, _ = gateway
    bearer = {"Authorization": f"Bearer {token(key, sub='7')}"}
    others = {"Authorization": f"Bearer {token(key, sub='8')}"}
    cookie = call(gw, f"/?token={token(key, sub='7')}")[1]["Set-Cookie"].split(";")[0]
    assert call(gw, "/", bearer)[0] == call(gw, "/", {"Cookie": cookie})[0] == 200
    gw.policy.update({"revoked": {"7": time.time()}, "not_before": 0})
    assert call(gw, "/", bearer)[0] == 401
    assert call(gw, "/", {"Cookie": cookie})[0] == 401
    assert call(gw, "/", others)[0] == 200
    time.sleep(0.01)
    assert call(gw, "/", {"Authorization": f"Bearer {token(key, sub='7')}"})[0] == 200  # new
    gw.policy.update({"revoked": {}, "not_before": time.time()})
    assert call(gw, "/", others)[0] == 401
    gw.policy.update("garbage")  # a malformed answer changes nothing
    assert call(gw, "/", others)[0] == 401


def test_websockets_are_proxied(gateway, key) -> None:
    gw, upstream = gateway

    async def talk() -> str:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token(key)}"}) as session,
            session.ws_connect(f"http://127.0.0.1:{gw.port}/ws") as ws,
        ):
            await ws.send_str("hello")
            message = await ws.receive(timeout=5)
            return str(message.data)

    assert asyncio.run(talk()) == "echo: hello"
    assert "Authorization" not in upstream.seen[-1]["headers"]

    async def refused() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(f"http://127.0.0.1:{gw.port}/ws")
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
        return 0

    assert asyncio.run(refused()) == 401


def test_apps_that_are_absent_or_down(gateway, key) -> None:
    gw, _ = gateway
    bearer = {"Authorization": f"Bearer {token(key)}"}
    status, _, body = call(gw, "/jupyter/lab", bearer)
    assert status == 404 and b"jupyter is not available" in body
    assert call(gw, "/grafana/", bearer)[0] == 502  # configured, but nothing listens


def test_jupyter_is_planned_only_when_the_image_has_it(tmp_path) -> None:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.touch()
    assert apps.plan(str(python), shared_machine=True) == {}  # absent: no port, no link
    jupyter = python.parent / "jupyter-lab"
    jupyter.write_text("#!/bin/sh\n")
    jupyter.chmod(0o755)
    assert apps.plan(str(python), shared_machine=False) == {"jupyter": apps.JUPYTER_PORT}
    assert set(apps.plan(str(python), shared_machine=True)) == {"jupyter"}
