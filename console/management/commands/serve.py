"""Run the embedded default: web server, Celery worker and Celery beat together.

Ctrl-C (or SIGTERM) stops all of them; one that exits is started again (with backoff)
while the others keep running. This command only works out the command lines, then
replaces itself with the small supervisor in console/supervise.py, so no copy of Django
idles in the parent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

SUPERVISOR = Path(__file__).resolve().parents[2] / "supervise.py"


class Command(BaseCommand):
    help = "Start the web server, a Celery worker and Celery beat; stop all on Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, bind: str, web_workers: int, **options: Any) -> None:
        python = sys.executable
        for folder in ("broker/queue", "broker/processed", "broker/control", "cache"):
            (settings.VAR_DIR / folder).mkdir(parents=True, exist_ok=True)
        # WhiteNoise warns at every start when it is missing (files come from the finders).
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")
        commands = {
            # --preload: workers fork from a loaded app and share its memory.
            "web": [
                python,
                "-m",
                "gunicorn",
                "console.wsgi:application",
                "--bind",
                bind,
                "--workers",
                str(web_workers),
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--preload",
                "--reuse-port",
                # No gunicorn access log: Django logs each request once, by route, without
                # its query string (kit.logs.RequestIdMiddleware), as console.gunicorn_conf.
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
            ],
            # -B runs beat inside the worker: one process tree fewer on a single machine.
            # Production runs `celery beat` on its own (README).
            "worker": [
                python,
                "-m",
                "celery",
                # The banner would push the URL and the demo owner off the first
                # screen. --quiet is celery's own option, not the worker's.
                "--quiet",
                "-A",
                "console",
                "worker",
                "-B",
                "--schedule",
                str(settings.VAR_DIR / "celerybeat-schedule"),
                # Per-task lines too; warnings and errors still show.
                "--loglevel",
                "WARNING",
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
            ],
        }
        spec = {
            "commands": commands,
            "banner": f"Raydeck is running on http://{bind}/  "
            "(Ctrl-C stops the web server, the worker and beat)",
        }
        sys.stdout.flush()
        # -P: do not put console/ on sys.path (its types.py would shadow the stdlib).
        os.execv(python, [python, "-P", str(SUPERVISOR), json.dumps(spec)])  # noqa: S606
