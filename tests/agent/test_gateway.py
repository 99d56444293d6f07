"""The agent's access gateway (agent/raydeck_agent/gateway.py) in front of a small
aiohttp app that records what reaches it, so the tests see exactly what is proxied.
It speaks HTTPS with a certificate for the node's own key, signed by a throwaway CA
(tls_ca.py) that the clients here trust. The same gateway in front of real Ray is
tested in tests/clusters/test_gateway.py."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from raydeck_agent import apps
from raydeck_agent.gateway import AccessPolicy, Gateway
from raydeck_agent.tls import NodeTLS

from .tls_ca import TestCA

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
        # Speaks one subprotocol when offered it, as Jupyter's kernel channel does.
        ws = web.WebSocketResponse(protocols=[APP_SUBPROTOCOL])
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo ({ws.ws_protocol}): {message.data}")
        return ws


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


RAY_TOKEN = "ray-secret-of-this-cluster"
APP_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"
_client_tls: ssl.SSLContext | None = None  # trusts the CA of the running gateway


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def node_tls(tmp_path, ca: TestCA) -> NodeTLS:
    tls = NodeTLS(tmp_path / "node")
    assert tls.save_certificate(ca.sign(tls.csr("127.0.0.1"), ["127.0.0.1", "c-a.example"]))
    return tls


@pytest.fixture
def gateway(
    key: Ed25519PrivateKey, ca: TestCA, node_tls: NodeTLS
) -> Iterator[tuple[Gateway, Upstream]]:
    global _client_tls
    upstream = Upstream()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    policy = AccessPolicy.from_pem(CLUSTER, pem.decode())
    gw = Gateway(
        host="127.0.0.1",
        port=free_port(),
        policy=policy,
        upstreams={"dashboard": upstream.port, "grafana": free_port(), "prometheus": upstream.port},
        tls=node_tls,
        ray_token=RAY_TOKEN,
    )
    gw.start()
    _client_tls = ca.client_context()
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
        f"https://127.0.0.1:{gw.port}{path}", headers=headers or {}, method=method, data=data
    )
    opener = urllib.request.build_opener(
        _NoRedirect, urllib.request.HTTPSHandler(context=_client_tls)
    )
    try:
        with opener.open(request, timeout=10) as response:
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
    # The user's token is for the gateway only; the dashboard gets the cluster's Ray token.
    assert got["Authorization"] == f"Bearer {RAY_TOKEN}"
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

    async def talk(protocols: tuple[str, ...] = ()) -> tuple[str | None, str]:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token(key)}"}) as session,
            session.ws_connect(
                f"wss://127.0.0.1:{gw.port}/ws", ssl=_client_tls, protocols=protocols
            ) as ws,
        ):
            await ws.send_str("hello")
            message = await ws.receive(timeout=5)
            return ws.protocol, str(message.data)

    assert asyncio.run(talk()) == (None, "echo (None): hello")
    # A subprotocol the app picks from the client's offer is the one the client is told.
    chosen = asyncio.run(talk(("json.legacy", APP_SUBPROTOCOL)))
    assert chosen == (APP_SUBPROTOCOL, f"echo ({APP_SUBPROTOCOL}): hello")
    assert upstream.seen[-1]["headers"]["Authorization"] == f"Bearer {RAY_TOKEN}"

    async def refused() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(f"wss://127.0.0.1:{gw.port}/ws", ssl=_client_tls)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
        return 0

    assert asyncio.run(refused()) == 401


def test_apps_that_are_absent_or_down(gateway, key) -> None:
    gw, _ = gateway
    bearer = {"Authorization": f"Bearer {token(key)}"}
    status, _, body = call(gw, "/jupyter/lab", bearer)
    assert status == 404 and b"jupyter is not available" in body
    # Configured, but nothing listens (yet: a head starts its apps once Ray is up).
    status, headers, body = call(gw, "/grafana/api/health", bearer)
    assert status == 503 and headers["Retry-After"] == "2"
    assert body.startswith(b"Grafana is not answering on this cluster.")
    # A browser opening it gets a page that reloads itself until it answers.
    status, headers, body = call(gw, "/grafana/", {**bearer, "Accept": "text/html,*/*"})
    assert status == 503 and headers["Content-Type"].startswith("text/html")
    assert b'<meta http-equiv="refresh" content="2">' in body
    assert b"Grafana is not answering on this cluster." in body


def test_jupyter_is_planned_only_when_the_image_has_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(apps, "prometheus_executable", lambda: None)
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.touch()
    assert apps.plan(str(python), shared_machine=True) == {}  # absent: no port, no link
    jupyter = python.parent / "jupyter-lab"
    jupyter.write_text("#!/bin/sh\n")
    jupyter.chmod(0o755)
    assert apps.plan(str(python), shared_machine=False) == {"jupyter": apps.JUPYTER_PORT}
    assert set(apps.plan(str(python), shared_machine=True)) == {"jupyter"}


def test_prometheus_is_planned_only_where_the_image_has_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    python = tmp_path / "python"
    python.touch()
    assert apps.plan(str(python), shared_machine=False) == {}
    prometheus = tmp_path / "prometheus"
    prometheus.write_text("#!/bin/sh\n")
    prometheus.chmod(0o755)
    assert apps.plan(str(python), shared_machine=False) == {"prometheus": apps.PROMETHEUS_PORT}
    # It scrapes what Ray lists in its service-discovery file on the head.
    config = json.loads(apps.prometheus_config(tmp_path / apps.RAY_SERVICE_DISCOVERY))
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / apps.RAY_SERVICE_DISCOVERY)]


def test_grafana_is_provisioned_with_rays_dashboards_and_the_heads_prometheus(
    tmp_path, monkeypatch
) -> None:
    """No Grafana binary exists on this machine (it is not in Debian): stand-ins named
    `grafana` and `prometheus` on the PATH record the command line the agent starts them
    with, and the files the agent writes for Grafana are read here as Grafana reads
    them (INI, provisioning YAML)."""
    bin_dir, home = tmp_path / "bin", tmp_path / "grafana-home"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("GF_PATHS_HOME", raising=False)
    monkeypatch.delenv("RAYDECK_PROMETHEUS", raising=False)
    python = bin_dir / "python"
    python.touch()

    def stand_in(name: str) -> None:
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / name}.argv\n')
        script.chmod(0o755)

    stand_in("prometheus")
    stand_in("grafana")
    # A `grafana` without its home (conf/defaults.ini) could not start: not planned.
    assert apps.plan(str(python), shared_machine=False) == {"prometheus": apps.PROMETHEUS_PORT}
    (home / "conf").mkdir(parents=True)
    (home / "conf" / "defaults.ini").write_text("")
    monkeypatch.setenv("GF_PATHS_HOME", str(home))
    planned = apps.plan(str(python), shared_machine=False)
    assert planned == {"prometheus": apps.PROMETHEUS_PORT, "grafana": apps.GRAFANA_PORT}
    # Without Prometheus, its one data source, there is no Grafana either.
    (bin_dir / "prometheus").unlink()
    assert apps.plan(str(python), shared_machine=False) == {}
    stand_in("prometheus")

    node, ray_temp = tmp_path / "node", tmp_path / "ray"
    node.mkdir()
    runner = apps.Apps(
        str(python), {"prometheus": 9191, "grafana": 3131}, node / "w", node, ray_temp
    )
    assert runner.start({"PATH": str(bin_dir)}) == {"prometheus": 9191, "grafana": 3131}
    for child in runner.children:  # the stand-ins write their argv and exit
        assert child.wait(30) == 0
    runner.stop()
    folder = node / "grafana"
    argv = (tmp_path / "grafana.argv").read_text().split()
    assert argv == ["server", "--homepath", str(home), "--config", str(folder / "grafana.ini")]

    ini = configparser.ConfigParser(interpolation=None)
    ini.read(folder / "grafana.ini")
    server = ini["server"]
    # On loopback only, served under the gateway's /grafana/ so its links work there.
    assert server["http_addr"] == "127.0.0.1" and server["http_port"] == "3131"
    assert server["root_url"] == "%(protocol)s://%(domain)s:%(http_port)s/grafana/"
    assert server["serve_from_sub_path"] == "true"
    # The gateway is the door: anonymous viewers inside, no login, no admin user.
    assert dict(ini["auth.anonymous"]) == {"enabled": "true", "org_role": "Viewer"}
    assert ini["auth"]["disable_login_form"] == "true" and ini["auth.basic"]["enabled"] == "false"
    assert ini["security"]["disable_initial_admin_creation"] == "true"
    assert ini["paths"]["provisioning"] == str(folder / "provisioning")
    assert ini["paths"]["data"] == str(folder / "data")
    provisioning = folder / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "raydeck.yaml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://127.0.0.1:9191/prometheus"  # the head's, on loopback
    assert source["type"] == "prometheus" and source["isDefault"] and source["name"] == "Prometheus"
    [dashboards] = yaml.safe_load((provisioning / "dashboards" / "raydeck.yaml").read_text())[
        "providers"
    ]
    # Where Ray writes its generated dashboards (its metrics_head.py), in its session.
    rays = ray_temp / "session_latest" / "metrics" / "grafana" / "dashboards"
    assert dashboards["options"]["path"] == str(rays) and dashboards["folder"] == "Ray"

    # An older Grafana has only `grafana-server`, which takes the same options.
    (bin_dir / "grafana").unlink()
    stand_in("grafana-server")
    assert apps.grafana_command() == [str(bin_dir / "grafana-server"), "--homepath", str(home)]


def test_prometheus_queries_answer_other_origins_only_with_a_token(gateway, key) -> None:
    """The console's charts read Prometheus from the browser: another origin may ask,
    but only with a token in the header; a cookie session is not enough."""
    gw, upstream = gateway
    path = "/prometheus/api/v1/query_range?query=up&start=1&end=2&step=1"
    origin = {"Origin": "https://console.example"}
    status, headers, _ = call(gw, path, origin, method="OPTIONS")
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    status, headers, body = call(gw, path, origin)
    assert status == 401 and headers["Access-Control-Allow-Origin"] == "*"
    assert b"send a token" in body
    # A browser session (the cookie a link leaves) does not reach it.
    _, link_headers, _ = call(gw, f"/?token={token(key)}")
    cookie = link_headers["Set-Cookie"].split(";")[0]
    assert call(gw, path, {**origin, "Cookie": cookie})[0] == 401
    assert upstream.seen == []

    status, headers, _ = call(gw, path, {**origin, "Authorization": f"Bearer {token(key)}"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    [seen] = upstream.seen
    assert seen["path"] == path
    assert "Authorization" not in seen["headers"]  # neither the user's token nor Ray's
    # Everything else stays same-origin only.
    bearer = {**origin, "Authorization": f"Bearer {token(key)}"}
    assert "Access-Control-Allow-Origin" not in call(gw, "/api/jobs/", bearer)[1]


# --- TLS ---------------------------------------------------------------------------------


def _handshake(port: int, context: ssl.SSLContext, name: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise


def _tls11_client() -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is: that is the point
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def _permissive_server(tls: NodeTLS) -> int:
    """A server that still speaks TLS 1.1, to show the old client really can."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("ALL:@SECLEVEL=0")
    tls.load(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def test_https_only_with_tls_1_2_or_newer(gateway, node_tls) -> None:
    gw, upstream = gateway
    # Plain HTTP gets no answer from behind the gateway.
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://127.0.0.1:{gw.port}/api/version", timeout=5)
    # A client that stops at TLS 1.1 (and can speak it: see the permissive server) is refused.
    old = _tls11_client()
    with _handshake(_permissive_server(node_tls), old) as sock:
        assert sock.version() == "TLSv1.1"
    with pytest.raises(ssl.SSLError):
        _handshake(gw.port, old).close()
    # TLS 1.2 still works; a modern client gets TLS 1.3.
    client = ssl.create_default_context(cafile=str(_ca_path(gw)))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with _handshake(gw.port, client) as sock:
        assert sock.version() == "TLSv1.2"
        assert sock.cipher()[0].startswith("ECDHE-")  # forward secret
    with _handshake(gw.port, ssl.create_default_context(cafile=str(_ca_path(gw)))) as sock:
        assert sock.version() == "TLSv1.3"
    assert upstream.seen == []


def _ca_path(gw: Gateway) -> Path:
    return gw.tls.dir.parent.parent / "ca.pem"


def test_the_certificate_is_for_this_clusters_names_only(gateway) -> None:
    gw, _ = gateway
    trusting = ssl.create_default_context(cafile=str(_ca_path(gw)))
    for name in ("127.0.0.1", "c-a.example"):
        _handshake(gw.port, trusting, name).close()
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(gw.port, trusting, "c-b.example").close()
    # A client that does not trust the installation's CA is refused too.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(gw.port, ssl.create_default_context()).close()


def test_a_renewed_certificate_is_served_without_a_restart(gateway, ca, node_tls) -> None:
    gw, _ = gateway
    trusting = ssl.create_default_context(cafile=str(_ca_path(gw)))

    def served_serial() -> int:
        with _handshake(gw.port, trusting) as sock:
            der = sock.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    first = served_serial()
    assert node_tls.save_certificate(ca.sign(node_tls.csr("127.0.0.1"), ["127.0.0.1"], 7200))
    assert served_serial() == first  # saved, not yet loaded
    gw.reload_certificate()
    renewed = served_serial()
    assert renewed != first
    assert node_tls.expires_at() is not None
    # A certificate for another key is never taken.
    stranger = NodeTLS(node_tls.dir.parent.parent / "stranger")
    assert not node_tls.save_certificate(ca.sign(stranger.csr("127.0.0.1"), ["127.0.0.1"]))
    assert served_serial() == renewed


def test_only_the_dashboard_gets_the_ray_token(gateway, key) -> None:
    gw, upstream = gateway
    bearer = {"Authorization": f"Bearer {token(key)}", "X-Ray-Authorization": "Bearer mine"}
    assert call(gw, "/api/jobs/", bearer)[0] == 200
    got = upstream.seen[-1]["headers"]
    assert got["Authorization"] == f"Bearer {RAY_TOKEN}" and "X-Ray-Authorization" not in got
    gw.upstreams["grafana"] = upstream.port  # Grafana, say, on the same little app
    assert call(gw, "/grafana/api/health", bearer)[0] == 200
    got = upstream.seen[-1]["headers"]
    assert "Authorization" not in got and "X-Ray-Authorization" not in got


def test_a_client_that_vanishes_without_closing_ends_its_tunnel(gateway, key, monkeypatch) -> None:
    """A tunnel client that stops answering (a laptop asleep: its socket stays open, no
    close ever comes) is closed by the gateway's pings, and so is the connection behind
    it, which would otherwise keep an SSH session, and the workspace, busy for ever. The
    upstream is a TCP service recording what reaches it, where the sshd would listen."""
    from raydeck_agent import activity
    from raydeck_agent import gateway as gateway_module

    gw, _ = gateway
    monkeypatch.setattr(gateway_module, "DOWNSTREAM_HEARTBEAT_SECONDS", 1.0)
    upstream_closed = threading.Event()
    received: list[bytes] = []

    def serve(listener: socket.socket) -> None:
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(4096):
                received.append(data)
        upstream_closed.set()

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    gw.serve("ssh", listener.getsockname()[1])
    open_before = activity.ACTIVITY._open.get("ssh", 0)

    async def vanish() -> tuple[bool, bytes]:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token(key)}"}) as session,
            # autoping off and never reading: nothing answers the gateway's pings.
            session.ws_connect(
                f"wss://127.0.0.1:{gw.port}/ssh", ssl=_client_tls, autoping=False
            ) as ws,
        ):
            await ws.send_bytes(b"SSH-2.0-client\r\n")
            closed = await asyncio.to_thread(upstream_closed.wait, 15)
            return closed, b"".join(received)

    closed, got = asyncio.run(vanish())
    listener.close()
    assert got == b"SSH-2.0-client\r\n"
    assert closed, "the gateway kept the upstream of a client that answers nothing"
    assert activity.ACTIVITY._open.get("ssh", 0) == open_before  # the session counted as ended
