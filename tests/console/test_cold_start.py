"""What a web process leaves for later (benchmarks/README.md, "Cold start to /healthz"):
ninja and pydantic (its core too) load with the API's first answer; Celery, kombu (and the
PyYAML it registers) and the Celery app with the first task sent (kit/tasks.py). Its URLs
still reverse, and that first task still goes to the installation's broker with
Raydeck's stamps, not to Celery's default one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, threading
import console.wsgi
from django.urls import reverse
LATER = ("ninja", "pydantic", "pydantic_core", "celery", "kombu", "yaml", "console.celery")
def loaded():
    return sorted(m for m in LATER if m in sys.modules)
print(loaded())
print(reverse("api-v1:cluster_list", kwargs={"org": "acme"}))
from clusters.tasks import sweep_clusters
sent = threading.Thread(target=sweep_clusters.delay)  # as a request's thread sends it
sent.start()
sent.join()
print("console.celery" in sys.modules)
"""


# What production's gunicorn master runs before it forks (console/gunicorn_conf.py).
BEFORE_FORK = """
import sys
import console.wsgi
console.wsgi.load_lazy_parts()
from console.celery import app
print("ninja" in sys.modules, "clusters.tasks.reconcile_cluster" in app.tasks)
"""


def run_in_fresh_process(script: str, var_dir: Path) -> list[str]:
    """`script`'s lines of output, run by a new interpreter as the embedded default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "RAYDECK_"))}
    env.update(DJANGO_SETTINGS_MODULE="console.settings.local", RAYDECK_VAR_DIR=str(var_dir))
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


def test_a_web_process_loads_the_api_and_celery_when_first_used(tmp_path: Path) -> None:
    queue = tmp_path / "broker" / "queue"
    queue.mkdir(parents=True)
    assert run_in_fresh_process(SCRIPT, tmp_path) == [
        "[]",
        "/api/v1/orgs/acme/clusters",
        "True",
    ]
    (message,) = queue.glob("*.msg")  # the folder broker of settings.local
    headers = json.loads(message.read_text())["headers"]
    assert headers["task"] == "clusters.tasks.sweep_clusters"
    assert "raydeck_sent_at" in headers  # console/celery.py's signal saw it off


def test_production_loads_the_api_and_every_task_before_it_forks(tmp_path: Path) -> None:
    assert run_in_fresh_process(BEFORE_FORK, tmp_path) == ["True True"]
