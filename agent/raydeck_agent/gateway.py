"""The access gateway on the head node: one port in front of the Ray Dashboard (which
also serves Ray's job API) and, when the image has them, JupyterLab and Grafana.

Only tokens the control plane signed for this cluster get through. They are checked
here, offline, with the cluster's public key (Ed25519, "EdDSA" is the only algorithm
accepted), so no request waits on the control plane. A token comes as
`Authorization: Bearer …`, or once as `?token=…` on a browser link: the gateway then
sets a cookie for this cluster (named after it, since clusters of the local cloud share
a host) and redirects to the same URL without the token. The cookie holds a session
signed with a key this process made up at start, bound to the token's user and issue
time, so revocations apply to it as to the token.

Revocations come with the heartbeat answers (AccessPolicy.update): tokens (and the
sessions made from them) issued to a user before that user's revocation time, or to
anyone before the cluster's own not-before time, are refused from then on.

It speaks HTTPS only (TLS 1.2 minimum, tls.py), with a certificate from the
installation's CA; a renewed certificate (from a heartbeat answer) is loaded into the
running server, so new connections get it without a restart.

Ray's own ports require Ray's token (RAY_AUTH_MODE=token): the gateway adds the
cluster's Ray token to what it forwards to the dashboard (and its job API), so users
present only their Raydeck token and nothing reaches Ray around the gateway.

A workspace's head also serves /ssh: a WebSocket whose binary messages are the bytes of
an SSH connection to the workspace's sshd on loopback (sshd.py), for `raydeck workspaces
ssh` and VS Code's Remote-SSH (the CLI's ProxyCommand opens it). Same token, same
revocations: an open tunnel is closed once its user's access is revoked. Every client
WebSocket (tunnels, Jupyter's kernel channels) is pinged: one that stopped answering is
closed with its upstream.

Runs its own asyncio loop (aiohttp, which Ray's dashboard brings) in a daemon thread;
the agent's thread only starts and stops it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from . import activity
from .tls import NodeTLS

if TYPE_CHECKING:
    import ssl

logger = logging.getLogger("raydeck_agent")

ALGORITHMS = ["EdDSA"]  # fixed: never taken from the token's header
LEEWAY_SECONDS = 10  # clock skew between the control plane and this node
MAX_TOKEN_SECONDS = 3600 + 60  # no token the control plane signs lives longer
SESSION_SECONDS = 3600  # a browser session made from a link token
TOKEN_PARAM = "token"  # noqa: S105 - the name of the query parameter
COOKIE_PREFIX = "raydeck_gw_"
# Where each app is reached through the gateway; the dashboard takes everything else.
APP_PREFIXES = {"jupyter": "/jupyter", "grafana": "/grafana", "prometheus": "/prometheus"}
# Prometheus's query API answers other origins (the console's charts fetch it straight
# from the browser): only with the token in the Authorization header, never a cookie,
# so another site can read nothing without a token it cannot have.
CROSS_ORIGIN_PREFIX = "/prometheus/api/"
# A job's live driver log as a page that reloads itself until the job ends (the console's
# "Follow the live log" opens it): /raydeck/jobs/<submission id>/log.
JOB_LOG_PATH = re.compile(r"/raydeck/jobs/([A-Za-z0-9_.-]{1,100})/log")
JOB_LOG_TAIL_BYTES = 256 * 1024  # the page shows the end; the whole log is in storage later
JOB_LOG_REFRESH_SECONDS = 2
# An app that refuses connections: the head starts its apps once Ray is up, so for a few
# seconds after a cluster shows running they may not listen yet.
APP_LABELS = {
    "dashboard": "Ray's dashboard",
    "jupyter": "JupyterLab",
    "grafana": "Grafana",
    "prometheus": "Prometheus",
}
NOT_UP_RETRY_SECONDS = 2
SSH_PATH = "/ssh"  # the tunnel to the workspace's sshd (its upstream is the "ssh" app)
SSH_CHUNK = 64 * 1024
RECHECK_SECONDS = 5.0  # how soon an open tunnel notices a revocation
# A client gone without closing (a laptop asleep, a dropped network) leaves its WebSocket
# half-open, and with it the upstream: an SSH session that keeps the workspace busy for
# ever, a kernel channel Jupyter thinks is read. The gateway pings every client this
# often and closes one that has not answered within half of it (browsers and the CLI's
# tunnel answer pings by themselves, also on a loaded machine).
DOWNSTREAM_HEARTBEAT_SECONDS = 60.0
RAY_FINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# Never forwarded either way (RFC 9110 7.6.1), plus what the gateway itself consumes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
RAY_AUTH_HEADER = "x-ray-authorization"  # Ray's fallback header: never from users
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=None)


class Refused(Exception):
    """The request carries no acceptable token or session; the text says why."""


@dataclass(frozen=True)
class Identity:
    sub: str
    issued_at: float
    expires_at: float


@dataclass
class AccessPolicy:
    """What the gateway knows: the cluster's public key and audience (from the
    registration) and the revocations (from the latest heartbeat answer). The
    heartbeat thread replaces `revoked`/`not_before` whole; the gateway only reads."""

    cluster_id: str
    public_key: Ed25519PublicKey
    revoked: Mapping[str, float] = field(default_factory=dict)  # sub -> issued before = refused
    not_before: float = 0.0  # any token issued before this is refused

    @classmethod
    def from_pem(cls, cluster_id: str, pem: str) -> AccessPolicy:
        key = load_pem_public_key(pem.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the cluster's access key is not an Ed25519 public key")
        return cls(cluster_id=cluster_id, public_key=key)

    @property
    def audience(self) -> str:
        return f"raydeck-cluster:{self.cluster_id}"

    def update(self, answer: Any) -> None:
        """Apply the "access" part of a heartbeat answer; ignore anything malformed."""
        if not isinstance(answer, dict):
            return
        revoked = answer.get("revoked")
        if isinstance(revoked, dict):
            self.revoked = {
                str(sub): float(before)
                for sub, before in revoked.items()
                if isinstance(before, (int, float))
            }
        not_before = answer.get("not_before")
        if isinstance(not_before, (int, float)):
            self.not_before = float(not_before)

    def verify(self, token: str) -> tuple[Identity, str]:
        """(who, jti) for a valid token of this cluster; Refused for anything else."""
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refused("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Refused("the token is for another cluster") from None
        except jwt.PyJWTError as exc:
            raise Refused(f"the token is not valid ({type(exc).__name__})") from None
        issued, expires = float(claims["iat"]), float(claims["exp"])
        if expires - issued > MAX_TOKEN_SECONDS:
            raise Refused("the token lives longer than any token Raydeck issues")
        identity = Identity(sub=str(claims["sub"]), issued_at=issued, expires_at=expires)
        self.check(identity)
        return identity, str(claims["jti"])

    def check(self, identity: Identity) -> None:
        """Refused when a revocation covers this identity."""
        if identity.issued_at < self.not_before:
            raise Refused("access to this cluster was revoked")
        before = self.revoked.get(identity.sub)
        if before is not None and identity.issued_at < before:
            raise Refused("your access to this cluster was revoked")


class Sessions:
    """Browser sessions in a cookie: sub, issue time of the token it came from, expiry,
    signed with a key that lives as long as this process."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _mac(self, payload: bytes) -> str:
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def make(self, identity: Identity, now: float) -> tuple[str, int]:
        expires = now + SESSION_SECONDS
        payload = json.dumps([identity.sub, identity.issued_at, expires]).encode()
        value = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{value}.{self._mac(payload)}", SESSION_SECONDS

    def read(self, cookie: str, now: float) -> Identity:
        value, _, mac = cookie.partition(".")
        try:
            payload = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except ValueError:
            raise Refused("the session cookie is malformed") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise Refused("the session cookie is not valid (the gateway may have restarted)")
        sub, issued, expires = json.loads(payload)
        if now >= expires:
            raise Refused("the session has expired")
        return Identity(sub=str(sub), issued_at=float(issued), expires_at=float(expires))


