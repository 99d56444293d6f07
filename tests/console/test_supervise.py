"""The embedded default's supervisor (console/supervise.py) restarts a child that exits,
with backoff, and keeps the others running (issue 13, defect 2: a Celery worker that
exited on a Redis restart used to take the web server and beat down with it, for good).
Real processes: the supervisor script as `manage.py serve` runs it, with small children."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUPERVISOR = ROOT / "console" / "supervise.py"


def wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def test_a_crashed_child_is_restarted_with_backoff_and_the_others_keep_running(
    tmp_path: Path,
) -> None:
    starts = tmp_path / "starts"
    pids = tmp_path / "steady.pid"
    # "worker" crashes at once its first three starts, then stays up; "web" never exits.
    crashy = (
        "import os, sys, time\n"
        f"p = {str(starts)!r}\n"
        "open(p, 'a').write(f'{time.monotonic()}\\n')\n"
        "if len(open(p).read().split()) <= 3: sys.exit(1)\n"
        "time.sleep(600)\n"
    )
    steady = f"import os, time; open({str(pids)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    spec = {
        "commands": {
            "web": [sys.executable, "-c", steady],
            "worker": [sys.executable, "-c", crashy],
        },
        "banner": "running",
    }
    supervisor = subprocess.Popen(
        [sys.executable, str(SUPERVISOR), json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: starts.exists() and len(starts.read_text().split()) >= 4)
        web = int(pids.read_text())
        times = [float(t) for t in starts.read_text().split()]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 1 s, 2 s, 4 s between the starts (plus the child's own start-up, slow on a
        # loaded machine, and the supervisor's poll).
        for gap, delay in zip(gaps, (1, 2, 4), strict=True):
            assert delay - 0.05 <= gap < delay + 3, gaps
        assert alive(web)  # the web server was never touched
        assert supervisor.poll() is None
    finally:
        supervisor.send_signal(signal.SIGTERM)
        out, _ = supervisor.communicate(timeout=30)
    assert "worker exited with 1; starting it again in 1 s." in out
    assert "Stopped." in out
    wait_for(lambda: not alive(web), timeout=5)
