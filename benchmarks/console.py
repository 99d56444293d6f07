"""Console figures, measured against real processes on loopback.

Run by hand:  .venv/bin/python benchmarks/console.py

  1. cold start: `gunicorn console.wsgi:application` started exactly as `manage.py serve`
     starts it (console/processes.py's web_command, settings.local), timed from spawn until
     GET /healthz answers 200 (best of nothing: the median of 3 starts, first one shown too).
  2. idle memory: `manage.py serve` (web + Celery worker with beat inside) in its own process
     group, 30 s after /healthz answers; PSS summed over the whole process tree.
  3. project list: 10,000 projects in one organization, seen by an org owner, in-process
     with Django's test Client against a temporary PostgreSQL database: p50/p99 over 300
     sequential requests and the SQL query count.
  4. home page: first load of "/" (redirects to the project list) in headless Chromium,
     signed in as the demo owner, cache disabled: bytes and Navigation Timing load time.

Everything lives in a temporary directory (RAYDECK_VAR_DIR) and a temporary database, both
removed at the end, together with every process started, even on error or Ctrl-C. Progress
goes to stdout; the LAST line holds all figures.

Reference figures (other consoles, measured elsewhere, for comparison only):
  dstack:   ~210 MB idle, project list p50 ~3 ms, UI 9.5 MB loaded in ~0.8 s
  SkyPilot: API server ~1.5 GB idle, UI 1.25 MB loaded in ~0.26 s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import (
    PYTHON,
    ROOT,
    Group,
    clean_up,
    create_database,
    drop_database,
    elapsed,
    failure,
    free_port,
    log,
    stop_all,
    wait_healthz,
    web_command,
)
from goals import verdict_lines

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Never send loopback traffic through a proxy from the environment.
    "--no-proxy-server",
]

LIST_PROJECTS = 10_000
LIST_WARMUP = 10


@dataclass(frozen=True)
class Rounds:
    cold_starts: int = 3
    idle_wait_s: int = 30
    list_requests: int = 300
    home_extra_loads: int = 4  # fresh navigations after the first, for a median beside it
    page_loads: int = 3  # each page's load time is the median of these (one spike is noise)


QUICK = Rounds(cold_starts=1, idle_wait_s=10, list_requests=100, home_extra_loads=0, page_loads=1)
ROUNDS = Rounds()
figures: dict[str, Any] = {}


# --- processes -----------------------------------------------------------------------


class ProcessWatch:
    """Notes when each of `pids` exits (polled every 20 ms in a thread)."""

    def __init__(self, pids: dict[int, int]) -> None:
        import threading

        self.pids = dict(pids)
        self.gone: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.gone) < len(self.pids):
            running = set(alive(self.pids))
            for pid in self.pids:
                if pid not in running and pid not in self.gone:
                    self.gone[pid] = time.monotonic() - self.t0
            time.sleep(0.02)

    def finish(self) -> None:
        deadline = time.monotonic() + 5
        while len(self.gone) < len(self.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join()


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, starttime) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19])


def process_tree(root: int) -> dict[int, int]:
    """{pid: starttime} of `root` and all its descendants."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info:
                parents.setdefault(info[0], []).append(int(entry))
                starts[int(entry)] = info[1]
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in starts:
            tree[pid] = starts[pid]
            todo.extend(parents.get(pid, []))
    return tree


def alive(pids: dict[int, int]) -> list[int]:
    """Those of `pids` still running (same pid and same start time: not a reused pid)."""
    left = []
    for pid, start in pids.items():
        info = _stat(pid)
        if info and info[1] == start and _state(pid) != "Z":
            left.append(pid)
    return left


