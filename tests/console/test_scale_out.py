"""Scale-out: two web processes (gunicorn) and two Celery workers on one PostgreSQL
and one Redis act as one control plane.

Stand-ins: the cloud is tests/standin_cloud.py (instances kept in Redis, 20 ms of
latency injected per call; real Ray is too heavy for 50 clusters on one machine), chosen
through the test setting RAYDECK_TEST_CLOUD_DRIVER. Everything else is real: gunicorn
serving the JSON API, `celery worker` and `celery beat` processes, the test's
PostgreSQL database, and a redis-server of this module's own on a free loopback port
(broker and shared cache).

Processes share the database, so this runs on PostgreSQL only (CI sets DATABASE_URL).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

from accounts.models import AuditEvent
from accounts.services.tokens import token_create
from clusters.choices import ClusterState, NodeState
from clusters.models import Cluster, Node
from clusters.services.configs import compute_config_create
from tests.clusters.test_faults import Proc, RedisServer, free_port
from tests.conftest import Tenant, activate, make_tenant
from tests.console.test_metrics import value
from tests.standin_cloud import StandInProvider

pytestmark = [
    # A load test with a deadline, its processes on a redis-server of its own (see
    # console/settings/test.py): alone on the machine's cores.
    pytest.mark.serial,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="needs PostgreSQL (DATABASE_URL): the processes share the test database",
    ),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

CLUSTERS = 50
WORKERS_PER_GROUP = 2  # each cluster: a head and two workers, so 150 launches
LATENCY_MS = 20
DEADLINE_SECONDS = 120
METRICS_TOKEN = "scale-out-metrics-token"
SWEEP_SECONDS = 2  # the beats' period for clusters.tasks.sweep_clusters
loopback = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Deployment:
    """The processes of one control plane, and how to reach and read them."""

    env: dict[str, str]
    redis: RedisServer
    tmp: Path
    webs: list[tuple[Proc, int]] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    beats: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], ready: str, **env: str) -> Proc:
        proc = Proc(name, argv, {**self.env, **env}, self.tmp)
        proc.wait_for_line(ready, timeout=90)
        return proc

    def start_web(self, name: str) -> None:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:console.gunicorn_conf",
            "console.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
        ]
        self.webs.append((self.start(name, argv, "Booting worker"), port))

    def start_worker(self, name: str) -> None:
        argv = [sys.executable, "-m", "celery", "-q", "-A", "console", "worker", "-l", "info"]
        argv += ["--concurrency", "3", "--hostname", f"{name}@%h", "--without-mingle"]
        argv += ["--without-gossip"]
        self.workers.append(self.start(name, argv, " ready."))

    def start_beat(self, name: str) -> Proc:
        argv = [sys.executable, "-m", "celery", "-q", "-A", "console", "beat", "-l", "info"]
        argv += ["--schedule", str(self.tmp / f"{name}-schedule")]
        beat = self.start(name, argv, "beat: Starting", RAYDECK_SWEEP_SECONDS=str(SWEEP_SECONDS))
        self.beats.append(beat)
        return beat

    def stop(self) -> None:
        for proc in [*self.beats, *self.workers, *(web for web, _ in self.webs)]:
            proc.stop()
        self.redis.stop()

    def procs(self) -> list[Proc]:
        return [p for p, _ in self.webs] + self.workers + self.beats

    def tails(self) -> str:
        return "\n".join(p.tail(25) for p in self.procs())

    def task_runs(self, task: str) -> int:
        """Runs of `task` that finished, in every worker's log."""
        pattern = re.compile(rf"Task {re.escape(task)}\[[0-9a-f-]+\] succeeded")
        return sum(len(pattern.findall(w.log())) for w in self.workers)


