"""The command lines of the embedded default's processes, in one place: `manage.py serve`
runs them, and the benchmarks and tests that start a web server or a worker start
exactly these. Standard library only: benchmarks load this file by its path."""

from __future__ import annotations

import sys
from pathlib import Path

# One web process with threads serves a single machine: a second process would hold a
# second copy of every page Django touches after the fork (about 40 MB) for no
# throughput a 2-core machine can use (benchmarks/README.md, "idle memory").
WEB_WORKERS = 1
WEB_THREADS = 8
WORKER_THREADS = 4


def web_command(
    bind: str,
    *,
    workers: int = WEB_WORKERS,
    threads: int = WEB_THREADS,
    python: str = sys.executable,
) -> list[str]:
    """gunicorn as the embedded default runs it."""
    return [
        python,
        "-m",
        "gunicorn",
        "console.wsgi:application",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        # Workers fork from a loaded app and share its memory.
        "--preload",
        "--reuse-port",
        # No gunicorn access log: Django logs each request once, by route, without its
        # query string (kit.logs.RequestIdMiddleware), as console.gunicorn_conf.
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
    ]


def worker_command(var_dir: Path, *, python: str = sys.executable) -> list[str]:
    """The Celery worker, with beat inside it as a thread (console/celery.py's
    --beat-thread: one process fewer on a single machine; production runs `celery beat`
    on its own, README)."""
    return [
        python,
        "-m",
        # `celery --quiet -A console worker` without celery's umbrella command (console/
        # worker.py; --quiet: the banner would push the URL and the demo owner off the
        # first screen).
        "console.worker",
        "--beat-thread",
        "--schedule",
        str(var_dir / "celerybeat-schedule"),
        # Per-task lines too; warnings and errors still show.
        "--loglevel",
        "WARNING",
        # Threads, not forked children: the tasks wait on clouds and databases, not on
        # the CPU, and each forked child held its own copy of the pages it touched.
        "--pool",
        "threads",
        "--concurrency",
        str(WORKER_THREADS),
        "--without-gossip",
        "--without-mingle",
    ]
