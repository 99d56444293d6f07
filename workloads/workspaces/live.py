"""What workspaces keep in the shared cache (the clusters app's clusters/live.py keeps
its own): both are read on every head heartbeat, so a steady head costs no SQL.

- `raydeck:ws:orders:<cluster id>`: the head's orders under the "workspace" topic, or {}
  for a cluster that is no workspace's. Lives ORDERS_SECONDS; forgotten on every change
  of the workspace (after commit). Without it: one indexed query.
- `raydeck:ws:report:<cluster id>`: a digest of the head's last report, so only a report
  that changed something is written. Lives REPORT_SECONDS. Without it: one write.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from django.core.cache import cache

ORDERS_SECONDS = 60
REPORT_SECONDS = 600


def _orders_key(cluster_id: int) -> str:
    return f"raydeck:ws:orders:{cluster_id}"


def cached_orders(cluster_id: int) -> dict[str, Any] | None:
    return cache.get(_orders_key(cluster_id))


def keep_orders(cluster_id: int, orders: dict[str, Any]) -> None:
    cache.set(_orders_key(cluster_id), orders, ORDERS_SECONDS)


def forget_orders(cluster_id: int | None) -> None:
    if cluster_id is not None:
        cache.delete_many([_orders_key(cluster_id), f"raydeck:ws:report:{cluster_id}"])


def report_changed(cluster_id: int, fields: dict[str, Any]) -> bool:
    """True (and remembered) when `fields` differ from the last report's."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    key = f"raydeck:ws:report:{cluster_id}"
    if cache.get(key) == digest:
        return False
    cache.set(key, digest, REPORT_SECONDS)
    return True


def save_token(stop_requested_at: datetime) -> str:
    """What the orders carry for "save now", and the head's save report echoes."""
    return stop_requested_at.isoformat()
