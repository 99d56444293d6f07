"""/metrics: Prometheus' text format behind a bearer token, with the series an operator
watches. (Many processes adding up their series is tested with real gunicorn and Celery
processes in test_scale_out.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from clouds.providers.base import PermanentCloudError
from clouds.providers.registry import provider_for
from clusters import tasks
from clusters.choices import NodeRole, NodeState
from clusters.services import agents
from tests.clusters.test_agent_api import make_cluster, make_node, via_wsgi
from tests.conftest import Tenant

TOKEN = "metrics-token-for-tests-0123456789"


def scrape(token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = Client().get("/metrics", headers=headers)
    return response.status_code, response.content.decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def token(settings) -> Iterator[str]:
    settings.RAYDECK_METRICS_TOKEN = TOKEN
    yield TOKEN
    agents.forget_nodes()


def test_metrics_are_refused_without_the_token(tenant_a: Tenant, settings) -> None:
    settings.RAYDECK_METRICS_TOKEN = ""
    assert scrape()[0] == 404  # not configured: not there at all
    settings.RAYDECK_METRICS_TOKEN = TOKEN
    assert scrape(None)[0] == 401
    assert scrape("wrong")[0] == 401
    status, text = scrape()
    assert status == 200
    assert "raydeck_http_requests_total" in text


def test_requests_by_route_and_status_with_latency(tenant_a: Tenant, token: str) -> None:
    before = scrape()[1]
    Client().get("/healthz")
    Client().get("/no-such-page")
    text = scrape()[1]
    ok = {"route": "healthz", "method": "GET", "status": "200"}
    assert value(text, "raydeck_http_requests_total", **ok) == (
        value(before, "raydeck_http_requests_total", **ok) + 1
    )
    lost = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(text, "raydeck_http_requests_total", **lost) >= 1
    timed = {"route": "healthz", "method": "GET"}
    assert value(text, "raydeck_http_request_duration_seconds_count", **timed) >= 1
    assert value(text, "raydeck_http_request_duration_seconds_bucket", le="+Inf", **timed) >= 1


def test_heartbeats_and_nodes_by_state(tenant_a: Tenant, token: str) -> None:
    cluster = make_cluster(tenant_a)
    make_node(cluster, role=NodeRole.HEAD)
    _, credential = make_node(cluster)
    make_node(cluster, state=NodeState.BOOTING)
    before = scrape()[1]
    for _ in range(3):
        status, _, _ = via_wsgi(b'{"state": "ready"}', {"Authorization": f"Bearer {credential}"})
        assert status == 200
    agents.flush_heartbeats()
    text = scrape()[1]
    assert value(text, "raydeck_heartbeats_total") == value(before, "raydeck_heartbeats_total") + 3
    assert value(text, "raydeck_nodes", state="ready") == 2
    assert value(text, "raydeck_nodes", state="booting") == 1
    assert value(text, "raydeck_nodes", state="terminated") == 0  # live nodes only
    assert value(text, "raydeck_clusters", state="running") == 1
    assert ("raydeck_celery_queue_depth", frozenset({("queue", "celery")})) in samples(text)


def test_cloud_api_errors_by_provider_and_call(tenant_a: Tenant, token: str) -> None:
    before = scrape()[1]
    provider = provider_for(tenant_a.cloud)
    with pytest.raises(PermanentCloudError):
        provider.terminate(instance_id="not-a-local-instance")
    provider.list_instances()
    text = scrape()[1]
    failed = {"provider": "local", "call": "terminate", "error": "permanent"}
    assert value(text, "raydeck_cloud_api_errors_total", **failed) == (
        value(before, "raydeck_cloud_api_errors_total", **failed) + 1
    )
    listed = {"provider": "local", "call": "list_instances"}
    assert value(text, "raydeck_cloud_api_calls_total", **listed) == (
        value(before, "raydeck_cloud_api_calls_total", **listed) + 1
    )
    assert value(text, "raydeck_cloud_api_errors_total", error="other", **listed) == 0


def test_task_runs_and_failures(tenant_a: Tenant, token: str) -> None:
    name = "clusters.tasks.reconcile_cluster"
    before = scrape()[1]
    with mock.patch(
        "clusters.services.reconcile.cluster_reconcile", side_effect=RuntimeError("boom")
    ):
        tasks.reconcile_cluster.apply(kwargs={"cluster_id": 10**12})
    tasks.reconcile_cluster.apply(kwargs={"cluster_id": 10**12})  # no such cluster: fine
    text = scrape()[1]
    assert value(text, "raydeck_celery_task_failures_total", task=name) == (
        value(before, "raydeck_celery_task_failures_total", task=name) + 1
    )
    assert value(text, "raydeck_celery_tasks_total", task=name, outcome="success") == (
        value(before, "raydeck_celery_tasks_total", task=name, outcome="success") + 1
    )
    assert value(text, "raydeck_celery_task_duration_seconds_count", task=name) == (
        value(before, "raydeck_celery_task_duration_seconds_count", task=name) + 2
    )
