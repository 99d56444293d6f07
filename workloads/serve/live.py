"""Live data of Services in the shared cache (Redis), never rows: heads report every few
seconds on the lean heartbeat path.

Keys (PostgreSQL stays the source of truth; an emptied cache costs a delay):
- ORDERS_KEY: {cluster id: the head's orders} for every live version's cluster, rebuilt
  from rows on a miss and dropped whenever a version starts or stops (orders_changed), so
  a heartbeat of a cluster without a service costs one cache read and no query.
- REPORT_KEY(cluster): the head's latest Serve report (health per application), 10 min.
- SAMPLES_KEY(cluster): the head's counters over time, one sample per SAMPLE_EVERY seconds,
  the last SAMPLES_KEPT, 1 h: the rollout compares versions from them, the charts draw them.
- LEASE_KEY(service): held while one worker advances the service, so two never do at once;
  it expires by itself when a worker dies (kill -9), and the next one resumes from rows.
- QUEUED_KEY(service): a follow-up of the service waits in the queue (no pile-ups).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache

ORDERS_KEY = "raydeck:serve:orders"
REPORT_KEY = "raydeck:serve:report:{}"
SAMPLES_KEY = "raydeck:serve:samples:{}"
LEASE_KEY = "raydeck:serve:lease:{}"
QUEUED_KEY = "raydeck:serve:queued:{}"
REPORT_KEEP_SECONDS = 600
SAMPLES_KEEP_SECONDS = 3600
SAMPLE_EVERY = 2.0
SAMPLES_KEPT = 1800
LEASE_SECONDS = 30


def orders_for(cluster_id: int, build: Callable[[], dict[int, Any]]) -> Any | None:
    orders = cache.get(ORDERS_KEY)
    if orders is None:
        orders = build()
        cache.set(ORDERS_KEY, orders, timeout=None)
    return orders.get(cluster_id)


def orders_changed() -> None:
    cache.delete(ORDERS_KEY)


def note_report(cluster_id: int, report: dict[str, Any], metrics: dict[str, Any]) -> None:
    now = time.time()
    cache.set(REPORT_KEY.format(cluster_id), (now, report), timeout=REPORT_KEEP_SECONDS)
    key = SAMPLES_KEY.format(cluster_id)
    samples = cache.get(key) or []
    if samples and now - samples[-1][0] < SAMPLE_EVERY:
        return
    samples.append((now, metrics))
    cache.set(key, samples[-SAMPLES_KEPT:], timeout=SAMPLES_KEEP_SECONDS)


def report(cluster_id: int) -> tuple[float, dict[str, Any]] | None:
    return cache.get(REPORT_KEY.format(cluster_id))


def samples(cluster_id: int) -> list[tuple[float, dict[str, Any]]]:
    return cache.get(SAMPLES_KEY.format(cluster_id)) or []


def take_lease(service_id: int, holder: str) -> bool:
    return bool(cache.add(LEASE_KEY.format(service_id), holder, LEASE_SECONDS))


def release_lease(service_id: int, holder: str) -> None:
    key = LEASE_KEY.format(service_id)
    if cache.get(key) == holder:
        cache.delete(key)


def claim_queued(service_id: int, countdown: float) -> bool:
    return bool(cache.add(QUEUED_KEY.format(service_id), 1, int(countdown) + 30))


def release_queued(service_id: int) -> None:
    cache.delete(QUEUED_KEY.format(service_id))
