"""Every benchmark figure that has a goal, in one place: each benchmark prints its own
verdicts from here, and all.py prints the table of them all. A figure is the key of a
`key=value` pair on the last line a benchmark prints."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    benchmark: str  # the script's name in benchmarks/, without .py
    figure: str
    limit: float
    at_most: bool  # the figure must be <= limit (False: >= limit)
    unit: str
    label: str
    # Where a goal is not met yet: the worst figure of the recent runs (benchmarks/README.md).
    now: float | None = None

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit

    def gross_miss(self, value: float) -> bool:
        """Twice as bad as the goal, or as today's figure where the goal is not met yet:
        what the quick mode in CI fails on (a known miss is work to do, not a regression)."""
        bar = self.limit if self.now is None else self.now
        bar = max(self.limit, bar) if self.at_most else min(self.limit, bar)
        if self.at_most:
            return value > 2 * bar if bar else value > 0
        return value < bar / 2

    def shown(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit:g} {self.unit}".strip()


GOALS = [
    Goal("console", "cold_start_s", 0.5, True, "s", "web cold start to /healthz"),
    Goal("console", "idle_pss_mb", 200, True, "MB", "idle memory (PSS), embedded default"),
    Goal("console", "list_p50_ms", 10, True, "ms", "project list p50, 10k projects"),
    Goal("console", "page_max_bytes", 100 * 1024, True, "B", "largest first page load"),
    Goal("console", "page_max_load_ms", 150, True, "ms", "slowest first page load"),
    Goal("console", "poll_max_bytes", 8 * 1024, True, "B", "largest live poll"),
    Goal("api", "seq_p50_ms", 3, True, "ms", "API cluster list p50"),
    Goal("api", "concurrent_rps", 600, False, "req/s", "API cluster list, 16 clients", 515),
    Goal("api", "errors", 0, True, "", "API requests that failed"),
    Goal("heartbeats", "heartbeats_per_s", 3000, False, "/s", "heartbeats per second"),
    Goal("heartbeats", "p99_ms", 50, True, "ms", "heartbeat p99"),
    Goal("heartbeats", "errors", 0, True, "", "heartbeats that failed"),
    Goal("cluster_start", "overhead_s", 0.75, True, "s", "create -> running over ray start", 1.3),
    Goal("jobs", "queue_p95_s", 2, True, "s", "queued job submit -> running p95", now=4.21),
    Goal("jobs", "overhead_s", 2, True, "s", "job on its own cluster over Ray's"),
    Goal("services", "failed", 0, True, "", "failed requests in two upgrades"),
    Goal("services", "bad_failed", 0, True, "", "failed requests in a rollback"),
    Goal("reconcile", "full_pass_s", 5, True, "s", "full reconcile pass"),
    Goal("reconcile", "lag_p95_s", 1, True, "s", "desired change -> cloud call p95"),
]


def figures_of(last_line: str) -> dict[str, float | str]:
    """The `key=value` pairs of a benchmark's last line, numbers as floats."""
    figures: dict[str, float | str] = {}
    for pair in last_line.split():
        key, sep, raw = pair.partition("=")
        if not sep:
            continue
        try:
            figures[key] = float(raw)
        except ValueError:
            figures[key] = raw
    return figures


def goal(benchmark: str, figure: str) -> Goal:
    return next(g for g in GOALS if g.benchmark == benchmark and g.figure == figure)


def verdict_lines(benchmark: str, figures: dict[str, object]) -> list[str]:
    """`label  value  (goal)  PASS|MISS|NOT MEASURED` for each of a benchmark's goals."""
    lines = []
    for g in (g for g in GOALS if g.benchmark == benchmark):
        value = figures.get(g.figure)
        if not isinstance(value, (int, float)):
            lines.append(f"  {g.label:<42} {'n/a':<12} ({g.shown()})  NOT MEASURED")
            continue
        mark = "PASS" if g.met(value) else "MISS"
        lines.append(f"  {g.label:<42} {value:<12g} ({g.shown()})  {mark}")
    return lines
