"""The reconciler at scale: 1,000 running clusters (a head and 9 workers each: 10,000
nodes) on the stand-in cloud (tests/standin_cloud.py: instances in Redis, latency
injected per call), 2 Celery workers, a temporary PostgreSQL database and a redis-server
of its own.

Measures:
- a full reconcile pass: the beat's sweep judges every cluster in bulk (a steady one,
  as all of these are, needs no task) and enqueues those with work; time until it and
  the reconciles it sent have finished (from the workers' metrics,
  PROMETHEUS_MULTIPROC_DIR). Beside it, a forced pass: a reconcile task for every
  cluster, as the sweep sent before it judged them, and the reconciles per second;
- the lag from a desired-state change (a terminate, through the service) to the first
  cloud call for that cluster, p50/p95, on a quiet control plane and while a reconcile
  of every other cluster is queued;
- database queries of one reconcile pass of one cluster, for clusters of 10 and of 20
  nodes (constant: they should be equal), and where its time goes (DB, the rest).

Goals: pass <= 5 s, lag p95 <= 1 s, queries constant. Prints figures on the last line.
  .venv/bin/python benchmarks/reconcile.py [--clusters 1000] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
from goals import figures_of, verdict_lines

CONCURRENCY = 4  # per worker
WAIT_FOR_CHANGES = 120  # seconds a change may take to reach the cloud before it counts as lost


def start_redis(workdir: Path, groups: list[h.Group]) -> str:
    port = h.free_port()
    redis = h.Group(
        "redis",
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        dict(os.environ),
        workdir,
    )
    groups.append(redis)
    redis.wait_for("Ready to accept connections", 15)
    return f"redis://127.0.0.1:{port}/0"


def test_env(database: str, redis_url: str, workdir: Path, latency_ms: float) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "RAYDECK_", "CELERY_"))
        and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings.test",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
        REDIS_URL=redis_url,
        RAYDECK_TEST_CACHE_PREFIX="bench",
        RAYDECK_TEST_CLOUD_DRIVER="tests.standin_cloud.driver_for",
        RAYDECK_STANDIN_LATENCY_MS=str(latency_ms),
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        RAYDECK_LOG_FORMAT="plain",
        PYTHONPATH=str(h.ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def populate(clusters: int) -> tuple[Any, list[int]]:
    """Clusters already running on the stand-in cloud: rows, instances, heartbeats."""
    from django.utils import timezone

    from clouds.choices import CloudState
    from clouds.models import Cloud
    from clusters.choices import ClusterState, NodeRole, NodeState
    from clusters.models import Cluster, Node
    from clusters.services.configs import compute_config_create
    from clusters.services.defaults import default_image
    from tests.factories import CloudFactory, MembershipFactory, ProjectFactory, UserFactory
    from tests.standin_cloud import driver_for

    owner = UserFactory(email="owner@bench.example.com")
    project = ProjectFactory(slug="bench")
    MembershipFactory(organization=project.organization, user=owner, role="owner")
    cloud = CloudFactory(organization=project.organization, name="stand-in")
    Cloud.objects.filter(pk=cloud.pk).update(state=CloudState.ACTIVE)
    config = {}
    for workers in (9, 19):
        made = compute_config_create(
            organization=project.organization,
            project=None,
            actor=owner,
            name=f"bench-{workers}",
            cloud=cloud,
            worker_groups=[{"name": "cpu", "cpus": 1, "min": workers, "max": workers}],
        )
        config[workers] = made.latest
    image = default_image(cloud)
    now = timezone.now()
    rows = []
    for i in range(clusters + 2):
        workers = 9 if i < clusters else 19  # two larger ones, for the query count
        rows.append(
            Cluster(
                organization=project.organization,
                project=project,
                name=f"bench-{i}",
                cloud=cloud,
                compute_config=config[workers],
                image=image,
                state=ClusterState.RUNNING,
                started_at=now,
                state_changed_at=now,
            )
        )
    made_clusters = Cluster.objects.bulk_create(rows, batch_size=500)
    nodes = []
    for cluster in made_clusters:
        workers = cluster.compute_config.worker_groups[0]["min"]
        for n in range(workers + 1):
            nodes.append(
                Node(
                    organization=project.organization,
                    cluster=cluster,
                    role=NodeRole.HEAD if n == 0 else NodeRole.WORKER,
                    group="" if n == 0 else "cpu",
                    state=NodeState.READY,
                    state_changed_at=now,
                    last_heartbeat_at=now,
                    private_address=f"10.{n}.0.1",
                    ray_ports={"gcs": 6379},
                )
            )
    made_nodes = Node.objects.bulk_create(nodes, batch_size=1000)
    uuids = {c.pk: c.uuid for c in made_clusters}
    instances = driver_for(cloud).seed([(n.uuid, uuids[n.cluster_id]) for n in made_nodes])
    for node in made_nodes:
        node.instance_id = instances[node.uuid]
    Node.objects.bulk_update(made_nodes, ["instance_id"], batch_size=1000)
    return cloud, [c.pk for c in made_clusters]


def keep_heartbeating(stop: Any) -> None:
    from clusters import live
    from clusters.models import Node

    pks = list(Node.objects.values_list("pk", flat=True))
    while not stop.is_set():
        now = time.time()
        live.note_heartbeats({pk: {"at": now} for pk in pks})
        stop.wait(2)


RECONCILE = "clusters.tasks.reconcile_cluster"
SWEEP = "clusters.tasks.sweep_clusters"


def tasks_done(task: str) -> float:
    """How many runs of `task` the workers have finished (their metrics)."""
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for family in registry.collect():
        if family.name == "raydeck_celery_task_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count") and sample.labels.get("task") == task:
                    return sample.value
    return 0.0


def wait_for(task: str, target: float, timeout: float) -> float:
    start = time.monotonic()
    while tasks_done(task) < target:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"only {tasks_done(task):.0f} of {target:.0f} {task} done")
        time.sleep(0.05)
    return time.monotonic() - start


def full_pass() -> tuple[float, int]:
    """The beat's sweep as it runs: it judges every cluster in bulk and enqueues those
    with work. (seconds until it and the reconciles it sent finished, how many it sent)"""
    from clusters.services.reconcile import clusters_needing_reconcile
    from clusters.tasks import sweep_clusters

    sent = len(clusters_needing_reconcile())  # what the sweep will find, the same moment
    sweeps, reconciles = tasks_done(SWEEP), tasks_done(RECONCILE)
    start = time.monotonic()
    sweep_clusters.delay()
    wait_for(SWEEP, sweeps + 1, 300)
    wait_for(RECONCILE, reconciles + sent, 300)
    return time.monotonic() - start, sent


def enqueue_every_pass(cluster_ids: list[int]) -> None:
    from clusters.tasks import enqueue_reconcile

    for pk in cluster_ids:
        enqueue_reconcile(pk, follow_up=True)


def forced_pass(cluster_ids: list[int]) -> float:
    """A reconcile task for every cluster (what the sweep sent before it judged them):
    the time until all finished."""
    before = tasks_done(RECONCILE)
    start = time.monotonic()
    enqueue_every_pass(cluster_ids)
    wait_for(RECONCILE, before + len(cluster_ids), 300)
    return time.monotonic() - start


def change_to_call_lags(cloud: Any, cluster_ids: list[int], spacing: float) -> list[float]:
    """Terminate each cluster (the service, as a request does), `spacing` seconds apart;
    the lag of each is its first cloud call after the change."""
    from clusters.models import Cluster
    from clusters.services.lifecycle import cluster_terminate
    from tests.standin_cloud import driver_for

    changed: dict[str, float] = {}
    for pk in cluster_ids:
        cluster = Cluster.objects.get(pk=pk)
        changed[str(cluster.uuid)] = time.time()
        cluster_terminate(cluster=cluster, actor=None)
        time.sleep(spacing)
    deadline = time.monotonic() + WAIT_FOR_CHANGES
    stand_in = driver_for(cloud)
    first: dict[str, float] = {}
    while time.monotonic() < deadline and len(first) < len(changed):
        for at, _name, cluster in stand_in.calls():
            if cluster in changed and at >= changed[cluster] and cluster not in first:
                first[cluster] = at
        time.sleep(0.2)
    # A change still waiting counts as the whole wait (the queue is behind).
    return sorted(first.get(c, time.time()) - changed[c] for c in changed)


def queries_per_pass(cluster_ids: list[int]) -> tuple[float, float, float, float]:
    """(queries for a 10-node cluster, for a 20-node one, ms per pass, of which DB ms)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from clusters.services.reconcile import cluster_reconcile

    def measure(pk: int) -> tuple[int, float, float]:
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            cluster_reconcile(cluster_id=pk)
            took = time.perf_counter() - start
        db = sum(float(q["time"]) for q in queries.captured_queries)
        return len(queries), took * 1000, db * 1000

    small = [measure(pk) for pk in cluster_ids[:20]]
    large = [measure(pk) for pk in cluster_ids[-2:]]
    return (
        statistics.mean(q for q, _, _ in small),
        statistics.mean(q for q, _, _ in large),
        statistics.mean(ms for _, ms, _ in small),
        statistics.mean(db for _, _, db in small),
    )


