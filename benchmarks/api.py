"""The JSON API's cluster list against the production web server on PostgreSQL and Redis.

Run by hand:  .venv/bin/python benchmarks/api.py [--clusters 10000] [--duration 20]

  1. A temporary PostgreSQL database (127.0.0.1:5432) is created and migrated with
     console.settings.production; an empty Redis database (not 0) is taken for the cache
     (sessions, the API's per-token rate-limit counters).
  2. One organization with --clusters clusters (bulk-created through the ORM, spread over
     two projects and the states), its owner, and 17 API tokens made by
     accounts.services.token_create: one for the sequential run, one per concurrent client.
  3. gunicorn serves console.wsgi:application as `manage.py serve` starts it (gthread,
     2 workers x 4 threads, --preload, --reuse-port; see benchmarks/heartbeats.py for
     why), without the access log. The rate limit stays on (each request counts in
     Redis) with a ceiling the load cannot reach: RAYDECK_API_RATE_LIMIT=10000000.
     The list is answered by its lean path (console/api/fast.py) with the token lookup
     and the page query as prepared statements (kit/statements.py), as in
     production; queries_per_request counts them (Django's per-request connection
     health check, a SELECT 1, comes on top).
  4. Sequential: after 50 warm-up requests, --sequential (300) requests of
     GET /api/v1/orgs/<org>/clusters?limit=50 one after the other on one kept-alive
     connection from this process; p50/p99 of the client-side latency. Every answer must
     be 200 with 50 items and a next_cursor.
  5. Concurrent: wrk (Debian package `wrk`), --clients (16) connections, each request
     with the next of the 16 tokens, for --duration seconds after a short warm-up;
     requests/s, p50/p99, and every non-200 answer counted as an error.

The LAST line holds the figures:
  seq_p50_ms=... seq_p99_ms=... concurrent_rps=... concurrent_p50_ms=... concurrent_p99_ms=...
  clusters=... errors=... queries_per_request=... web_cpu_ms=... pg_cpu_ms=... load_avg=...

web_cpu_ms and pg_cpu_ms (CPU time of the gunicorn processes and of the database's
backends, per request of the concurrent run) do not grow with other work on the
machine the way latencies do; load_avg says how busy the machine was.

Everything (the database, the Redis database, the processes, the temporary directory)
is removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import migrate, production_env, web_command
from goals import verdict_lines

# The same process, database and Redis helpers as the heartbeat benchmark.
from heartbeats import (
    PYTHON,
    REDIS_HOST,
    REDIS_PORT,
    ROOT,
    Group,
    backend_pids,
    claim_redis_db,
    cpu_seconds,
    create_database,
    drop_database,
    flush_redis_db,
    free_port,
    group_pids,
    log,
    wait_healthz,
)

ORG = "api-bench"
TOKENS = 17

WRK_SCRIPT = r"""
-- Each request: the next client's token, the first page of the cluster list.
local tokens, n, i = {}, 0, 0
non200 = 0
local threads = {}

function setup(thread) table.insert(threads, thread) end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  n = #tokens
end

function request()
  i = i % n + 1
  return wrk.format("GET", "/api/v1/orgs/api-bench/clusters?limit=50", {
    ["Authorization"] = "Bearer " .. tokens[i],
    ["X-Forwarded-Proto"] = "https",
  })
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non200") end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non200=%d " ..
    "socket_errors=%d\n", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), latency.max, bad, e.connect + e.read + e.write + e.timeout))
