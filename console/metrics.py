"""/metrics for Prometheus: what every process counted (kit/metrics.py), plus what is
read at scrape time (live nodes by state, live clusters by state, the Celery queue's
depth). Only with `Authorization: Bearer <RAYDECK_METRICS_TOKEN>`; a 404 while no
token is set, a 401 without the right one."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client.core import GaugeMetricFamily, Metric

from clusters.models import Cluster, Node
from kit.metrics import CONTENT_TYPE, exposition

logger = logging.getLogger(__name__)

QUEUES = tuple(settings.TASK_QUEUES)  # what the workers consume


class ScrapeTimeCollector:
    """Series read from their source at each scrape (never counted by a process)."""

    def collect(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily("raydeck_nodes", "Live nodes, by state.", labels=["state"])
        for state, count in _count_by_state(Node.objects.live()):
            nodes.add_metric([state], count)
        yield nodes
        clusters = GaugeMetricFamily(
            "raydeck_clusters", "Clusters not terminated, by state.", labels=["state"]
        )
        for state, count in _count_by_state(Cluster.objects.live()):
            clusters.add_metric([state], count)
        yield clusters
        depth = GaugeMetricFamily(
            "raydeck_celery_queue_depth",
            "Messages waiting in a Celery queue (-1: the broker did not answer).",
            labels=["queue"],
        )
        for queue, size in _queue_depths():
            depth.add_metric([queue], size)
        yield depth


def _count_by_state(queryset) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    rows = queryset.order_by().values_list("state").annotate(n=Count("pk"))
    return [(state, n) for state, n in rows]


def _queue_depths() -> list[tuple[str, int]]:
    from console.celery import app

    found = []
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            for queue in QUEUES:
                found.append(
                    (queue, channel.queue_declare(queue=queue, passive=True).message_count)
                )
    except Exception:  # the broker is away: say so in the series, scrape the rest
        logger.warning("metrics: the broker did not answer", exc_info=True)
        return [(queue, -1) for queue in QUEUES]
    return found


@login_not_required
@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    expected = settings.RAYDECK_METRICS_TOKEN
    if not expected:
        return HttpResponse("Not found.", status=404, content_type="text/plain")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        response = HttpResponse(
            "A bearer token is required.", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(ScrapeTimeCollector()), content_type=CONTENT_TYPE)
