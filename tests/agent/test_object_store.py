"""The agent's object-store log sinks, over real HTTP.

Stand-ins: for S3, moto in server mode (ThreadedMotoServer on 127.0.0.1; the agent is
standard library only, so it talks HTTP to it like to S3). moto does not check request
signatures, so the SigV4 signing is checked against botocore's own signer instead. For
GCS and the GCE metadata server, a small fake HTTP server in this file (loopback).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.server import ThreadedMotoServer
from raydeck_agent import logs
from raydeck_agent.object_store import AwsCredentials, GcsSink, S3Sink, sigv4_headers

CLUSTER, NODE = str(uuid.uuid4()), str(uuid.uuid4())
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_SESSION_TOKEN": "session",
    "AWS_REGION": "eu-west-1",
}


def ship_twice(sink: logs.LogSink, tmp_path: Path) -> bytes:
    source = tmp_path / "agent.log"
    source.write_text("registered as head node\n")
    shipper = logs.LogShipper(sink, lambda: [("agent.log", source)])
    shipper.ship()
    with open(source, "a") as f:
        f.write("ray started\n")
    shipper.ship()
    shipper.ship()  # nothing new: no object
    return source.read_bytes()


def test_sigv4_signature_is_botocores() -> None:
    url = "http://127.0.0.1:9000/raydeck-logs/prod/c1/n1/ray/raylet.out/0001700000000000-5"
    payload = b"hello"
    request = AWSRequest(method="PUT", url=url, data=payload)
    S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret", "session"), "s3", "eu-west-1").add_auth(
        request
    )
    when = datetime.strptime(request.headers["X-Amz-Date"] + "+0000", "%Y%m%dT%H%M%SZ%z")
    ours = sigv4_headers(
        method="PUT",
        url=url,
        region="eu-west-1",
        service="s3",
        credentials=AwsCredentials("AKIDEXAMPLE", "secret", "session"),
        payload=payload,
        now=when,
    )
    assert ours["Authorization"] == request.headers["Authorization"]


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL_S3": endpoint}.items():
        monkeypatch.setenv(name, value)
    try:
        yield endpoint
    finally:
        server.stop()


def test_logs_go_to_s3_in_chunks_that_join_to_the_file(moto_s3: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="eu-west-1")
    s3.create_bucket(
        Bucket="acme-logs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    sink = logs.sink_for("s3://acme-logs/raydeck", CLUSTER, NODE)
    assert isinstance(sink, S3Sink)
    content = ship_twice(sink, tmp_path)
    prefix = f"raydeck/{CLUSTER}/{NODE}/agent.log/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="acme-logs")["Contents"]]
    assert len(keys) == 2 and all(k.startswith(prefix) for k in keys)
    joined = b"".join(s3.get_object(Bucket="acme-logs", Key=k)["Body"].read() for k in sorted(keys))
    assert joined == content


def test_a_failed_upload_is_shipped_again_later(moto_s3: str, tmp_path: Path) -> None:
    sink = logs.sink_for("s3://missing-bucket/raydeck", CLUSTER, NODE)
    source = tmp_path / "agent.log"
    source.write_text("line\n")
    shipper = logs.LogShipper(sink, lambda: [("agent.log", source)])
    shipper.ship()  # NoSuchBucket: logged, the offset stays
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="eu-west-1")
    s3.create_bucket(
        Bucket="missing-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    shipper.ship()
    [entry] = s3.list_objects_v2(Bucket="missing-bucket")["Contents"]
    assert s3.get_object(Bucket="missing-bucket", Key=entry["Key"])["Body"].read() == b"line\n"


class FakeGoogle(BaseHTTPRequestHandler):
    """The GCE metadata server's token endpoint and GCS's media upload and download,
    nothing else."""

    objects: dict[tuple[str, str], bytes]
    tokens_seen: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if (
            self.path == "/computeMetadata/v1/instance/service-accounts/default/token"
            and self.headers.get("Metadata-Flavor") == "Google"
        ):
            self._answer(200, {"access_token": "ya29.node", "expires_in": 3599})
            return
        parts = urlsplit(self.path)
        bucket, _, name = parts.path.removeprefix("/storage/v1/b/").partition("/o/")
        data = self.objects.get((bucket, unquote(name)))
        if parse_qs(parts.query).get("alt") != ["media"] or data is None:
            self._answer(404, {"error": "not found"})
            return
        self.tokens_seen.append(self.headers.get("Authorization", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        bucket = parts.path.removeprefix("/upload/storage/v1/b/").removesuffix("/o")
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.tokens_seen.append(self.headers.get("Authorization", ""))
        if query.get("uploadType") != ["media"] or bucket != "acme-logs":
            self._answer(404, {"error": "no such bucket"})
            return
        self.objects[(bucket, query["name"][0])] = data
        self._answer(200, {"bucket": bucket, "name": query["name"][0]})


@pytest.fixture
def google(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeGoogle]]:
    handler = type("Handler", (FakeGoogle,), {"objects": {}, "tokens_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("GCE_METADATA_HOST", address)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{address}")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_logs_go_to_gcs_with_the_vms_token(google: type[FakeGoogle], tmp_path: Path) -> None:
    sink = logs.sink_for("gs://acme-logs/raydeck", CLUSTER, NODE)
    assert isinstance(sink, GcsSink)
    content = ship_twice(sink, tmp_path)
    names = sorted(name for _, name in google.objects)
    assert len(names) == 2
    assert all(n.startswith(f"raydeck/{CLUSTER}/{NODE}/agent.log/") for n in names)
    assert b"".join(google.objects[("acme-logs", n)] for n in names) == content
    assert google.tokens_seen == ["Bearer ya29.node"] * 2
