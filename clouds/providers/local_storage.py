"""The local cloud's object storage: a folder on this machine, `<cloud root>/storage/`.

The local cloud is this machine, so the control plane serves the folder itself, at
`<base URL>/storage/local/<cloud id>/<key>?token=…` (clouds/storage_views.py). The token
is what S3's and Cloud Storage's signatures are elsewhere: an HMAC over the cloud, the
method, the key, the expiry and (for an upload) the exact size and SHA-256 of the body,
so a URL cannot be used for another object, another cloud (another organization's), a
larger body or after it expires. Django-free: the secret and the base URL are passed in.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

from .base import SignedUrl, StoredObject, check_storage_key

STORAGE_DIR = "storage"
CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class StorageTokenError(Exception):
    """The URL's token is missing, forged, expired or for something else."""


class UploadRefused(Exception):
    """The body is not what the token allows (size or content); nothing was stored."""


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: `method` on `key`, and for an upload the body."""

    method: str
    key: str
    size: int | None
    sha256: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _mac(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


class LocalObjectStore:
    """The storage half of LocalProvider (which sets the three attributes below)."""

    cloud_id: uuid.UUID
    storage_dir: Path
    storage_url: str  # the control plane's base URL: it serves the folder
    storage_secret: bytes

    # -- signed URLs --

    def _token(
        self, *, method: str, key: str, expires_at: int, size: int | None, sha256: str
    ) -> str:
        claims = {"c": str(self.cloud_id), "m": method, "k": key, "e": expires_at}
        if size is not None:
            claims |= {"n": size, "h": sha256}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{_mac(self.storage_secret, payload)}"

    def _signed(
        self, method: str, key: str, expires_in: int, size: int | None = None, sha256: str = ""
    ) -> SignedUrl:
        check_storage_key(key)
        expires_at = int(time.time()) + expires_in
        token = self._token(method=method, key=key, expires_at=expires_at, size=size, sha256=sha256)
        url = (
            f"{self.storage_url.rstrip('/')}/storage/local/{self.cloud_id}/"
            f"{quote(key, safe='/')}?token={token}"
        )
        headers = {"Content-Length": str(size)} if size is not None else {}
        return SignedUrl(
            method=method,
            url=url,
            expires_at=datetime.fromtimestamp(expires_at, UTC),
            headers=headers,
        )

    def upload_url(self, *, key: str, size: int, sha256: str, expires_in: int) -> SignedUrl:
        return self._signed("PUT", key, expires_in, size, sha256.lower())

    def download_url(self, *, key: str, expires_in: int) -> SignedUrl:
        return self._signed("GET", key, expires_in)

    def check_token(self, *, token: str, method: str, key: str) -> Grant:
        """What `token` allows for `method` on `key` of this cloud, or StorageTokenError."""
        payload, _, mac = token.partition(".")
        if (
            not self.storage_secret
            or not payload
            or not hmac.compare_digest(mac, _mac(self.storage_secret, payload))
        ):
            raise StorageTokenError("This link is not valid.")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error) as exc:
            raise StorageTokenError("This link is not valid.") from exc
        if (claims.get("c"), claims.get("m"), claims.get("k")) != (
            str(self.cloud_id),
            method,
            key,
        ):
            raise StorageTokenError("This link is for another object.")
        if int(claims.get("e", 0)) < time.time():
            raise StorageTokenError("This link has expired: ask Raydeck for a new one.")
        return Grant(method=method, key=key, size=claims.get("n"), sha256=claims.get("h", ""))

    # -- the folder --

    def _path(self, key: str) -> Path:
        return self.storage_dir / check_storage_key(key)

    def object_size(self, *, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list_objects(self, *, prefix: str) -> list[StoredObject]:
        if not self.storage_dir.is_dir():
            return []
        found = []
        for path in self.storage_dir.rglob("*"):
            key = path.relative_to(self.storage_dir).as_posix()
            if key.startswith(prefix) and path.is_file() and not path.name.startswith("."):
                found.append(StoredObject(key=key, size=path.stat().st_size))
        return sorted(found, key=lambda o: o.key)

    def object_uri(self, *, key: str) -> str:
        return self._path(key).resolve().as_uri()  # file://: the nodes are this machine

    def receive(self, grant: Grant, body: Readable) -> None:
        """Store an upload the token allowed: exactly `grant.size` bytes whose SHA-256 is
        `grant.sha256`, written aside and renamed into place, so a reader never sees
        half an object and a refused body leaves nothing behind."""
        if grant.size is None:
            raise UploadRefused("This link does not allow an upload.")
        target = self._path(grant.key)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        digest = hashlib.sha256()
        received = 0
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks(body, grant.size + 1):
                    received += len(chunk)
                    if received > grant.size:
                        raise UploadRefused(
                            f"The body is larger than the {grant.size} bytes signed for."
                        )
                    digest.update(chunk)
                    out.write(chunk)
            if received != grant.size:
                raise UploadRefused(f"Expected {grant.size} bytes, received {received}.")
            if grant.sha256 and digest.hexdigest() != grant.sha256:
                raise UploadRefused("The body's SHA-256 is not the one signed for.")
            os.replace(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def open_object(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")  # the response closes it


def _chunks(body: Readable, limit: int) -> Iterator[bytes]:
    """Up to `limit` bytes of `body`, a chunk at a time."""
    left = limit
    while left > 0:
        chunk = body.read(min(CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk
