"""Faults with real Celery and Redis on loopback.

Each case runs real `celery worker` and `celery beat` processes against a redis-server of
its own (a free loopback port, no persistence, so it can be killed and restarted) and
the test database, with this test's live server as the agents' control plane, and real
Ray on the local cloud:

(a) `kill -9` of the worker's pool process mid-provision: the task is redelivered (acks
    late + reject on worker lost) and runs again within seconds;
(b) `kill -9` of the whole worker: a new worker finishes the work once the dead run's
    lease has expired (LEASE_SECONDS, far inside the visibility timeout) plus a sweep;
(c) a Redis restart with work queued: the periodic sweep re-enqueues every cluster whose
    state is not final, so nothing is lost.

In each: no duplicate instance, no lost cluster, and the cluster converges to running.

"Mid-provision" is made observable and exact: the test writes what a reconcile writes
before its cloud call (the head's Node row, in LAUNCHING) and holds a lock on that row,
so the worker's reconcile starts the instance and then waits to record it. Killed
there, the instance is up and the row does not know it yet: the window in which a
careless retry would launch a second instance.

Worker processes share the database, so these run on PostgreSQL only (CI sets
DATABASE_URL). This process and the workers share the cache (the reconcile lease, the
queued key, heartbeats): all point at the private Redis with one key prefix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu.pools
import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from clouds.choices import CloudState
from clouds.models import Cloud
from clouds.providers.registry import local_root, provider_for
from clusters import live
from clusters.choices import ClusterState, NodeRole, NodeState
from clusters.models import Cluster, Node
from clusters.services import lifecycle, reconcile
from tests.clusters.test_end_to_end import drive, processes_with
from tests.conftest import Tenant, make_tenant

pytestmark = [
    pytest.mark.ray,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="needs PostgreSQL (DATABASE_URL): the Celery workers share the test database",
    ),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash"),
]

ROOT = Path(__file__).resolve().parents[2]
SWEEP_SECONDS = 3
START_SECONDS = 60  # a head node's Ray start on a busy 2-core machine, with room to spare
LAUNCH_LINE = b"=== raydeck: launching "  # the local cloud writes one per spawn


# --- processes -----------------------------------------------------------------------


class Proc:
    """A process in a session (and process group) of its own, output to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def wait_for_line(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no {needle!r} in {timeout:.0f} s\n{self.tail()}"
                )
            time.sleep(0.1)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM the group (a worker finishes its task: warm shutdown), then SIGKILL."""
        if self.alive():
            self.kill_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self.kill_group(signal.SIGKILL)  # whatever is left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = (entry / "stat").read_bytes()
                if int(raw[raw.rindex(b")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def pid_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            return True
        if state in (b"Z", b"X"):
            return True
        time.sleep(0.05)
    return False


def agent_pids(cluster: Cluster) -> list[int]:
    """The node agents running for this cluster (one per node, or something launched twice)."""
    marker = f"RAYDECK_CLUSTER_ID={cluster.uuid}".encode()
    found = []
    for pid in processes_with(str(cluster.uuid)):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"raydeck_agent" in cmdline and marker in environ:
                found.append(pid)
    return found


# --- Redis ---------------------------------------------------------------------------


class RedisServer:
    """A redis-server of this test's own: no snapshots, no AOF, so a restart loses all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        import redis

        self.starts += 1
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
        ]
        self.proc = Proc(f"redis-{self.starts}", argv, os.environ.copy(), self.workdir)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            if time.monotonic() > deadline or not self.proc.alive():
                raise AssertionError(f"redis-server did not start:\n{self.proc.tail()}")
            time.sleep(0.05)

    def crash(self) -> None:
        if self.proc is not None:
            self.proc.kill_group(signal.SIGKILL)
            self.proc.popen.wait(5)

    def queued(self) -> int:
        """Messages waiting in every queue the workers consume."""
        import redis
        from django.conf import settings

        client = redis.Redis.from_url(self.url, socket_timeout=2)
        return sum(int(client.llen(name)) for name in settings.TASK_QUEUES)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=2)


