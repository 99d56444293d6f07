"""Tests: PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set (CI), else SQLite."""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403

SECRET_KEY = "test-only-secret-key-that-is-long-enough-for-django-checks-0123456789"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

if os.environ.get("DATABASE_URL"):
    DATABASES = {
        "default": {
            **dj_database_url.parse(os.environ["DATABASE_URL"]),
            "OPTIONS": {"prepare_threshold": 5},  # as in production
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}


def _worker_redis_url(url: str, worker: str) -> str:
    """REDIS_URL's database plus the pytest-xdist worker's number (gw0 +0, gw1 +1...): the
    workers of a parallel run flush their cache (cache.clear() is a FLUSHDB) and read
    global keys, so each needs a Redis database of its own. A process a test starts with
    the test's environment derives the same one (so a test that gives its processes a
    redis-server of their own runs serial: they would not use that server's database 0);
    without xdist it is REDIS_URL's."""
    if not (url and worker.startswith("gw")):
        return url
    parts = urlsplit(url)
    number = int(parts.path.lstrip("/") or 0) + int(worker.removeprefix("gw"))
    if number > 15:  # redis-server's default `databases 16`
        raise ImproperlyConfigured(f"{worker}'s Redis database {number} does not exist")
    return urlunsplit(parts._replace(path=f"/{number}"))


_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
REDIS_URL = _worker_redis_url(os.environ.get("REDIS_URL", ""), _XDIST_WORKER)
# The local cloud's default folder for tests: apart from `make run`'s, and one per xdist
# worker (the orphan sweep and the port choice of one worker's tests must not see the
# other's nodes). The session's last guard (tests/conftest.py) kills any node left in it.
TEST_LOCAL_CLOUD_ROOT = VAR_DIR / "-".join(filter(None, ["local-cloud-tests", _XDIST_WORKER]))  # noqa: F405
RAYDECK_LOCAL_CLOUD_ROOT = Path(os.environ.get("RAYDECK_LOCAL_CLOUD_ROOT", TEST_LOCAL_CLOUD_ROOT))
if REDIS_URL:
    # One database per pytest-xdist worker (above); a key prefix keeps the processes that
    # share it apart.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Processes that must share it (the fault tests' Celery workers) get one prefix.
            "KEY_PREFIX": os.environ.get(
                "RAYDECK_TEST_CACHE_PREFIX", f"raydeck-test-{os.getpid()}"
            ),
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = REDIS_BROKER_OPTIONS  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests only
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# A local identity provider on this machine may speak plain http (see base.py).
RAYDECK_SSO_ALLOW_HTTP_LOOPBACK = True
# Tests tick by hand (clusters/live.py); the soak test's web processes tick for real.
RAYDECK_LISTENING_TICKS = os.environ.get("RAYDECK_LISTENING_TICKS") == "1"
# Scale tests and benchmarks start processes that use a stand-in cloud driver
# (tests/standin_cloud.py): the test that starts them says so in their environment.
RAYDECK_TEST_CLOUD_DRIVER = os.environ.get("RAYDECK_TEST_CLOUD_DRIVER", "")
