"""What every benchmark script needs around what it measures: progress lines, processes
in process groups of their own, free loopback ports, plain HTTP on loopback, and a
temporary PostgreSQL database. Standard library (and psycopg, imported when used); the
scripts import it as `_harness` (they run with benchmarks/ first on sys.path)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

_t_start = time.monotonic()
# Loopback only: never go through a proxy taken from the environment.
http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# The web server as deploy/entrypoint.sh runs it in production: 2 processes x 4 threads.
PRODUCTION_WORKERS, PRODUCTION_THREADS = 2, 4


def web_command(bind: str, **options: Any) -> list[str]:
    """gunicorn started exactly as the product starts it (console/processes.py, loaded
    by its path: `console` here is benchmarks/console.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "raydeck_processes", ROOT / "console" / "processes.py"
    )
    assert spec is not None and spec.loader is not None
    processes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(processes)
    return processes.web_command(bind, python=PYTHON, **options)


def elapsed() -> float:
    """Seconds since the benchmark started."""
    return time.monotonic() - _t_start


def log(message: str) -> None:
    print(f"[{elapsed():7.1f}s] {message}", flush=True)


# --- processes -----------------------------------------------------------------------


class Group:
    """A process started in a session (and process group) of its own, output to a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], logs: Path):
        self.name = name
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def stop(self, timeout: float = 15, *, sweep: bool = True) -> float:
        """SIGTERM to the group, SIGKILL after `timeout`; with `sweep`, SIGKILL whatever
        the leader left in its group (gunicorn workers, say). Returns the seconds the
        leader took to exit."""
        t0 = time.monotonic()
        if self.popen.poll() is None:
            signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name}: still running {timeout:.0f}s after SIGTERM; SIGKILL")
                signal_group(self.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=10)
        took = time.monotonic() - t0
        if sweep:
            signal_group(self.pid, signal.SIGKILL)
        return took

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(timeout=5)
            raise RuntimeError(f"{self.name} did not finish within {timeout:.0f}s") from None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {needle!r} in {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.05)


def failure(exc: BaseException) -> bool:
    """Say what stopped the run (called in its `except`); True, for `failed`."""
    if isinstance(exc, KeyboardInterrupt):
        log(f"interrupted ({exc}); cleaning up")
    else:
        traceback.print_exc()
        sys.stdout.flush()
    return True


def stop_all(groups: list[Group], timeout: float) -> None:
    """Stop every group, the last started first, whatever goes wrong with one."""
    for group in reversed(groups):
        try:
            group.stop(timeout=timeout)
        except Exception:
            traceback.print_exc()


def clean_up(state: dict[str, Any], *steps: Any) -> bool:
    """Run each cleanup step on `state`, all of them even if one fails; True if one did."""
    failed = False
    for step in steps:
        try:
            step(state)
        except Exception:
            failed = True
            traceback.print_exc()
    return failed


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- loopback ------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free, all bound at once so none is handed out twice."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def http_status(url: str) -> int | None:
    try:
        with http.open(url, timeout=1) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


def wait_healthz(group: Group, port: int, deadline_s: float = 60) -> float:
    """Seconds from now until /healthz answers 200 (polled every 5 ms)."""
    t0 = time.perf_counter()
    url = f"http://127.0.0.1:{port}/healthz"
    while time.perf_counter() - t0 < deadline_s:
        if http_status(url) == 200:
            return time.perf_counter() - t0
        if group.popen.poll() is not None:
            raise RuntimeError(
                f"{group.name} exited with {group.popen.returncode}:\n{group.tail()}"
            )
        time.sleep(0.005)
    raise RuntimeError(
        f"{group.name}: /healthz did not answer within {deadline_s:.0f}s:\n{group.tail()}"
    )


# --- a temporary PostgreSQL database -------------------------------------------------


def create_database(state: dict[str, Any], prefix: str) -> str:
    """A new empty database on 127.0.0.1:5432, named in `state` for drop_database."""
    import psycopg

    dbname = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    state["database"] = dbname
    log(f"created database {dbname}")
    return dbname


def drop_database(state: dict[str, Any]) -> None:
    """Drop the database create_database made (if any), whoever is still connected."""
    dbname = state.get("database")
    if not dbname:
        return
    if "django" in sys.modules:  # this process's own connections first
        from django.db import connections

        connections.close_all()
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    log(f"dropped database {dbname}")


# --- a production-settings server environment ----------------------------------------


def production_env(database: str, redis_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment minus Raydeck/Django settings, plus production
    settings on `database` and `redis_url` (and any `extra` variables)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "RAYDECK_")) and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings.production",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
        REDIS_URL=redis_url,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="127.0.0.1",
        RAYDECK_VAR_DIR=str(var_dir),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def migrate(env: dict[str, str], cwd: Path, groups: list[Group]) -> None:
    """`manage.py migrate` with `env`, raising with its output when it fails."""
    t0 = time.monotonic()
    run = Group("migrate", [PYTHON, "manage.py", "migrate", "--noinput"], env, cwd)
    groups.append(run)
    if run.wait(timeout=300) != 0:
        raise RuntimeError(f"migrate failed:\n{run.tail()}")
    log(f"migrated in {time.monotonic() - t0:.1f}s")
