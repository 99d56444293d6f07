"""Services' participant in a head's heartbeat (clusters/head_orders.py, topic "serve"):
the Serve config the head should run, and its report of health and counters.

The orders of every live version's cluster sit in one cache entry (live.py), so a head
of a cluster without a service costs one cache read and no query. Where the cloud's load
balancer cannot check query tokens, a version's orders carry its service's live token
hashes and the head checks them (agent: serve_gate.py)."""

from __future__ import annotations

from typing import Any

from clouds.providers.registry import traits_for
from clusters.models import guaranteed_workers

from . import live
from .choices import VersionState
from .models import ServiceToken, ServiceVersion
from .serve_config import spread_config

TOPIC = "serve"
MAX_APPS = 50
MAX_BUCKETS = 60
# Versions whose head should keep running their config (a draining one still serves).
ORDERED_STATES = [
    VersionState.STARTING,
    VersionState.HEALTHY,
    VersionState.DRAINING,
    VersionState.UNHEALTHY,
]


def build_orders() -> dict[int, Any]:
    rows = ServiceVersion.objects.filter(
        state__in=ORDERED_STATES, cluster__isnull=False
    ).values_list(
        "cluster_id",
        "pk",
        "config_hash",
        "serve_config",
        "compute_config__worker_groups",
        "service_id",
        "service__cloud__kind",
    )
    gated = {
        service_id for *_, service_id, kind in rows if traits_for(kind).heads_check_service_tokens
    }
    hashes: dict[int, list[str]] = {service_id: [] for service_id in gated}
    for service_id, token_hash in ServiceToken.objects.filter(
        service_id__in=gated, revoked_at=None
    ).values_list("service_id", "token_hash"):
        hashes[service_id].append(token_hash)
    orders: dict[int, Any] = {}
    for cluster_id, pk, config_hash, config, groups, service_id, _ in rows:
        # The hash stays the stored config's: the caps follow from it and the version's
        # compute config, which never changes.
        config = spread_config(config, guaranteed_workers(groups or []))
        orders[cluster_id] = {"version": pk, "hash": config_hash, "config": config}
        if service_id in gated:
            orders[cluster_id]["token_hashes"] = hashes[service_id]
    return orders


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _clean_metrics(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    cleaned: dict[str, Any] = {}
    for app, figures in list(raw.items())[:MAX_APPS]:
        if not isinstance(figures, dict):
            continue
        buckets = figures.get("buckets")
        cleaned[str(app)[:100]] = {
            "requests": _number(figures.get("requests")),
            "errors": _number(figures.get("errors")),
            "buckets": {
                str(bound)[:20]: _number(count)
                for bound, count in (
                    list(buckets.items())[:MAX_BUCKETS] if isinstance(buckets, dict) else []
                )
            },
        }
    return cleaned


def clean_report(raw: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The report's health part and its counters, only the expected keys and sizes
    (agent input is untrusted), or None when it is not a report."""
    if not isinstance(raw, dict):
        return None
    apps = raw.get("applications")
    applications = {
        str(name)[:100]: {
            "status": str(app.get("status", ""))[:32],
            "message": str(app.get("message", ""))[:500],
        }
        for name, app in (list(apps.items())[:MAX_APPS] if isinstance(apps, dict) else [])
        if isinstance(app, dict)
    }
    report = {
        "hash": str(raw.get("hash", ""))[:64],
        "error": str(raw.get("error", ""))[:500],
        "applications": applications,
        # Its "serve" port speaks TLS; agents from before the gate spoke it never say so.
        "tls": raw.get("tls") is True,
    }
    return report, _clean_metrics(raw.get("metrics"))


class ServeParticipant:
    topic = TOPIC

    def orders(self, cluster_id: int) -> Any | None:
        return live.orders_for(cluster_id, build_orders)

    def prompt(self, cluster_id: int, orders: Any | None) -> bool:
        return False  # a rollout moves in steps of tens of seconds: the usual rhythm suits it

    def receive(self, cluster_id: int, report: Any) -> None:
        cleaned = clean_report(report)
        if cleaned is not None:
            live.note_report(cluster_id, *cleaned)
