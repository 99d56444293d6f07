"""The Celery worker survives Redis restarts (issue 13, defect 2).

With kombu/celery 5.7 and redis-py 8.2, a worker holding unacknowledged countdown
messages (always, once a cluster runs: the reconciler polls with countdowns) exited on
the first Redis restart with `AttributeError: 'NoneType' object has no attribute
'hostname'` in kombu's Redis transport, and reconciling stopped until a person acted.
pyproject.toml pins the versions that survive.

A real `celery worker` against a redis-server of this test's own (restarted three times,
losing everything each time) and the test database; the reconciles it runs are of
clusters that do not exist (no Ray needed: what matters is that the worker takes work).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from clusters.tasks import reconcile_cluster
from tests.clusters.test_faults import Proc, RedisServer, celery_broker

pytestmark = [
    # Restarts a redis-server of its own, given to its worker (see console/settings/test.py)
    pytest.mark.serial,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="needs PostgreSQL (DATABASE_URL): the Celery worker shares the test database",
    ),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


def worker_env(redis_url: str, prefix: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "RAYDECK_", "CELERY_"))
        and k not in ("DATABASE_URL", "REDIS_URL")
    }
    params = connection.settings_dict
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings.test",
        DATABASE_URL=(
            f"postgres://{params.get('USER') or 'postgres'}@{params.get('HOST') or '127.0.0.1'}"
            f":{params.get('PORT') or 5432}/{params['NAME']}"
        ),
        REDIS_URL=redis_url,
        RAYDECK_TEST_CACHE_PREFIX=prefix,
        PYTHONUNBUFFERED="1",
    )
    if params.get("PASSWORD"):
        env["PGPASSWORD"] = str(params["PASSWORD"])
    return env


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        with celery_broker(server.url):
            yield server
    finally:
        server.stop()


def test_the_worker_keeps_reconciling_across_three_redis_restarts(
    redis: RedisServer, tmp_path: Path
) -> None:
    env = worker_env(redis.url, f"raydeck-broker-{uuid.uuid4().hex[:8]}")
    argv = [
        *(sys.executable, "-m", "celery", "-A", "console", "worker", "--loglevel", "info"),
        *("--pool", "prefork", "--concurrency", "1", "--hostname", "restarts@%h"),
        *("--without-mingle", "--without-gossip", "--without-heartbeat"),
    ]
    worker = Proc("worker", argv, env, tmp_path)
    try:
        worker.wait_for_line(" ready.", timeout=60)
        missing = 10**9  # no such cluster: the reconcile says so and succeeds

        def reconciles_now(tag: int) -> None:
            task_id = f"now-{tag}-{uuid.uuid4().hex[:6]}"
            reconcile_cluster.apply_async(kwargs={"cluster_id": missing}, task_id=task_id)
            deadline = time.monotonic() + 60
            while f"[{task_id}] succeeded" not in worker.log():
                assert worker.alive(), f"the worker exited:\n{worker.tail(60)}"
                assert time.monotonic() < deadline, f"{task_id} never ran:\n{worker.tail(60)}"
                time.sleep(0.2)

        reconciles_now(0)
        for restart in (1, 2, 3):
            # Countdown messages the worker fetches and holds, unacknowledged, until due:
            # what a running cluster's follow-up reconciles always are.
            for n in range(3):
                reconcile_cluster.apply_async(
                    kwargs={"cluster_id": missing + n}, countdown=300, task_id=f"later-{n}"
                )
            deadline = time.monotonic() + 30
            while worker.log().count("later-2] ETA") < restart and "later-2" not in worker.log():
                assert time.monotonic() < deadline, worker.tail(40)
                time.sleep(0.2)
            time.sleep(1)
            redis.crash()
            time.sleep(2)
            redis.start()
            reconciles_now(restart)
        assert worker.alive()
    finally:
        worker.stop()