def profile_passes(cluster_ids: list[int]) -> None:
    """Where one cluster's pass spends its time: the top functions of 20 passes."""
    import cProfile
    import pstats

    from clusters.services.reconcile import cluster_reconcile

    profiler = cProfile.Profile()
    profiler.enable()
    for pk in cluster_ids[:20]:
        cluster_reconcile(cluster_id=pk)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"raydeck|clusters|clouds|kit", 25)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--profile", action="store_true", help="profile 20 passes, then stop")
    args = parser.parse_args()
    state: dict[str, Any] = {}
    groups: list[h.Group] = []
    workdir = Path(tempfile.mkdtemp(prefix="raydeck-reconcile-bench-"))
    (workdir / "metrics").mkdir()
    failed = False
    figures = ""
    try:
        redis_url = start_redis(workdir, groups)
        database = h.create_database(state, "raydeck_bench_reconcile")
        env = test_env(database, redis_url, workdir, args.latency_ms)
        os.environ.update(env)
        h.migrate(env, workdir, groups)
        sys.path.insert(0, str(h.ROOT))
        import django

        django.setup()
        t0 = time.monotonic()
        cloud, cluster_ids = populate(args.clusters)
        h.log(f"populated {len(cluster_ids)} clusters in {time.monotonic() - t0:.1f}s")
        import threading

        stop = threading.Event()
        threading.Thread(target=keep_heartbeating, args=(stop,), daemon=True).start()
        time.sleep(0.5)
        if args.profile:
            profile_passes(cluster_ids)
            return 0
        q_small, q_large, ms_pass, ms_db = queries_per_pass(cluster_ids)
        h.log(
            f"one pass of one cluster: {q_small:.0f} queries (10 nodes), {q_large:.0f} "
            f"(20 nodes); {ms_pass:.1f} ms, of which {ms_db:.1f} ms in the database"
        )
        for n in (1, 2):
            worker = h.Group(
                f"worker-{n}",
                [
                    h.PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "console",
                    "worker",
                    "-l",
                    "info",
                    "--concurrency",
                    str(CONCURRENCY),
                    "--hostname",
                    f"bench{n}@%h",
                    "--without-gossip",
                    "--without-mingle",
                ],
                env,
                workdir,
            )
            groups.append(worker)
            worker.wait_for(" ready.", 60)
        main_clusters = cluster_ids[: args.clusters]
        swept = [full_pass() for _ in range(2)]
        passes = [seconds for seconds, _sent in swept]
        h.log(
            "full passes (the sweep): "
            + ", ".join(f"{p:.2f}s, {sent} reconciles sent" for p, sent in swept)
        )
        forced = forced_pass(main_clusters)
        h.log(f"a reconcile task for every cluster: {forced:.2f}s")
        quiet = change_to_call_lags(cloud, main_clusters[:40], spacing=0.1)
        h.log(f"quiet lag: p50 {percentile(quiet, 50):.3f}s p95 {percentile(quiet, 95):.3f}s")
        enqueue_every_pass(main_clusters[80:])  # every cluster's pass queued meanwhile
        busy = change_to_call_lags(cloud, main_clusters[40:80], spacing=0.05)
        h.log(f"lag during a pass: p50 {percentile(busy, 50):.3f}s p95 {percentile(busy, 95):.3f}s")
        stop.set()
        figures = (
            f"clusters={len(main_clusters)} nodes={len(main_clusters) * 10} "
            f"latency_ms={args.latency_ms:g} workers=2x{CONCURRENCY} "
            f"full_pass_s={min(passes):.2f} "
            f"sent_by_sweep={swept[0][1]} "
            f"forced_pass_s={forced:.2f} "
            f"reconciles_per_s={len(main_clusters) / forced:.1f} "
            f"lag_p50_s={percentile(quiet, 50):.3f} "
            f"lag_p95_s={percentile(quiet, 95):.3f} "
            f"lag_p95_during_pass_s={percentile(busy, 95):.3f} "
            f"queries_per_cluster_pass={q_small:.0f}@10nodes,{q_large:.0f}@20nodes "
            f"pass_ms_per_cluster={ms_pass:.1f} db_ms_per_cluster={ms_db:.1f} "
            f"load_avg_1m={os.getloadavg()[0]:.1f}"
        )
    except BaseException as exc:
        failed = h.failure(exc)
    finally:
        h.stop_all(groups, timeout=15)
        failed |= h.clean_up(state, h.drop_database)
    if failed:
        print("reconcile benchmark FAILED")
        return 1
    print("\n".join(verdict_lines("reconcile", figures_of(figures))))
    print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