@pytest.fixture(scope="module")
def deployment(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("scale-out")
    redis = RedisServer(tmp)
    redis.start()
    params = connection.settings_dict
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "RAYDECK_", "CELERY_"))
        and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings.test",
        DATABASE_URL=(
            f"postgres://{params.get('USER') or 'postgres'}@{params.get('HOST') or '127.0.0.1'}"
            f":{params.get('PORT') or 5432}/{params['NAME']}"
        ),
        REDIS_URL=redis.url,
        RAYDECK_TEST_CACHE_PREFIX=f"raydeck-scale-{uuid.uuid4().hex[:8]}",
        RAYDECK_TEST_CLOUD_DRIVER="tests.standin_cloud.driver_for",
        RAYDECK_STANDIN_LATENCY_MS=str(LATENCY_MS),
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"),
        RAYDECK_METRICS_TOKEN=METRICS_TOKEN,
        RAYDECK_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    (tmp / "metrics").mkdir()
    if params.get("PASSWORD"):
        env["PGPASSWORD"] = str(params["PASSWORD"])
    world = Deployment(env=env, redis=redis, tmp=tmp)
    try:
        for name in ("web-1", "web-2"):
            world.start_web(name)
        for name in ("worker-1", "worker-2"):
            world.start_worker(name)
        yield world
    finally:
        world.stop()


