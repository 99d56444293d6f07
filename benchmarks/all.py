"""Every benchmark, one after another, and one table of their figures against the goals
in goals.py, with the machine's load average while each ran.

Run by hand:  .venv/bin/python benchmarks/all.py [--quick] [--only console,api]

The full run takes about 25 minutes (jobs and reconcile are the long ones) and exits 1
only when a benchmark fails to produce its figures: a MISS is a finding, not an error.

--quick (under 3 minutes) runs the short benchmarks (console, api, heartbeats) with less
load and fewer rounds and exits 1 on a gross regression: a figure twice as bad as its
goal (or as today's figure, where the goal is not met yet: goals.py), or a benchmark
that fails. `make test` runs it after the tests, so a slow change is seen the day it lands.
Quick figures are rougher than full ones (fewer samples, a smaller table); they are not
the figures to quote.

Each benchmark's output goes to a log file under a temporary folder (printed), removed
at the end unless a benchmark failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from goals import GOALS, figures_of

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    args: list[str] = field(default_factory=list)
    quick_args: list[str] | None = None  # None: not part of the quick mode
    timeout_s: int = 1200


BENCHMARKS = [
    Benchmark("console", quick_args=["--quick"], timeout_s=300),
    Benchmark(
        "api",
        quick_args=["--clusters", "10000", "--sequential", "100", "--duration", "5"],
        timeout_s=300,
    ),
    Benchmark(
        "heartbeats",
        quick_args=["--nodes", "1000", "--duration", "6", "--warmup", "2"],
        timeout_s=300,
    ),
    # Not in the quick mode: a minute of Ray for one run, whose difference to a plain
    # `ray start` swings by seconds on a busy machine. Five runs: one Ray start varies by
    # half a second on a quiet machine, about the size of the figure's goal.
    Benchmark("cluster_start", ["--runs", "5"], timeout_s=900),
    Benchmark("jobs", ["--runs", "3"]),
    Benchmark("services"),
    Benchmark("reconcile"),
]


def missing_for_quick() -> list[str]:
    """What the quick benchmarks need that this machine lacks: PostgreSQL (trust auth,
    user postgres) and Redis on loopback, wrk and Debian's Chromium."""
    missing = [tool for tool in ("wrk",) if shutil.which(tool) is None]
    if not Path("/usr/bin/chromium").exists():
        missing.append("/usr/bin/chromium")
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            missing.append(f"{name} on 127.0.0.1:{port}")
    return missing


class LoadWatch:
    """The 1-minute load average, sampled every second while a benchmark runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(1.0)

    def summary(self) -> str:
        if not self.samples:
            return "-"
        return f"{sum(self.samples) / len(self.samples):.2f} (max {max(self.samples):.2f})"


def run(bench: Benchmark, quick: bool, logs: Path) -> tuple[dict[str, float | str], str, bool]:
    args = (bench.quick_args or []) if quick else bench.args
    log_path = logs / f"{bench.name}.log"
    command = [sys.executable, str(HERE / f"{bench.name}.py"), *args]
    print(f"--- {bench.name} {' '.join(args)}  (log: {log_path})", flush=True)
    started = time.monotonic()
    with LoadWatch() as load, log_path.open("w") as out:
        try:
            done = subprocess.run(
                command,
                cwd=HERE.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=bench.timeout_s,
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    figures = figures_of(lines[-1]) if lines else {}
    ok = code == 0 and bool(figures)
    print(
        f"    {'done' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s"
        + ("" if ok else f" (exit {code}); last lines:\n      " + "\n      ".join(lines[-15:])),
        flush=True,
    )
    return figures, load.summary(), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short CI run (< 3 min)")
    parser.add_argument("--only", help="comma-separated benchmark names")
    args = parser.parse_args()
    if args.quick and (missing := missing_for_quick()):
        # A laptop's `make test` needs nothing installed; CI has all of it, and must run.
        print(f"quick benchmarks skipped: {', '.join(missing)} missing", flush=True)
        return 1 if os.environ.get("RAYDECK_REQUIRE_BENCHMARKS") == "1" else 0
    chosen = [b for b in BENCHMARKS if not args.quick or b.quick_args is not None]
    if args.only:
        names = set(args.only.split(","))
        chosen = [b for b in chosen if b.name in names]
    logs = Path(tempfile.mkdtemp(prefix="raydeck-bench-all-"))
    started = time.monotonic()
    rows: list[tuple[str, str, str, str, str]] = []
    failed: list[str] = []
    gross: list[str] = []
    for bench in chosen:
        figures, load, ok = run(bench, args.quick, logs)
        if not ok:
            failed.append(bench.name)
        for goal in (g for g in GOALS if g.benchmark == bench.name):
            value = figures.get(goal.figure)
            if not isinstance(value, float):
                rows.append((goal.label, "n/a", goal.shown(), "NOT MEASURED", load))
                continue
            verdict = "PASS" if goal.met(value) else "MISS"
            if goal.gross_miss(value):
                verdict = "MISS (2x)"
                gross.append(f"{goal.label}: {value:g} {goal.unit}")
            rows.append((goal.label, f"{value:g} {goal.unit}", goal.shown(), verdict, load))
    width = max(len(r[0]) for r in rows) if rows else 10
    mode = "quick" if args.quick else "full"
    took = time.monotonic() - started
    print(f"\nRaydeck benchmarks ({mode}, {took:.0f}s, {os.cpu_count()} CPUs)")
    print(f"{'figure':<{width}}  {'value':<14} {'goal':<16} {'verdict':<12} load 1m (mean, max)")
    for label, value, goal_text, verdict, load in rows:
        print(f"{label:<{width}}  {value:<14} {goal_text:<16} {verdict:<12} {load}")
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)} (logs kept in {logs})")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    if args.quick and gross:
        print("gross regressions (twice as bad as the goal): " + "; ".join(gross))
    return 1 if failed or (args.quick and gross) else 0


if __name__ == "__main__":
    sys.exit(main())
