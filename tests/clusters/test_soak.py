"""The soak test of issue 13: Raydeck in its production topology keeps three clusters
right while its dependencies fail one after the other.

Everything is real and private to this test: a PostgreSQL (initdb into a temporary
folder, run as the `postgres` user on a free port), a redis-server, gunicorn (the web
tier, lean paths included), a Celery worker, Celery beat, and the local cloud running
real Ray. The test talks to Raydeck only as its users and agents do, over HTTP: it
creates the clusters through the API, and reads what it asserts through the API and
one `manage.py shell` at the end.

In turn, with three clusters running (one of them told to terminate on the way): Redis
restarts (losing everything), PostgreSQL restarts, the worker is killed with SIGKILL (a
new one starts, as a restart policy would), and the web tier is killed with SIGKILL (and
started again). At the end: every cluster is in its desired state; no node was taken
for lost; no cluster has two nodes for one, nor a node two instances or two agents;
nothing of a terminated cluster is left (process, node folder, Ray temp folder); and
no request answered a 500 (a 503 during an outage is documented, with Retry-After).

Bounded: about four minutes on an idle 2-core machine; each wait has its own deadline
and says what was still wrong when it ran out.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clouds.providers.base import ray_temp_dir
from tests.clusters.test_end_to_end import processes_with
from tests.clusters.test_faults import Proc, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(postgres_bin() is None, reason="needs PostgreSQL's initdb and pg_ctl"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.skipif(shutil.which("bash") is None, reason="the local cloud runs bash"),
]

# Three Ray heads starting together on a loaded 2-core machine, some of them started
# twice after Ray's own start gave up (it waits 30 s for its raylet; the agent retries).
RUNNING_WITHIN = 300
SETTLE = 8  # seconds after each fault before the next


class PrivatePostgres:
    """A PostgreSQL server of this test's own, which it may stop and start at will."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="raydeck-soak-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/raydeck"
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run it all as postgres
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_postgres = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        assert self.bin is not None
        command = [*self.as_postgres, str(self.bin / argv[0]), *argv[1:]]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE raydeck")

    def start(self) -> None:
        # fsync=off is safe here: a crash() kills PostgreSQL, not the machine, so what it
        # wrote is in the OS's cache. synchronous_commit stays on: with it off, the
        # commits of the last moments before an immediate stop are lost, as a terminate
        # a user was told was accepted once was.
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "pg.log"),
            "-w", "start",
        )  # fmt: skip

    def crash(self) -> None:
        """Stop at once, as a crash or a failover does: every connection is cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Answer:
    status: int  # 0: no answer (the web tier is down)
    body: Any
    retry_after: str | None


@dataclass
class Soak:
    tmp: Path
    env: dict[str, str]
    web_port: int
    postgres: PrivatePostgres
    redis: RedisServer
    nodes: Path  # RAYDECK_LOCAL_CLOUD_ROOT: a folder per cloud, a folder per node in it
    uuids: list[str] = field(default_factory=list)  # of the clusters, for the clean-up
    procs: dict[str, Proc] = field(default_factory=dict)
    answers: list[tuple[str, Answer]] = field(default_factory=list)
    org: str = ""
    project: str = ""
    token: str = ""
    starts: int = 0

    # -- processes --------------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self, name: str) -> Proc:
        self.starts += 1
        python = [sys.executable, "-m"]
        argv = {
            "web": [
                *python, "gunicorn", "console.wsgi:application",
                "--bind", f"127.0.0.1:{self.web_port}", "--workers", "2",
                "--worker-class", "gthread", "--threads", "4", "--preload",
                "--graceful-timeout", "2", "--access-logfile", str(self.tmp / "access.log"),
                "--access-logformat", "%(s)s %(m)s %(U)s",
            ],
            "worker": [
                *python, "celery", "-A", "console", "worker", "--loglevel", "info",
                "--concurrency", "2", "--without-mingle", "--without-gossip",
            ],
            "beat": [
                *python, "celery", "-A", "console", "beat", "--loglevel", "info",
                "--schedule", str(self.tmp / "beat-schedule"),
            ],
        }[name]  # fmt: skip
        proc = Proc(f"{name}-{self.starts}", argv, self.env, self.tmp)
        self.procs[name] = proc
        if name == "web":
            self.wait(lambda: self.call("GET", "/healthz").status == 200, 60, "web up")
        elif name == "worker":
            proc.wait_for_line(" ready.", timeout=90)
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill_group(signal.SIGKILL)
        proc.popen.wait(10)

    # -- HTTP -------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}{path}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if method == "POST":
            request.add_header("Idempotency-Key", uuid.uuid4().hex)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                answer = Answer(response.status, json.loads(response.read() or b"null"), None)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            answer = Answer(exc.code, raw[:500], exc.headers.get("Retry-After"))
        except (OSError, ValueError):
            answer = Answer(0, None, None)
        self.answers.append((f"{method} {path}", answer))
        return answer

    def api(self, method: str, path: str, body: Any = None, tries: int = 40) -> Any:
        """The answer of an API call, retried through outages (503, no answer)."""
        for _ in range(tries):
            answer = self.call(method, f"/api/v1/orgs/{self.org}{path}", body)
            if 200 <= answer.status < 300:
                return answer.body
            assert answer.status in (0, 503), (method, path, answer)
            time.sleep(1)
        raise AssertionError(f"{method} {path} never answered")

    def clusters(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.api("GET", "/clusters?limit=50")["items"]}

    def wait(self, ready: Any, timeout: float, what: Any) -> None:
        """Until ready() or the deadline; `what` (a string, or a function for what is
        still wrong at the end) goes into the failure message."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                wrong = what() if callable(what) else what
                raise AssertionError(f"not {wrong} within {timeout:.0f} s\n{self.tails()}")
            time.sleep(1)

    def wait_states(self, wanted: dict[str, str], timeout: float) -> None:
        found: dict[str, dict[str, Any]] = {}

        def reached() -> bool:
            found.update(self.clusters())
            failed = [n for n, c in found.items() if c["state"] == "failed"]
            assert not failed, f"failed: {failed} {[found[n]['state_reason'] for n in failed]}"
            return all(found[name]["state"] == state for name, state in wanted.items())

        def still_wrong() -> str:
            return f"in {wanted}; " + ", ".join(
                f"{name} is {found[name]['state']} ({found[name]['state_reason']})"
                for name, state in wanted.items()
                if found.get(name, {}).get("state") != state
            )

        self.wait(reached, timeout, still_wrong)

    def tails(self) -> str:
        return "\n".join(proc.tail(30) for proc in self.procs.values())

    # -- the end ----------------------------------------------------------------------

    def facts(self) -> dict[str, Any]:
        """What the database says of the clusters, as the assertions need it."""
        script = (
            "import json\n"
            "from clusters.models import Cluster, Node\n"
            "out = {}\n"
            "for c in Cluster.objects.filter(name__startswith='soak-'):\n"
            "    live = list(c.nodes.live())\n"
            "    out[c.name] = {\n"
            "        'uuid': str(c.uuid), 'state': c.state, 'desired': c.desired_state,\n"
            "        'live_nodes': [(n.role, str(n.uuid), n.instance_id) for n in live],\n"
            "        'all_nodes': [str(n.uuid) for n in c.nodes.all()],\n"
            "        'lost': [e.message for e in c.events.filter(step='node lost')],\n"
            "    }\n"
            "print(json.dumps(out))\n"
        )  # fmt: skip
        return json.loads(self.manage("shell", "-c", script).strip().splitlines()[-1])

    def server_errors(self) -> list[str]:
        """Every 5xx but the documented 503, as gunicorn logged it and as we got it."""
        found = []
        log = self.tmp / "access.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            status = line.split(" ", 1)[0]
            if status.isdigit() and int(status) >= 500 and status != "503":
                found.append(f"access log: {line}")
        for call, answer in self.answers:
            if answer.status >= 500 and (answer.status != 503 or not answer.retry_after):
                found.append(f"{call}: {answer.status} {answer.body!r}")
        return found

    def node_folders(self) -> list[str]:
        """Every node folder the local cloud has (its logs folder aside)."""
        return sorted(
            node.name
            for cloud in self.nodes.iterdir()
            if cloud.is_dir()
            for node in cloud.iterdir()
            if node.is_dir() and node.name != "logs"
        )

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop(grace=5)


