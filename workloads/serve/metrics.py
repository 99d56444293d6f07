"""Figures from a head's cumulative Serve counters (raydeck_agent/serve.py reports them;
live.py keeps samples): requests, errors and latency quantiles over a window, and the
series the service page charts."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

Sample = tuple[float, dict[str, Any]]


@dataclass(frozen=True)
class Window:
    """What a version served between two samples."""

    seconds: float
    requests: float
    errors: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _totals(metrics: dict[str, Any]) -> tuple[float, float, dict[float, float]]:
    """Requests, errors and histogram ({upper bound: cumulative count}) over every app."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for app in metrics.values():
        if not isinstance(app, dict):
            continue
        requests += float(app.get("requests") or 0)
        errors += float(app.get("errors") or 0)
        for bound, count in (app.get("buckets") or {}).items():
            try:
                key = math.inf if bound in ("+Inf", "inf") else float(bound)
            except ValueError:
                continue
            buckets[key] = buckets.get(key, 0.0) + float(count or 0)
    return requests, errors, buckets


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile from a cumulative histogram (linear within a bucket), or None."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


def window(first: Sample, last: Sample) -> Window:
    r0, e0, b0 = _totals(first[1])
    r1, e1, b1 = _totals(last[1])
    if r1 < r0:  # the counters restarted (Ray restarted): count from zero
        r0, e0, b0 = 0.0, 0.0, {}
    deltas = {bound: count - b0.get(bound, 0.0) for bound, count in b1.items()}
    return Window(
        seconds=max(0.0, last[0] - first[0]),
        requests=max(0.0, r1 - r0),
        errors=max(0.0, e1 - e0),
        p50_ms=quantile(deltas, 0.5),
        p99_ms=quantile(deltas, 0.99),
    )


def since(samples: list[Sample], start: float) -> Window | None:
    """What was served from `start` (a timestamp) to the latest sample; None without two
    samples to compare."""
    if len(samples) < 2:
        return None
    before = [s for s in samples if s[0] <= start]
    first = before[-1] if before else samples[0]
    if first is samples[-1]:
        return None
    return window(first, samples[-1])


def series(samples: list[Sample], *, points: int = 60) -> list[dict[str, Any]]:
    """Per interval between samples (the last `points`): time, requests/s, error rate
    (%), p50 and p99 (ms), for the charts."""
    rows = []
    tail = samples[-points - 1 :]
    for first, last in itertools.pairwise(tail):
        figures = window(first, last)
        rows.append(
            {
                "t": last[0],
                "rate": round(figures.rate, 3),
                "error_rate": round(figures.error_rate * 100, 2),
                "p50": None if figures.p50_ms is None else round(figures.p50_ms, 1),
                "p99": None if figures.p99_ms is None else round(figures.p99_ms, 1),
            }
        )
    return rows