@contextlib.contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point this process's Celery (cluster_create, the live server's enqueues) at `url`."""
    from console.celery import app

    def drop_connections() -> None:
        if app._pool is not None:
            with contextlib.suppress(Exception):
                app._pool.force_close_all()
        app._pool = None
        # app.pool comes from kombu's process-wide pools, keyed by broker URL: without
        # this, later tests would get the closed pool back ("Acquire on closed pool").
        kombu.pools.reset()
        if "amqp" in app.__dict__:
            app.amqp._producer_pool = None

    # The setting's own (namespaced) name: it wins over `broker_url` in celery 5.6.
    saved = app.conf.broker_url
    drop_connections()
    app.conf["CELERY_BROKER_URL"] = url
    try:
        yield
    finally:
        drop_connections()
        app.conf["CELERY_BROKER_URL"] = saved


# --- the row lock that pauses a reconcile mid-launch ---------------------------------


class RowLock:
    """`SELECT ... FOR UPDATE` of a node's row from a connection of its own."""

    def __init__(self, dbname: str) -> None:
        import psycopg

        params = connection.settings_dict
        self.conn = psycopg.connect(
            host=params.get("HOST") or "127.0.0.1",
            port=params.get("PORT") or 5432,
            user=params.get("USER") or "postgres",
            password=params.get("PASSWORD") or None,
            dbname=dbname,
            autocommit=False,
        )
        self.held = False

    def hold(self, node: Node) -> None:
        self.conn.execute("SELECT id FROM clusters_node WHERE id = %s FOR UPDATE", [node.pk])
        self.held = True

    @staticmethod
    def waiting_update() -> bool:
        """Whether some session waits on a lock to UPDATE a node row (the reconcile). Asked
        on the test's own connection (autocommit): within a transaction, PostgreSQL would
        answer from the snapshot of pg_stat_activity it took at the first look."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE \"clusters_node\"%'"
            )
            row = cursor.fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        if self.held:
            self.conn.rollback()
            self.held = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.release()
            self.conn.close()


# --- the harness ---------------------------------------------------------------------


class Faults:
    """One test's world: a tenant with an active local cloud, a Redis, Celery processes,
    and the clusters it created (all cleaned up, whatever happens)."""

    def __init__(
        self,
        *,
        tenant: Tenant,
        redis: RedisServer,
        env: dict[str, str],
        tmp: Path,
        dbname: str,
        say: Callable[[str], None],
    ) -> None:
        self.tenant = tenant
        self.cloud = tenant.cloud
        self.redis = redis
        self.env = env
        self.tmp = tmp
        self.dbname = dbname
        self.say = say
        self.procs: list[Proc] = []
        self.clusters: list[Cluster] = []  # until finish() has terminated them
        self.all_clusters: list[Cluster] = []
        self.locks: list[RowLock] = []

    # -- processes --------------------------------------------------------------------

    def start_worker(self, name: str) -> Proc:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "console",
            "worker",
            "--loglevel",
            "info",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--hostname",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ]
        worker = Proc(name, argv, self.env, self.tmp)
        self.procs.append(worker)
        worker.wait_for_line(" ready.", timeout=60)
        return worker

    def start_beat(self) -> Proc:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "console",
            "beat",
            "--loglevel",
            "info",
            "--schedule",
            str(self.tmp / "beat-schedule"),
        ]
        beat = Proc("beat", argv, self.env, self.tmp)
        self.procs.append(beat)
        beat.wait_for_line("beat: Starting", timeout=60)
        return beat

    def pool_process(self, worker: Proc) -> int:
        found = children(worker.pid)
        assert len(found) == 1, f"expected one pool process under {worker.pid}: {found}"
        return found[0]

    # -- clusters ---------------------------------------------------------------------

    def create(self, name: str) -> Cluster:
        """cluster_create, which enqueues the first reconcile when it commits."""
        cluster = lifecycle.cluster_create(
            project=self.tenant.project, actor=self.tenant.member, name=name, cloud=self.cloud
        )
        self.clusters.append(cluster)
        self.all_clusters.append(cluster)
        return cluster

    def create_paused_mid_launch(self, name: str) -> tuple[Cluster, Node, RowLock]:
        """A cluster whose head row is in LAUNCHING, locked: the first reconcile starts the
        instance and then waits to record it."""
        cluster = self.create(name)
        reconcile._plan_nodes(cluster)  # the head's row, written before any cloud call
        node = cluster.nodes.get()
        now = timezone.now()
        Node.objects.filter(pk=node.pk).update(
            state=NodeState.LAUNCHING, launched_at=now, state_changed_at=now
        )
        lock = RowLock(self.dbname)
        self.locks.append(lock)
        lock.hold(node)
        return cluster, node, lock

    def wait_paused(self, cluster: Cluster, node: Node, lock: RowLock) -> str:
        """Until the reconcile has started the instance and waits on the row; returns the
        id of the task that runs it (the lease holder)."""
        provider = provider_for(self.cloud)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = [i for i in provider.list_instances(cluster_id=cluster.uuid) if i.is_live]
            if live and lock.waiting_update():
                holder = cache.get(f"raydeck:reconcile:{cluster.pk}")
                assert holder, "the reconcile runs without its lease"
                node.refresh_from_db()
                assert node.state == NodeState.LAUNCHING and not node.instance_id
                return str(holder)
            time.sleep(0.1)
        raise AssertionError(f"the reconcile never reached the launch\n{self.diagnostics()}")

    def wait_state(self, cluster: Cluster, state: str, timeout: float) -> float:
        """Seconds until the cluster is in `state`; fails at once if it failed."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            cluster.refresh_from_db()
            if cluster.state == state:
                return time.monotonic() - start
            if cluster.state == ClusterState.FAILED:
                break
            time.sleep(0.25)
        raise AssertionError(
            f"{cluster.name} is {cluster.state} ({cluster.state_reason}), not {state}, after "
            f"{time.monotonic() - start:.0f} s\n{self.diagnostics()}"
        )

    def assert_one_instance_per_node(self, cluster: Cluster) -> None:
        """No duplicate instance and no stray one: each live Node is exactly one live
        instance, started exactly once, running exactly one agent."""
        nodes = list(cluster.nodes.live())
        assert [n.role for n in nodes] == [NodeRole.HEAD], "a node was planned twice"
        live = [
            i for i in provider_for(self.cloud).list_instances(cluster_id=cluster.uuid) if i.is_live
        ]
        assert sorted(str(i.node_id) for i in live) == sorted(str(n.uuid) for n in nodes)
        root = local_root(self.cloud)
        for node in nodes:
            assert node.instance_id == live[0].instance_id
            spawns = (root / str(node.uuid) / "boot.log").read_bytes().count(LAUNCH_LINE)
            assert spawns == 1, f"node {node.uuid} was launched {spawns} times"
        assert len(agent_pids(cluster)) == len(nodes), "more agents than nodes are running"
        assert cluster.events.filter(step="node planned").count() == len(nodes)

    def follow_ups(self, cluster: Cluster, dead: str = "") -> int:
        """Reconciles of this cluster waiting in Redis: queued, or fetched by a worker that
        holds them until their countdown is up (kombu keeps those in `unacked`). `dead`:
        the task id of a worker killed mid-run, in `unacked` until the visibility timeout."""
        import redis

        client = redis.Redis.from_url(self.redis.url)
        raw = list(client.lrange("celery", 0, -1))
        raw += [json.loads(v)[0] for v in client.hvals("unacked")]
        wanted = repr({"cluster_id": cluster.pk})
        return sum(
            m["headers"].get("task") == "clusters.tasks.reconcile_cluster"
            and m["headers"].get("kwargsrepr") == wanted
            and m["headers"].get("id") != dead
            for m in (json.loads(r) if isinstance(r, bytes | str) else r for r in raw)
        )

    def assert_one_follow_up(self, cluster: Cluster, dead: str = "") -> None:
        """No duplicate work either: at most one chain of follow-up reconciles per cluster,
        and none only for a steady cluster, which the sweep watches instead
        (reconcile.work_for). (For a moment there may be two, or none: while one runs,
        its own message and its follow-up are both there; a run that met the lease of
        another ends its chain, which the other continues when it finishes.)"""
        counts = []
        for _ in range(7):
            counts.append(self.follow_ups(cluster, dead))
            time.sleep(0.4)
        median = sorted(counts)[len(counts) // 2]
        assert median <= 1, f"follow-up reconciles waiting for {cluster.name}: {counts}"
        if median == 0:
            cluster.refresh_from_db()
            work = reconcile.work_for(cluster, reconcile.look_at(cluster), public_addresses=False)
            assert work is None, f"{cluster.name} has work ({work}) and no follow-up: {counts}"

    def lease_ttl(self, cluster: Cluster) -> int:
        """Seconds left on the cluster's reconcile lease."""
        import redis

        key = cache.make_and_validate_key(f"raydeck:reconcile:{cluster.pk}")
        return int(redis.Redis.from_url(self.redis.url).ttl(key))

    def diagnostics(self) -> str:
        parts = []
        for cluster in self.clusters:
            cluster.refresh_from_db()
            parts.append(f"=== {cluster.name}: {cluster.state} {cluster.state_reason}")
            parts += [
                f"{e.created_at:%H:%M:%S.%f} {e.step}: {e.message}" for e in cluster.events.all()
            ]
            parts += [f"{n.role} {n.state}: {n.log_tail[-1500:]}" for n in cluster.nodes.all()]
        parts += [proc.tail() for proc in self.procs]
        return "\n".join(parts)

    # -- the end ----------------------------------------------------------------------

    def finish(self) -> None:
        """Stop Celery, terminate every cluster (driven from here), and check that nothing
        of them is left running."""
        self._stop_processes()
        for cluster in self.clusters:
            cache.delete(f"raydeck:reconcile:{cluster.pk}")  # of a worker killed mid-run
            lifecycle.cluster_terminate(cluster=cluster, actor=None)
            cluster = drive(cluster, {ClusterState.TERMINATED}, time.monotonic() + 60)
            provider = provider_for(self.cloud)
            assert not [i for i in provider.list_instances(cluster_id=cluster.uuid) if i.is_live]
        for cluster in self.clusters:
            for _ in range(20):  # init reaps the killed groups within a second or two
                if not processes_with(str(cluster.uuid)):
                    break
                time.sleep(0.5)
            assert processes_with(str(cluster.uuid)) == []
        self.clusters = []

    def close(self) -> None:
        """Best effort, after a failure too: nothing of this test may outlive it."""
        self._stop_processes()
        with contextlib.suppress(Exception):
            for node in Node.objects.filter(cluster__in=self.all_clusters):
                # Ray's temp dir on the node (registration_answer): /tmp/raydeck/<id[:8]>.
                shutil.rmtree(Path("/tmp/raydeck") / str(node.uuid)[:8], ignore_errors=True)  # noqa: S108
        for cluster in self.clusters:
            with contextlib.suppress(Exception):
                provider = provider_for(self.cloud)
                for instance in provider.list_instances(cluster_id=cluster.uuid):
                    provider.terminate(instance_id=instance.instance_id)
            for pid in processes_with(str(cluster.uuid)):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self.redis.stop()

    def _stop_processes(self) -> None:
        for lock in self.locks:
            lock.close()
        self.locks = []
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def faults(live_server, settings, tmp_path, capsys) -> Iterator[Faults]:
    redis = RedisServer(tmp_path)
    redis.start()
    prefix = f"raydeck-faults-{uuid.uuid4().hex[:12]}"
    dbname = connection.settings_dict["NAME"]
    settings.RAYDECK_AGENT_URL = live_server.url
    settings.RAYDECK_LOCAL_CLOUD_ROOT = tmp_path / "nodes"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis.url,
            "KEY_PREFIX": prefix,
        }
    }
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
            f":{params.get('PORT') or 5432}/{dbname}"
        ),
        REDIS_URL=redis.url,
        RAYDECK_TEST_CACHE_PREFIX=prefix,
        RAYDECK_AGENT_URL=live_server.url,
        RAYDECK_LOCAL_CLOUD_ROOT=str(tmp_path / "nodes"),
        RAYDECK_SWEEP_SECONDS=str(SWEEP_SECONDS),
        PYTHONUNBUFFERED="1",
    )
    if params.get("PASSWORD"):
        env["PGPASSWORD"] = str(params["PASSWORD"])

    def say(message: str) -> None:
        with capsys.disabled():
            print(f"\n    {message}", end="", flush=True)

    tenant = make_tenant("faults")
    Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
    tenant.cloud.refresh_from_db()
    with celery_broker(redis.url):
        harness = Faults(tenant=tenant, redis=redis, env=env, tmp=tmp_path, dbname=dbname, say=say)
        try:
            yield harness
        finally:
            harness.close()