def agents_of(cluster_uuid: str) -> list[int]:
    found = []
    for pid in processes_with(f"RAYDECK_CLUSTER_ID={cluster_uuid}"):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"raydeck_agent" in cmdline:
                found.append(pid)
    return found


@pytest.fixture
def soak(tmp_path: Path) -> Iterator[Soak]:
    postgres = PrivatePostgres()
    redis = RedisServer(tmp_path)
    nodes = tmp_path / "nodes"
    web_port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "RAYDECK_", "CELERY_"))
        and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings.test",
        DATABASE_URL=postgres.url,
        REDIS_URL=redis.url,
        RAYDECK_TEST_CACHE_PREFIX="soak",
        RAYDECK_AGENT_URL=f"http://127.0.0.1:{web_port}",
        RAYDECK_LOCAL_CLOUD_ROOT=str(nodes),
        RAYDECK_SWEEP_SECONDS="3",
        RAYDECK_LISTENING_TICKS="1",
        PYTHONUNBUFFERED="1",
    )
    world = Soak(
        tmp=tmp_path, env=env, web_port=web_port, postgres=postgres, redis=redis, nodes=nodes
    )
    try:
        postgres.init()
        redis.start()
        world.manage("migrate", "--noinput")
        yield world
    finally:
        world.stop_all()
        # Nothing of this test may outlive it, even when it failed before it knew its
        # clusters: every node's processes carry their folder, under this test's root.
        for pid in processes_with(f"RAYDECK_NODE_DIR={nodes}/"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for node in world.node_folders() if nodes.exists() else []:
            shutil.rmtree(ray_temp_dir(uuid.UUID(node)), ignore_errors=True)
        redis.stop()
        postgres.close()


SETUP = """
import json
from accounts import services
from accounts.choices import OrgRole
from clouds.choices import CloudState
from clouds.models import Cloud
from tests.conftest import make_tenant
tenant = make_tenant("soak")
Cloud.objects.filter(pk=tenant.cloud.pk).update(state=CloudState.ACTIVE)
_, secret = services.token_create(
    organization=tenant.org, actor=tenant.users[OrgRole.MEMBER], name="soak", days=1,
    read_only=False,
)
print(json.dumps({"org": tenant.org.slug, "project": tenant.project.slug, "token": secret}))
"""


def test_three_clusters_stay_right_through_restarts_and_kills(soak: Soak) -> None:
    began = time.monotonic()
    made = json.loads(soak.manage("shell", "-c", SETUP).strip().splitlines()[-1])
    soak.org, soak.project, soak.token = made["org"], made["project"], made["token"]
    for name in ("web", "worker", "beat"):
        soak.start(name)
    names = ["soak-1", "soak-2", "soak-3"]
    # The clients of the API poll all along: any 500 is found at the end.
    stop_polling = threading.Event()

    def poll() -> None:
        while not stop_polling.wait(1):
            soak.call("GET", f"/api/v1/orgs/{soak.org}/clusters")
            soak.call("GET", "/api/v1/me")

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        for name in names:
            soak.api("POST", "/clusters", {"name": name, "project": soak.project})
        soak.wait_states(dict.fromkeys(names, "running"), RUNNING_WITHIN)
        running_at = time.monotonic() - began
        ids = {name: c["id"] for name, c in soak.clusters().items()}
        soak.uuids.extend(f["uuid"] for f in soak.facts().values())

        soak.redis.crash()
        time.sleep(2)
        soak.redis.start()
        time.sleep(SETTLE)

        soak.api("POST", f"/clusters/{ids['soak-3']}/terminate")  # across the next faults
        soak.postgres.crash()
        time.sleep(3)
        soak.postgres.start()
        time.sleep(SETTLE)

        soak.kill("worker")
        soak.start("worker")  # as a restart policy would
        time.sleep(SETTLE)

        soak.kill("web")
        time.sleep(3)
        soak.start("web")
        time.sleep(SETTLE)

        wanted = {"soak-1": "running", "soak-2": "running", "soak-3": "terminated"}
        soak.wait_states(wanted, 90)
        faults_done = time.monotonic() - began
    finally:
        stop_polling.set()
        poller.join(20)

    facts = soak.facts()
    for name, fact in facts.items():
        assert fact["lost"] == [], f"{name}: a healthy node was taken for lost: {fact['lost']}"
    for name in ("soak-1", "soak-2"):
        fact = facts[name]
        # One head, one instance (folder) and one agent: a node whose Ray failed to start
        # on a loaded machine may have been replaced, and the one it replaced is gone.
        assert [role for role, _, _ in fact["live_nodes"]] == ["head"], f"{name}: {fact}"
        folders = [f for f in soak.node_folders() if f in fact["all_nodes"]]
        assert folders == [fact["live_nodes"][0][1]], f"{name}: instances {folders}"
        assert len(agents_of(fact["uuid"])) == 1, f"{name}: not exactly one agent"
    gone = facts["soak-3"]
    assert processes_with(f"RAYDECK_CLUSTER_ID={gone['uuid']}") == []
    for node in gone["all_nodes"]:
        assert node not in soak.node_folders()
        assert not Path(ray_temp_dir(uuid.UUID(node))).exists(), f"Ray temp dir of {node} left"

    # And the rest ends as cleanly: nothing of any cluster is left.
    for name in ("soak-1", "soak-2"):
        soak.api("POST", f"/clusters/{ids[name]}/terminate")
    soak.wait_states(dict.fromkeys(names, "terminated"), 120)  # Ray drains, then stops
    for fact in facts.values():
        deadline = time.monotonic() + 10
        while processes_with(f"RAYDECK_CLUSTER_ID={fact['uuid']}"):
            assert time.monotonic() < deadline, f"processes of {fact['uuid']} survived"
            time.sleep(0.5)
    assert soak.node_folders() == [], "node folders left"
    assert soak.server_errors() == []
    print(
        f"\nsoak: 3 clusters running {running_at:.0f} s after start; Redis, PostgreSQL, "
        f"worker and web faults absorbed, desired states reached {faults_done:.0f} s after "
        f"start; total {time.monotonic() - began:.0f} s"
    )
