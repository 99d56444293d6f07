"""The head's query-token gate (AWS and GCP, whose load balancers cannot check a token):
the real gate in front of a plain HTTP server standing in for Serve's proxy on loopback
(no Ray, no cloud stand-in). It speaks HTTPS only, with the head's own certificate
(NodeTLS, signed here by a throwaway CA, tls_ca.py, that the clients trust). A wrong or
missing token never reaches Serve, the right one does with its body, a rotation applies
at once, the load balancer's health check needs none, plain HTTP gets no answer, a
renewed certificate is served without a restart, and the serve handler puts Serve
behind the gate only when the orders carry token hashes (and never without TLS)."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from raydeck_agent.orders import HeadContext
from raydeck_agent.serve import ServeHandler
from raydeck_agent.serve_gate import DENIED, ServeGate
from raydeck_agent.tls import NodeTLS

from .conftest import free_ports
from .test_gateway import _tls11_client
from .tls_ca import TestCA

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
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def head_tls(tmp_path: Path, ca: TestCA) -> NodeTLS:
    """The head's key and certificate as registration leaves them."""
    tls = NodeTLS(tmp_path / "node")
    assert tls.save_certificate(ca.sign(tls.csr("127.0.0.1"), ["127.0.0.1"]))
    return tls


@pytest.fixture
def gate(serve: int, head_tls: NodeTLS) -> Iterator[ServeGate]:
    gate = ServeGate(host="127.0.0.1", port=free_ports(1)[0], upstream=serve, tls=head_tls)
    gate.set_hashes([_hash(TOKEN)])
    gate.start()
    yield gate
    gate.stop()


def _call(
    ca: TestCA, port: int, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, str]:
    """A request over HTTPS that checks the gate's certificate against the CA."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(  # noqa: S310 - loopback
            request, timeout=10, context=ca.client_context()
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _served(ca: TestCA, port: int) -> tuple[str, x509.Certificate]:
    """The TLS version and the certificate the gate's handshake shows."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ca.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        der = sock.getpeercert(binary_form=True)
        version = str(sock.version())
    assert der is not None
    return version, x509.load_der_x509_certificate(der)


def test_only_a_live_token_reaches_serve(gate: ServeGate, ca: TestCA) -> None:
    assert _call(ca, gate.port, "/predict") == (401, DENIED)
    assert _call(ca, gate.port, "/predict", OTHER) == (401, DENIED)
    assert Serve.seen == []  # refused at the gate: Serve never saw them

    assert _call(ca, gate.port, "/predict?x=1", TOKEN, b'{"a": 1}') == (
        200,
        'POST /predict?x=1 {"a": 1}',
    )

    gate.set_hashes([_hash(OTHER)])  # a rotation: the new token in, the old one out
    assert _call(ca, gate.port, "/predict", OTHER)[0] == 200
    assert _call(ca, gate.port, "/predict", TOKEN)[0] == 401


def test_the_load_balancers_health_check_needs_no_token(gate: ServeGate, ca: TestCA) -> None:
    assert _call(ca, gate.port, "/-/healthz") == (200, "GET /-/healthz ")
    assert _call(ca, gate.port, "/-/healthz/../predict")[0] == 401


def test_the_gate_speaks_tls_12_or_later_with_the_heads_certificate(
    gate: ServeGate, ca: TestCA, head_tls: NodeTLS
) -> None:
    version, served = _served(ca, gate.port)
    assert version in ("TLSv1.2", "TLSv1.3")
    assert served.public_key() == head_tls.key().public_key()

    # A TLS 1.1 client (test_gateway.py shows it does reach a server that allows 1.1)
    # finds no common protocol.
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", gate.port), timeout=5) as raw,
        _tls11_client().wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


def test_plain_http_to_the_gate_is_refused(gate: ServeGate) -> None:
    """Not even a 401: the request never reaches the gate's handler, let alone Serve."""
    plain = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=5)
    try:
        plain.request("GET", "/-/healthz")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.getresponse()
    finally:
        plain.close()
    assert Serve.seen == []


def test_a_renewed_certificate_is_served_without_a_restart(
    gate: ServeGate, ca: TestCA, head_tls: NodeTLS
) -> None:
    first = _served(ca, gate.port)[1].serial_number
    # What the agent does with a heartbeat answer's certificate (agent._renew_certificate).
    assert head_tls.renew(ca.sign(head_tls.csr("127.0.0.1"), ["127.0.0.1"], 7200))
    renewed = _served(ca, gate.port)[1].serial_number
    assert renewed != first
    assert _call(ca, gate.port, "/predict", TOKEN)[0] == 200
    gate.stop()  # a stopped gate is no longer told of renewals
    assert head_tls.renew(ca.sign(head_tls.csr("127.0.0.1"), ["127.0.0.1"], 7200))


def test_the_handler_puts_serve_behind_the_gate_when_told(
    tmp_path: Path, serve: int, ca: TestCA, head_tls: NodeTLS
) -> None:
    port = free_ports(1)[0]
    context = HeadContext(
        node_dir=tmp_path,
        python="python3",
        ray_env={},
        dashboard_url="http://127.0.0.1:1",  # no Ray: deploying fails quietly, retried
        ports={"serve": port},
        tls=head_tls,
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
        assert _call(ca, port, "/x")[0] == 401
        assert handler._gate is not None
        handler._gate.upstream = serve  # Serve's stand-in where Serve would listen
        assert _call(ca, port, "/x", TOKEN)[0] == 200
        handler.handle({"version": 1, "hash": "h", "config": config, "token_hashes": []})
        assert _call(ca, port, "/x", TOKEN)[0] == 401  # the token was revoked
    finally:
        handler.stop()


def test_without_the_heads_certificate_the_gate_does_not_open(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    context = HeadContext(
        node_dir=tmp_path,
        python="python3",
        ray_env={},
        dashboard_url="http://127.0.0.1:1",
        ports={"serve": port},
        tls=NodeTLS(tmp_path / "node"),  # a key, but no certificate yet
    )
    handler = ServeHandler(context)
    try:
        with pytest.raises(RuntimeError, match="certificate"):
            handler.handle({"version": 1, "hash": "h", "config": {}, "token_hashes": []})
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        handler.stop()


def _first_report(handler: ServeHandler) -> dict:
    """The handler's report once its thread made one (bounded)."""
    deadline = time.monotonic() + 10
    while (report := handler.report()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert report is not None
    return report


def test_the_report_says_whether_the_serve_port_speaks_tls(
    tmp_path: Path, head_tls: NodeTLS
) -> None:
    """The control plane has the load balancer reach the version as the report says
    (HTTPS to the gate; plain HTTP to Serve where no gate stands, as on the local cloud)."""
    context = HeadContext(
        node_dir=tmp_path,
        python="python3",
        ray_env={},
        dashboard_url="http://127.0.0.1:1",  # no Ray: the report comes all the same
        ports={"serve": free_ports(1)[0]},
        tls=head_tls,
    )
    for orders, tls in (({}, False), ({"token_hashes": [_hash(TOKEN)]}, True)):
        handler = ServeHandler(context)
        handler.handle({"version": 1, "hash": "h", "config": {}, **orders})
        try:
            assert _first_report(handler)["tls"] is tls
        finally:
            handler.stop()
