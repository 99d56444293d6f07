"""Whether the control plane has been able to hear heartbeats, for the reconciler's
"node lost" judgement.

A node is lost when it has been silent while we were listening. When the web tier
itself is down (a restart, a slow deploy, a crash), every node goes silent at once, and
the reconciler, which runs in the workers, would otherwise take every live node for
lost and terminate it. So each web process ticks a shared cache key while it runs
(`start_ticking`, from console/wsgi.py), and the reconciler:

- judges no node while the ticks are stale (nobody is listening), and
- counts a node's silence from when listening resumed, if that is later than its last
  heartbeat (nodes retry with backoff, so their first heartbeat may take a while).

With no tick at all (the cache was emptied, or no web process runs this code, as in
tests of the reconciler alone), nodes are judged by their heartbeats as before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

TICK_KEY = "raydeck:listening:tick"
SINCE_KEY = "raydeck:listening:since"
STALE_AFTER_TICKS = 3  # a tick older than this many intervals: nobody is listening


def tick_seconds() -> float:
    return float(settings.RAYDECK_HEARTBEAT_SECONDS)


def tick(now: float | None = None) -> None:
    """Say that this web process is listening; after a gap, that listening resumed now."""
    now = time.time() if now is None else now
    previous = cache.get(TICK_KEY)
    if previous is None or now - float(previous) > tick_seconds() * STALE_AFTER_TICKS:
        cache.set(SINCE_KEY, now, timeout=None)
    cache.set(TICK_KEY, now, timeout=None)


@dataclass(frozen=True)
class Listening:
    now: bool  # False: no web process has ticked lately, so no node can be judged
    since: datetime | None  # silence before this says nothing about a node


def listening(now: float | None = None) -> Listening:
    """Whether the control plane is listening, and since when without a gap (both
    unknown, so no restriction, when no tick is recorded)."""
    now = time.time() if now is None else now
    found = cache.get_many([TICK_KEY, SINCE_KEY])
    last, since = found.get(TICK_KEY), found.get(SINCE_KEY)
    if last is None:
        return Listening(now=True, since=None)
    if now - float(last) > tick_seconds() * STALE_AFTER_TICKS:
        return Listening(now=False, since=None)
    return Listening(now=True, since=datetime.fromtimestamp(float(since or last), tz=UTC))


_started_in: int | None = None
_lock = threading.Lock()
_stop = threading.Event()


def start_ticking() -> None:
    """Start this process's ticking thread, once per process (gunicorn forks workers
    after loading the application, and threads do not survive a fork: so this is
    called on each request and starts the thread in the process that serves it)."""
    global _started_in
    pid = os.getpid()
    if _started_in == pid or not settings.RAYDECK_LISTENING_TICKS:
        return
    with _lock:
        if _started_in == pid:
            return
        _started_in = pid
        _stop.clear()
        threading.Thread(target=_tick_forever, name="raydeck-listening", daemon=True).start()


def start_ticking_after_fork() -> None:
    """start_ticking for a child process just forked (os.register_at_fork): the lock
    may have been held by a thread that the fork did not copy."""
    global _lock, _started_in
    _lock, _started_in = threading.Lock(), None
    start_ticking()


def stop_ticking() -> None:
    """Stop this process's ticking thread (tests)."""
    global _started_in
    with _lock:
        _stop.set()
        _started_in = None


def _tick_forever() -> None:
    while not _stop.is_set():
        try:
            tick()
        except Exception:  # the cache is down: the ticks stop, which is the truth
            logger.warning("Could not record that the web tier is listening.", exc_info=True)
        _stop.wait(tick_seconds())
