"""Cluster start on the local cloud: create -> running for a head-only cluster, timed
against a plain `ray start --head` in the same run.

Run by hand:  .venv/bin/python benchmarks/cluster_start.py [--runs 3]

All real, on loopback; nothing is driven in-process:
  - a temporary PostgreSQL database (127.0.0.1:5432), migrated, and a redis-server of
    this run's own on a free port (no persistence) for the cache and the Celery broker;
  - console.settings.production with two changes, in a module in the temp dir: no HTTPS
    redirect (the node agents talk plain HTTP to 127.0.0.1; production has a TLS proxy
    in front) and the local cloud enabled;
  - the web server and the worker as `manage.py serve` starts them: gunicorn (gthread,
    2 workers x 4 threads, --preload) and `celery worker -B --concurrency 2`;
  - a driver (this file with --drive, a Django process of its own) that creates the
    cluster with clusters.services.lifecycle.cluster_create, as the console does, and
    polls the row every 20 ms until it is running. The worker's reconciler launches
    the node; the node's agent registers with gunicorn, starts Ray and reports it
    ready, and that heartbeat marks the cluster running. The driver then
    terminates the cluster (through the worker) and waits until it is terminated.

Raydeck is timed from the cluster_create call to the row reading `running`.

Plain Ray: `python -m ray.scripts.scripts start --head --block` with the flags the agent
gives a head node (free ports, a short temp dir of its own, the same CPUs and memory),
timed from spawn until the readiness the agent requires before it reports ready: the GCS
port listens, the dashboard answers /api/version and lists an alive node (checked every
50 ms). Then stopped by its process group (SIGTERM, SIGKILL after 10 s).

Runs alternate (plain, Raydeck, plain, ...) so the machine's load falls on both alike.
Per Raydeck run, the cluster's events (each carries its step's duration) show where the
time went. Everything (processes, database, Redis, temp dirs, the nodes' Ray temp dirs)
is removed at the end, also on error or Ctrl-C. The LAST line holds the figures:

  ray_start_s=... raydeck_start_s=... ratio=... overhead_s=... goal_overhead_s=1.5 ok=...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from _harness import (
    PRODUCTION_THREADS,
    PRODUCTION_WORKERS,
    PYTHON,
    ROOT,
    Group,
    clean_up,
    create_database,
    drop_database,
    failure,
    free_ports,
    http,
    log,
    stop_all,
    web_command,
)
from goals import goal

GOAL_OVERHEAD_S = goal("cluster_start", "overhead_s").limit
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
POLL_S = 0.02
# The head of the local cloud's default compute config (clusters/services/defaults.py);
# the driver checks that the node it got has these.
HEAD_CPUS, HEAD_MEMORY_MB = 1, 2048
RAY_PORTS = (
    "gcs",
    "dashboard",
    "client_server",
    "node_manager",
    "object_manager",
    "dashboard_agent",
    "metrics",
    "runtime_env_agent",
)
BENCH_MARKER_ENV = "RAYDECK_CLUSTER_START_BENCH"  # on every process this run starts


SETTINGS_MODULE = "raydeck_bench_settings"
SETTINGS_SOURCE = '''"""console.settings.production for the cluster start benchmark."""

from console.settings.production import *  # noqa: F403

# The node agents talk plain HTTP to 127.0.0.1; production has a TLS proxy in front.
SECURE_SSL_REDIRECT = False
RAYDECK_LOCAL_CLOUD_ENABLED = True
'''


# --- processes -----------------------------------------------------------------------


def tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_json(url: str, timeout: float = 1.0) -> Any:
    try:
        with http.open(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def marked_processes(marker: str, node_root: Path) -> list[int]:
    """Pids this run started, with their children wherever they moved their groups:
    those carrying BENCH_MARKER_ENV=marker (ours, plain Ray's daemons), and the nodes'
    (the local cloud passes them only its own variables, RAYDECK_NODE_DIR among them)."""
    ours = f"{BENCH_MARKER_ENV}={marker}".encode()  # a prefix: plain Ray's add ".ray<n>"
    nodes = f"RAYDECK_NODE_DIR={node_root}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                environ = (entry / "environ").read_bytes().split(b"\0")
                if any(v.startswith((ours, nodes)) for v in environ):
                    found.append(int(entry.name))
    return found


def kill_marked(marker: str, node_root: Path) -> int:
    pids = marked_processes(marker, node_root)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


# --- PostgreSQL and Redis ------------------------------------------------------------


def start_redis(tmp: Path, env: dict[str, str], groups: list[Group]) -> str:
    import redis

    port = free_ports(1)[0]
    command = [
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
        str(tmp),
        "--daemonize",
        "no",
    ]
    group = Group("redis", command, env, tmp)
    groups.append(group)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.RedisError):
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return url
        if time.monotonic() > deadline or group.popen.poll() is not None:
            raise RuntimeError(f"redis-server did not start:\n{group.tail()}")
        time.sleep(0.05)


# --- plain `ray start` ---------------------------------------------------------------


def plain_ray_start(
    run: int,
    tmp: Path,
    env: dict[str, str],
    groups: list[Group],
    and_then: Callable[[str], None] | None = None,
) -> float:
    """Seconds from spawning `ray start --head --block` until it is ready as the agent
    defines it (and `and_then(dashboard URL)` returned, if given); then it is stopped."""
    from raydeck_agent.config import ray_cpus
    from raydeck_agent.ray_process import (
        DRAIN_ENV,
        DRAIN_SECONDS,
        OBJECT_STORE_MIN_BYTES,
        OBJECT_STORE_SHARE,
    )

    ports = dict(zip(RAY_PORTS, free_ports(len(RAY_PORTS)), strict=True))
    temp_dir = Path(tempfile.mkdtemp(prefix="rdb-", dir="/tmp"))  # short: Ray's sockets
    memory = HEAD_MEMORY_MB << 20
    object_store = max(int(memory * OBJECT_STORE_SHARE), OBJECT_STORE_MIN_BYTES)
    # The agent's command for a head node (agent/raydeck_agent/ray_process.py).
    command = [
        PYTHON,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--block",
        "--head",
        f"--port={ports['gcs']}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        "--include-dashboard=true",
        f"--ray-client-server-port={ports['client_server']}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={ray_cpus(HEAD_CPUS)}",
        f"--memory={memory}",
        f"--object-store-memory={object_store}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        f"--dashboard-agent-listen-port={ports['dashboard_agent']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    run_marker = f"{env[BENCH_MARKER_ENV]}.ray{run}"
    ray_env = {
        **env,
        DRAIN_ENV: DRAIN_SECONDS,
        "PYTHONUNBUFFERED": "1",
        BENCH_MARKER_ENV: run_marker,
    }
    base = f"http://127.0.0.1:{ports['dashboard']}"
    t0 = time.monotonic()
    group = Group(f"ray-start-{run}", command, ray_env, tmp)
    groups.append(group)
    try:
        while True:
            if group.popen.poll() is not None:
                raise RuntimeError(
                    f"ray start exited with {group.popen.returncode}:\n{group.tail()}"
                )
            if time.monotonic() - t0 > START_TIMEOUT_S:
                raise RuntimeError(f"ray start not ready in {START_TIMEOUT_S}s:\n{group.tail()}")
            if tcp_open(ports["gcs"]) and http_json(f"{base}/api/version") is not None:
                nodes = http_json(f"{base}/api/v0/nodes?limit=10000&detail=false", 2.0)
                result = ((nodes or {}).get("data") or {}).get("result") or {}
                if any(n.get("state") == "ALIVE" for n in result.get("result") or []):
                    if and_then is not None:
                        and_then(base)
                    return time.monotonic() - t0
            time.sleep(0.05)
    finally:
        # Not timed. SIGTERM makes Ray drain (5 s, as on a node); then SIGKILL, also for
        # any daemon of this run outside the group.
        group.stop(timeout=3)
        for pid in marked_processes(run_marker, tmp / "nodes"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- Raydeck: the driver (a Django process of its own) -------------------------------


def bench_tenant() -> tuple[Any, Any, Any]:
    """The owner, project and active local cloud of the benchmark's organization (made
    once; Django is set up)."""
    from accounts.choices import OrgRole
    from accounts.models import Membership, Organization, Project, User
    from clouds.models import Cloud

    org, _ = Organization.objects.get_or_create(
        slug="start-bench", defaults={"name": "Start bench"}
    )
    user = User.objects.filter(email="owner@start-bench.example.com").first()
    if user is None:
        user = User.objects.create_user("owner@start-bench.example.com", None)
    Membership.objects.get_or_create(organization=org, user=user, defaults={"role": OrgRole.OWNER})
    project, _ = Project.objects.get_or_create(
        organization=org, slug="bench", defaults={"name": "Bench"}
    )
    cloud, _ = Cloud.objects.get_or_create(
        organization=org, name="local", defaults={"kind": "local", "state": "active"}
    )
    return user, project, cloud


def drive(name: str) -> None:
    """Create a cluster, wait until it is running, terminate it; print one RESULT line."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from clouds.providers.registry import local_root
    from clusters.choices import ClusterState
    from clusters.models import Cluster
    from clusters.services import lifecycle

    user, project, cloud = bench_tenant()

    def wait(cluster: Cluster, states: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = Cluster.objects.filter(pk=cluster.pk).values_list("state", flat=True)[0]
            if state in states:
                return state
            time.sleep(POLL_S)
        raise RuntimeError(f"{cluster.name} not {states} within {timeout:.0f}s")

    t0 = time.monotonic()
    cluster = lifecycle.cluster_create(project=project, actor=user, name=name, cloud=cloud)
    state = wait(cluster, {ClusterState.RUNNING, ClusterState.FAILED}, START_TIMEOUT_S)
    total = time.monotonic() - t0
    cluster.refresh_from_db()
    node = cluster.nodes.get()
    queued = cluster.events.get(step="queued").created_at
    events = [
        [e.step, round((e.created_at - queued).total_seconds(), 3), e.duration_ms]
        for e in cluster.events.all()
    ]
    agent_ray_s = None
    with contextlib.suppress(OSError, StopIteration, ValueError):
        lines = (local_root(cloud) / str(node.uuid) / "agent.log").read_text().splitlines()

        def stamp(needle: str) -> datetime:
            line = next(x for x in lines if needle in x)
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007

        agent_ray_s = (stamp("Ray head is up") - stamp("starting Ray head")).total_seconds()
    t1 = time.monotonic()
    lifecycle.cluster_terminate(cluster=cluster, actor=None)
    wait(cluster, {ClusterState.TERMINATED}, STOP_TIMEOUT_S)
    result = {
        "state": state,
        "reason": cluster.state_reason,
        "total_s": round(total, 3),
        "terminate_s": round(time.monotonic() - t1, 3),
        "events": events,
        "agent_ray_s": agent_ray_s,
        "node": str(node.uuid),
        "head": [node.cpus, node.memory_mb],
    }
    print("RESULT " + json.dumps(result), flush=True)


def raydeck_start(run: int, tmp: Path, env: dict[str, str], groups: list[Group]) -> dict[str, Any]:
    driver = Group(f"driver-{run}", [PYTHON, __file__, "--drive", f"bench-{run}"], env, tmp)
    groups.append(driver)
    code = driver.wait(timeout=START_TIMEOUT_S + STOP_TIMEOUT_S + 60)
    line = next((x for x in driver.output().splitlines() if x.startswith("RESULT ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"driver failed ({code}):\n{driver.tail()}")
    result = json.loads(line.removeprefix("RESULT "))
    if result["state"] != "running":
        raise RuntimeError(f"the cluster failed: {result['reason']}\n{result['events']}")
    if result["head"] != [HEAD_CPUS, HEAD_MEMORY_MB]:
        log(f"note: the head got {result['head']}, plain Ray {HEAD_CPUS} CPU {HEAD_MEMORY_MB} MB")
    return result


# Consecutive events, and what the time between them is.
PHASES = [
    ("queued", "starting", "worker picks up the first reconcile"),
    ("starting", "instance up", "reconcile: plan the node, launch the process"),
    ("instance up", "agent registered", "agent boots (bash, Python) and registers"),
    ("agent registered", "ray started", "ray start, as the agent sees it (0.1 s checks)"),
    ("ray started", "ready", "ready heartbeat marks the cluster running"),
]


AGENT_RAY = "  of which Ray's own start (agent.log: spawn -> checked up)"
AGENT_AROUND = "  of which the agent: registered -> spawn, up -> ready heartbeat"


def breakdown(results: list[dict[str, Any]]) -> dict[str, float]:
    """Median seconds of each phase, from the events' timestamps (and the agent's log)."""
    phases: dict[str, list[float]] = {label: [] for _, _, label in PHASES}
    phases[AGENT_RAY], phases[AGENT_AROUND] = [], []
    for result in results:
        at = {step: offset for step, offset, _ in result["events"]}
        for first, second, label in PHASES:
            if first in at and second in at:
                phases[label].append(at[second] - at[first])
        if result["agent_ray_s"] is not None and {"agent registered", "ray started"} <= set(at):
            phases[AGENT_RAY].append(result["agent_ray_s"])
            ray_phase = at["ray started"] - at["agent registered"]
            phases[AGENT_AROUND].append(ray_phase - result["agent_ray_s"])
    order = [label for _, _, label in PHASES]
    order.insert(order.index(PHASES[3][2]) + 1, AGENT_AROUND)
    order.insert(order.index(PHASES[3][2]) + 1, AGENT_RAY)
    return {label: statistics.median(phases[label]) for label in order if phases[label]}


# --- main ----------------------------------------------------------------------------


def begin(prefix: str) -> tuple[Path, str] | None:
    """The run's temp dir and process marker, with SIGTERM turned into KeyboardInterrupt
    (so the cleanup runs); None when redis-server, which control_plane runs, is missing."""
    if shutil.which("redis-server") is None:
        print("redis-server is missing", file=sys.stderr)
        return None

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    log(f"temporary directory {tmp}")
    return tmp, secrets.token_hex(8)


def tear_down(tmp: Path, marker: str, state: dict[str, Any], groups: list[Group]) -> bool:
    """Undo control_plane and the run: every process (also a node or Ray daemon left
    behind), the database, the nodes' Ray temp dirs and `tmp`. True if a step failed."""
    stop_all(groups, timeout=15)
    killed = kill_marked(marker, tmp / "nodes")
    if killed:
        log(f"killed {killed} leftover processes")
    failed = clean_up(state, drop_database)
    # The nodes' Ray temp dirs: /tmp/raydeck/<node id[:8]> (registration_answer).
    for node_dir in (tmp / "nodes").glob("*/*"):
        shutil.rmtree(Path("/tmp/raydeck") / node_dir.name[:8], ignore_errors=True)  # noqa: S108
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"removed {tmp}")
    return failed


def control_plane(
    tmp: Path, marker: str, state: dict[str, Any], groups: list[Group], prefix: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Raydeck as production runs it, on loopback: a temporary database (named in
    `state`), a redis-server, migrate, gunicorn and `celery worker -B`. Returns the
    environment of Raydeck's processes and the plain one (without Raydeck's settings)."""
    (tmp / f"{SETTINGS_MODULE}.py").write_text(SETTINGS_SOURCE)
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "RAYDECK_", "CELERY_", "RAY_"))
        and k not in ("DATABASE_URL", "REDIS_URL", "PYTHONPATH")
    }
    base_env[BENCH_MARKER_ENV] = marker
    redis_url = start_redis(tmp, base_env, groups)
    dbname = create_database(state, prefix)
    web_port = free_ports(1)[0]
    env = {
        **base_env,
        "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}{os.pathsep}{ROOT / 'benchmarks'}",
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{dbname}",
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "RAYDECK_VAR_DIR": str(tmp / "var"),
        "RAYDECK_AGENT_URL": f"http://127.0.0.1:{web_port}",
        # Loopback only: the agents' plain HTTP never leaves this machine.
        "RAYDECK_AGENT_ALLOW_HTTP": "1",
        "RAYDECK_LOCAL_CLOUD_ROOT": str(tmp / "nodes"),
        "PYTHONUNBUFFERED": "1",
    }
    migrate = Group("migrate", [PYTHON, "manage.py", "migrate", "--noinput"], env, tmp)
    groups.append(migrate)
    if migrate.wait(timeout=300) != 0:
        raise RuntimeError(f"migrate failed:\n{migrate.tail()}")
    log("migrated")
    web = Group(
        "gunicorn",
        web_command(
            f"127.0.0.1:{web_port}", workers=PRODUCTION_WORKERS, threads=PRODUCTION_THREADS
        ),
        env,
        tmp,
    )
    groups.append(web)
    worker = Group(
        "worker",
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "console",
            "worker",
            "-B",
            "--schedule",
            str(tmp / "celerybeat-schedule"),
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
        tmp,
    )
    groups.append(worker)
    deadline = time.monotonic() + 60
    while http_json(f"http://127.0.0.1:{web_port}/healthz") is None:
        if web.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not come up:\n{web.tail()}")
        time.sleep(0.1)
    worker.wait_for(" ready.", timeout=60)
    log(f"gunicorn on 127.0.0.1:{web_port}, Celery worker and beat up")
    return env, base_env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # internal: one Raydeck run
    args = parser.parse_args()
    if args.drive:
        drive(args.drive)
        return 0
    begun = begin("raydeck-start-bench-")
    if begun is None:
        return 2
    tmp, marker = begun
    groups: list[Group] = []
    state: dict[str, Any] = {}
    plain: list[float] = []
    raydeck: list[dict[str, Any]] = []
    failed = False
    try:
        env, base_env = control_plane(tmp, marker, state, groups, "raydeck_start")

        for run in range(1, args.runs + 1):
            seconds = plain_ray_start(run, tmp, base_env, groups)
            plain.append(seconds)
            log(f"run {run}: plain ray start ready in {seconds:.2f}s")
            result = raydeck_start(run, tmp, env, groups)
            raydeck.append(result)
            steps = ", ".join(f"{s} +{o:.2f}s" for s, o, _ in result["events"])
            log(
                f"run {run}: Raydeck create -> running in {result['total_s']:.2f}s "
                f"(terminated in {result['terminate_s']:.1f}s); events: {steps}"
            )
    except (KeyboardInterrupt, Exception) as exc:
        failed = failure(exc)
    finally:
        failed = tear_down(tmp, marker, state, groups) or failed

    if not plain or not raydeck or len(raydeck) < args.runs:
        print(f"FAILED runs={len(raydeck)}/{args.runs}", flush=True)
        return 1
    ray_s = statistics.median(plain)
    raydeck_s = statistics.median(r["total_s"] for r in raydeck)
    server_s = statistics.median(
        next(d for s, _, d in r["events"] if s == "ready") / 1000 for r in raydeck
    )
    log("Raydeck's time by phase (medians; cluster events, agent.log):")
    for label, seconds in breakdown(raydeck).items():
        log(f"  {seconds:5.2f}s  {label}")
    plain_runs = ", ".join(f"{x:.2f}" for x in plain)
    raydeck_runs = ", ".join(f"{r['total_s']:.2f}" for r in raydeck)
    log(
        f"plain ray start {plain_runs}s; Raydeck {raydeck_runs}s (the cluster's own "
        f"created -> ready event: median {server_s:.2f}s)"
    )
    overhead = raydeck_s - ray_s
    # Less noisy than the difference of two medians on a busy machine: the part of each
    # Raydeck run that is not Ray's own start (as the agent timed it).
    own = [r["total_s"] - r["agent_ray_s"] for r in raydeck if r["agent_ray_s"] is not None]
    own_s = f"{statistics.median(own):.2f}" if own else "nan"
    print(
        f"ray_start_s={ray_s:.2f} raydeck_start_s={raydeck_s:.2f} "
        f"ratio={raydeck_s / ray_s:.2f} overhead_s={overhead:.2f} raydeck_own_s={own_s} "
        f"goal_overhead_s={GOAL_OVERHEAD_S} ok={int(overhead <= GOAL_OVERHEAD_S)} "
        f"runs={args.runs}" + (" errors=1" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
