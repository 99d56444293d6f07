"""What workspaces keep in the shared cache (the clusters app's clusters/live.py keeps
its own): both are read on every head heartbeat, so a steady head costs no SQL.

- `raydeck:ws:orders:<cluster id>`: the head's orders under the "workspace" topic, or {}
  for a cluster that is no workspace's, with its organization and when they were made.
  Lives ORDERS_SECONDS; forgotten on every change of the workspace and of a member's SSH
  keys (after commit), and not used once a revocation in the organization came after
  them (accounts/revocations.py), so a revoked member's keys leave the head at the next
  heartbeat. Without it: a few indexed queries (the workspace, who may use it, their keys).
- `raydeck:ws:report:<cluster id>`: a digest of the head's last report, so only a report
  that changed something is written. Lives REPORT_SECONDS. Without it: one write.
- `raydeck:ws:snapshot:<cluster id>`: the token of a snapshot a request waits for
  ("Create job from this workspace"), which the orders carry until it lives no more
  (SNAPSHOT_SECONDS); `raydeck:ws:packed:<token>`: what the head reported for it (the
  zip's digest and size and the packages, or its error), read by the waiting request.
  Without them: the request waits in vain and says to try again; nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime
from typing import Any

from django.core.cache import cache

from accounts.revocations import recent_revocations

ORDERS_SECONDS = 60
# A revocation's time is taken inside its transaction, which commits a moment later:
# orders made that close after it are made again, in case they read the old roles.
REVOCATION_COMMIT_SECONDS = 10
REPORT_SECONDS = 600
SNAPSHOT_SECONDS = 120


def _orders_key(cluster_id: int) -> str:
    return f"raydeck:ws:orders:{cluster_id}"


def cached_orders(cluster_id: int) -> dict[str, Any] | None:
    kept = cache.get(_orders_key(cluster_id))
    if not isinstance(kept, tuple):
        return None
    orders, organization_id, made_at = kept
    if organization_id is not None:
        revoked = recent_revocations(organization_id).values()
        if any(at >= made_at - REVOCATION_COMMIT_SECONDS for at in revoked):
            return None  # someone's access went since: their keys must leave the head
    return dict(orders)


def keep_orders(cluster_id: int, orders: dict[str, Any], organization_id: int | None) -> None:
    cache.set(_orders_key(cluster_id), (orders, organization_id, time.time()), ORDERS_SECONDS)


def ask_snapshot(cluster_id: int) -> str:
    """A new snapshot's token; the orders made from now on carry it (forget_orders after)."""
    token = secrets.token_hex(16)
    cache.set(f"raydeck:ws:snapshot:{cluster_id}", token, SNAPSHOT_SECONDS)
    return token


def snapshot_asked(cluster_id: int) -> str | None:
    token = cache.get(f"raydeck:ws:snapshot:{cluster_id}")
    return token if isinstance(token, str) else None


def keep_packed(cluster_id: int, result: dict[str, Any]) -> None:
    """The head's answer to the snapshot asked of it (an answer to another is dropped)."""
    token = result.get("for")
    if token and token == snapshot_asked(cluster_id):
        cache.set(f"raydeck:ws:packed:{token}", result, SNAPSHOT_SECONDS)
        # Answered: the orders stop asking (and the head its quick heartbeats).
        cache.delete(f"raydeck:ws:snapshot:{cluster_id}")
        forget_orders(cluster_id)


def packed(token: str) -> dict[str, Any] | None:
    result = cache.get(f"raydeck:ws:packed:{token}")
    return result if isinstance(result, dict) else None


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
