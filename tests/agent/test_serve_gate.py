"""The head's query-token gate (AWS and GCP, whose load balancers cannot check a token):
the real gate in front of a plain HTTP server standing in for Serve's proxy on loopback
(no Ray). A wrong or missing token never reaches it, the right one does with its body,
a rotation applies at once, the load balancer's health check needs none, and the serve
handler puts Serve behind the gate only when the orders carry token hashes."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from raydeck_agent.orders import HeadContext
from raydeck_agent.serve import ServeHandler
from raydeck_agent.serve_gate import DENIED, ServeGate

from .conftest import free_ports

TOKEN = "rds_the-query-token"
OTHER = "rds_another-token"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Serve(http.server.BaseHTTPRequestHandler):
    """Answers with what it received, as an echo app behind Serve would."""

    seen: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Serve.seen.append(self.path)
        reply = f"{self.command} {self.path} {body.decode()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[int]:
    Serve.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.fixture
def gate(serve: int) -> Iterator[ServeGate]:
    gate = ServeGate(host="127.0.0.1", port=free_ports(1)[0], upstream=serve)
    gate.set_hashes([_hash(TOKEN)])
    gate.start()
    yield gate
    gate.stop()


def _call(
    port: int, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_only_a_live_token_reaches_serve(gate: ServeGate) -> None:
    assert _call(gate.port, "/predict") == (401, DENIED)
    assert _call(gate.port, "/predict", OTHER) == (401, DENIED)
    assert Serve.seen == []  # refused at the gate: Serve never saw them

    assert _call(gate.port, "/predict?x=1", TOKEN, b'{"a": 1}') == (
        200,
        'POST /predict?x=1 {"a": 1}',
    )

    gate.set_hashes([_hash(OTHER)])  # a rotation: the new token in, the old one out
    assert _call(gate.port, "/predict", OTHER)[0] == 200
    assert _call(gate.port, "/predict", TOKEN)[0] == 401


def test_the_load_balancers_health_check_needs_no_token(gate: ServeGate) -> None:
    assert _call(gate.port, "/-/healthz") == (200, "GET /-/healthz ")
    assert _call(gate.port, "/-/healthz/../predict")[0] == 401


def test_the_handler_puts_serve_behind_the_gate_when_told(tmp_path: Path, serve: int) -> None:
    port = free_ports(1)[0]
    context = HeadContext(
        node_dir=tmp_path,
        python="python3",
        ray_env={},
        dashboard_url="http://127.0.0.1:1",  # no Ray: deploying fails quietly, retried
        ports={"serve": port},
    )
    config = {"applications": []}
    plain = ServeHandler(context)
    wanted = {"host": "0.0.0.0", "port": port}  # noqa: S104 - every interface, as before
    assert plain.deploy_config(config)["http_options"] == wanted

    handler = ServeHandler(context)
    handler.handle({"version": 1, "hash": "h", "config": config, "token_hashes": [_hash(TOKEN)]})
    try:
        options = handler.deploy_config(config)["http_options"]
        assert options["host"] == "127.0.0.1"
        assert options["port"] != port
        # A restarted agent keeps Serve's port (Serve cannot move a running proxy).
        assert ServeHandler(context)._upstream_port() == options["port"]
        assert _call(port, "/x")[0] == 401
        assert handler._gate is not None
        handler._gate.upstream = serve  # Serve's stand-in where Serve would listen
        assert _call(port, "/x", TOKEN)[0] == 200
        handler.handle({"version": 1, "hash": "h", "config": config, "token_hashes": []})
        assert _call(port, "/x", TOKEN)[0] == 401  # the token was revoked
    finally:
        handler.stop()