def _state(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        return raw[raw.rindex(")") + 2 :].split()[0]
    except OSError:
        return "Z"


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    return raw.replace(PYTHON, "python").replace(str(ROOT) + "/", "").strip()


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def processes_marked(marker: bytes) -> list[int]:
    """Every process (but this one) whose environment holds `marker`: ours, wherever
    it was reparented to."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if marker in environ and _state(int(entry)) != "Z":
                found.append(int(entry))
    return found


# --- 1. cold start -------------------------------------------------------------------


def bench_cold_start(env: dict[str, str], logs: Path, groups: list[Group]) -> None:
    times = []
    for run in range(1, ROUNDS.cold_starts + 1):
        port = free_port()
        t0 = time.perf_counter()
        group = Group(f"gunicorn-cold-{run}", web_command(f"127.0.0.1:{port}"), env, logs)
        groups.append(group)
        wait_healthz(group, port, deadline_s=30)
        elapsed = time.perf_counter() - t0
        times.append(elapsed)
        stopped = group.stop(timeout=15)
        log(f"cold start #{run}: /healthz 200 after {elapsed:.3f}s (stopped in {stopped:.2f}s)")
    figures["cold_start_s"] = round(statistics.median(times), 3)
    figures["cold_start_first_s"] = round(times[0], 3)


# --- 2. idle memory (+ 4. browser against the same server) ---------------------------


def tree_pss(root: int) -> tuple[float, list[str]]:
    rows, total = [], 0
    for pid in sorted(process_tree(root)):
        kb = pss_kb(pid)
        total += kb
        rows.append(f"    {kb / 1024:7.1f} MB  pid {pid:<7} {cmdline(pid)[:110]}")
    return total / 1024, rows


def bench_serve(env: dict[str, str], logs: Path, groups: list[Group], var_dir: Path) -> None:
    port = free_port()
    group = Group("serve", [PYTHON, "manage.py", "serve", "--bind", f"127.0.0.1:{port}"], env, logs)
    groups.append(group)
    ready = wait_healthz(group, port, deadline_s=60)
    log(f"manage.py serve: /healthz 200 after {ready:.2f}s; idling {ROUNDS.idle_wait_s}s")
    deadline = time.monotonic() + ROUNDS.idle_wait_s
    while time.monotonic() < deadline:
        if group.popen.poll() is not None:
            raise RuntimeError(f"serve exited with {group.popen.returncode}:\n{group.tail()}")
        time.sleep(0.5)
    seen = process_tree(group.pid)
    names = " ".join(cmdline(p) for p in seen)
    # Beat runs inside the worker (-B) in the embedded default; its log says it started.
    for part in ("gunicorn console.wsgi", "-m console.worker --beat-thread"):
        if part not in names:
            raise RuntimeError(f"serve tree has no '{part}' process:\n{group.tail()}")
    # Beat logs nothing at the embedded default's level; its schedule file says it runs.
    if not list(var_dir.glob("celerybeat-schedule*")):
        raise RuntimeError(f"Celery beat did not start:\n{group.tail()}")
    total, rows = tree_pss(group.pid)
    log(f"idle PSS over {len(rows)} processes: {total:.1f} MB")
    for row in rows:
        print(row, flush=True)
    figures["idle_pss_mb"] = round(total, 1)
    figures["idle_processes"] = len(rows)

    try:
        bench_pages(port, env)
        after, _ = tree_pss(group.pid)
        log(f"PSS after the browser runs: {after:.1f} MB")
        figures["after_load_pss_mb"] = round(after, 1)
    finally:
        seen.update(process_tree(group.pid))
        names = {pid: cmdline(pid)[:60] for pid in seen}
        watch = ProcessWatch(seen)
        watch.start()
        stopped = group.stop(timeout=30, sweep=False)  # serve must stop its own children
        watch.finish()
        for pid, gone in sorted(watch.gone.items(), key=lambda item: item[1]):
            print(f"    gone after {gone:5.2f}s  pid {pid:<7} {names[pid]}", flush=True)
        left: list[int] = []
        for _ in range(50):  # grandchildren may take a moment after serve returns
            left = alive(seen)
            if not left:
                break
            time.sleep(0.1)
        log(
            f"serve stopped by SIGTERM to its group in {stopped:.2f}s "
            f"(exit code {group.popen.returncode}); {len(left)} of {len(seen)} processes left"
        )
        figures["serve_stop_s"] = round(stopped, 2)
        figures["stray_processes"] = len(left)
        for pid in left:
            log(f"STRAY pid {pid}: {cmdline(pid)}; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- 4. home page in Chromium --------------------------------------------------------


@dataclass
class FirstLoad:
    """A page loaded with an empty cache: what came over the wire and when it was done."""

    status: int
    body_bytes: int  # every response's body, as sent (compressed where it was)
    requests: int
    load_ms: float  # Navigation Timing's loadEventEnd
    phases: dict[str, float]  # where the load time went (PHASES), ms from navigation start
    polls: list[tuple[str, str]]  # its live parts' polls: (URL, HX-Target)
    rows: list[str]  # one line per response, for the log


# A load's milestones, from Navigation and Resource Timing: the page's first byte and last
# byte, the last static file's last byte, the document parsed (deferred scripts run at
# DOMContentLoaded), and the load event's end: the figure.
PHASES = """() => {
    const n = performance.getEntriesByType('navigation')[0];
    const files = performance.getEntriesByType('resource')
        .filter(r => r.initiatorType === 'link' || r.initiatorType === 'script');
    return {
        first_byte: n.responseStart - n.startTime,
        html: n.responseEnd - n.startTime,
        asked: files.length ? Math.min(...files.map(r => r.requestStart - n.startTime)) : 0,
        files_first_byte: Math.max(0, ...files.map(r => r.responseStart - n.startTime)),
        files: Math.max(0, ...files.map(r => r.responseEnd - n.startTime)),
        parsed: n.domContentLoadedEventEnd - n.startTime,
        load: n.loadEventEnd - n.startTime,
    };
}"""


PHASE_NAMES = ("first_byte", "html", "asked", "files_first_byte", "files", "parsed", "load")


def first_load(page: Any, url: str) -> FirstLoad:
    page.goto("about:blank")
    finished: list[Any] = []
    failed: list[Any] = []

    def on_finished(request: Any) -> None:
        finished.append(request)

    def on_failed(request: Any) -> None:
        failed.append(request)

    page.on("requestfinished", on_finished)
    page.on("requestfailed", on_failed)
    try:
        response = page.goto(url, wait_until="load")
    finally:
        page.remove_listener("requestfinished", on_finished)
        page.remove_listener("requestfailed", on_failed)
    if response is None or failed:
        raise RuntimeError(f"{url}: load failed: {[r.url for r in failed]}")
    phases = page.evaluate(PHASES)
    load_ms = phases["load"]
    # A page's live part polls its own URL with HX-Target naming it (e.g. "cluster-live"),
    # only while its object is in motion: the walk's objects are at rest, so the part is
    # found by its id and asked for as a poll would ask.
    polls = page.evaluate(
        """() => [...document.querySelectorAll('[id$="-live"], [hx-trigger*="every"]')]
            .map(e => [new URL(e.getAttribute('hx-get') || location.href, location.href).href,
                       e.id])"""
    )
    rows = []
    for request in finished:
        sizes = request.sizes()
        status = request.response().status if request.response() else "?"
        rows.append(f"    {status} {sizes['responseBodySize']:>7} B  {request.url}")
    return FirstLoad(
        status=response.status,
        body_bytes=sum(r.sizes()["responseBodySize"] for r in finished),
        requests=len(finished),
        load_ms=load_ms,
        phases=phases,
        polls=polls,
        rows=rows,
    )


def poll_bytes(page: Any, url: str, target: str) -> int:
    """The body of one live poll as HTMX makes it, as sent (the Resource Timing entry)."""
    # Only the poll's own Resource Timing entry: the page's navigation entry has the same
    # name, and the poll's appears only once its body is read, a moment later.
    return page.evaluate(
        """async ([url, target]) => {
            const before = performance.getEntriesByName(url, 'resource').length;
            const response = await fetch(
                url, {headers: {'HX-Request': 'true', 'HX-Target': target}, cache: 'no-store'});
            await response.arrayBuffer();
            for (let i = 0; i < 200; i++) {
                const entries = performance.getEntriesByName(url, 'resource');
                if (entries.length > before) return entries[entries.length - 1].encodedBodySize;
                await new Promise(resolve => setTimeout(resolve, 10));
            }
            throw new Error('no Resource Timing entry for the poll of ' + url);
        }""",
        [url, target],
    )


def walk_pages(page: Any, base: str, urls: list[str]) -> None:
    """Every organization page loaded with an empty cache (its load time: the median of
    ROUNDS.page_loads loads), and each live poll those pages make, once."""
    pages: list[tuple[str, FirstLoad]] = []
    polls: dict[tuple[str, str], int] = {}
    for path in urls:
        # Only pages: not a POST-only route (405), a redirect or a download.
        probe = page.request.get(base + path, max_redirects=0)
        if probe.status != 200 or "text/html" not in probe.headers.get("content-type", ""):
            continue
        if "attachment" in probe.headers.get("content-disposition", ""):
            continue
        loaded = first_load(page, base + path)
        loads = [loaded, *(first_load(page, base + path) for _ in range(ROUNDS.page_loads - 1))]
        # Each milestone's median over the loads (the load's median is the figure).
        loaded.phases = {k: statistics.median(x.phases[k] for x in loads) for k in loaded.phases}
        loaded.load_ms = loaded.phases["load"]
        pages.append((path, loaded))
        for url, target in loaded.polls:
            if (url, target) not in polls:
                polls[url, target] = poll_bytes(page, url, target)
    if not pages:
        raise RuntimeError("no page of the walk answered 200")
    heaviest = max(pages, key=lambda p: p[1].body_bytes)
    slowest = max(pages, key=lambda p: p[1].load_ms)
    log(
        f"{len(pages)} pages: heaviest {heaviest[0]} {heaviest[1].body_bytes} B, slowest "
        f"{slowest[0]} {slowest[1].load_ms:.1f} ms, median "
        f"{statistics.median(p[1].load_ms for p in pages):.1f} ms"
    )
    log("  load    (first byte, page, files, parsed: ms from navigation start)")
    for path, loaded in sorted(pages, key=lambda p: -p[1].load_ms)[:8]:
        at = loaded.phases
        log(
            f"  {loaded.load_ms:6.1f} ms ("
            + " ".join(f"{at[k]:5.1f}" for k in PHASE_NAMES[:-1])
            + f") {loaded.body_bytes:>7} B  {path}"
        )
    medians = {k: statistics.median(p[1].phases[k] for p in pages) for k in PHASE_NAMES}
    log("  median over the pages: " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    figures["pages"] = len(pages)
    figures["page_max_bytes"] = heaviest[1].body_bytes
    figures["page_max_load_ms"] = round(slowest[1].load_ms, 1)
    if polls:
        biggest = max(polls, key=lambda u: polls[u])
        log(
            f"{len(polls)} live polls: the largest {biggest[0].removeprefix(base)} "
            f"(#{biggest[1]}) {polls[biggest]} B"
        )
        figures["poll_max_bytes"] = polls[biggest]
    figures["polls"] = len(polls)


def seed_pages(env: dict[str, str]) -> dict[str, Any]:
    """One of everything in the served database, made as the security tests make it
    (tests/conftest.py's make_tenant), and the URL of every organization page
    (tests/console/test_security.py's walk), from a child process on that database."""
    out = subprocess.run(
        [PYTHON, __file__, "--seed-pages"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def seed_pages_here() -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from tests.conftest import make_tenant
    from tests.console.test_security import org_routes, url_for
    from tests.factories import PASSWORD

    tenant = make_tenant("bench")
    urls = sorted({url_for(route, tenant) for route in org_routes()})
    print(json.dumps({"email": tenant.owner.email, "password": PASSWORD, "urls": urls}))


def bench_pages(port: int, env: dict[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    seeded = seed_pages(env)
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/accounts/login/")
            page.fill('input[name="login"]', seeded["email"])
            page.fill('input[name="password"]', seeded["password"])
            with page.expect_navigation():
                page.click('form button[type="submit"]')
            if "/accounts/" in page.url:
                raise RuntimeError(f"sign-in failed, still on {page.url}")
            log(f"signed in as {seeded['email']}; landed on {page.url.removeprefix(base)}")

            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
            home = [first_load(page, f"{base}/") for _ in range(1 + ROUNDS.home_extra_loads)]
            for row in home[0].rows:
                print(row, flush=True)
            log(
                f"home first load: {home[0].requests} responses, {home[0].body_bytes} B "
                f"bodies; load {home[0].load_ms:.1f} ms; landed on "
                f"{page.url.removeprefix(base)}"
            )
            figures["home_bytes"] = home[0].body_bytes
            figures["home_load_ms"] = round(home[0].load_ms, 1)
            figures["home_load_median_ms"] = round(statistics.median(h.load_ms for h in home), 1)
            walk_pages(page, base, seeded["urls"])
        finally:
            browser.close()


# --- 3. project list with 10,000 projects, in-process on PostgreSQL --------------------


def bench_project_list(var_dir: Path, state: dict[str, Any]) -> None:
    dbname = create_database(state, "raydeck_bench")
    os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings.test"
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{dbname}"
    os.environ["RAYDECK_VAR_DIR"] = str(var_dir)
    os.environ.pop("REDIS_URL", None)  # local-memory cache: nothing leaves this process
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import logging

    # One log line per request would be 400 lines here, and their cost in the figure.
    logging.getLogger("raydeck.requests").setLevel(logging.WARNING)
    from allauth.account.models import EmailAddress
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Project, User
    from accounts.services.organizations import organization_create

    t0 = time.monotonic()
    call_command("migrate", verbosity=0, interactive=False)
    log(f"migrated {dbname} in {time.monotonic() - t0:.1f}s")
    owner = User.objects.create_user(
        "owner@bench.example.com", secrets.token_urlsafe(16), name="Bench Owner"
    )
    EmailAddress.objects.create(user=owner, email=owner.email, verified=True, primary=True)
    org = organization_create(name="Bench", slug="bench", actor=owner)
    t0 = time.monotonic()
    Project.objects.bulk_create(
        [
            Project(
                organization=org,
                name=f"Project {i:05d}",
                slug=f"project-{i:05d}",
                description=f"Benchmark project number {i}, seeded in bulk.",
            )
            for i in range(LIST_PROJECTS)
        ],
        batch_size=1000,
    )
    with connection.cursor() as cursor:
        # What autovacuum does on a live database after 10,000 inserts (the visibility
        # map makes the count an index-only scan).
        cursor.execute("VACUUM ANALYZE")
    log(f"seeded {LIST_PROJECTS} projects in {time.monotonic() - t0:.1f}s (then VACUUM ANALYZE)")

    client = Client()
    client.force_login(owner)
    url = f"/o/{org.slug}/projects/"
    for _ in range(LIST_WARMUP):
        response = client.get(url)
        assert response.status_code == 200, response.status_code
    rows = response.content.count(b"<tr>") - 1
    assert rows == 50, f"expected 50 rows on the first page, saw {rows}"

    times = []
    for _ in range(ROUNDS.list_requests):
        t = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200
    p50 = statistics.median(times)
    p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
    log(
        f"project list: {ROUNDS.list_requests} requests, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"max {max(times):.2f} ms, {len(response.content)} B of HTML"
    )

    with CaptureQueriesContext(connection) as context:
        client.get(url)
    queries = list(context.captured_queries)  # the next request resets connection.queries
    log(f"project list: {len(queries)} SQL queries:")
    for query in queries:
        print(f"    {float(query['time']) * 1000:6.2f} ms  {query['sql'][:150]}", flush=True)

    last = f"{url}?page={LIST_PROJECTS // 50}"
    deep = []
    for _ in range(50):
        t = time.perf_counter()
        response = client.get(last)
        deep.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200
    log(f"project list, last page: p50 {statistics.median(deep):.2f} ms over 50 requests")

    figures["list_p50_ms"] = round(p50, 2)
    figures["list_p99_ms"] = round(p99, 2)
    figures["list_queries"] = len(queries)
    figures["list_last_page_p50_ms"] = round(statistics.median(deep), 2)


# --- main ----------------------------------------------------------------------------


def main() -> int:
    global ROUNDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (all.py --quick)")
    parser.add_argument("--seed-pages", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_pages:
        seed_pages_here()
        return 0
    if args.quick:
        ROUNDS = QUICK

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    tmp = Path(tempfile.mkdtemp(prefix="raydeck-bench-"))
    var_dir, logs = tmp / "var", tmp / "logs"
    var_dir.mkdir()
    logs.mkdir()
    marker = f"RAYDECK_VAR_DIR={var_dir}\0".encode()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "RAYDECK_DEBUG", "DJANGO_SECRET_KEY"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings.local",
        RAYDECK_VAR_DIR=str(var_dir),
        PYTHONUNBUFFERED="1",
    )
    groups: list[Group] = []
    state: dict[str, Any] = {}
    failed = False
    log(f"temporary directory {tmp}")
    try:
        t0 = time.monotonic()
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        log(f"migrated the temporary SQLite database in {time.monotonic() - t0:.1f}s")
        steps = [
            ("1. cold start", lambda: bench_cold_start(env, logs, groups)),
            ("2+4. idle memory, home page", lambda: bench_serve(env, logs, groups, var_dir)),
            ("3. project list", lambda: bench_project_list(var_dir, state)),
        ]
        for title, step in steps:
            log(f"--- {title}")
            try:
                step()
            except KeyboardInterrupt:
                raise
            except Exception:
                failed = True
                log(f"{title} FAILED:")
                traceback.print_exc()
                sys.stdout.flush()
    except (KeyboardInterrupt, Exception) as exc:
        failed = failure(exc)
    finally:
        stop_all(groups, timeout=20)
        failed = clean_up(state, drop_database) or failed
        strays: list[int] = []
        for _ in range(50):
            strays = processes_marked(marker)
            if not strays:
                break
            time.sleep(0.1)
        for pid in strays:
            log(f"STRAY pid {pid} at the end: {cmdline(pid)}; SIGKILL")
            figures["stray_processes"] = figures.get("stray_processes", 0) + 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log(f"no process of this run is left: {not strays}")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"removed {tmp}")

    total = elapsed()
    figures["bench_s"] = round(total, 1)
    print("Goals:")
    print("\n".join(verdict_lines("console", figures)))
    print(
        "Reference: dstack idles ~210 MB, ~3 ms list p50, UI 9.5 MB in ~0.8 s; "
        "SkyPilot API server ~1.5 GB idle, UI 1.25 MB in ~0.26 s."
    )
    order = [
        "cold_start_s",
        "cold_start_first_s",
        "idle_pss_mb",
        "list_p50_ms",
        "list_p99_ms",
        "list_queries",
        "home_bytes",
        "home_load_ms",
    ]
    keys = order + [k for k in figures if k not in order]
    print(" ".join(f"{k}={figures.get(k, 'n/a')}" for k in keys), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
