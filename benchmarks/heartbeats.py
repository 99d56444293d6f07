"""Agent heartbeats against the production web server on PostgreSQL and Redis.

Run by hand:  .venv/bin/python benchmarks/heartbeats.py [--nodes 5000] [--duration 30]

  1. A temporary PostgreSQL database (127.0.0.1:5432) is created and migrated with
     console.settings.production; an empty Redis database (not 0) is taken for the cache.
  2. N nodes in the READY state are seeded through the ORM (one organization, project,
     cloud, compute config, image; clusters of --per-cluster nodes: a head and workers),
     each with its own credential (Node.credential_hash = hash_secret(credential)), the
     resources Ray reports, and a last persisted heartbeat spread over the last minute,
     as in a running installation.
  3. gunicorn serves console.wsgi:application on a free loopback port, as production
     starts it (deploy/entrypoint.sh; the command line is console/processes.py's, with
     gthread, 2 workers x 4 threads, --preload, --reuse-port):
     - 2 workers: one per core. A steady heartbeat is pure CPU (no SQL, one batched
       Redis write), so more processes than cores only add switches and memory;
     - 4 threads each: a worker keeps answering while a thread waits on PostgreSQL
       (the live-node table reload, the batched row writes, a registration, a page),
       and keeps the load balancer's connections alive; more threads only fight over
       the GIL;
     - --reuse-port: a listening socket per worker, so the kernel spreads connections
       over the workers. Without it one worker can end up with every kept-alive
       connection and the other idles (measured: half the throughput); the sync worker
       class has the same problem.
     No access log: Django logs each request once.
  4. wrk (Debian package `wrk`) drives POST /agent/v1/heartbeat from a Lua script that
     rotates through every node's credential (each node sends its own credential and
     its own realistic body: state "ready", ray {...}, usage {...}; a log tail on one
     request in --log-tail-every). Requests carry X-Forwarded-Proto: https, as the load
     balancer in front of production sets it. A short warm-up, then --duration seconds
     measured. Every answer that is not 200 with "action": "run" counts as an error.
  5. DB writes: n_tup_upd of clusters_node in pg_stat_user_tables, before the load and
     after the web server stopped (server processes flush their counters on exit).

The LAST line holds the figures:
  heartbeats_per_s=... p50_ms=... p99_ms=... nodes=... errors=... db_writes_per_s=...

Everything (the database, the Redis database, the processes, the temporary directory)
is removed at the end, also on error or Ctrl-C.

Each node is revisited every nodes / heartbeats_per_s seconds: with the default 5,000
nodes at ~3,500/s that is ~1.4 s, faster than the 5 s an agent waits. The server does
not depend on it (its table of live nodes is reloaded whole every few seconds, whoever
calls), but it costs more with more nodes: --nodes 15000 gives the revisit time of
real agents at this rate. Rows are written once a minute per node (plus log tails), so
db_writes_per_s is about nodes / 60, or more while a node heartbeats to both workers
within a few seconds of its minute (each decides from its own table).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    PG_ADMIN_DSN,
    PYTHON,
    ROOT,
    Group,
    clean_up,
    create_database,
    drop_database,
    failure,
    free_port,
    log,
    migrate,
    production_env,
    stop_all,
    wait_healthz,
    web_command,
)
from goals import verdict_lines

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# What every seeded node's Ray reports as its total resources; the bodies send the same,
# so the only writes are the once-a-minute persists (and the log tails).
RESOURCES_TOTAL = {
    "CPU": 8.0,
    "GPU": 0.0,
    "memory": 32212254720.0,
    "object_store_memory": 9663676416.0,
}


# --- processes -----------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (and of their children that have exited and been reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError):
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
    return pids


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


# --- PostgreSQL and Redis ------------------------------------------------------------


def node_updates(dbname: str) -> int:
    import psycopg

    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={dbname}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'clusters_node'"
        ).fetchone()
    return int(row[0]) if row else 0


def backend_pids(dbname: str) -> list[int]:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", [dbname]
        ).fetchall()
    return [int(r[0]) for r in rows]


def claim_redis_db(state: dict[str, Any]) -> int:
    """The highest-numbered empty Redis database (never 0), marked as ours."""
    import redis

    for number in range(15, 0, -1):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        marker = f"raydeck-benchmark:{os.getpid()}"
        if client.dbsize() == 0 and client.set("raydeck-benchmark-claim", marker, nx=True):
            if client.dbsize() == 1:
                state["redis_db"] = number
                log(f"using Redis database {number}")
                return number
            client.delete("raydeck-benchmark-claim")
    raise RuntimeError("no empty Redis database between 1 and 15")


def flush_redis_db(state: dict[str, Any]) -> None:
    number = state.get("redis_db")
    if not number:
        return
    import redis

    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number).flushdb()
    log(f"flushed Redis database {number}")


def redis_pid() -> int | None:
    import redis

    with contextlib.suppress(Exception):
        return int(redis.Redis(host=REDIS_HOST, port=REDIS_PORT).info("server")["process_id"])
    return None


# --- seeding (runs in a child process with the production settings) -----------------


def seed(nodes: int, per_cluster: int, tokens_path: Path) -> None:
    """Create the rows through the ORM and write one credential per line."""
    import random
    from datetime import timedelta

    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import Organization, Project
    from accounts.tokens import hash_secret, new_secret
    from clouds.models import Cloud
    from clusters.choices import ClusterState, NodeRole, NodeState
    from clusters.models import (
        Cluster,
        ComputeConfig,
        ComputeConfigVersion,
        ContainerImage,
        Node,
    )

    rng = random.Random(42)
    now = timezone.now()
    with transaction.atomic():
        org = Organization.objects.create(name="Heartbeat bench", slug="heartbeat-bench")
        project = Project.objects.create(organization=org, name="Fleet", slug="fleet")
        cloud = Cloud.objects.create(
            organization=org, name="bench", kind="aws", region="us-east-1", state="active"
        )
        config = ComputeConfig.objects.create(organization=org, name="fleet")
        version = ComputeConfigVersion.objects.create(
            organization=org,
            config=config,
            number=1,
            cloud=cloud,
            head_instance_type="m5.2xlarge",
            head_cpus=8,
            head_memory_mb=32768,
            worker_groups=[
                {
                    "name": "cpu",
                    "instance_type": "m5.2xlarge",
                    "cpus": 8,
                    "memory_mb": 32768,
                    "min": per_cluster - 1,
                    "max": per_cluster - 1,
                    "spot": False,
                }
            ],
        )
        image = ContainerImage.objects.create(
            name="Ray", image_uri="rayproject/ray:2.60.0", ray_version="2.60.0"
        )
        count = (nodes + per_cluster - 1) // per_cluster
        clusters = Cluster.objects.bulk_create(
            Cluster(
                organization=org,
                project=project,
                name=f"fleet-{i:05d}",
                cloud=cloud,
                compute_config=version,
                image=image,
                state=ClusterState.RUNNING,
                started_at=now,
            )
            for i in range(count)
        )
        credentials: list[str] = []
        rows = []
        for i in range(nodes):
            cluster = clusters[i // per_cluster]
            head = i % per_cluster == 0
            credential = new_secret("rdn")
            credentials.append(credential)
            address = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            rows.append(
                Node(
                    organization=org,
                    cluster=cluster,
                    role=NodeRole.HEAD if head else NodeRole.WORKER,
                    group="" if head else "cpu",
                    instance_type="m5.2xlarge",
                    cpus=8,
                    memory_mb=32768,
                    instance_id=f"i-{i:017x}",
                    state=NodeState.READY,
                    private_address=address,
                    ray_ports={"gcs": 6379, "dashboard": 8265} if head else {},
                    resources={"resources_total": RESOURCES_TOTAL},
                    usage={"cpu_percent": 10.0},
                    credential_hash=hash_secret(credential),
                    bootstrap_used_at=now - timedelta(hours=1),
                    registered_at=now - timedelta(hours=1),
                    ready_at=now - timedelta(hours=1),
                    launched_at=now - timedelta(hours=1),
                    # A running fleet: persisted heartbeats spread over the last minute.
                    last_heartbeat_at=now - timedelta(seconds=rng.uniform(0, 60)),
                )
            )
        Node.objects.bulk_create(rows, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum would have done on a live database
    # Agents heartbeat in no particular order across clusters.
    rng.shuffle(credentials)
    tokens_path.write_text("\n".join(credentials) + "\n")
    print(f"seeded {count} clusters, {nodes} nodes", flush=True)


# --- load ----------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Each request: the next node's own credential and a body like the agent's.
local tokens, bodies = {}, {}
local n, i, tail_every, tail_body = 0, 0, 0, nil
non200, wrong = 0, 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  n = #tokens
  local nthreads = tonumber(args[2])
  tail_every = tonumber(args[3])
  i = math.floor(n * tid / nthreads)
  math.randomseed(1000 + tid)
  local ray = '"ray":{"resources_total":{"CPU":8.0,"GPU":0.0,"memory":32212254720.0,' ..
              '"object_store_memory":9663676416.0},"resources_available":{"CPU":%.1f,' ..
              '"GPU":0.0,"memory":%.1f,"object_store_memory":9663676416.0},' ..
              '"ray_version":"2.60.0"}'
  for k = 1, 97 do
    local cpu = math.random() * 100
    bodies[k] = string.format('{"state":"ready","message":"",' .. ray .. ',"usage":' ..
      '{"cpu_percent":%.1f,"memory_percent":%.1f,"memory_used_mb":%d,' ..
      '"disk_percent":%.1f,"gpu_percent":0.0,"load_1m":%.2f}}',
      math.floor((100 - cpu) * 8) / 100, math.random() * 32212254720.0,
      cpu, math.random() * 100, math.random(1000, 30000), math.random() * 100,
      math.random() * 8)
  end
  local lines = {}
  for k = 1, 20 do
    lines[k] = string.format('"(raylet) [2026-11-25 12:00:%02d] worker %d: task finished"',
                             k, k)
  end
  tail_body = '{"state":"ready","message":"",' ..
    string.format(ray, 4.0, 16106127360.0) ..
    ',"usage":{"cpu_percent":50.0,"memory_percent":50.0},"log_tail":[' ..
    table.concat(lines, ",") .. ']}'
end

function request()
  i = i + 1
  if i > n then i = 1 end
  local body = bodies[(i % 97) + 1]
  if tail_every > 0 and math.random(tail_every) == 1 then body = tail_body end
  return wrk.format("POST", "/agent/v1/heartbeat", {
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Content-Type"] = "application/json",
    ["X-Forwarded-Proto"] = "https",
  }, body)
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  elseif not string.find(body, '"action": "run"', 1, true) then
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local bad, odd = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non200")
    odd = odd + t:get("wrong")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "non200=%d wrong=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, bad, odd,
    e.connect + e.read + e.write + e.timeout))
end
"""


