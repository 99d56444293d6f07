"""Live data of the jobs app: what it keeps in the shared cache rather than in rows.
PostgreSQL stays the source of truth; a missing key costs a query or a delay.

- `jobs:orders:{cluster}`: the head's orders under the "jobs" topic (submissions and
  stops), or {} for a cluster with no job. Built from one indexed query by the
  participant (workloads/jobs/head.py) and kept 30 s; deleted when a job or attempt on
  the cluster changes (forget_orders, on commit), so a head hears of a change at its
  next heartbeat and a cluster with no job costs no query for 30 s. Missing: rebuilt.
- `jobs:queue:{cluster}`: whether the cluster has a job queue set up (a JobQueue row), so
  its head heartbeats promptly (head.py). Kept 30 s; deleted when the queue is saved.
  Missing: one indexed query.
- `jobs:report:{cluster}`: a digest of the head's last "jobs" report, so an unchanged
  report (most heartbeats) writes nothing. Kept 5 min. Missing: the report is applied
  again (applying is idempotent).
- `jobs:follow-up:{job}`: that a follow-up reconcile of the job waits in the queue
  (enqueue_job_reconcile). Kept its countdown. Missing: one more reconcile, harmless.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.core.cache import cache
from django.db import transaction

ORDERS_SECONDS = 30
REPORT_SECONDS = 5 * 60


def orders_key(cluster_id: int) -> str:
    return f"jobs:orders:{cluster_id}"


def cached_orders(cluster_id: int) -> dict[str, Any] | None:
    value = cache.get(orders_key(cluster_id))
    return value if isinstance(value, dict) else None


def keep_orders(cluster_id: int, orders: dict[str, Any]) -> None:
    cache.set(orders_key(cluster_id), orders, ORDERS_SECONDS)


def queue_key(cluster_id: int) -> str:
    return f"jobs:queue:{cluster_id}"


def _forget(key: str) -> None:
    """Delete `key` now, and again once the current transaction commits (a heartbeat in
    between may have cached what it read before the change)."""
    cache.delete(key)
    transaction.on_commit(lambda: cache.delete(key))


def forget_orders(cluster_id: int | None) -> None:
    """The cluster's orders changed."""
    if cluster_id is not None:
        _forget(orders_key(cluster_id))


def cached_serves_queue(cluster_id: int) -> bool | None:
    value = cache.get(queue_key(cluster_id))
    return value if isinstance(value, bool) else None


def keep_serves_queue(cluster_id: int, serves: bool) -> None:
    cache.set(queue_key(cluster_id), serves, ORDERS_SECONDS)


def forget_serves_queue(cluster_id: int) -> None:
    """The cluster's queue was set up or changed."""
    _forget(queue_key(cluster_id))


def report_is_new(cluster_id: int, report: Any) -> bool:
    """Whether `report` differs from the last one seen for the cluster (and remember it)."""
    digest = hashlib.sha256(json.dumps(report, sort_keys=True, default=str).encode()).hexdigest()
    key = f"jobs:report:{cluster_id}"
    if cache.get(key) == digest:
        return False
    cache.set(key, digest, REPORT_SECONDS)
    return True


def forget_report(cluster_id: int) -> None:
    cache.delete(f"jobs:report:{cluster_id}")


def claim_follow_up(job_id: int, countdown: int) -> bool:
    return bool(cache.add(f"jobs:follow-up:{job_id}", 1, max(1, countdown)))
