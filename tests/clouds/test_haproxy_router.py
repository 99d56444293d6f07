"""The local cloud's service router: a real HAProxy (Debian's package) in front of two
plain HTTP servers standing in for two versions' Serve proxies. Weights move traffic
through the runtime API without a reload, a draining backend gets no new requests, the
token check is HAProxy's own, and a killed HAProxy comes back with the same routes."""

from __future__ import annotations

import collections
import hashlib
import http.server
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clouds.providers.base import Backend, PermanentCloudError
from clouds.providers.haproxy import HaproxyRouter

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs HAProxy")
TOKEN = "rds_the-query-token"


class Version(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = str(self.server.server_port).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def versions() -> Iterator[list[http.server.ThreadingHTTPServer]]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Version) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers
    for server in servers:
        server.shutdown()


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[HaproxyRouter, dict]]:
    router = HaproxyRouter(root=tmp_path / "routers")
    endpoint = router.ensure_endpoint(service_id=uuid.uuid4(), ref={})
    yield router, {"ref": endpoint.ref, "url": endpoint.url + "/"}
    router.remove(ref=endpoint.ref)


def get(url: str, token: str | None = TOKEN) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:  # noqa: S310
            return r.read().decode()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"


def spread(url: str, n: int = 40) -> collections.Counter:
    return collections.Counter(get(url) for _ in range(n))


def backends(
    servers: list, weights: tuple[int, int], draining: tuple[bool, bool] = (False, False)
) -> list[Backend]:
    return [
        Backend(f"v{i + 1}", "127.0.0.1", s.server_port, w, d)
        for i, (s, w, d) in enumerate(zip(servers, weights, draining, strict=True))
    ]


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 10
    while get(url).startswith("HTTP 503") and time.monotonic() < deadline:
        time.sleep(0.2)


def test_weights_drain_and_tokens_without_a_reload(router, versions) -> None:
    driver, endpoint = router
    ref, url = endpoint["ref"], endpoint["url"]
    v1, v2 = (str(s.server_port) for s in versions)
    driver.set_token_hashes(ref=ref, token_hashes=[hashlib.sha256(TOKEN.encode()).hexdigest()])
    driver.set_backends(ref=ref, backends=backends(versions, (100, 0)))
    wait_up(url)
    assert get(url, None) == "HTTP 401" and get(url, "rds_wrong") == "HTTP 401"
    state = driver._state(Path(driver.root) / ref["service_id"])
    pid = state["pid"]
    assert spread(url) == {v1: 40}
    driver.set_backends(ref=ref, backends=backends(versions, (50, 50)))
    assert spread(url) == {v1: 20, v2: 20}
    driver.set_backends(ref=ref, backends=backends(versions, (0, 100), (True, False)))
    assert spread(url) == {v2: 40}
    assert driver.in_flight(ref=ref, backend="v1") == 0
    driver.set_backends(ref=ref, backends=backends(versions, (0, 100))[1:])
    assert spread(url) == {v2: 40}
    # Rotation: the new token works before the old one stops.
    new = "rds_the-next-token"
    driver.set_token_hashes(
        ref=ref,
        token_hashes=[hashlib.sha256(t.encode()).hexdigest() for t in (TOKEN, new)],
    )
    assert get(url, new) == v2 and get(url) == v2
    driver.set_token_hashes(ref=ref, token_hashes=[hashlib.sha256(new.encode()).hexdigest()])
    assert get(url) == "HTTP 401" and get(url, new) == v2
    # Never reloaded: the same process did all of it.
    assert driver._state(Path(driver.root) / ref["service_id"])["pid"] == pid


def test_a_killed_haproxy_comes_back_with_its_routes(router, versions) -> None:
    driver, endpoint = router
    ref, url = endpoint["ref"], endpoint["url"]
    driver.set_token_hashes(ref=ref, token_hashes=[hashlib.sha256(TOKEN.encode()).hexdigest()])
    driver.set_backends(ref=ref, backends=backends(versions, (0, 100)))
    wait_up(url)
    pid = driver._state(Path(driver.root) / ref["service_id"])["pid"]
    os.kill(pid, signal.SIGKILL)
    # kill() returns before the process is gone; the reconciler's next pass comes later.
    for _ in range(50):
        if not driver._running(driver._state(Path(driver.root) / ref["service_id"])):
            break
        time.sleep(0.1)
    again = driver.ensure_endpoint(service_id=uuid.UUID(ref["service_id"]), ref=ref)
    assert again.url + "/" == url
    wait_up(url)
    assert spread(url, 10) == {str(versions[1].server_port): 10}
    assert get(url, None) == "HTTP 401"


def test_missing_haproxy_says_how_to_install_it(tmp_path: Path) -> None:
    router = HaproxyRouter(root=tmp_path, executable="")
    router.executable = ""
    with pytest.raises(PermanentCloudError, match="apt-get install haproxy"):
        router.ensure_endpoint(service_id=uuid.uuid4(), ref={})
