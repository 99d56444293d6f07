"""Fixed-window request counters in the shared cache, so every web process sees the same
count: the API's per-token limit and the per-address limits of the pages anyone may
call (the CLI hand-off, SSO starts).

They fail open: while the cache cannot be reached, a request is counted as the window's
first (and logged), so an outage of Redis costs the limits for its duration, never the
requests themselves. A limit guards capacity, not access: nothing it protects is unsafe
for a minute without it (revocations, by contrast, fail closed: accounts/revocations.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from .django_internals import redis_client
from .outages import dependency_down

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    count: int  # requests in this window, this one included
    retry_after: float  # seconds until the next window starts


def count_request(scope: str, window_seconds: int) -> Window:
    """Count one request of `scope` (who is asking, for what) in the current window of
    `window_seconds`. On Redis it is one round trip (SET NX with expiry, then INCR, in
    one pipeline); other caches (the embedded default's files, tests' memory) take two."""
    now = time.time()
    try:
        return _count(scope, window_seconds, now)
    except Exception as exc:
        if dependency_down(exc) is None:
            raise
        logger.warning("Rate limit of %s not counted: the shared cache is unreachable.", scope)
        return Window(count=1, retry_after=window_seconds - now % window_seconds)


def _count(scope: str, window_seconds: int, now: float) -> Window:
    slot = int(now // window_seconds)
    key = f"raydeck:rate:{scope}:{slot}"
    ttl = window_seconds + 1
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        key = backend.make_and_validate_key(key)
        pipeline = redis_client(backend).pipeline(transaction=False)
        pipeline.set(key, 0, ex=ttl, nx=True)
        pipeline.incr(key)
        count = int(pipeline.execute()[1])
    else:
        cache.add(key, 0, timeout=ttl)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=ttl)
            count = 1
    return Window(count=count, retry_after=(slot + 1) * window_seconds - now)


def over_limit(scope: str, per_minute: int) -> bool:
    """Count a request of `scope` and say whether it is more than `per_minute` this minute."""
    return count_request(scope, 60).count > per_minute
