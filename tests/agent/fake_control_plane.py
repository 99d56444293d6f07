"""A small control plane speaking the agent API, on 127.0.0.1, for the agent's tests.

It records every request, serves register/heartbeat per the contract, and can be
stopped and started again on the same port to play a control plane outage.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    token: str
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeNode:
    """One node the control plane expects; the test flips `action`, `head_address`
    and `heartbeat_status` to steer the agent."""

    token: str
    role: str
    num_cpus: float
    memory_mb: int
    temp_dir: str
    cluster_id: str
    log_location: str | None = None
    heartbeat_interval: float = 1
    register_head_address: str | None = None
    # What heartbeat answers carry.
    action: str = "run"
    head_address: str | None = None
    heartbeat_status: int = 200
    orders: dict[str, Any] | None = None  # a head's orders, by topic (clusters/head_orders.py)
    # Filled in by the server.
    node_id: str | None = None
    credential: str | None = None
    registrations: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)

    def states(self) -> list[str]:
        return [hb["state"] for hb in list(self.heartbeats)]


class FakeControlPlane:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls  # a server context: HTTPS, as production's control plane speaks
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.nodes: list[FakeNode] = []
        self.register_failures = 0  # answer this many registrations with 503 first
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def add_node(self, **kwargs: Any) -> FakeNode:
        kwargs.setdefault("token", "rdb_" + secrets.token_urlsafe(16))
        kwargs.setdefault("cluster_id", "c0ffee00-0000-4000-8000-000000000001")
        node = FakeNode(**kwargs)
        with self.lock:
            self.nodes.append(node)
        return node

    def requests_to(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"plane": self})
        # Same port again after stop(): agents keep the URL they were given.
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the listening socket: connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- the API ------------------------------------------------------------------

    def handle(self, path: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(Request(path, token, body))
            if path == "/agent/v1/register":
                return self._register(token, body)
            if path == "/agent/v1/heartbeat":
                return self._heartbeat(token, body)
        return 404, {"error": "not found"}

    def _register(self, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.register_failures > 0:
            self.register_failures -= 1
            return 503, {"error": "try again"}
        node = next((n for n in self.nodes if n.token == token), None)
        if node is None or node.credential is not None:
            return 401, {"error": "invalid or used token"}  # one-time tokens
        node.node_id = body["node_id"]
        node.credential = "rdn_" + secrets.token_urlsafe(24)
        node.registrations.append(body)
        answer: dict[str, Any] = {
            "credential": node.credential,
            "cluster_id": node.cluster_id,
            "node_id": node.node_id,
            "role": node.role,
            "heartbeat_interval": node.heartbeat_interval,
            "ray": {
                "num_cpus": node.num_cpus,
                "memory_mb": node.memory_mb,
                "head_address": node.register_head_address,
                "temp_dir": node.temp_dir,
            },
        }
        if node.log_location:
            answer["log_location"] = node.log_location
        return 200, answer

    def _heartbeat(self, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        node = next((n for n in self.nodes if n.credential and n.credential == token), None)
        if node is None:
            return 401, {"error": "unknown credential"}
        node.heartbeats.append(body)
        if node.heartbeat_status != 200:
            return node.heartbeat_status, {"error": "gone"}
        answer = {
            "action": node.action,
            "head_address": node.head_address,
            "heartbeat_interval": node.heartbeat_interval,
        }
        if node.orders is not None:
            answer["orders"] = node.orders
        return 200, answer


class _Handler(BaseHTTPRequestHandler):
    plane: FakeControlPlane

    def do_POST(self) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {"error": "bad json"})
            return
        status, answer = self.plane.handle(self.path, token, body)
        self._send(status, answer)

    def _send(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests look at FakeControlPlane.requests instead
