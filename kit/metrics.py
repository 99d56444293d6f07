"""Prometheus metrics: every series Raydeck exports is defined here, once.

Web processes (gunicorn forks several) and Celery workers (prefork pools) are many
processes, so prometheus_client runs in its multiprocess mode when
PROMETHEUS_MULTIPROC_DIR names a directory (one per host or pod, emptied before the
processes start): each process writes its samples there, and whoever serves the
metrics adds them up. Without it (the embedded default, tests) each process keeps its
own, in memory.

Who serves them: the web's `/metrics` (console/metrics.py, behind a bearer token) adds
what every process of its directory wrote, plus what is read at scrape time (nodes by
state, the Celery queue's depth); a worker pod that has a directory of its own serves
its own on RAYDECK_WORKER_METRICS_PORT (console/celery.py), bound inside the pod's
network only.

Hot paths pay a counter increment and nothing more (a heartbeat is `HEARTBEATS.inc()`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

# Seconds: a page, an API call, a reconcile pass, a cloud call all fall in this range.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_REQUESTS = Counter(
    "raydeck_http_requests",
    "Requests answered by Django, by URL route, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "raydeck_http_request_duration_seconds",
    "Time to answer a request through Django, by URL route and method.",
    ["route", "method"],
    buckets=BUCKETS,
)
HEARTBEATS = Counter("raydeck_heartbeats", "Agent heartbeats received (rate() for per second).")
TASK_SECONDS = Histogram(
    "raydeck_celery_task_duration_seconds",
    "Time a Celery task ran, by task (a reconcile pass: clusters.tasks.reconcile_cluster).",
    ["task"],
    buckets=BUCKETS,
)
TASK_LAG = Histogram(
    "raydeck_celery_task_lag_seconds",
    "From when a task was due (sent, or its countdown ended) to when a worker started it, "
    "by task (the reconcile lag: clusters.tasks.reconcile_cluster).",
    ["task"],
    buckets=BUCKETS,
)
TASKS = Counter(
    "raydeck_celery_tasks", "Celery tasks finished, by task and outcome.", ["task", "outcome"]
)
TASK_FAILURES = Counter(
    "raydeck_celery_task_failures", "Celery tasks that raised, by task.", ["task"]
)
CLOUD_CALLS = Counter(
    "raydeck_cloud_api_calls", "Calls to a cloud's API, by provider and call.", ["provider", "call"]
)
CLOUD_ERRORS = Counter(
    "raydeck_cloud_api_errors",
    "Failed calls to a cloud's API, by provider, call and error (transient, permanent, other).",
    ["provider", "call", "error"],
)
CLOUD_LATENCY = Histogram(
    "raydeck_cloud_api_duration_seconds",
    "Time a call to a cloud's API took, by provider and call.",
    ["provider", "call"],
    buckets=BUCKETS,
)


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def registry() -> CollectorRegistry:
    """Every process's series (of the multiprocess directory), or this process's."""
    if not multiprocess_dir():
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


def exposition(*scraped: Collector) -> bytes:
    """The text format of registry()'s series, plus `scraped` collectors read now."""
    body = generate_latest(registry())
    if scraped:
        extra = CollectorRegistry()
        for collector in scraped:
            extra.register(collector)
        body += generate_latest(extra)
    return body


CONTENT_TYPE = CONTENT_TYPE_LATEST


def route_of(request: HttpRequest) -> str:
    """The URL pattern that answered (few of them, unlike paths, and never a query)."""
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None else "unmatched"


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts and times every request Django answers, by its URL route (the pattern, so
    the series stay few), method and status. First in the chain, so it sees every
    answer, refusals included."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        route = route_of(request)
        method = request.method if request.method in METHODS else "other"
        HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        return response
