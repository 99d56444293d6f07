"""Services on the local cloud: a Ray Serve app under 100 requests/s through two whole
rolling upgrades (v1 -> v2 -> v3, canary steps 10 -> 50 -> 100), then a version that
fails health (its replicas cannot start) rolled back, with the traffic still flowing.

Run by hand:  .venv/bin/python benchmarks/services.py [--rate 100] [--step-seconds 10]
                                                    [--max-latency-ratio 3]

All real, on loopback, as benchmarks/cluster_start.py sets it up: a temporary PostgreSQL
database, a redis-server of this run's own, gunicorn and `celery worker -B` on production
settings, Debian's HAProxy as the router, real Ray Serve on the local cloud. A driver
(this file with --drive, a Django process) deploys through workloads.serve.services.deploy
(as the console and API do) and sends GETs with the query token on a fixed schedule from
a pool of threads, recording each request's outcome and latency by phase:

  before   v1 serves alone (20 s);
  during   from the deploy of v2 until v1's version is stopped (drained), and the same
           for v3 replacing v2;
  after    v2 serves alone (20 s), and v3 (20 s);
  bad      from the deploy of the broken v4 until it is rolled back.

Everything is removed at the end, also on error or Ctrl-C. The LAST line holds the figures:

  requests=... failed=... p99_before_ms=... p99_during_ms=... p99_after_ms=...
  upgrade_s=<the slower upgrade> bad_requests=... bad_failed=... bad_rolled_back=... ok=...
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import PYTHON, ROOT, Group, clean_up, drop_database, log, stop_all
from cluster_start import control_plane, kill_marked

APPS_DIR = ROOT / "tests" / "serve" / "apps"
START_TIMEOUT_S = 300
HOLD_S = 20
MIN_REQUESTS = 3000
ROLLED_BACK_STATES = ("failed", "stopped")


def p99(latencies: list[float]) -> float:
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


class Load:
    """GETs at `rate` per second on a fixed schedule; each outcome is kept with its phase."""

    def __init__(self, url: str, token: str, rate: float) -> None:
        self.url, self.token, self.rate = url, token, rate
        self.phase = "before"
        self.results: list[tuple[str, bool, float, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=32)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def one(self, phase: str) -> None:
        started = time.perf_counter()
        request = urllib.request.Request(  # noqa: S310 - the endpoint on loopback
            self.url, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                ok, outcome = True, json.load(response).get("version", "?")
        except urllib.error.HTTPError as exc:
            ok, outcome = False, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            ok, outcome = False, f"error {exc}"
        with self.lock:
            self.results.append((phase, ok, time.perf_counter() - started, outcome))

    def run(self) -> None:
        interval, next_at = 1.0 / self.rate, time.monotonic()
        while not self.stopping.is_set():
            self.pool.submit(self.one, self.phase)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.pool.shutdown(wait=True)

    def of(self, phase: str) -> list[tuple[str, bool, float, str]]:
        with self.lock:
            return [r for r in self.results if r[0] == phase]


def kill_routers(tmp: Path) -> None:
    """The HAProxy processes of this run (their config lives under `tmp`)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"haproxy" in cmdline and str(tmp).encode() in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)