end
"""


def seed(clusters: int, tokens_path: Path) -> None:
    """Rows through the ORM; the tokens' secrets one per line (the first: sequential)."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from accounts import services
    from accounts.choices import OrgRole
    from accounts.models import Membership, Organization, Project, User
    from clouds.models import Cloud
    from clusters.choices import ClusterState
    from clusters.models import Cluster, ComputeConfig, ComputeConfigVersion, ContainerImage

    states = [ClusterState.RUNNING, ClusterState.TERMINATED, ClusterState.PENDING]
    with transaction.atomic():
        org = Organization.objects.create(name="API bench", slug=ORG)
        owner = User.objects.create_user("owner@api-bench.example.com", "x" * 20)
        Membership.objects.create(organization=org, user=owner, role=OrgRole.OWNER)
        projects = [
            Project.objects.create(organization=org, name=f"Team {i}", slug=f"team-{i}")
            for i in range(2)
        ]
        cloud = Cloud.objects.create(
            organization=org, name="bench", kind="aws", region="us-east-1", state="active"
        )
        config = ComputeConfig.objects.create(organization=org, name="standard")
        version = ComputeConfigVersion.objects.create(
            organization=org, config=config, number=1, cloud=cloud
        )
        image = ContainerImage.objects.create(
            name="Ray", image_uri="rayproject/ray:2.60.0", ray_version="2.60.0"
        )
        Cluster.objects.bulk_create(
            (
                Cluster(
                    organization=org,
                    project=projects[i % 2],
                    name=f"c-{i:05d}",
                    cloud=cloud,
                    compute_config=version,
                    image=image,
                    state=states[i % 3],
                    created_by=owner,
                )
                for i in range(clusters)
            ),
            batch_size=2000,
        )
    # token_create is a transaction of its own (durable): not inside the one above.
    secrets_ = [
        services.token_create(
            organization=org, actor=owner, name=f"bench {i}", days=1, read_only=False
        )[1]
        for i in range(TOKENS)
    ]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum would have done on a live database
    tokens_path.write_text("\n".join(secrets_) + "\n")
    # The queries one request makes, counted in-process with the same code path.
    from django.test import Client

    client = Client(
        headers={
            "Authorization": f"Bearer {secrets_[0]}",
            "Host": "127.0.0.1",
            "X-Forwarded-Proto": "https",
        }
    )
    url = f"/api/v1/orgs/{ORG}/clusters?limit=50"
    client.get(url)  # the token's last use is written once a minute: not per request
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    print(
        f"seeded {clusters} clusters; queries_per_request={len(queries)} "
        f"status={response.status_code}",
        flush=True,
    )


