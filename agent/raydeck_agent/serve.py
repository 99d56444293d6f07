"""The head's side of Services (topic "serve"): deploy the Serve config the control plane
orders through Ray's Serve REST API on loopback, and report each application's health
and the HTTP proxy's request, error and latency counters.

Orders are `{"version": <id>, "hash": <config hash>, "config": <Serve config>}`, plus
`"token_hashes"` where the cloud's load balancer cannot check query tokens (AWS, GCP).
The handler adds the HTTP options itself (the proxy listens on this node's "serve" port
on every interface, so the service's router can reach it; only the head runs a proxy),
so the control plane never needs to know a node's ports. With token hashes, the token
gate (serve_gate.py) takes the "serve" port and Serve's proxy listens behind it on a
loopback port of its own (kept in the node's folder, so a restarted agent deploys the
same HTTP options: Serve cannot move a running proxy); the report says whether the
"serve" port speaks TLS (the gate does), and the load balancer reaches the version as it
says (an agent from before the gate spoke TLS never says so). The same orders arrive every
heartbeat: a config is deployed again only when its hash changes, or when Serve no
longer runs it (Ray restarted).

The counters are cumulative, read from the head's Prometheus metrics (Serve's proxy
exports `ray_serve_num_http_requests`, `..._error_requests` and the latency histogram
there); the control plane turns two reports into rates and quantiles.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .serve_gate import ServeGate

if TYPE_CHECKING:
    from .orders import HeadContext

logger = logging.getLogger(__name__)

TOPIC = "serve"
SERVE_API = "/api/serve/applications/"
POLL_SECONDS = 2.0
HTTP_TIMEOUT = 30.0
UPSTREAM_PORT_FILE = "serve-upstream-port"  # Serve's loopback port behind the gate
# Serve's applications carry at most this much of a message into a report.
MESSAGE_LIMIT = 500

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def ray_auth_headers(ray_env: dict[str, str]) -> dict[str, str]:
    """The cluster's Ray token for Ray's HTTP API when token authentication is on
    (RAY_AUTH_MODE=token): from RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH names."""
    token = ray_env.get("RAY_AUTH_TOKEN", "").strip()
    if not token and (path := ray_env.get("RAY_AUTH_TOKEN_PATH")):
        try:
            token = Path(path).read_text().strip()
        except OSError:
            token = ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def parse_serve_metrics(text: str) -> dict[str, dict[str, Any]]:
    """Per application: cumulative requests, errors and latency histogram buckets
    ({upper bound in ms: cumulative count}) from Prometheus text."""
    apps: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        if not name.startswith("ray_serve_"):
            continue
        labels = dict(_LABEL.findall(raw_labels or ""))
        try:
            value = float(raw_value)
        except ValueError:
            continue
        app = labels.get("application", "")
        if not app:
            continue
        entry = apps.setdefault(app, {"requests": 0.0, "errors": 0.0, "buckets": {}})
        base = name.removesuffix("_total")
        if base == "ray_serve_num_http_requests":
            entry["requests"] += value
        elif base == "ray_serve_num_http_error_requests":
            entry["errors"] += value
        elif name == "ray_serve_http_request_latency_ms_bucket" and "le" in labels:
            bound = labels["le"]
            entry["buckets"][bound] = entry["buckets"].get(bound, 0.0) + value
    return apps


class ServeHandler:
    """Deploys the ordered Serve config and watches it, on a thread of its own."""

    topic = TOPIC

    def __init__(self, context: HeadContext) -> None:
        self.context = context
        self.serve_port = context.ports.get("serve")
        metrics_port = context.ports.get("metrics")
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else ""
        self.headers = {"Content-Type": "application/json", **ray_auth_headers(context.ray_env)}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._orders: dict[str, Any] | None = None
        self._applied_hash = ""
        self._report: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._gate: ServeGate | None = None

    # -- OrderHandler ---------------------------------------------------------------

    def handle(self, orders: Any) -> None:
        if not isinstance(orders, dict) or not isinstance(orders.get("config"), dict):
            return
        hashes = orders.get("token_hashes")
        if isinstance(hashes, list):
            self._gated(hashes)
        with self._lock:
            changed = self._orders is None or self._orders.get("hash") != orders.get("hash")
            self._orders = orders
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="serve", daemon=True)
            self._thread.start()
        if changed:
            self._wake.set()

    def report(self) -> Any | None:
        with self._lock:
            return self._report

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._gate is not None:
            self._gate.stop()

    # -- the token gate -------------------------------------------------------------

    def _gated(self, hashes: list[Any]) -> None:
        """Start the gate on the first orders that carry token hashes; admit these."""
        if self._gate is None:
            tls = self.context.tls
            if tls is None or not tls.has_certificate():
                # Never plain HTTP: the load balancer's HTTPS health check fails and the
                # version shows unhealthy rather than serving unencrypted.
                raise RuntimeError("the serve gate needs the head's certificate, which it lacks")
            gate = ServeGate(
                host="0.0.0.0",  # noqa: S104 - where the load balancer reaches the head
                port=self.serve_port or 8000,
                upstream=self._upstream_port(),
                tls=tls,
            )
            gate.set_hashes(hashes)
            gate.start()  # raises when the port is taken: the next orders try again
            self._gate = gate
        self._gate.set_hashes(hashes)

    def _upstream_port(self) -> int:
        path = self.context.node_dir / UPSTREAM_PORT_FILE
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        path.write_text(str(port))
        return port

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:  # keep watching: the next round may succeed
                logger.exception("serve: a round failed")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def _step(self) -> None:
        with self._lock:
            orders = self._orders
        if orders is None:
            return
        wanted = str(orders.get("hash", ""))
        error = ""
        details = self._details()
        running = details is not None and bool(details.get("applications"))
        if wanted != self._applied_hash or (details is not None and not running):
            try:
                self._request("PUT", SERVE_API, self.deploy_config(orders["config"]))
                self._applied_hash = wanted
                logger.info("serve: deployed config %s", wanted[:12])
                details = self._details()
            except ValueError as exc:  # Serve refused it: say why in the report
                error = f"Deploying the Serve config failed: {exc}"[:MESSAGE_LIMIT]
                logger.warning("serve: %s", error)
            except OSError as exc:  # Ray's dashboard is not up yet: try again next round
                logger.debug("serve: the Serve API is not reachable yet: %s", exc)
        report = {
            "version": orders.get("version"),
            "hash": self._applied_hash,
            "error": error,
            "applications": self._applications(details),
            "metrics": self._metrics(),
            # What the "serve" port speaks: the control plane has the load balancer reach
            # this version the same way (HTTPS to the gate, plain HTTP to Serve itself).
            "tls": self._gate is not None,
            "at": time.time(),
        }
        with self._lock:
            self._report = report

    def deploy_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The control plane's config with this head's proxy settings."""
        deployed = dict(config)
        if self._gate is not None:  # behind the token gate, on loopback only
            deployed["http_options"] = {"host": "127.0.0.1", "port": self._gate.upstream}
        else:
            # Every interface: the router reaches the proxy at the node's address. Only the
            # head runs a proxy, so several nodes of one machine (local cloud) never collide.
            deployed["http_options"] = {"host": "0.0.0.0", "port": self.serve_port or 8000}  # noqa: S104
        deployed["proxy_location"] = "HeadOnly"
        return deployed

    def _details(self) -> dict[str, Any] | None:
        try:
            body = self._request("GET", SERVE_API, None)
        except (OSError, ValueError) as exc:
            logger.debug("serve: status unavailable: %s", exc)
            return None
        return body if isinstance(body, dict) else None

    @staticmethod
    def _applications(details: dict[str, Any] | None) -> dict[str, Any]:
        if details is None:
            return {}
        apps = details.get("applications") or {}
        return {
            str(name): {
                "status": str(app.get("status", "")),
                "message": str(app.get("message", ""))[:MESSAGE_LIMIT],
                "route_prefix": app.get("route_prefix"),
            }
            for name, app in apps.items()
            if isinstance(app, dict)
        }

    def _metrics(self) -> dict[str, Any]:
        if not self.metrics_url:
            return {}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as response:  # noqa: S310 - loopback
                return parse_serve_metrics(response.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return {}

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - Ray's dashboard on loopback
            self.context.dashboard_url + path, data=data, method=method, headers=self.headers
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:MESSAGE_LIMIT].decode("utf-8", "replace")
            raise ValueError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        return json.loads(raw) if raw.strip() else None


def serve_handler(context: HeadContext) -> ServeHandler:
    return ServeHandler(context)
