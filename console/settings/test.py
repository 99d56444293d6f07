"""Tests: PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set (CI), else SQLite."""

import os

import dj_database_url

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

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    # A database of its own per test run would be ideal; a key prefix keeps runs apart.
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
