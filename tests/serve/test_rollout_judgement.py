"""How a rollout judges a new version against the serving one (rollout.compare): from the
heads' Serve counters, as live.py keeps them in the shared cache (Redis in tests).
No cluster runs: the samples are what two heads would have reported."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from workloads.serve import live
from workloads.serve.models import Service, ServiceVersion
from workloads.serve.services.rollout import compare

_cluster_ids = itertools.count(9_000_001)


def _counters(requests: int, errors: int, latency_ms: float) -> dict[str, Any]:
    """Cumulative counters of `requests` that each took about `latency_ms`."""
    bounds = ["10", "50", "100", "250", "500", "1000", "+Inf"]
    buckets = {b: (requests if b == "+Inf" or float(b) >= latency_ms else 0) for b in bounds}
    return {"default": {"requests": requests, "errors": errors, "buckets": buckets}}


@pytest.fixture
def heads() -> Iterator[Any]:
    """Makes a version whose head served `requests` at `latency_ms` since t=100."""
    used: list[int] = []

    def version(number: int, requests: int, latency_ms: float, errors: int = 0) -> ServiceVersion:
        cluster_id = next(_cluster_ids)
        used.append(cluster_id)
        samples = [
            (100.0, _counters(0, 0, latency_ms)),
            (130.0, _counters(requests, errors, latency_ms)),
        ]
        cache.set(live.SAMPLES_KEY.format(cluster_id), samples)
        return ServiceVersion(number=number, cluster_id=cluster_id)

    yield version
    cache.delete_many([live.SAMPLES_KEY.format(c) for c in used])


def test_a_new_version_many_times_slower_is_rolled_back_with_the_figures(heads: Any) -> None:
    service = Service(max_latency_ratio=3.0, max_error_rate=0.05)
    verdict = compare(service, heads(2, 200, 800), heads(1, 200, 20), start=100.0)
    assert verdict.bad
    assert "v2's p99 latency" in verdict.reason and "v1's" in verdict.reason
    assert "the limit is 3 times" in verdict.reason


def test_latency_within_the_ratio_and_allowance_passes(heads: Any) -> None:
    service = Service(max_latency_ratio=3.0, max_error_rate=0.05)
    assert not compare(service, heads(2, 200, 45), heads(1, 200, 20), start=100.0).bad


def test_a_service_with_a_wider_ratio_accepts_the_slower_version(heads: Any) -> None:
    service = Service(max_latency_ratio=100.0, max_error_rate=0.05)
    assert not compare(service, heads(2, 200, 800), heads(1, 200, 20), start=100.0).bad


def test_errors_above_the_limit_roll_back_and_too_few_requests_prove_nothing(heads: Any) -> None:
    service = Service(max_latency_ratio=3.0, max_error_rate=0.05)
    verdict = compare(service, heads(2, 100, 20, errors=30), heads(1, 100, 20), start=100.0)
    assert verdict.bad and "failed 30 of 100 requests" in verdict.reason
    assert not compare(service, heads(2, 5, 800, errors=5), heads(1, 100, 20), start=100.0).bad