class LoopServer:
    """An aiohttp server on its own asyncio loop in a daemon thread, with a client for
    its upstreams (the gateway, and the serve token gate of serve_gate.py). With `tls`
    it speaks HTTPS only, with the node's certificate, and serves a renewed one from the
    next handshake on (NodeTLS.renew)."""

    what = "the access gateway"  # for log lines and errors
    thread_name = "raydeck-gateway"

    def __init__(self, *, host: str, port: int, tls: NodeTLS | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self._ssl: ssl.SSLContext | None = tls.server_context() if tls is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"{self.what} did not start in time")
        if self._error is not None:
            raise RuntimeError(f"{self.what} could not start: {self._error}")
        if self.tls is not None:
            self.tls.on_renewal(self.reload_certificate)
        logger.info("%s listening on %s:%d", self.what, self.host, self.port)

    def reload_certificate(self, timeout: float = 5.0) -> None:
        """Serve the certificate now in the node's files (a renewal) from the next
        handshake on; open connections keep theirs. Loaded on the server's own loop, so
        no handshake reads the context while it changes."""
        loop, context, tls = self._loop, self._ssl, self.tls
        if loop is None or context is None or tls is None:
            return

        async def load() -> None:
            tls.load(context)

        asyncio.run_coroutine_threadsafe(load(), loop).result(timeout)
        logger.info("%s: serving the renewed certificate", self.what)

    def stop(self, timeout: float = 5.0) -> None:
        if self.tls is not None:
            self.tls.forget(self.reload_certificate)
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():  # never started, or stopped
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        thread.join(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._client = aiohttp.ClientSession(
            timeout=UPSTREAM_TIMEOUT, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self._ssl
        )
        await site.start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    def _ready_client(self) -> aiohttp.ClientSession:
        if self._client is None:
            raise RuntimeError(f"{self.what} is not started")
        return self._client


class Gateway(LoopServer):
    """The gateway server. `upstreams` maps app names ("dashboard", "jupyter",
    "grafana") to local ports; `policy` may be replaced or updated at any time."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        policy: AccessPolicy,
        upstreams: dict[str, int],
        tls: NodeTLS,
        ray_token: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port, tls=tls)
        self.policy = policy
        self.upstreams = dict(upstreams)
        self.ray_token = ray_token  # added to what the dashboard gets (Ray's token auth)
        self.sessions = Sessions()
        self.cookie_name = COOKIE_PREFIX + policy.cluster_id.replace("-", "")
        self._used_link_tokens: dict[str, float] = {}  # jti -> exp: links work once

    def serve(self, app: str, port: int) -> None:
        """Put an app a handler started later (the workspace's sshd) behind the gateway
        (any thread: one dict assignment)."""
        self.upstreams[app] = port

    # -- life -------------------------------------------------------------------------

    # -- requests ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not request.path.startswith(CROSS_ORIGIN_PREFIX):
            return await self._handle(request)
        if request.method == "OPTIONS":  # the browser's preflight carries no token
            return web.Response(status=204, headers=_cross_origin(preflight=True))
        if "authorization" not in request.headers:
            return self.refuse("send a token: Authorization: Bearer <token>", _cross_origin())
        response = await self._handle(request)
        if not response.prepared:
            response.headers.update(_cross_origin())
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        now = time.time()
        link_token = request.query.get(TOKEN_PARAM)
        try:
            identity = self.authenticate(request, now)
        except Refused as exc:
            return self.refuse(str(exc))
        activity.note_connection()  # someone uses the cluster: it is not idle (activity.py)
        if link_token and request.method in ("GET", "HEAD"):
            # A browser link: keep a session in a cookie, and drop the token from the URL.
            query = [(k, v) for k, v in request.query.items() if k != TOKEN_PARAM]
            clean = request.path + (f"?{urlencode(query)}" if query else "")
            response = web.Response(status=303, headers={"Location": clean})
            value, max_age = self.sessions.make(identity, now)
            response.set_cookie(
                self.cookie_name, value, max_age=max_age, path="/", httponly=True, samesite="Lax"
            )
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["Cache-Control"] = "no-store"
            return response
        job_log = JOB_LOG_PATH.fullmatch(request.path)
        if job_log and request.method in ("GET", "HEAD"):
            return await self.job_log_page(job_log[1])
        if request.path == SSH_PATH:
            return await self.ssh_tunnel(request, identity)
        app, port = self.route(request.path)
        if port is None:
            return web.Response(status=404, text=f"{app} is not available on this cluster.\n")
        headers = self.upstream_headers(request, app)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.proxy_websocket(request, port, headers)
        return await self.proxy(request, app, port, headers)

    def authenticate(self, request: web.Request, now: float) -> Identity:
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and bearer.strip():
            return self.policy.verify(bearer.strip())[0]
        link_token = request.query.get(TOKEN_PARAM)
        if link_token:
            identity, jti = self.policy.verify(link_token)
            self._spend_link_token(jti, identity.expires_at, now)
            return identity
        cookie = request.cookies.get(self.cookie_name)
        if cookie:
            identity = self.sessions.read(cookie, now)
            self.policy.check(identity)
            return identity
        raise Refused("send a token: Authorization: Bearer <token>")

    def _spend_link_token(self, jti: str, expires: float, now: float) -> None:
        for old in [k for k, exp in self._used_link_tokens.items() if exp + LEEWAY_SECONDS < now]:
            del self._used_link_tokens[old]
        if jti in self._used_link_tokens:
            raise Refused("this link was already used; open the cluster from Raydeck again")
        self._used_link_tokens[jti] = expires

    def refuse(self, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
        body = {"error": {"code": "unauthenticated", "message": f"Raydeck gateway: {reason}."}}
        return web.json_response(
            body,
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="raydeck"', **(headers or {})},
        )

    def route(self, path: str) -> tuple[str, int | None]:
        for app, prefix in APP_PREFIXES.items():
            if path == prefix or path.startswith(prefix + "/"):
                return app, self.upstreams.get(app)
        return "dashboard", self.upstreams.get("dashboard")

    def upstream_headers(self, request: web.Request, app: str = "dashboard") -> dict[str, str]:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() not in ("authorization", RAY_AUTH_HEADER)
        }  # the user's token is for the gateway, not the app
        if app == "dashboard" and self.ray_token:
            headers["Authorization"] = f"Bearer {self.ray_token}"
        cookies = [
            part
            for part in request.headers.get("Cookie", "").split(";")
            if part.strip() and not part.strip().startswith(COOKIE_PREFIX)
        ]
        headers.pop("Cookie", None)
        if cookies:
            headers["Cookie"] = ";".join(cookies).strip()
        # Host stays the browser's: apps that check Origin against it (Jupyter) see the
        # address the user reached.
        return headers

    def _upstream_url(self, request: web.Request, port: int) -> str:
        query = [(k, v) for k, v in request.query.items() if k != TOKEN_PARAM]
        return f"http://127.0.0.1:{port}{request.path}" + (f"?{urlencode(query)}" if query else "")

    async def proxy(
        self, request: web.Request, app: str, port: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        extra = _cross_origin() if request.path.startswith(CROSS_ORIGIN_PREFIX) else {}
        return await relay(
            self._ready_client(),
            request,
            self._upstream_url(request, port),
            headers,
            extra,
            unreachable=lambda exc: app_not_up(request, app, exc),
        )

    async def job_log_page(self, submission_id: str) -> web.Response:
        """The end of a submission's driver log from Ray's job API on this head, in a page
        that reloads itself every few seconds until the job has ended."""
        port = self.upstreams.get("dashboard")
        if port is None:
            return web.Response(status=404, text="Ray's dashboard is not available.\n")
        headers = {"Authorization": f"Bearer {self.ray_token}"} if self.ray_token else {}
        base = f"http://127.0.0.1:{port}/api/jobs/{submission_id}"
        client = self._ready_client()
        try:
            async with client.get(base, headers=headers) as answer:
                if answer.status == 404:
                    return web.Response(status=404, text="No such job on this cluster.\n")
                info = await answer.json(content_type=None)
            async with client.get(f"{base}/logs", headers=headers) as answer:
                logs = str((await answer.json(content_type=None) or {}).get("logs", ""))
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return web.Response(status=502, text=f"Ray's job API did not answer: {exc}\n")
        status = str((info or {}).get("status", ""))
        cut = len(logs) > JOB_LOG_TAIL_BYTES
        text = logs[-JOB_LOG_TAIL_BYTES:]
        refresh = (
            ""
            if status in RAY_FINAL
            else f'<meta http-equiv="refresh" content="{JOB_LOG_REFRESH_SECONDS}">'
        )
        note = "(the end of the log; the whole log is stored when the job ends)\n" if cut else ""
        page = (
            f'<!doctype html><html><head><meta charset="utf-8">{refresh}'
            f"<title>{html.escape(submission_id)} · driver log</title></head><body>"
            f'<p>Job <code>{html.escape(submission_id)}</code>: <strong id="status">'
            f"{html.escape(status)}</strong></p>"
            f'<pre id="log">{html.escape(note + text)}</pre></body></html>'
        )
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'none'",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def proxy_websocket(
        self, request: web.Request, port: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        client = self._ready_client()
        for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions"):
            headers.pop(name, None)
        # The subprotocol is negotiated end to end: the app picks one of the browser's, and
        # the browser is told the same. (Jupyter's kernel channel speaks a framing of its
        # own under "v1.kernel.websocket.jupyter.org"; Chrome refuses a handshake that
        # offered subprotocols and got none back, and a kernel never ran a cell.)
        offered = headers.pop("Sec-WebSocket-Protocol", "")
        protocols = [p.strip() for p in offered.split(",") if p.strip()]
        try:
            upstream = await client.ws_connect(
                self._upstream_url(request, port).replace("http://", "ws://", 1),
                headers=headers,
                protocols=protocols,
            )
        except (aiohttp.ClientError, OSError) as exc:
            return web.Response(status=502, text=f"The app behind the gateway is not up: {exc}\n")
        downstream = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            heartbeat=DOWNSTREAM_HEARTBEAT_SECONDS,
        )
        await downstream.prepare(request)

        async def pump(source: Any, sink: Any) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break

        tasks = [
            asyncio.ensure_future(pump(upstream, downstream)),
            asyncio.ensure_future(pump(downstream, upstream)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()
            await downstream.close()
        return downstream

    async def ssh_tunnel(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        """Pipe a WebSocket's binary messages to the workspace's sshd and back, until
        either side closes or the user's access is revoked."""
        if request.headers.get("Authorization", "")[:7].lower() != "bearer ":
            # Never a browser's session cookie: another site's page could open the socket.
            return self.refuse("/ssh takes a token in the Authorization header only")
        port = self.upstreams.get("ssh")
        if port is None:
            return web.Response(status=404, text="SSH is not running on this cluster.\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=400, text="Open /ssh as a WebSocket.\n")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            return web.Response(status=502, text=f"The workspace's sshd is not up: {exc}\n")
        downstream = web.WebSocketResponse(
            max_msg_size=4 * SSH_CHUNK, heartbeat=DOWNSTREAM_HEARTBEAT_SECONDS
        )
        await downstream.prepare(request)

        async def to_sshd() -> None:
            with contextlib.suppress(ConnectionError):  # sshd went: the tunnel ends
                async for message in downstream:
                    if message.type != aiohttp.WSMsgType.BINARY:
                        break
                    writer.write(message.data)
                    await writer.drain()

        async def from_sshd() -> None:
            with contextlib.suppress(ConnectionError):  # the client went: the tunnel ends
                while data := await reader.read(SSH_CHUNK):
                    await downstream.send_bytes(data)

        async def while_allowed() -> None:
            with contextlib.suppress(Refused):
                while True:
                    await asyncio.sleep(RECHECK_SECONDS)
                    self.policy.check(identity)
            logger.info("closing an SSH tunnel: its user's access was revoked")

        tasks = [asyncio.ensure_future(t()) for t in (to_sshd, from_sshd, while_allowed)]
        activity.ACTIVITY.session_opened("ssh")
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            activity.ACTIVITY.session_closed("ssh")
            for task in tasks:
                task.cancel()
            writer.close()
            await downstream.close()
        return downstream


def app_not_up(request: web.Request, app: str, exc: Exception) -> web.Response:
    """503 with Retry-After for a program; for a browser opening the app, a page that
    reloads itself until the app answers."""
    label = APP_LABELS.get(app, app)
    message = (
        f"{label} is not answering on this cluster. The head starts it a few seconds "
        f"after Ray is up; if this lasts, the cluster's logs say why. ({exc})"
    )
    headers = {"Retry-After": str(NOT_UP_RETRY_SECONDS), "Cache-Control": "no-store"}
    if request.method != "GET" or "text/html" not in request.headers.get("Accept", ""):
        return web.Response(status=503, text=message + "\n", headers=headers)
    page = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{NOT_UP_RETRY_SECONDS}">'
        f"<title>{html.escape(label)} is starting</title></head><body>"
        f"<p>{html.escape(message)}</p><p>This page reloads itself.</p></body></html>"
    )
    return web.Response(
        status=503,
        text=page,
        content_type="text/html",
        headers={**headers, "Content-Security-Policy": "default-src 'none'"},
    )


async def relay(
    client: aiohttp.ClientSession,
    request: web.Request,
    url: str,
    headers: dict[str, str],
    extra: Mapping[str, str] | None = None,
    unreachable: Callable[[Exception], web.Response] | None = None,
) -> web.StreamResponse:
    """Forward the request to `url` and stream the answer back (also serve_gate.py);
    `unreachable` answers when nothing listens there (else a 502)."""
    data = request.content if request.can_read_body else None
    try:
        upstream = await client.request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        )
    except (aiohttp.ClientError, OSError) as exc:
        if unreachable is not None:
            return unreachable(exc)
        return web.Response(status=502, text=f"The app behind the gateway is not up: {exc}\n")
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        response.headers.update(extra or {})
        if upstream.headers.get("Content-Length"):
            response.content_length = int(upstream.headers["Content-Length"])
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def _cross_origin(*, preflight: bool = False) -> dict[str, str]:
    headers = {"Access-Control-Allow-Origin": "*"}
    if preflight:
        headers["Access-Control-Allow-Methods"] = "GET, POST"
        headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        headers["Access-Control-Max-Age"] = "600"
    return headers


def bind_host(shared_machine: bool, address: str) -> str:
    """The local cloud shares one machine: listen on the node's (loopback) address only.
    A cloud head listens on every interface so users reach it from their laptops."""
    return address if shared_machine else os.environ.get("RAYDECK_GATEWAY_HOST", "0.0.0.0")  # noqa: S104


def start_for(
    config: Any, registration: Any, apps: Mapping[str, int], tls: NodeTLS
) -> Gateway | None:
    """The running gateway of a head node, or None: workers have none, nor do heads
    registered without an access key, a certificate or a gateway port (it never speaks
    plain HTTP)."""
    if registration.role != "head":
        return None
    port = config.ports.get("gateway")
    if not port or not registration.access_public_key or not tls.has_certificate():
        logger.warning("no access gateway: the registration has no access key, certificate or port")
        return None
    try:
        policy = AccessPolicy.from_pem(registration.cluster_id, registration.access_public_key)
        gateway = Gateway(
            host=bind_host(config.shared_machine, config.address),
            port=port,
            policy=policy,
            upstreams={"dashboard": config.ports["dashboard"], **apps},
            tls=tls,
            ray_token=registration.ray_auth_token,
        )
        gateway.start()
    except (ValueError, RuntimeError, OSError) as exc:
        # Ray still runs; users just cannot reach it from outside. Say so in the logs.
        logger.error("the access gateway did not start: %s", exc)
        return None
    return gateway
