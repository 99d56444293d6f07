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


class NotFound(StoreError):
    """No object by that name (HTTP 404, or a missing file on the local cloud)."""


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
        error = NotFound if exc.code == 404 else StoreError
        raise error(f"{method} {url}: HTTP {exc.code} {exc.read()[:300]!r}") from None
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


# --- whole objects (a job attempt's archived driver log, a workspace's files) --------

TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"


class ObjectClient:
    """Stores and reads whole objects by URI (s3://bucket/key, gs://bucket/key, or
    file:///path on the local cloud, whose nodes share the machine's folder) with the
    node's own identity, which it keeps between calls (one credential lookup, not one
    per object). StoreError when a call fails; NotFound when there is no such object."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.aws = AwsNodeIdentity(env)
        self.gcs = GcsSink("", "", env)  # its token, kept until it nearly lapses
        self._region = ""

    def _s3(self, method: str, key: str, bucket: str, data: bytes) -> tuple[str, dict[str, str]]:
        self._region = self._region or self.aws.region()
        sink = S3Sink(bucket, "", self.aws)
        sink._region = self._region
        url = sink._url(key)
        headers = sigv4_headers(
            method=method,
            url=url,
            region=self._region,
            service="s3",
            credentials=self.aws.credentials(),
            payload=data,
        )
        return url, headers

    def _gcs_root(self) -> str:
        return self.gcs.env.get("STORAGE_EMULATOR_HOST", "").rstrip("/") or (
            "https://storage.googleapis.com"
        )

    def put(self, uri: str, data: bytes, *, content_type: str = TEXT) -> None:
        scheme, bucket, key = _object_uri(uri)
        if scheme == "file":
            _put_file(key, data)
            return
        if scheme == "s3":
            url, headers = self._s3("PUT", key, bucket, data)
            method = "PUT"
        else:
            url = (
                f"{self._gcs_root()}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
                f"?uploadType=media&name={quote(key, safe='')}"
            )
            headers = {"Authorization": f"Bearer {self.gcs._access_token()}"}
            method = "POST"
        # Without it urllib says form data, and the store would keep that type.
        headers["Content-Type"] = content_type
        _request(url, method=method, data=data, headers=headers)

    def get(self, uri: str) -> bytes:
        scheme, bucket, key = _object_uri(uri)
        if scheme == "file":
            try:
                with open(key, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                raise NotFound(f"no such file: {key}") from None
            except OSError as exc:
                raise StoreError(f"reading {key}: {exc}") from None
        if scheme == "s3":
            url, headers = self._s3("GET", key, bucket, b"")
        else:
            url = (
                f"{self._gcs_root()}/storage/v1/b/{quote(bucket, safe='')}/o/"
                f"{quote(key, safe='')}?alt=media"
            )
            headers = {"Authorization": f"Bearer {self.gcs._access_token()}"}
        return _request(url, headers=headers)


def _object_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket, key) of an object URI; a file URI's key is its absolute path."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if not parts.path.startswith("/"):
            raise StoreError(f"not an absolute path: {uri}")
        return "file", "", parts.path
    key = parts.path.lstrip("/")
    if parts.scheme not in ("s3", "gs") or not parts.netloc or not key:
        raise StoreError(f"not an object URI: {uri}")
    return parts.scheme, parts.netloc, key


def put_object(uri: str, data: bytes, env: Mapping[str, str] | None = None) -> None:
    """Store `data` as the object `uri` names, as text (a driver log)."""
    ObjectClient(env).put(uri, data)


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
