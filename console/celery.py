"""The Celery application: configured from Django settings (CELERY_*), and what every
task message carries and every task run reports (kit/metrics.py):

- a message is stamped when sent (`raydeck_sent_at`), so a worker knows how long it
  waited past when it was due (its countdown's end, or when it was sent), and carries
  the request id it was sent under (`raydeck_request_id`), which its run logs under
  and passes on to the tasks and audit events it makes (kit/logs.py);
- each run is timed and counted by outcome, each failure counted;
- a worker whose pod has a metrics directory of its own (PROMETHEUS_MULTIPROC_DIR)
  serves its pool's series on RAYDECK_WORKER_METRICS_PORT.
"""

from __future__ import annotations

import logging
import os
import time
from contextvars import Token
from datetime import datetime
from typing import Any

from celery import Celery, Task, bootsteps
from celery.beat import EmbeddedService
from celery.signals import (
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    worker_ready,
)
from click import Option
from django.conf import settings
from kombu import Queue
from prometheus_client import start_http_server

from kit.logs import current_request_id, reset_request_id, set_request_id
from kit.metrics import TASK_FAILURES, TASK_LAG, TASK_SECONDS, TASKS, registry
from kit.tasks import app_loaded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")

logger = logging.getLogger(__name__)

app = Celery("raydeck")
app.set_default()  # tasks (kit/tasks.py) and every thread find this app
app.config_from_object("django.conf:settings", namespace="CELERY")
# kombu's Queues here, not in the settings: kombu costs a web process's start.
app.conf.task_queues = [Queue(name) for name in settings.TASK_QUEUES]
app.autodiscover_tasks()
app_loaded()  # the tasks declared (kit/tasks.py) are made now, on this app


class BeatThread(bootsteps.StartStopStep):
    """`worker --beat-thread`: beat inside the worker as a thread (the embedded default).
    Celery's own -B forks a process for it, and that process held a copy of every page
    of Django it touched (60 MB) to send a few tasks a minute."""

    label = "Beat (thread)"
    conditional = True

    def __init__(self, worker: Any, beat_thread: bool = False, **kwargs: Any) -> None:
        self.enabled = beat_thread
        super().__init__(worker, **kwargs)

    def create(self, worker: Any) -> Any:
        return EmbeddedService(
            worker.app,
            schedule_filename=worker.schedule_filename,
            scheduler_cls=worker.scheduler,
            thread=True,
        )


app.steps["worker"].add(BeatThread)
app.user_options["worker"].add(
    Option(["--beat-thread"], is_flag=True, default=False, help="Run beat in a thread.")
)

# Task id -> (perf_counter at start, the request id it ran under), in the pool process.
_started: dict[str, tuple[float, Token[str]]] = {}


@before_task_publish.connect
def _stamp_message(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers["raydeck_sent_at"] = time.time()
        headers["raydeck_request_id"] = current_request_id()


def _due(task: Task) -> float | None:
    sent = task.request.get("raydeck_sent_at")
    if sent is None:
        return None
    eta = task.request.eta
    due = float(sent)
    if eta:
        due = max(due, datetime.fromisoformat(str(eta)).timestamp())
    return due


@task_prerun.connect
def _task_started(task_id: str = "", task: Task | None = None, **_: Any) -> None:
    if task is None:
        return
    request_id = str(task.request.get("raydeck_request_id") or "")
    _started[task_id] = (time.perf_counter(), set_request_id(request_id))
    logger.info("task %s[%s] started", task.name, task_id, extra={"task": task.name})
    due = _due(task)
    if due is not None:
        TASK_LAG.labels(task.name).observe(max(0.0, time.time() - due))


@task_postrun.connect
def _task_finished(
    task_id: str = "", task: Task | None = None, state: str | None = None, **_: Any
) -> None:
    started = _started.pop(task_id, None)
    if started is not None:
        reset_request_id(started[1])
    if task is None:
        return
    if started is not None:
        TASK_SECONDS.labels(task.name).observe(time.perf_counter() - started[0])
    TASKS.labels(task.name, (state or "unknown").lower()).inc()


@task_failure.connect
def _task_failed(sender: Task | None = None, **_: Any) -> None:
    if sender is not None:
        TASK_FAILURES.labels(sender.name).inc()


@worker_ready.connect
def _serve_worker_metrics(**_: Any) -> None:
    port = settings.RAYDECK_WORKER_METRICS_PORT
    if port:
        start_http_server(port, addr=settings.RAYDECK_WORKER_METRICS_ADDR, registry=registry())
