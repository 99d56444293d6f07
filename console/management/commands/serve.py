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

from console.processes import WEB_WORKERS, web_command, worker_command

SUPERVISOR = Path(__file__).resolve().parents[2] / "supervise.py"


class Command(BaseCommand):
    help = "Start the web server, a Celery worker and Celery beat; stop all on Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--web-workers", type=int, default=WEB_WORKERS)

    def handle(self, *args: Any, bind: str, web_workers: int, **options: Any) -> None:
        for folder in ("broker/queue", "broker/processed", "broker/control", "cache"):
            (settings.VAR_DIR / folder).mkdir(parents=True, exist_ok=True)
        # WhiteNoise warns at every start when it is missing (files come from the finders).
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")
        # This command ran Django's system checks before it got here; the worker need not
        # run them again, and doing so loaded every URL module, the API's included (a
        # task that reverses a URL still loads them, when it first does).
        os.environ.setdefault("CELERY_SKIP_CHECKS", "1")
        commands = {
            "web": web_command(bind, workers=web_workers),
            "worker": worker_command(settings.VAR_DIR),
        }
        spec = {
            "commands": commands,
            "banner": f"Raydeck is running on http://{bind}/  "
            "(Ctrl-C stops the web server, the worker and beat)",
        }
        sys.stdout.flush()
        # -P: do not put console/ on sys.path (its types.py would shadow the stdlib);
        # -S: no site-packages, whose .pth files would load importers it never uses.
        argv = [sys.executable, "-P", "-S", str(SUPERVISOR), json.dumps(spec)]
        os.execv(sys.executable, argv)  # noqa: S606