def drive(rate: float, step_seconds: int, max_latency_ratio: float) -> None:
    """Deploy v1, upgrade to v2 then v3 and try a broken v4 under load; print one RESULT
    line."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from accounts.choices import OrgRole
    from accounts.models import Membership, Organization, Project, User
    from clouds.models import Cloud
    from workloads.serve.models import Service, ServiceVersion
    from workloads.serve.services import deploy

    org, _ = Organization.objects.get_or_create(slug="svc-bench", defaults={"name": "Bench"})
    user = User.objects.create_user("owner@svc-bench.example.com", None)
    Membership.objects.create(organization=org, user=user, role=OrgRole.OWNER)
    project = Project.objects.create(organization=org, slug="bench", name="Bench")
    cloud = Cloud.objects.create(organization=org, name="local", kind="local", state="active")

    def config(version: str, **extra: Any) -> dict[str, Any]:
        return {
            "import_path": "echo_app:build",
            "args": {"version": version, **extra},
            "runtime_env": {"env_vars": {"PYTHONPATH": str(APPS_DIR)}},
        }

    def wait(what: str, ready: Any, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if ready():
                return time.monotonic() - t0
            time.sleep(0.5)
        events = "\n".join(f"{e.step}: {e.message}" for e in service.events.all())
        raise RuntimeError(f"timed out waiting for {what}\n{events}")

    deployed = deploy.service_deploy(
        project=project,
        actor=user,
        name="bench",
        serve_config=config("v1"),
        cloud=cloud,
        step_seconds=step_seconds,
        max_latency_ratio=max_latency_ratio,
    )
    service, token = deployed.service, deployed.token or ""
    wait(
        "v1 to serve",
        lambda: Service.objects.get(pk=service.pk).state == "running",
        START_TIMEOUT_S,
    )
    service.refresh_from_db()
    url = service.endpoint_url + "/"
    log(f"v1 serves at {url}")
    load = Load(url, token, rate)
    load.thread.start()
    time.sleep(HOLD_S)
    upgrades_s = []
    serving = service.versions.get(number=1)
    for name in ("v2", "v3"):
        load.phase = "during"
        new = deploy.service_deploy(
            project=project, actor=user, name="bench", serve_config=config(name)
        ).version
        old = serving
        upgrades_s.append(
            wait(
                f"v{old.number} to be replaced",
                lambda old=old: ServiceVersion.objects.get(pk=old.pk).state == "stopped",
                START_TIMEOUT_S + 10 * step_seconds,
            )
        )
        log(f"{name} took over in {upgrades_s[-1]:.0f} s")
        serving = new
        load.phase = "after"
        time.sleep(HOLD_S)
    load.phase = "bad"
    broken = deploy.service_deploy(
        project=project, actor=user, name="bench", serve_config=config("v4", crash=True)
    ).version
    wait(
        "v4 to be rolled back",
        lambda: ServiceVersion.objects.get(pk=broken.pk).state in ROLLED_BACK_STATES,
        START_TIMEOUT_S,
    )
    time.sleep(2)
    load.phase = "end"
    load.stop()
    serving.refresh_from_db()
    broken.refresh_from_db()
    reason = broken.state_reason
    deploy.service_terminate(service=service, actor=user)
    wait(
        "the service to terminate",
        lambda: Service.objects.get(pk=service.pk).state == "terminated",
        120,
    )
    wait(
        "its clusters to terminate",
        lambda: (
            not service.versions.exclude(cluster__state="terminated").exclude(cluster=None).exists()
        ),
        180,
    )
    upgrade = [r for p in ("before", "during", "after") for r in load.of(p)]
    bad = load.of("bad")
    failures: dict[str, int] = {}
    for r in upgrade + bad:
        if not r[1]:
            failures[r[3]] = failures.get(r[3], 0) + 1
    result = {
        "requests": len(upgrade),
        "failed": sum(not r[1] for r in upgrade),
        "p99_before_ms": round(p99([r[2] for r in load.of("before")]), 1),
        "p99_during_ms": round(p99([r[2] for r in load.of("during")]), 1),
        "p99_after_ms": round(p99([r[2] for r in load.of("after")]), 1),
        "upgrade_s": round(max(upgrades_s), 1),
        "v3_weight": serving.weight,
        "bad_requests": len(bad),
        "bad_failed": sum(not r[1] for r in bad),
        "bad_rolled_back": broken.state in ROLLED_BACK_STATES,
        "bad_reason": reason,
        "failures": failures,
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (100)")
    parser.add_argument("--step-seconds", type=int, default=10, help="hold of each step (10)")
    parser.add_argument(
        "--max-latency-ratio",
        type=float,
        default=3.0,
        help="the service's rollback bar for a new version's p99 against the old one's (3, "
        "the product's default; a busy machine's fresh cluster can be slower than that)",
    )
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args.rate, args.step_seconds, args.max_latency_ratio)
        return 0
    for tool in ("redis-server", "haproxy"):
        if shutil.which(tool) is None:
            print(
                f"{tool} is missing (Debian: apt-get install {tool.split('-')[0]})", file=sys.stderr
            )
            return 2

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    tmp = Path(tempfile.mkdtemp(prefix="raydeck-services-bench-"))
    groups: list[Group] = []
    state: dict[str, Any] = {}
    result: dict[str, Any] | None = None
    marker = secrets.token_hex(8)
    log(f"temporary directory {tmp}")
    try:
        env, _ = control_plane(tmp, marker, state, groups, "raydeck_services")
        driver = Group(
            "driver",
            [
                PYTHON,
                __file__,
                "--drive",
                "--rate",
                str(args.rate),
                "--step-seconds",
                str(args.step_seconds),
                "--max-latency-ratio",
                str(args.max_latency_ratio),
            ],
            env,
            tmp,
        )
        groups.append(driver)
        code = driver.wait(timeout=3600)
        line = next((x for x in driver.output().splitlines() if x.startswith("RESULT ")), None)
        if code != 0 or line is None:
            raise RuntimeError(f"driver failed ({code}):\n{driver.tail(60)}")
        result = json.loads(line.removeprefix("RESULT "))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not stop the cleanup
        clean_up(
            state,
            lambda _: stop_all(groups, 20),
            lambda _: kill_marked(marker, tmp / "nodes"),
            lambda _: kill_routers(tmp),
            drop_database,
            lambda _: shutil.rmtree(tmp, ignore_errors=True),
        )
    assert result is not None
    log(f"failures by kind: {result.pop('failures')}; v4: {result.pop('bad_reason')}")
    ok = (
        result["failed"] == 0
        and result["requests"] >= MIN_REQUESTS
        and result["bad_failed"] == 0
        and result["bad_rolled_back"]
    )
    print(" ".join(f"{k}={v}" for k, v in result.items()) + f" ok={ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
