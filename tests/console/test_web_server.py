"""The web server as production runs it (gunicorn, --preload, gthread workers) on real
PostgreSQL and Redis: its workers tell the reconciler they are listening from the
moment they start (clusters/live.py), and forking them from a loaded
application leaves them whole."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection as db_connection

from clusters import live
from console.processes import web_command

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
    reason="needs PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_tick_from_their_start_and_answer(tmp_path: Path, db: None) -> None:
    # The tick key is global: this test's Redis database (one per xdist worker, see
    # console/settings/test.py), emptied of any tick an earlier test wrote by hand.
    port, redis_url = free_port(), settings.REDIS_URL
    store = redis.Redis.from_url(redis_url)
    store.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "RAYDECK_"))}
    name = db_connection.settings_dict["NAME"]
    database = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + name
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings.production",
        REDIS_URL=redis_url,
        DATABASE_URL=database,
        DJANGO_SECRET_KEY="ci-only-" + "k3y-" * 16,
        ALLOWED_HOSTS="127.0.0.1",
        RAYDECK_VAR_DIR=str(tmp_path),
    )
    server = subprocess.Popen(
        web_command(f"127.0.0.1:{port}", workers=2, threads=4),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not store.keys(f"*{live.TICK_KEY}") and time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
            time.sleep(0.1)
        assert store.keys(f"*{live.TICK_KEY}"), "no worker ticked before any request"
        for _ in range(8):  # both workers, whichever takes each connection
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/readyz", headers={"X-Forwarded-Proto": "https"})
            answer = connection.getresponse()
            assert answer.status == 200, answer.read()
            connection.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        store.flushdb()
