"""The query-token check in front of a version's Serve proxy, on clouds whose load
balancer cannot make it (AWS's ALB and GCP's URL map cannot hash a header, and Raydeck
keeps only the tokens' SHA-256).

The gate listens on the node's "serve" port, where the load balancer sends a version's
share of the traffic; Serve's own proxy then listens on loopback only (serve.py). A
request whose `Authorization: Bearer <token>` hashes to one of the service's live
tokens (from the serve orders, replaced on every heartbeat) is streamed to Serve and
back; any other gets 401, the same refusal as the local cloud's HAProxy, and never
reaches Ray. Serve's health path is let through without a token: the load balancer's
health checks carry none and it reveals nothing.

HTTPS only (TLS 1.2+), with the head's own certificate, the gateway's (tls.py), renewed
in place by heartbeats: the load balancer's hop to the head is encrypted too, as every
channel is (DESIGN.md), though only the load balancer reaches this port (the nodes'
firewall lets in the router alone). The load balancers do not check it against the
installation's CA (neither an ALB nor a URL map can), so it is there to encrypt. Runs
its own asyncio loop (aiohttp) in a daemon thread.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from aiohttp import web

from .gateway import HOP_BY_HOP, LoopServer, relay
from .tls import NodeTLS

logger = logging.getLogger(__name__)

HEALTH_PATH = "/-/healthz"
DENIED = "A valid query token is required: send Authorization: Bearer <token>."


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ServeGate(LoopServer):
    """Checks query tokens on `host:port` (HTTPS with the head's certificate) and
    forwards to Serve on loopback `upstream`."""

    what = "the serve gate"
    thread_name = "raydeck-serve-gate"

    def __init__(self, *, host: str, port: int, upstream: int, tls: NodeTLS) -> None:
        super().__init__(host=host, port=port, tls=tls)
        self.upstream = upstream
        self._hashes: frozenset[str] = frozenset()

    def set_hashes(self, hashes: Iterable[str]) -> None:
        """Admit exactly these tokens (SHA-256, hex) from now on (any thread)."""
        self._hashes = frozenset(h.lower() for h in hashes if isinstance(h, str) and len(h) == 64)

    # -- requests -----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != HEALTH_PATH:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or token_hash(token) not in self._hashes:
                return web.Response(status=401, text=DENIED, headers={"WWW-Authenticate": "Bearer"})
        # Forwarded as HAProxy forwards it on the local cloud: the app sees the same request
        # (its length too, rather than a chunked body some servers cannot read).
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP or k.lower() == "content-length"
        }
        url = f"http://127.0.0.1:{self.upstream}{request.path_qs}"
        return await relay(self._ready_client(), request, url, headers)
