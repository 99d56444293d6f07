"""Run a few commands together; restart one that exits, with backoff; stop them all on
Ctrl-C / SIGTERM.

Executed as a plain script (`python console/supervise.py '<json>'`) by `manage.py
serve`, which replaces itself with it: the supervisor then holds no Django in memory.
Standard library only, and little of it: it runs without `site` (-S) and imports no
dataclasses or inspect, about 2 MB less for a process that only waits.

A child that exits (a crash, the Celery worker ending on a broker error, an OOM kill) is
started again after RESTART_FIRST_SECONDS, doubling up to RESTART_MAX_SECONDS while it
keeps failing; one that ran for STABLE_SECONDS starts from the first delay again. The
others keep running meanwhile: a crashed worker never takes the web server down with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

STOP_GRACE_SECONDS = 15
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0
POLL_SECONDS = 0.2


class Child:
    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = RESTART_FIRST_SECONDS
        self.restart_at: float | None = None  # set while waiting to be started again
        self.restarts = 0

    def start(self) -> None:
        # Each child in its own session: Ctrl-C reaches only us, and we stop them in order.
        self.process = subprocess.Popen(self.command, start_new_session=True)  # noqa: S603
        self.started_at = time.monotonic()
        self.restart_at = None

    def check(self, now: float) -> None:
        """Start it again when due; notice that it exited and plan the restart."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                print(f"Starting {self.name} again (restart {self.restarts}).", flush=True)
                self.start()
            return
        if self.process is None or self.process.poll() is None:
            return
        if now - self.started_at >= STABLE_SECONDS:
            self.delay = RESTART_FIRST_SECONDS  # it ran fine for a while: a fresh failure
        print(
            f"{self.name} exited with {self.process.returncode}; "
            f"starting it again in {self.delay:g} s.",
            flush=True,
        )
        self.restart_at = now + self.delay
        self.delay = min(self.delay * 2, RESTART_MAX_SECONDS)


def supervise(commands: dict[str, list[str]], banner: str) -> int:
    children = [Child(name, command) for name, command in commands.items()]
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.start()
    print(banner, flush=True)
    try:
        while not stopping:
            now = time.monotonic()
            for child in children:
                child.check(now)
            time.sleep(POLL_SECONDS)
    finally:
        running = [c.process for c in children if c.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    sys.exit(supervise(spec["commands"], spec["banner"]))