@pytest.fixture
def tenant(deployment: Deployment, settings, monkeypatch) -> Tenant:
    """An organization with a verified cloud, seen by this process as the processes see
    it (the same cache, the same stand-in cloud)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": deployment.redis.url,
            "KEY_PREFIX": deployment.env["RAYDECK_TEST_CACHE_PREFIX"],
        }
    }
    settings.RAYDECK_TEST_CLOUD_DRIVER = "tests.standin_cloud.driver_for"
    monkeypatch.setenv("RAYDECK_STANDIN_REDIS_URL", deployment.redis.url)
    tenant = make_tenant("scale")
    assert tenant.cloud is not None
    activate(tenant.cloud)
    return tenant


def api(port: int, secret: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    with loopback.open(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def wait_until(condition, timeout: float, what: str, deployment: Deployment) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{deployment.tails()}")
        time.sleep(0.5)


def test_fifty_clusters_created_and_terminated_across_processes(
    deployment: Deployment, tenant: Tenant
) -> None:
    """50 clusters created through both web processes at once, half terminated as soon
    as they are created (racing their first reconcile), half once their nodes are up:
    every cluster ends terminated with every instance gone, no node got two instances,
    no two reconciles acted on one cluster at once, both workers took part, and each
    event and audit event is recorded once."""
    started = time.monotonic()
    assert tenant.project is not None and tenant.cloud is not None
    config = compute_config_create(
        organization=tenant.org,
        project=None,
        actor=tenant.owner,
        name="scale",
        cloud=tenant.cloud,
        worker_groups=[{"name": "cpu", "cpus": 1, "min": WORKERS_PER_GROUP, "max": 4}],
    )
    _, secret = token_create(
        organization=tenant.org, actor=tenant.member, name="scale", days=1, read_only=False
    )
    org = tenant.org.slug
    ports = [port for _, port in deployment.webs]

    def create_and_maybe_terminate(i: int) -> str:
        port = ports[i % len(ports)]
        body = {
            "name": f"scale-{i}",
            "project": tenant.project.slug,
            "compute_config": str(config.pk),
        }
        cluster = api(port, secret, "POST", f"/orgs/{org}/clusters", body)
        if i % 2:
            api(
                ports[(i + 1) % len(ports)],
                secret,
                "POST",
                f"/orgs/{org}/clusters/{cluster['id']}/terminate",
            )
        return str(cluster["id"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        answered = list(pool.map(create_and_maybe_terminate, range(CLUSTERS)))
    pk_of = dict(Cluster.objects.filter(uuid__in=answered).values_list("uuid", "pk"))
    ids = [pk_of[uuid.UUID(a)] for a in answered]
    assert len(set(ids)) == CLUSTERS
    kept = [pk for i, pk in enumerate(ids) if i % 2 == 0]
    nodes_per_cluster = 1 + WORKERS_PER_GROUP

    def kept_are_up() -> bool:
        return (
            Node.objects.filter(cluster_id__in=kept, state=NodeState.BOOTING).count()
            == len(kept) * nodes_per_cluster
        )

    wait_until(kept_are_up, 60, "the kept clusters' nodes were not all up", deployment)

    def terminate(i: int) -> None:
        api(
            ports[i % len(ports)],
            secret,
            "POST",
            f"/orgs/{org}/clusters/{answered[2 * i]}/terminate",
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(terminate, range(len(kept))))

    def all_terminated() -> bool:
        return Cluster.objects.filter(pk__in=ids, state=ClusterState.TERMINATED).count() == CLUSTERS

    remaining = DEADLINE_SECONDS - (time.monotonic() - started)
    wait_until(all_terminated, remaining, "not every cluster was terminated", deployment)

    # No cluster left behind: every node row final, every instance gone.
    assert not Node.objects.filter(cluster_id__in=ids).exclude(state=NodeState.TERMINATED).exists()
    cloud = StandInProvider(cloud_id=tenant.cloud.uuid, latency_ms=0)
    instances = cloud.list_instances()
    assert instances, "nothing was launched"
    assert [i.instance_id for i in instances if i.is_live] == []
    # No node launched twice, and no instance without its node.
    created = cloud.created()
    assert [n for n, count in created.items() if count != 1] == []
    launched = Node.objects.filter(cluster_id__in=ids).exclude(instance_id="")
    assert sorted(created) == sorted(str(n.uuid) for n in launched)
    assert {i.instance_id for i in instances} == {n.instance_id for n in launched}
    assert sorted(kept) == sorted({n.cluster_id for n in launched if n.cluster_id in kept}), (
        "a kept cluster never launched"
    )
    # One reconcile at a time per cluster, and both workers did reconcile.
    assert cloud.overlaps() == set()
    runs = [w.log().count("clusters.tasks.reconcile_cluster[") for w in deployment.workers]
    assert all(runs), f"reconciles per worker: {runs}"
    # Every event once.
    for cluster in Cluster.objects.filter(pk__in=ids):
        steps = Counter((e.step, e.node_id) for e in cluster.events.exclude(step="cloud call"))
        assert [s for s, n in steps.items() if n > 1] == [], (cluster.name, steps)
        assert steps[("terminated", None)] == 1, (cluster.name, steps)
        verbs = Counter(
            AuditEvent.objects.filter(target_type="cluster", target_id=str(cluster.pk)).values_list(
                "verb", flat=True
            )
        )
        assert verbs == {"cluster.create": 1, "cluster.terminate": 1}, (cluster.name, verbs)

    # /metrics of either web process adds up every process's series: both web processes
    # answered the creates, the workers made the cloud calls and ran the reconciles.
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports[1]}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
    )
    with loopback.open(request, timeout=30) as response:
        text = response.read().decode()
    created = {"route": "api/v1/orgs/<org>/clusters", "method": "POST", "status": "201"}
    assert value(text, "raydeck_http_requests_total", **created) == CLUSTERS
    launches = {"provider": "local", "call": "launch"}
    assert value(text, "raydeck_cloud_api_calls_total", **launches) == len(instances)
    reconciles = {"task": "clusters.tasks.reconcile_cluster"}
    assert value(text, "raydeck_celery_task_lag_seconds_count", **reconciles) > CLUSTERS
    assert value(text, "raydeck_celery_task_duration_seconds_count", **reconciles) > CLUSTERS
    cloud.forget()


def test_a_request_id_follows_a_cluster_create_and_no_secret_is_logged(
    deployment: Deployment, tenant: Tenant
) -> None:
    """One cluster create with the load balancer's X-Request-ID: the id is answered, and
    appears in the web process's log line for it, in the worker's lines for the
    reconcile the create enqueued, and on the audit event. Every line of every process
    is JSON, and none holds a secret of this run: the API token, the metrics token, the
    secret key, the password of a refused sign-in, the nodes' bootstrap tokens."""
    from django.conf import settings

    from clusters.services.reconcile import bootstrap_token

    assert tenant.project is not None
    _, secret = token_create(
        organization=tenant.org, actor=tenant.member, name="trace", days=1, read_only=False
    )
    trace = f"trace-{uuid.uuid4().hex}"
    port = deployment.webs[0][1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/orgs/{tenant.org.slug}/clusters",
        method="POST",
        data=json.dumps({"name": "traced", "project": tenant.project.slug}).encode(),
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/json",
            "X-Request-ID": trace,
        },
    )
    with loopback.open(request, timeout=30) as response:
        assert response.headers["X-Request-ID"] == trace
        cluster = Cluster.objects.get(uuid=json.loads(response.read())["id"])
    password = f"pw-{uuid.uuid4().hex}"
    login = urllib.request.Request(
        f"http://127.0.0.1:{port}/accounts/login/",
        method="POST",
        data=f"login={tenant.member.email}&password={password}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises(urllib.error.HTTPError):
        loopback.open(login, timeout=30)

    def lines_with_trace(proc: Proc) -> list[dict]:
        return [e for e in map(json.loads, proc.log().splitlines()) if e["request_id"] == trace]

    def reconciled_under_trace() -> bool:
        return any(
            e.get("task") == "clusters.tasks.reconcile_cluster"
            for w in deployment.workers
            for e in lines_with_trace(w)
        )

    wait_until(reconciled_under_trace, 30, "no worker line carries the request id", deployment)
    web = lines_with_trace(deployment.webs[0][0])
    assert [(e["route"], e["status"]) for e in web] == [("api/v1/orgs/<org>/clusters", 201)]
    audit = AuditEvent.objects.get(verb="cluster.create", target_id=str(cluster.pk))
    assert audit.request_id == trace

    api(port, secret, "POST", f"/orgs/{tenant.org.slug}/clusters/{cluster.uuid}/terminate")
    wait_until(
        lambda: Cluster.objects.filter(pk=cluster.pk, state=ClusterState.TERMINATED).exists(),
        60,
        "the traced cluster was not terminated",
        deployment,
    )
    secrets = [secret, METRICS_TOKEN, settings.SECRET_KEY, password]
    secrets += [bootstrap_token(node) for node in Node.objects.filter(cluster=cluster)]
    for proc in deployment.procs():
        for number, line in enumerate(proc.log().splitlines(), 1):
            assert isinstance(json.loads(line), dict), f"{proc.name}:{number} is not JSON"
            leaked = [s[:6] for s in secrets if s in line]
            assert not leaked, f"{proc.name}:{number} holds a secret ({leaked}): {line}"


def test_a_second_beat_sends_nothing_until_the_first_is_gone(deployment: Deployment) -> None:
    """Two beats started by mistake: one leads (holds the PostgreSQL advisory lock) and
    the periodic sweep runs once per period, not twice; when the leader is killed, the
    other takes over within a few seconds and the sweep goes on."""
    first = deployment.start_beat("beat-1")
    first.wait_for_line("beat: leading", timeout=30)
    second = deployment.start_beat("beat-2")
    second.wait_for_line("beat: standing by", timeout=30)

    before = deployment.task_runs("clusters.tasks.sweep_clusters")
    window = 12
    time.sleep(window)
    runs = deployment.task_runs("clusters.tasks.sweep_clusters") - before
    periods = window / SWEEP_SECONDS
    # Once per period (a run may straddle each end); two senders would make it twice.
    assert periods - 2 <= runs <= periods + 1, f"{runs} sweeps in {window} s\n{deployment.tails()}"

    first.kill_group(signal.SIGKILL)  # the leader dies; its session, and lock, go with it
    second.wait_for_line("beat: leading", timeout=15)
    before = deployment.task_runs("clusters.tasks.sweep_clusters")
    time.sleep(3 * SWEEP_SECONDS)
    assert deployment.task_runs("clusters.tasks.sweep_clusters") - before >= 2