def run_wrk(
    name: str,
    port: int,
    args: argparse.Namespace,
    seconds: int,
    tmp: Path,
    groups: list[Group],
    env: dict[str, str],
) -> dict[str, float]:
    script = tmp / "heartbeat.lua"
    script.write_text(WRK_SCRIPT)
    command = [
        "wrk",
        "-t",
        str(args.wrk_threads),
        "-c",
        str(args.connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        "--",
        str(tmp / "tokens.txt"),
        str(args.wrk_threads),
        str(args.log_tail_every),
    ]
    group = Group(name, command, env, tmp)
    groups.append(group)
    group.wait(timeout=seconds + 60)
    out = group.output()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
    result = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


# --- main ----------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--per-cluster", type=int, default=50, help="nodes per cluster")
    parser.add_argument("--duration", type=int, default=30, help="measured seconds (>= 5)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument(
        "--log-tail-every",
        type=int,
        default=200,
        help="one request in this many carries a log tail (0: never)",
    )
    parser.add_argument("--seed", type=Path, help=argparse.SUPPRESS)  # internal
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.duration < 5:
        print("--duration: measure at least 5 s (20 s for a figure to quote)", file=sys.stderr)
        return 2
    if args.seed:
        seed(args.nodes, args.per_cluster, args.seed)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    tmp = Path(tempfile.mkdtemp(prefix="raydeck-hb-bench-"))
    groups: list[Group] = []
    state: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    failed = False
    log(f"temporary directory {tmp}")
    try:
        dbname = create_database(state, "raydeck_hb")
        redis_db = claim_redis_db(state)
        env = production_env(dbname, f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}", tmp / "var")
        migrate(env, tmp, groups)

        t0 = time.monotonic()
        tokens = tmp / "tokens.txt"
        seeder = Group(
            "seed",
            [
                PYTHON,
                __file__,
                "--seed",
                str(tokens),
                "--nodes",
                str(args.nodes),
                "--per-cluster",
                str(args.per_cluster),
            ],
            env,
            tmp,
        )
        groups.append(seeder)
        if seeder.wait(timeout=600) != 0:
            raise RuntimeError(f"seeding failed:\n{seeder.tail()}")
        log(f"{seeder.tail(1)} in {time.monotonic() - t0:.1f}s")

        port = free_port()
        web = web_command(f"127.0.0.1:{port}", workers=args.workers, threads=args.threads)
        server = Group("gunicorn", web, env, tmp)
        groups.append(server)
        wait_healthz(server, port)
        log(f"gunicorn up on 127.0.0.1:{port}: {args.workers} workers x {args.threads} threads")

        updates_before = node_updates(dbname)
        warm = run_wrk("wrk-warmup", port, args, args.warmup, tmp, groups, env)
        log(f"warm-up: {warm['rate']:.0f} heartbeats/s, p99 {warm['p99_us'] / 1000:.1f} ms")

        redis_server = redis_pid()
        pg_pids = backend_pids(dbname)
        web_pids = group_pids(server.pid)
        workers_before = {pid: cpu_seconds([pid]) for pid in web_pids}
        cpu_before = {
            "web": cpu_seconds(web_pids),
            "postgres": cpu_seconds(pg_pids),
            "redis": cpu_seconds([redis_server] if redis_server else []),
        }
        busy0, total0 = machine_busy()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t_wrk = time.monotonic()
        main_run = run_wrk("wrk", port, args, args.duration, tmp, groups, env)
        wall = time.monotonic() - t_wrk
        busy1, total1 = machine_busy()
        cpu_after = {
            "web": cpu_seconds(web_pids),
            "postgres": cpu_seconds(pg_pids),
            "redis": cpu_seconds([redis_server] if redis_server else []),
        }
        split = sorted(
            (cpu_seconds([pid]) - before for pid, before in workers_before.items()), reverse=True
        )
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, now reaped
        wrk_cpu = (children1.ru_utime + children1.ru_stime) - (
            children0.ru_utime + children0.ru_stime
        )
        server.stop(timeout=20)
        load_seconds = args.warmup + args.duration
        updates = node_updates(dbname) - updates_before

        rate = main_run["rate"]
        errors = int(main_run["non200"] + main_run["wrong"] + main_run["socket_errors"])
        cores = os.cpu_count() or 1
        machine_pct = 100 * (busy1 - busy0) / max(1.0, total1 - total0)
        per_request_us = {
            k: 1e6 * (cpu_after[k] - cpu_before[k]) / max(1.0, main_run["requests"])
            for k in cpu_before
        }
        log(
            f"measured {main_run['duration_us'] / 1e6:.1f}s: {main_run['requests']:.0f} "
            f"heartbeats = {rate:.0f}/s; p50 {main_run['p50_us'] / 1000:.2f} ms, "
            f"p90 {main_run['p90_us'] / 1000:.2f} ms, p99 {main_run['p99_us'] / 1000:.2f} ms, "
            f"max {main_run['max_us'] / 1000:.1f} ms; non-200 {main_run['non200']:.0f}, "
            f"wrong answer {main_run['wrong']:.0f}, socket errors {main_run['socket_errors']:.0f}"
        )
        log(
            f"CPU per heartbeat: web {per_request_us['web']:.0f} us, "
            f"postgres {per_request_us['postgres']:.0f} us, redis {per_request_us['redis']:.0f} us"
            f"; web processes' CPU s: {' '.join(f'{x:.1f}' for x in split)}"
            f"; machine {machine_pct:.0f}% busy of {cores} cores over {wall:.1f}s "
            f"(wrk and anything else running here included); wrk "
            f"{1e6 * wrk_cpu / max(1.0, main_run['requests']):.0f} us"
        )
        log(
            f"clusters_node rows updated: {updates} over {load_seconds}s of load "
            f"(warm-up included) = {updates / load_seconds:.1f}/s; a node is revisited "
            f"every {args.nodes / rate:.1f}s"
        )
        figures.update(
            heartbeats_per_s=round(rate),
            p50_ms=round(main_run["p50_us"] / 1000, 2),
            p99_ms=round(main_run["p99_us"] / 1000, 2),
            nodes=args.nodes,
            errors=errors,
            db_writes_per_s=round(updates / load_seconds, 1),
            p90_ms=round(main_run["p90_us"] / 1000, 2),
            max_ms=round(main_run["max_us"] / 1000, 1),
            requests=int(main_run["requests"]),
            seconds=round(main_run["duration_us"] / 1e6, 1),
            db_node_updates=updates,
            web_cpu_us=round(per_request_us["web"]),
            pg_cpu_us=round(per_request_us["postgres"]),
            redis_cpu_us=round(per_request_us["redis"]),
            machine_busy_pct=round(machine_pct),
            workers=args.workers,
            threads=args.threads,
            connections=args.connections,
        )
    except (KeyboardInterrupt, Exception) as exc:
        failed = failure(exc)
    finally:
        stop_all(groups, timeout=20)
        failed = clean_up(state, drop_database, flush_redis_db) or failed
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"removed {tmp}")

    if figures:
        print("\n".join(verdict_lines("heartbeats", figures)), flush=True)
    print(" ".join(f"{k}={v}" for k, v in figures.items()) or "failed=1", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
