"""Log sinks for object stores, standard library only: S3 (SigV4-signed PUTs) and Google
Cloud Storage (media uploads with the metadata server's token).

Objects cannot be appended to, so every `append` writes one new object,
`<prefix>/<cluster_id>/<node_id>/<name>/<milliseconds>-<bytes>`; reading a log back is
listing its folder and joining the chunks in name order.

Credentials are the node's own, found the way the clouds' SDKs find them: on AWS the
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN variables or else the instance
profile through IMDSv2; on GCP the metadata server's token for the VM's service account.
The standard endpoint overrides work too (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL,
STORAGE_EMULATOR_HOST, GCE_METADATA_HOST).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

IMDS = "http://169.254.169.254"
GCE_METADATA = "metadata.google.internal"
TIMEOUT = 10.0
EXPIRY_MARGIN = 300.0  # seconds: refresh credentials this long before they lapse


class StoreError(OSError):
    """An upload (or a credential lookup for it) failed; the shipper tries again later."""


def _request(
    url: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise StoreError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url, data=data, method=method, headers=dict(headers or {})
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise StoreError(f"{method} {url}: HTTP {exc.code} {exc.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StoreError(f"{method} {url}: {exc}") from None


def chunk_key(base: str, name: str, size: int) -> str:
    return f"{base}/{name}/{int(time.time() * 1000):013d}-{size}"


# --- S3 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str = ""
    expires_at: float = float("inf")


def sigv4_headers(
    *,
    method: str,
    url: str,
    region: str,
    service: str,
    credentials: AwsCredentials,
    payload: bytes,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that sign one request with AWS Signature Version 4 (no query string;
    `url`'s path already URI-encoded, as S3 wants it signed)."""
    now = now or datetime.now(UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    parts = urlsplit(url)
    payload_hash = hashlib.sha256(payload).hexdigest()
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    if credentials.session_token:
        headers["x-amz-security-token"] = credentials.session_token
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            parts.query,
            "".join(f"{k}:{headers[k].strip()}\n" for k in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{credentials.secret_access_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


class AwsNodeIdentity:
    """The node's AWS credentials and region: the environment's, else the instance's."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self._cached: AwsCredentials | None = None

    def _imds(self, path: str) -> str:
        token = _request(
            f"{IMDS}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
        )
        return _request(
            f"{IMDS}/latest/{path}", headers={"X-aws-ec2-metadata-token": token.decode()}
        ).decode()

    def region(self) -> str:
        return (
            self.env.get("AWS_REGION")
            or self.env.get("AWS_DEFAULT_REGION")
            or self._imds("meta-data/placement/region").strip()
        )

    def credentials(self) -> AwsCredentials:
        if self.env.get("AWS_ACCESS_KEY_ID") and self.env.get("AWS_SECRET_ACCESS_KEY"):
            return AwsCredentials(
                self.env["AWS_ACCESS_KEY_ID"],
                self.env["AWS_SECRET_ACCESS_KEY"],
                self.env.get("AWS_SESSION_TOKEN", ""),
            )
        if self._cached is None or self._cached.expires_at - time.time() < EXPIRY_MARGIN:
            role = self._imds("meta-data/iam/security-credentials/").split()[0]
            data = json.loads(self._imds(f"meta-data/iam/security-credentials/{role}"))
            expires = datetime.fromisoformat(data["Expiration"].replace("Z", "+00:00"))
            self._cached = AwsCredentials(
                data["AccessKeyId"],
                data["SecretAccessKey"],
                data.get("Token", ""),
                expires.timestamp(),
            )
        return self._cached


class S3Sink:
    """Each append is one PUT of a new object under s3://bucket/<base>/."""

    def __init__(self, bucket: str, base: str, identity: AwsNodeIdentity | None = None) -> None:
        self.bucket, self.base = bucket, base.strip("/")
        self.identity = identity or AwsNodeIdentity()
        self._region = ""

    def _url(self, key: str) -> str:
        path = quote(key, safe="/-_.~")
        endpoint = self.identity.env.get("AWS_ENDPOINT_URL_S3") or self.identity.env.get(
            "AWS_ENDPOINT_URL"
        )
        if endpoint:
            return f"{endpoint.rstrip('/')}/{self.bucket}/{path}"
        return f"https://{self.bucket}.s3.{self._region}.amazonaws.com/{path}"

    def append(self, name: str, data: bytes) -> None:
        self._region = self._region or self.identity.region()
        url = self._url(chunk_key(self.base, name, len(data)))
        headers = sigv4_headers(
            method="PUT",
            url=url,
            region=self._region,
            service="s3",
            credentials=self.identity.credentials(),
            payload=data,
        )
        # Without it urllib says form data, and S3 would store that type.
        headers["Content-Type"] = "application/octet-stream"
        _request(url, method="PUT", data=data, headers=headers)


# --- Google Cloud Storage ---------------------------------------------------------------


class GcsSink:
    """Each append is one media upload of a new object under gs://bucket/<base>/."""

    def __init__(self, bucket: str, base: str, env: Mapping[str, str] | None = None) -> None:
        self.bucket, self.base = bucket, base.strip("/")
        self.env = os.environ if env is None else env
        self._token: tuple[str, float] | None = None

    def _access_token(self) -> str:
        if self._token is None or self._token[1] - time.time() < EXPIRY_MARGIN:
            host = self.env.get("GCE_METADATA_HOST") or GCE_METADATA
            url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
            data = json.loads(_request(url, headers={"Metadata-Flavor": "Google"}))
            self._token = (data["access_token"], time.time() + float(data.get("expires_in", 0)))
        return self._token[0]

    def append(self, name: str, data: bytes) -> None:
        emulator = self.env.get("STORAGE_EMULATOR_HOST", "").rstrip("/")
        root = emulator or "https://storage.googleapis.com"
        key = quote(chunk_key(self.base, name, len(data)), safe="")
        bucket = quote(self.bucket, safe="")
        url = f"{root}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={key}"
        headers = {
            "Authorization": f"Bearer {self._access_token()}",
            "Content-Type": "application/octet-stream",
        }
        _request(url, method="POST", data=data, headers=headers)


# --- one whole object (a job attempt's archived driver log) -----------------------------


def put_object(uri: str, data: bytes, env: Mapping[str, str] | None = None) -> None:
    """Store `data` as the object `uri` names (s3://bucket/key, gs://bucket/key, or
    file:///path on the local cloud, whose nodes share the machine's folder), with the
    node's own identity, as text. StoreError when it could not be stored."""
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme == "file":
        _put_file(parts.path, data)
        return
    if parts.scheme not in ("s3", "gs") or not parts.netloc or not key:
        raise StoreError(f"not an object URI: {uri}")
    if parts.scheme == "s3":
        sink = S3Sink(parts.netloc, "", AwsNodeIdentity(env))
        sink._region = sink._region or sink.identity.region()
        url = sink._url(key)
        headers = sigv4_headers(
            method="PUT",
            url=url,
            region=sink._region,
            service="s3",
            credentials=sink.identity.credentials(),
            payload=data,
        )
        headers["Content-Type"] = TEXT
        _request(url, method="PUT", data=data, headers=headers)
        return
    gcs = GcsSink(parts.netloc, "", env)
    emulator = gcs.env.get("STORAGE_EMULATOR_HOST", "").rstrip("/")
    root = emulator or "https://storage.googleapis.com"
    url = (
        f"{root}/upload/storage/v1/b/{quote(parts.netloc, safe='')}/o"
        f"?uploadType=media&name={quote(key, safe='')}"
    )
    headers = {"Authorization": f"Bearer {gcs._access_token()}", "Content-Type": TEXT}
    _request(url, method="POST", data=data, headers=headers)


TEXT = "text/plain; charset=utf-8"


def _put_file(path: str, data: bytes) -> None:
    """Written aside and renamed into place: a reader never sees half a log."""
    if not path.startswith("/"):
        raise StoreError(f"not an absolute path: {path}")
    folder = os.path.dirname(path)
    temp = f"{path}.part-{os.getpid()}"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except OSError as exc:
        raise StoreError(f"writing {path}: {exc}") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