def task_lines(worker: Proc, task_id: str) -> list[str]:
    return [line for line in worker.log().splitlines() if f"[{task_id}]" in line]


# --- the cases -----------------------------------------------------------------------


def test_killed_pool_process_mid_provision_runs_the_task_again(faults: Faults) -> None:
    cluster, node, lock = faults.create_paused_mid_launch("fault-a")
    faults.start_beat()
    worker = faults.start_worker("faults-a")
    task_id = faults.wait_paused(cluster, node, lock)
    child = faults.pool_process(worker)

    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    assert pid_gone(child)
    lock.release()
    # Redelivered (acks_late + reject_on_worker_lost): the same task id, so it takes its
    # own lease back at once instead of waiting for it to expire.
    deadline = killed_at + 30
    while time.monotonic() < deadline:
        lines = task_lines(worker, task_id)
        if any(" succeeded in " in line for line in lines):
            break
        time.sleep(0.1)
    rerun = time.monotonic() - killed_at
    lines = task_lines(worker, task_id)
    assert sum(" received" in line for line in lines) == 2, "\n".join(lines)
    assert any(" succeeded in " in line for line in lines), faults.diagnostics()
    assert re.search(r"exited with 'signal 9 \(SIGKILL\)'|WorkerLostError", worker.log())
    assert rerun < 15

    running = faults.wait_state(cluster, ClusterState.RUNNING, START_SECONDS)
    faults.say(
        f"(a) pool process killed mid-launch: task {task_id[:8]} ran again and finished "
        f"{rerun:.1f} s later; running {rerun + running:.1f} s after the kill"
    )
    faults.assert_one_instance_per_node(cluster)
    faults.assert_one_follow_up(cluster)
    faults.finish()


