"""The storage part of each cloud driver: signed upload and download URLs, object sizes
and listings under the cloud's log location.

Stand-ins: moto (in-process `mock_aws()`, which also answers `requests` sent to the
presigned URLs) for S3; for Cloud Storage, the fake JSON endpoint of gcp_fake.py behind
the driver's real HTTP calls, and the V4 signed URLs checked against the ones
google-cloud-storage (Google's own client) makes for the same key, time and object. The
local cloud is real: a folder, with tokens checked here and served in
tests/workloads/test_working_dirs.py."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import storage as gcs
from google.oauth2 import service_account

from clouds.providers.aws import AwsProvider
from clouds.providers.base import PermanentCloudError
from clouds.providers.gcp import GcpProvider
from clouds.providers.local import LocalProvider
from clouds.providers.local_storage import StorageTokenError

from .gcp_fake import FakeComputeServer
from .moto_account import moto_account
from .test_gcp_driver import StaticTokenCredentials

BODY = b"PK\x05\x06" + b"\0" * 18
SHA = hashlib.sha256(BODY).hexdigest()
REGION = "us-east-1"
SERVICE_ACCOUNT = "raydeck@customer.iam.gserviceaccount.com"


# --- S3 ------------------------------------------------------------------------------


@pytest.fixture
def s3_provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[AwsProvider]:
    with moto_account(monkeypatch, tmp_path, REGION):
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = boto3.client("iam").create_role(
            RoleName="raydeck", AssumeRolePolicyDocument=json.dumps(trust)
        )["Role"]["Arn"]
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="customer-logs")
        yield AwsProvider(
            cloud_id=uuid.uuid4(),
            region=REGION,
            role_arn=role,
            external_id="raydeck-ext",
            log_location="s3://customer-logs/raydeck",
        )


def test_s3_upload_url_stores_the_object_once_uploaded(s3_provider: AwsProvider) -> None:
    key = f"workdirs/{SHA}.zip"
    assert s3_provider.object_size(key=key) is None
    upload = s3_provider.upload_url(key=key, size=len(BODY), sha256=SHA, expires_in=60)
    assert upload.method == "PUT" and "X-Amz-Signature" in upload.url
    response = requests.put(upload.url, data=BODY, headers=upload.headers, timeout=10)
    assert response.status_code == 200, response.text
    assert s3_provider.object_size(key=key) == len(BODY)
    stored = boto3.client("s3", region_name=REGION).get_object(
        Bucket="customer-logs", Key=f"raydeck/raydeck-storage/{key}"
    )
    assert stored["Body"].read() == BODY
    assert s3_provider.object_uri(key=key) == f"s3://customer-logs/raydeck/raydeck-storage/{key}"
    download = s3_provider.download_url(key=key, expires_in=60)
    assert requests.get(download.url, timeout=10).content == BODY


def test_s3_upload_urls_sign_the_bodys_checksum(s3_provider: AwsProvider) -> None:
    """S3 refuses a body whose SHA-256 is not the signed x-amz-checksum-sha256 (moto does
    not check checksums, so this asserts the header is signed and must be sent)."""
    upload = s3_provider.upload_url(key="workdirs/a.zip", size=len(BODY), sha256=SHA, expires_in=60)
    signed = parse_qs(urlsplit(upload.url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert "x-amz-checksum-sha256" in signed
    assert base64.b64decode(upload.headers["x-amz-checksum-sha256"]).hex() == SHA


def test_s3_lists_a_prefix_in_key_order(s3_provider: AwsProvider) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    for name in ("jobs/2/driver.log", "jobs/1/driver.log", "workdirs/x.zip"):
        s3.put_object(Bucket="customer-logs", Key=f"raydeck/raydeck-storage/{name}", Body=b"ab")
    listed = s3_provider.list_objects(prefix="jobs/")
    assert [(o.key, o.size) for o in listed] == [("jobs/1/driver.log", 2), ("jobs/2/driver.log", 2)]


def test_storage_without_a_log_location_says_what_to_set(s3_provider: AwsProvider) -> None:
    s3_provider.log_location = ""
    with pytest.raises(PermanentCloudError, match="log location"):
        s3_provider.upload_url(key="workdirs/a.zip", size=1, sha256=SHA, expires_in=60)


def test_keys_never_leave_the_storage_folder(s3_provider: AwsProvider) -> None:
    for key in ("../escape", "/abs", "a/../../b", ""):
        with pytest.raises(ValueError):
            s3_provider.download_url(key=key, expires_in=60)


# --- Cloud Storage ---------------------------------------------------------------------


@pytest.fixture
def key_credentials() -> service_account.Credentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "client_email": SERVICE_ACCOUNT,
        "private_key": pem,
        "private_key_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
        "project_id": "customer",
    }
    return service_account.Credentials.from_service_account_info(info)


@pytest.fixture
def gcs_server() -> Iterator[FakeComputeServer]:
    with FakeComputeServer() as server:
        yield server


def gcs_provider(server: FakeComputeServer, credentials: Any) -> GcpProvider:
    class Impersonated(StaticTokenCredentials):
        service_account_email = SERVICE_ACCOUNT

    return GcpProvider(
        cloud_id=uuid.uuid4(),
        project_id="raydeck-test",
        zones=["us-central1-a"],
        log_location="gs://customer-logs/raydeck",
        credentials=Impersonated(),
        api_endpoint=server.endpoint,
        storage_endpoint=server.endpoint,
        signer=credentials.sign_bytes,
        call_timeout=5.0,
    )


@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_gcs_signed_urls_are_googles_v4_urls(
    gcs_server: FakeComputeServer, key_credentials: Any, method: str
) -> None:
    provider = gcs_provider(gcs_server, key_credentials)
    key = f"workdirs/{SHA}.zip"
    now = dt.datetime(2026, 12, 7, 0, 5, tzinfo=dt.UTC)
    with time_machine.travel(now, tick=False):
        if method == "PUT":
            ours = provider.upload_url(key=key, size=len(BODY), sha256=SHA, expires_in=900)
            headers = {"x-goog-content-length-range": f"{len(BODY)},{len(BODY)}"}
        else:
            ours = provider.download_url(key=key, expires_in=900)
            headers = {}
        client = gcs.Client(project="customer", credentials=key_credentials)
        googles = (
            client.bucket("customer-logs")
            .blob(f"raydeck/raydeck-storage/{key}")
            .generate_signed_url(
                version="v4",
                expiration=dt.timedelta(seconds=900),
                method=method,
                headers=dict(headers) or None,  # it adds Host to the dict it gets
                api_access_endpoint=gcs_server.endpoint,
            )
        )
    assert ours.url == googles
    assert ours.headers == headers  # the client must send the signed length range
    assert ours.expires_at == now + dt.timedelta(seconds=900)


def test_gcs_object_sizes_and_listing(gcs_server: FakeComputeServer, key_credentials: Any) -> None:
    provider = gcs_provider(gcs_server, key_credentials)
    assert provider.object_size(key="jobs/1/driver.log") is None
    for name, size in (
        ("jobs/2/a.log", 5),
        ("jobs/1/driver.log", 3),
        ("jobs/3/b.log", 1),
        ("x", 9),
    ):
        gcs_server.fake.objects[("customer-logs", f"raydeck/raydeck-storage/{name}")] = size
    assert provider.object_size(key="jobs/1/driver.log") == 3
    listed = provider.list_objects(prefix="jobs/")
    assert [(o.key, o.size) for o in listed] == [
        ("jobs/1/driver.log", 3),
        ("jobs/2/a.log", 5),
        ("jobs/3/b.log", 1),
    ]
    assert provider.object_uri(key="x") == "gs://customer-logs/raydeck/raydeck-storage/x"


# --- Local -----------------------------------------------------------------------------


def local(tmp_path: Path, secret: bytes = b"k" * 32) -> LocalProvider:
    return LocalProvider(cloud_id=uuid.uuid4(), root=tmp_path, storage_secret=secret)


def token_of(url: str) -> str:
    return url.split("token=", 1)[1]


def test_local_tokens_are_bound_to_method_key_cloud_and_time(tmp_path: Path) -> None:
    provider = local(tmp_path)
    upload = provider.upload_url(key="workdirs/a.zip", size=3, sha256=SHA, expires_in=60)
    token = token_of(upload.url)
    grant = provider.check_token(token=token, method="PUT", key="workdirs/a.zip")
    assert (grant.size, grant.sha256) == (3, SHA)
    with pytest.raises(StorageTokenError):
        provider.check_token(token=token, method="PUT", key="workdirs/b.zip")
    with pytest.raises(StorageTokenError):
        provider.check_token(token=token, method="GET", key="workdirs/a.zip")
    other_cloud = LocalProvider(cloud_id=uuid.uuid4(), root=tmp_path, storage_secret=b"k" * 32)
    with pytest.raises(StorageTokenError):
        other_cloud.check_token(token=token, method="PUT", key="workdirs/a.zip")
    with pytest.raises(StorageTokenError):
        local(tmp_path, b"another installation").check_token(
            token=token, method="PUT", key="workdirs/a.zip"
        )
    with time_machine.travel(time.time() + 61), pytest.raises(StorageTokenError, match="expired"):
        provider.check_token(token=token, method="PUT", key="workdirs/a.zip")


def test_local_objects_list_and_are_readable_by_nodes_as_files(tmp_path: Path) -> None:
    provider = local(tmp_path)
    for key in ("jobs/2/x", "jobs/1/y", "other"):
        path = tmp_path / "storage" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"12")
    assert [o.key for o in provider.list_objects(prefix="jobs/")] == ["jobs/1/y", "jobs/2/x"]
    assert provider.object_size(key="jobs/1/y") == 2
    assert provider.object_uri(key="other") == (tmp_path / "storage" / "other").as_uri()
