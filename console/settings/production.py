"""Production: PostgreSQL, Redis, HTTPS behind a load balancer.

Required environment: DJANGO_SECRET_KEY, DATABASE_URL, REDIS_URL, ALLOWED_HOSTS.
"""

import os

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403


def _require(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"{name} must be set for production settings.")
    return value


SECRET_KEY = _require("DJANGO_SECRET_KEY")
SECRET_KEY_FALLBACKS = [
    k for k in os.environ.get("DJANGO_SECRET_KEY_FALLBACKS", "").split(",") if k
]
ALLOWED_HOSTS = [h.strip() for h in _require("ALLOWED_HOSTS").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [f"https://{h.lstrip('.')}" for h in ALLOWED_HOSTS if h != "*"]
# Links in emails: the first allowed host over HTTPS unless said otherwise.
RAYDECK_BASE_URL = os.environ.get("RAYDECK_BASE_URL") or f"https://{ALLOWED_HOSTS[0].lstrip('.')}"
# Node agents send their credentials to this URL: HTTPS only. RAYDECK_AGENT_ALLOW_HTTP=1
# lets a plain http:// RAYDECK_AGENT_URL through, for nodes that reach Raydeck over a
# private network the operator trusts to carry them (README, "Security").
RAYDECK_AGENT_URL = os.environ.get("RAYDECK_AGENT_URL", "")
if (RAYDECK_AGENT_URL or RAYDECK_BASE_URL).startswith("http://") and os.environ.get(
    "RAYDECK_AGENT_ALLOW_HTTP", ""
) != "1":
    raise ImproperlyConfigured(
        "RAYDECK_AGENT_URL must be an https:// URL for production settings: agents send "
        "their credentials there. On a trusted private network only, set "
        "RAYDECK_AGENT_ALLOW_HTTP=1."
    )

# JSON lines unless told otherwise (kit/logs.py).
LOGGING = logging_config(os.environ.get("RAYDECK_LOG_FORMAT", "json"))  # noqa: F405

DATABASES = {
    "default": dj_database_url.parse(
        _require("DATABASE_URL"), conn_max_age=60, conn_health_checks=True
    )
}
# psycopg prepares a statement the fifth time a connection runs it, which spares
# PostgreSQL planning the hottest reads anew (kit/statements.py; Django's own
# queries use client-side binding and are never prepared). Set
# RAYDECK_DB_PREPARED_STATEMENTS=0 behind a pooler in transaction mode that cannot keep them.
if os.environ.get("RAYDECK_DB_PREPARED_STATEMENTS", "1") == "1":
    DATABASES["default"] = {**DATABASES["default"], "OPTIONS": {"prepare_threshold": 5}}
REDIS_URL = _require("REDIS_URL")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
}
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = REDIS_BROKER_OPTIONS  # noqa: F405

# HTTPS only, behind a proxy that sets X-Forwarded-Proto (and strips the client's).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
# Load balancers probe over plain HTTP inside the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = 365 * 24 * 60 * 60
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_NAME = "__Host-sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken"

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Production never runs customer nodes on the control plane's own machine by default.
RAYDECK_LOCAL_CLOUD_ENABLED = os.environ.get("RAYDECK_LOCAL_CLOUD_ENABLED", "0") == "1"

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("EMAIL_USE_TLS", "0") == "1"
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "raydeck@localhost")