def test_killed_worker_mid_provision_is_finished_by_a_new_worker(faults: Faults) -> None:
    cluster, node, lock = faults.create_paused_mid_launch("fault-b")
    faults.start_beat()
    worker = faults.start_worker("faults-b1")
    task_id = faults.wait_paused(cluster, node, lock)
    lease_ttl = faults.lease_ttl(cluster)

    worker.kill_group(signal.SIGKILL)  # the main process and its pool process
    killed_at = time.monotonic()
    assert pid_gone(worker.pid)
    lock.release()
    faults.start_worker("faults-b2")
    # The dead run's message waits out the visibility timeout (10 min); long before,
    # its lease expires and the next sweep's reconcile does the work.
    faults.wait_state(cluster, ClusterState.RUNNING, live.LEASE_SECONDS + 2 * SWEEP_SECONDS + 30)
    recovered = time.monotonic() - killed_at
    faults.say(
        f"(b) whole worker killed mid-launch: running {recovered:.1f} s later "
        f"(lease had {lease_ttl} s left, sweep every {SWEEP_SECONDS} s)"
    )
    # Far below the old 60 s lease, with room for a loaded CI machine (30.6 s seen there).
    assert recovered <= lease_ttl + SWEEP_SECONDS + 35
    faults.assert_one_instance_per_node(cluster)
    # The dead run's message still waits out its visibility timeout; when it comes back,
    # it runs once and continues no chain (it does not hold the queued key).
    faults.assert_one_follow_up(cluster, dead=task_id)
    faults.finish()


