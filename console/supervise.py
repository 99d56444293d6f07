"""Run a few commands together; stop them all when one exits or on Ctrl-C / SIGTERM.

Executed as a plain script (`python console/supervise.py '<json>'`) by `manage.py
serve`, which replaces itself with it: the supervisor then holds no Django in memory.
Standard library only.
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


def supervise(commands: dict[str, list[str]], banner: str) -> int:
    processes: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False
    exit_code = 0

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, command in commands.items():
        # Each child in its own session: Ctrl-C reaches only us, and we stop them in order.
        processes[name] = subprocess.Popen(command, start_new_session=True)  # noqa: S603
    print(banner, flush=True)
    try:
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping.", flush=True)
                    exit_code = process.returncode or 1
                    stopping = True
            time.sleep(0.5)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        print("Stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    sys.exit(supervise(spec["commands"], spec["banner"]))