def sequential(port: int, secret: str, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {
        "Authorization": f"Bearer {secret}",
        "X-Forwarded-Proto": "https",
        "Host": "127.0.0.1",
    }
    path = f"/api/v1/orgs/{ORG}/clusters?limit=50"
    timings = []
    for _ in range(count):
        t0 = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        timings.append((time.perf_counter() - t0) * 1000)
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {body[:300]!r}")
        page = json.loads(body)
        if len(page["items"]) != 50 or not page["next_cursor"]:
            raise RuntimeError(f"not a full page: {body[:300]!r}")
    connection.close()
    return timings


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def run_wrk(
    name: str,
    port: int,
    clients: int,
    seconds: int,
    tmp: Path,
    tokens: Path,
    groups: list[Group],
    env: dict[str, str],
) -> dict[str, float]:
    script = tmp / "api.lua"
    script.write_text(WRK_SCRIPT)
    command = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(clients),
        "-d",
        f"{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        "--",
        str(tokens),
    ]
    group = Group(name, command, env, tmp)
    groups.append(group)
    group.wait(timeout=seconds + 60)
    line = next((x for x in group.output().splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{group.output()}")
    result = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=int, default=20, help="measured seconds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=Path, help=argparse.SUPPRESS)  # internal
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.seed:
        seed(args.clusters, args.seed)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    tmp = Path(tempfile.mkdtemp(prefix="raydeck-api-bench-"))
    groups: list[Group] = []
    state: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    failed = False
    log(f"temporary directory {tmp}")
    try:
        dbname = create_database(state, "raydeck_api")
        redis_db = claim_redis_db(state)
        env = production_env(
            dbname,
            f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
            tmp / "var",
            RAYDECK_API_RATE_LIMIT="10000000",
        )
        migrate(env, tmp, groups)

        t0 = time.monotonic()
        tokens = tmp / "tokens.txt"
        seeder = Group(
            "seed",
            [PYTHON, __file__, "--seed", str(tokens), "--clusters", str(args.clusters)],
            env,
            tmp,
        )
        groups.append(seeder)
        if seeder.wait(timeout=600) != 0:
            raise RuntimeError(f"seeding failed:\n{seeder.tail()}")
        seeded = seeder.tail(1)
        log(f"{seeded} in {time.monotonic() - t0:.1f}s")
        queries = int(seeded.split("queries_per_request=")[1].split()[0])

        port = free_port()
        web = web_command(f"127.0.0.1:{port}", workers=args.workers, threads=args.threads)
        server = Group("gunicorn", web, env, tmp)
        groups.append(server)
        wait_healthz(server, port)
        log(
            f"gunicorn up on 127.0.0.1:{port}: {args.workers} gthread workers x "
            f"{args.threads} threads"
        )

        all_tokens = tokens.read_text().split()
        sequential(port, all_tokens[0], 50)  # warm-up: connections, caches, both workers
        timings = sequential(port, all_tokens[0], args.sequential)
        seq_p50, seq_p99 = statistics.median(timings), percentile(timings, 99)
        log(
            f"sequential: {len(timings)} requests, p50 {seq_p50:.2f} ms, p99 {seq_p99:.2f} ms, "
            f"mean {statistics.fmean(timings):.2f} ms"
        )

        clients = tmp / "clients.txt"
        clients.write_text("\n".join(all_tokens[1:]) + "\n")
        run_wrk("wrk-warmup", port, args.clients, args.warmup, tmp, clients, groups, env)
        # CPU per request, which a busy machine does not inflate the way it does latency.
        web_pids, pg_pids = group_pids(server.pid), backend_pids(dbname)
        web_cpu0, pg_cpu0 = cpu_seconds(web_pids), cpu_seconds(pg_pids)
        load = os.getloadavg()[0]
        run = run_wrk("wrk", port, args.clients, args.duration, tmp, clients, groups, env)
        web_ms = 1000 * (cpu_seconds(web_pids) - web_cpu0) / max(1.0, run["requests"])
        pg_ms = 1000 * (cpu_seconds(pg_pids) - pg_cpu0) / max(1.0, run["requests"])
        log(
            f"CPU per request: web {web_ms:.2f} ms, PostgreSQL {pg_ms:.2f} ms; machine load "
            f"average {load:.1f} on {os.cpu_count()} cores when the run started"
        )
        errors = int(run["non200"] + run["socket_errors"])
        log(
            f"concurrent: {args.clients} clients for {run['duration_us'] / 1e6:.1f}s: "
            f"{run['requests']:.0f} requests = {run['rate']:.0f}/s; p50 "
            f"{run['p50_us'] / 1000:.2f} ms, p99 {run['p99_us'] / 1000:.2f} ms, max "
            f"{run['max_us'] / 1000:.1f} ms; non-200 {run['non200']:.0f}, socket errors "
            f"{run['socket_errors']:.0f}"
        )
        figures.update(
            seq_p50_ms=round(seq_p50, 2),
            seq_p99_ms=round(seq_p99, 2),
            concurrent_rps=round(run["rate"]),
            concurrent_p50_ms=round(run["p50_us"] / 1000, 2),
            concurrent_p99_ms=round(run["p99_us"] / 1000, 2),
            clusters=args.clusters,
            errors=errors,
            queries_per_request=queries,
            web_cpu_ms=round(web_ms, 2),
            pg_cpu_ms=round(pg_ms, 2),
            load_avg=round(load, 1),
            clients=args.clients,
            workers=args.workers,
            threads=args.threads,
        )
    except KeyboardInterrupt as exc:
        failed = True
        log(f"interrupted ({exc}); cleaning up")
    except Exception:
        failed = True
        traceback.print_exc()
        sys.stdout.flush()
    finally:
        for group in reversed(groups):
            try:
                group.stop(timeout=20)
            except Exception:
                traceback.print_exc()
        for cleanup in (drop_database, flush_redis_db):
            try:
                cleanup(state)
            except Exception:
                failed = True
                traceback.print_exc()
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"removed {tmp}")
    if figures:
        print("\n".join(verdict_lines("api", figures)), flush=True)
        print(" ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    return 1 if failed or not figures else 0


if __name__ == "__main__":
    sys.exit(main())