def test_redis_restart_with_work_queued_loses_nothing(faults: Faults) -> None:
    busy, node, lock = faults.create_paused_mid_launch("fault-c1")
    faults.start_beat()
    worker = faults.start_worker("faults-c1")
    faults.wait_paused(busy, node, lock)
    queued = faults.create("fault-c2")  # the worker is busy: its reconcile waits in Redis
    assert faults.redis.queued() >= 1
    queued.refresh_from_db()
    assert queued.state == ClusterState.PENDING

    faults.redis.crash()
    faults.redis.start()  # empty: the queue, the leases, the queued keys are all gone
    restarted_at, restarted_wall = time.monotonic(), timezone.now()
    assert faults.redis.queued() == 0
    lock.release()

    # Nothing holds the second cluster's work now but the database: the sweep finds it.
    faults.wait_state(queued, ClusterState.RUNNING, SWEEP_SECONDS + START_SECONDS)
    faults.wait_state(busy, ClusterState.RUNNING, START_SECONDS)
    recovered = time.monotonic() - restarted_at
    planned = queued.events.get(step="node planned").created_at
    picked_up = (planned - restarted_wall).total_seconds()
    faults.say(
        f"(c) Redis restarted with work queued: the sweep picked the queued cluster up "
        f"{picked_up:.1f} s later; both running {recovered:.1f} s after the restart"
    )
    assert picked_up <= 3 * SWEEP_SECONDS + 10
    for cluster in (busy, queued):
        faults.assert_one_instance_per_node(cluster)
        faults.assert_one_follow_up(cluster)

    # Again, with both running. The restart also empties the heartbeats the cache held,
    # and rows are written about once a minute: a reconcile that runs before a node's
    # next heartbeat (the sweep's, say, which enqueues every cluster at once) must not
    # take a healthy node for lost.
    silent = settings.RAYDECK_NODE_LOST_AFTER_SECONDS + 1
    newest = max(n.last_heartbeat_at for n in Node.objects.filter(cluster__in=[busy, queued]))
    time.sleep(max(0.0, silent - (timezone.now() - newest).total_seconds()))
    faults.redis.crash()
    faults.redis.start()
    for cluster in (busy, queued):
        reconcile.cluster_reconcile(cluster_id=cluster.pk)  # before any node's next heartbeat
    time.sleep(settings.RAYDECK_HEARTBEAT_SECONDS + SWEEP_SECONDS)
    for cluster in (busy, queued):
        cluster.refresh_from_db()
        assert cluster.state == ClusterState.RUNNING, faults.diagnostics()
        assert not cluster.events.filter(step="node lost").exists(), faults.diagnostics()
        faults.assert_one_instance_per_node(cluster)
    if not worker.alive():
        # kombu 5.7: a second connection loss with unacknowledged messages in hand ends
        # the worker ("Unrecoverable error: AttributeError ... 'hostname'"). Its
        # supervisor (systemd, Kubernetes) starts it again; the sweep has the work.
        faults.say("(c) the worker exited on the second Redis restart (kombu); restarted it")
        faults.start_worker("faults-c2")
    for cluster in (busy, queued):
        faults.assert_one_follow_up(cluster)
    faults.finish()
