"""A fake OpenID Connect provider for the tests: the stand-in for a company's IdP on
the internet. It is a real HTTP server on 127.0.0.1 (a free port), serving discovery,
JWKS, authorize, token and userinfo, with an RSA key generated in the test. It checks
what a real IdP checks (client credentials, redirect URI, one use per code, the PKCE
verifier against the S256 challenge) and mints ID tokens the test can spoil on purpose
(`id_token_claims`, `id_token_header`, `sign_with`, `jwks_status`, ...)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DROP = object()  # a claim or header value that means "leave it out"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Person:
    sub: str
    email: str
    name: str = ""
    groups: list[str] = field(default_factory=list)


@dataclass
class FakeOidcIdp:
    client_id: str = "raydeck-client"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    kid: str = "idp-key-1"
    person: Person = field(default_factory=lambda: Person("user-1", "someone@example.test"))
    # Spoilers for the next ID token, and for the endpoints.
    id_token_claims: dict[str, Any] = field(default_factory=dict)
    id_token_header: dict[str, Any] = field(default_factory=dict)
    sign_with: str = "key"  # "key", "none" (alg none), "hs256-public" (alg confusion)
    other_key: rsa.RSAPrivateKey | None = None  # sign with this key under our kid
    jwks_status: int = 200
    jwks_body: bytes | None = None
    discovery_overrides: dict[str, Any] = field(default_factory=dict)
    userinfo_overrides: dict[str, Any] = field(default_factory=dict)
    # What the IdP saw.
    get_paths: list[str] = field(default_factory=list)  # every GET, e.g. "/jwks"
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    token_refusals: list[str] = field(default_factory=list)
    _codes: dict[str, dict[str, str]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    # --- lifecycle ---

    def start(self) -> FakeOidcIdp:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                idp._get(self)

            def do_POST(self) -> None:
                idp._post(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def issuer(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/idp"

    # --- documents ---

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            **self.discovery_overrides,
        }

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def id_token(self, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": self.person.sub,
            "email": self.person.email,
            "email_verified": True,
            "name": self.person.name,
            "groups": self.person.groups,
            "iat": now,
            "exp": now + 300,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(self.id_token_claims)
        claims = {k: v for k, v in claims.items() if v is not DROP}
        header = {"kid": self.kid, **self.id_token_header}
        header = {k: v for k, v in header.items() if v is not DROP}
        if self.sign_with == "none":
            return jwt.encode(claims, None, algorithm="none", headers=header)
        if self.sign_with == "hs256-public":
            # Algorithm confusion: an HMAC keyed with the IdP's *public* key.
            public_pem = self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", **header}).encode())
            body = b64url(json.dumps(claims).encode())
            mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
            return f"{head}.{body}.{b64url(mac)}"
        key = self.other_key or self.key
        return jwt.encode(claims, key, algorithm="RS256", headers=header)

    # --- HTTP ---

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        path = url.path.removeprefix("/idp")
        self.get_paths.append(path)
        if path == "/.well-known/openid-configuration":
            self._send(handler, 200, self.discovery())
        elif path == "/jwks":
            body = self.jwks_body if self.jwks_body is not None else self.jwks()
            self._send(handler, self.jwks_status, body)
        elif path == "/authorize":
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            self.authorize_requests.append(params)
            code = secrets.token_urlsafe(16)
            self._codes[code] = params
            query = urlencode({"code": code, "state": params.get("state", "")})
            target = f"{params['redirect_uri']}?{query}"
            handler.send_response(302)
            handler.send_header("Location", target)
            handler.end_headers()
        elif path == "/userinfo":
            p = self.person
            claims = {"sub": p.sub, "email": p.email, "name": p.name, "groups": p.groups}
            self._send(handler, 200, {**claims, **self.userinfo_overrides})
        else:
            self._send(handler, 404, {"error": "not_found"})

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        if urlsplit(handler.path).path.removeprefix("/idp") != "/token":
            self._send(handler, 404, {"error": "not_found"})
            return
        length = int(handler.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        self.token_requests.append(form)
        refusal = self._check_token_request(handler, form)
        if refusal:
            self.token_refusals.append(refusal)
            self._send(handler, 400, {"error": "invalid_grant", "error_description": refusal})
            return
        authorize = self._codes.pop(form["code"])
        self._send(
            handler,
            200,
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self.id_token(authorize.get("nonce")),
            },
        )

    def _check_token_request(self, handler: BaseHTTPRequestHandler, form: dict) -> str | None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != self.client_id or secret != self.client_secret:
            return "bad client credentials"
        authorize = self._codes.get(form.get("code", ""))
        if authorize is None:
            return "unknown or used code"
        if form.get("redirect_uri") != authorize.get("redirect_uri"):
            return "redirect_uri differs"
        if authorize.get("code_challenge_method") != "S256":
            return "no PKCE S256 challenge"
        verifier = form.get("code_verifier", "")
        expected = b64url(hashlib.sha256(verifier.encode()).digest())
        if not verifier or not hmac.compare_digest(expected, authorize.get("code_challenge", "")):
            self._codes.pop(form["code"], None)
            return "PKCE verifier does not match the challenge"
        return None
