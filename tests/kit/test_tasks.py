"""Tasks declared without Celery (kit/tasks.py): a worker still registers every task, under
its module's name, with the options its module declared, and beat's schedule names only
registered tasks. A fresh interpreter starts as `celery -A console worker` does: the
Celery app first, then the tasks' modules Celery finds, then the app finalized."""

from __future__ import annotations

import json
from pathlib import Path

from tests.console.test_cold_start import run_in_fresh_process

WORKER = """
import importlib, importlib.util, json
from console.celery import app
from django.conf import settings
from kit import tasks
app.loader.import_default_modules()  # the worker's start: Django set up, tasks found
app.finalize()
registered = sorted(n for n in app.tasks if not n.startswith("celery."))
# Every installed app's tasks module, imported whether or not Celery found it.
for label in settings.INSTALLED_APPS:
    if importlib.util.find_spec(label) and importlib.util.find_spec(f"{label}.tasks"):
        importlib.import_module(f"{label}.tasks")
assert sorted(n for n in app.tasks if not n.startswith("celery.")) == registered
declared = {}
for task in tasks._declared:
    made = app.tasks[task.name]
    declared[task.name] = {
        option: repr(getattr(made, option)) == repr(value)
        for option, value in task._options.items() if option != "bind"
    }
print(json.dumps({
    "registered": registered,
    "declared": declared,
    "scheduled": sorted(e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()),
    "reconcile": [
        app.tasks["clusters.tasks.reconcile_cluster"].max_retries,
        app.tasks["clusters.tasks.reconcile_cluster"].retry_backoff_max,
        [e.__name__ for e in app.tasks["clusters.tasks.reconcile_cluster"].autoretry_for],
    ],
}))
"""


def test_a_worker_registers_every_declared_task_with_its_options(tmp_path: Path) -> None:
    found = json.loads(run_in_fresh_process(WORKER, tmp_path)[-1])
    assert found["registered"] == sorted(found["declared"])
    assert len(found["registered"]) >= 19  # every app's tasks, not one module's
    assert set(found["scheduled"]) <= set(found["registered"])
    for name, options in found["declared"].items():
        assert all(options.values()), (name, options)
    assert found["reconcile"] == [8, 60, ["TransientCloudError"]]
