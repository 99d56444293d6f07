"""The control plane's agent API (JSON over HTTP), with urllib only.

Errors are sorted by what the agent should do about them:
  Unauthorized / NotFound  the token or credential is refused (or the node is gone);
  PermanentError           any other answer that retrying cannot fix (4xx, redirects);
  TransientError           the control plane is down, overloaded or unreachable: retry.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__

REGISTER_PATH = "/agent/v1/register"
HEARTBEAT_PATH = "/agent/v1/heartbeat"
DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 1 << 20


class ApiError(Exception):
    def __init__(
        self, message: str, status: int | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds the control plane asked us to wait (503, 429)


class Unauthorized(ApiError):
    """401: the bearer token is invalid, already used or revoked."""


class NotFound(ApiError):
    """404: the control plane no longer knows this node."""


class PermanentError(ApiError):
    """An answer that the same request will get again: do not retry it."""


class TransientError(ApiError):
    """5xx, 408, 429, a timeout or a network error: worth retrying."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would resend the bearer token to wherever Location points (and turn
    # the POST into a GET). Fail instead, so a wrong RAYDECK_URL is noticed.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ControlPlane:
    """The agent API. Over https:// the control plane's certificate is always verified:
    against the system's CAs, or `ca_bundle` (RAYDECK_CA_BUNDLE) when given."""

    def __init__(
        self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT, ca_bundle: Path | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._opener = urllib.request.build_opener(
            _NoRedirects, urllib.request.HTTPSHandler(context=context)
        )

    def register(self, bootstrap_token: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(REGISTER_PATH, bootstrap_token, body, self.timeout)

    def heartbeat(
        self, credential: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        return self._post(HEARTBEAT_PATH, credential, body, timeout or self.timeout)

    def _post(self, path: str, token: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        url = self.base_url + path
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in Config
            url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"raydeck-agent/{__version__}",
            },
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                raw = response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            raise _http_error(path, exc) from None
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransientError(f"POST {url} failed: {reason}") from None
        try:
            data = json.loads(raw)
        except ValueError:
            # A proxy's HTML error page with status 200: the real server may be back soon.
            raise TransientError(f"POST {url} answered with something that is not JSON") from None
        if not isinstance(data, dict):
            raise TransientError(f"POST {url} answered with JSON that is not an object")
        return data


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    """Retry-After in seconds (the control plane sends seconds, never a date)."""
    try:
        value = float(exc.headers.get("Retry-After", "") if exc.headers is not None else "")
    except ValueError:
        return None
    return value if 0 <= value <= 3600 else None


def _http_error(path: str, exc: urllib.error.HTTPError) -> ApiError:
    status = exc.code
    detail = ""
    try:
        detail = exc.read(2000).decode("utf-8", "replace").strip()
    except OSError:
        pass
    finally:
        exc.close()
    message = f"POST {path} answered {status}" + (f": {detail}" if detail else "")
    if status == 401:
        return Unauthorized(message, status)
    if status == 404:
        return NotFound(message, status)
    if status in (408, 429) or status >= 500:
        return TransientError(message, status, retry_after=_retry_after(exc))
    if 300 <= status < 400:
        location = exc.headers.get("Location", "?") if exc.headers else "?"
        return PermanentError(
            f"POST {path} was redirected ({status}) to {location}; set RAYDECK_URL to the "
            "control plane's final URL",
            status,
        )
    return PermanentError(message, status)


@dataclass
class Registration:
    """What the control plane told this node when it registered."""

    credential: str
    cluster_id: str
    node_id: str
    role: str  # "head" | "worker"
    heartbeat_interval: float
    num_cpus: float
    memory_mb: int
    head_address: str | None
    temp_dir: str
    log_location: str | None = None
    # Optional; the agent defaults the object store to 30% of memory_mb.
    object_store_memory_mb: int | None = None
    # Heads: the PEM public key the access gateway checks tokens with (gateway.py).
    access_public_key: str | None = None
    # {app: port} of the apps (apps.py) this node reported when it registered.
    app_ports: dict[str, int] = field(default_factory=dict)
    # Optional; the dead-man's switch's delay (deadman.py), else RAYDECK_DEADMAN_SECONDS.
    deadman_seconds: float | None = None
    # The cluster's secret for Ray's token authentication (ray_process.ray_env).
    ray_auth_token: str | None = None
    # Heads: the gateway's certificate (PEM chain) signed from the CSR this node sent;
    # kept in the node's files (tls.py), which renewals replace.
    gateway_certificate: str | None = None

    @classmethod
    def from_response(
        cls, data: dict[str, Any], *, num_cpus: float = 0.0, memory_mb: int = 0
    ) -> Registration:
        """Validate a register answer. A malformed one is permanent: the token is spent.
        num_cpus/memory_mb (RAYDECK_CPUS/RAYDECK_MEMORY_MB) fill in a "ray" without them."""
        ray = data.get("ray")
        try:
            if not isinstance(ray, dict):
                raise ValueError("no 'ray' object")
            role = str(data["role"])
            if role not in ("head", "worker"):
                raise ValueError(f"role {role!r} is neither 'head' nor 'worker'")
            credential = str(data["credential"])
            if not credential:
                raise ValueError("empty credential")
            temp_dir = str(ray["temp_dir"])
            if not temp_dir.startswith("/"):
                raise ValueError(f"temp_dir {temp_dir!r} is not an absolute path")
            osm = ray.get("object_store_memory_mb")
            access: dict[str, Any] = data["access"] if isinstance(data.get("access"), dict) else {}
            return cls(
                credential=credential,
                cluster_id=str(data["cluster_id"]),
                node_id=str(data["node_id"]),
                role=role,
                heartbeat_interval=clamp_interval(data.get("heartbeat_interval")),
                num_cpus=float(ray.get("num_cpus", num_cpus)),
                memory_mb=int(ray.get("memory_mb", memory_mb)),
                head_address=str(ray["head_address"]) if ray.get("head_address") else None,
                temp_dir=temp_dir,
                log_location=str(data["log_location"]) if data.get("log_location") else None,
                object_store_memory_mb=int(osm) if osm else None,
                access_public_key=str(access["public_key"]) if access.get("public_key") else None,
                deadman_seconds=seconds_or_none(data.get("deadman_seconds")),
                ray_auth_token=str(ray["auth_token"]) if ray.get("auth_token") else None,
                gateway_certificate=(
                    str(access["certificate"]) if access.get("certificate") else None
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"the register answer is malformed: {exc!r}") from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Registration:
        known = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in known})


def clamp_interval(value: object, default: float = 5.0) -> float:
    """The server picks the heartbeat interval; keep a bad value from spinning or stalling."""
    try:
        interval = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    if interval != interval:  # NaN
        return default
    return min(max(interval, 0.5), 300.0)


def seconds_or_none(value: object) -> float | None:
    """A non-negative number of seconds from an answer, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value >= 0 and value == value else None
