"""Settings shared by every way of running Raydeck.

local.py (the embedded default), production.py and test.py build on this file. Only
secrets and addresses come from the environment; everything else is decided here.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from csp.constants import NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("RAYDECK_VAR_DIR", BASE_DIR / "var"))

DEBUG = False
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "csp",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    # Single sign-on: one SocialApp per organization (accounts.models.SsoConnection).
    "allauth.socialaccount",
    "allauth.socialaccount.providers.saml",
    "allauth.socialaccount.providers.openid_connect",
    "accounts",
    "clouds",
    "clusters",
    "workloads",
    "kit",
    "console",
]

MIDDLEWARE = [
    "kit.api.middleware.ApiErrorShapeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "kit.middleware.SessionExpiryMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "accounts.audit.AuditContextMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            # {% partialdef %} everywhere without {% load %}; the app wraps the loaders.
            "builtins": [
                "template_partials.templatetags.partials",
                "kit.templatetags.console",
            ],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
                "console.context_processors.navigation",
            ],
        },
    },
]

# Mapping, not dict: production.py and test.py put in dj_database_url's DBConfig, a
# TypedDict, which is not a dict[str, Any] to the type checker.
DATABASES: dict[str, Mapping[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "raydeck.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

SITE_ID = 1
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "account_login"

# --- Sessions: 30 minutes idle, 12 hours absolute (ASVS L2), enforced by
# kit.middleware.SessionExpiryMiddleware; the cookie itself lives as long as the cap.
RAYDECK_SESSION_IDLE_SECONDS = int(os.environ.get("RAYDECK_SESSION_IDLE_SECONDS", 30 * 60))
RAYDECK_SESSION_ABSOLUTE_SECONDS = int(
    os.environ.get("RAYDECK_SESSION_ABSOLUTE_SECONDS", 12 * 60 * 60)
)
SESSION_COOKIE_AGE = RAYDECK_SESSION_ABSOLUTE_SECONDS
# Sessions read from the cache (Redis in production), written through to the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# --- django-allauth: email is the login, verification is mandatory.
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_SESSION_REMEMBER = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Raydeck] "
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
# allauth's default rate limits stay on (login_failed is 10/m/ip, 5/300s per account);
# they live in the cache, which is shared between processes in every setting file.
ACCOUNT_RATE_LIMITS: dict[str, str] = {}
# Single sign-on goes through accounts/sso/: an IdP's email never signs in to an
# existing account by itself (accounts.sso.services decides, per verified domain), and
# allauth's own social sign-up and account connecting stay closed.
SOCIALACCOUNT_ADAPTER = "accounts.sso.adapter.SocialAccountAdapter"
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = False
SOCIALACCOUNT_AUTO_SIGNUP = False
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_PROVIDERS: dict[str, dict[str, Any]] = {
    "openid_connect": {
        "OAUTH_PKCE_ENABLED": True,
        # Always PKCE S256 and a nonce, whatever an app's settings say (accounts.sso.oidc_sign_in).
        "provider_class": "accounts.sso.oidc_sign_in.RaydeckOidcProvider",
    },
}
# OIDC issuers and their endpoints must be https; plain http is accepted only on the
# loopback interface when this is on (the embedded default and tests: a local IdP).
RAYDECK_SSO_ALLOW_HTTP_LOOPBACK = False
# Where domain-claim TXT records are looked up: "host" or "host:port" nameservers,
# comma-separated; empty means the system's resolver (/etc/resolv.conf).
RAYDECK_DNS_NAMESERVERS = [
    ns.strip() for ns in os.environ.get("RAYDECK_DNS_NAMESERVERS", "").split(",") if ns.strip()
]
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Raydeck"

# --- Security headers. CSP needs no unsafe-inline/unsafe-eval: no inline scripts or
# styles anywhere, htmx runs with allowEval off (see templates/base.html).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    },
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# --- Celery: at-least-once work that survives a killed worker. Tasks are short
# (long waits are re-enqueued polls), so a visibility timeout of 10 minutes is longer
# than any task's hard time limit.
CELERY_TASK_TIME_LIMIT = 5 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 4 * 60
CELERY_VISIBILITY_TIMEOUT = 10 * 60
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "clouds-reverify-daily": {
        "task": "clouds.tasks.reverify_clouds",
        "schedule": 24 * 60 * 60,
    },
    "sessions-clear-expired": {
        "task": "accounts.tasks.clear_expired_sessions",
        "schedule": 60 * 60,
    },
}

# --- JSON API (/api/v1): requests per token per window, counted in the shared cache.
RAYDECK_API_RATE_LIMIT = int(os.environ.get("RAYDECK_API_RATE_LIMIT", 1200))
RAYDECK_API_RATE_WINDOW = int(os.environ.get("RAYDECK_API_RATE_WINDOW", 60))

# --- Console behaviour.
RAYDECK_INVITATION_DAYS = 7
RAYDECK_PAGE_SIZE = 50

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# Where this installation is reached, for links in emails.
RAYDECK_BASE_URL = os.environ.get("RAYDECK_BASE_URL", "http://127.0.0.1:8000")

# --- Clouds.
# Raydeck's own AWS principal, which customers' roles trust (with an ExternalId).
# Empty: this installation cannot add AWS clouds, and the add page says so.
RAYDECK_AWS_PRINCIPAL_ARN = os.environ.get("RAYDECK_AWS_PRINCIPAL_ARN", "")
# Raydeck's own identity towards GCP Workload Identity Federation: a file holding an
# OIDC token (e.g. a projected service-account token); empty = the AWS identity above.
RAYDECK_GCP_SUBJECT_TOKEN_FILE = os.environ.get("RAYDECK_GCP_SUBJECT_TOKEN_FILE", "")
# The machine image a node boots when its cluster's image names none for the place: on
# AWS a public SSM parameter holding the region's AMI id (Ubuntu 24.04 LTS by default;
# the boot script adds pip and Ray when the image lacks them); on GCP an image family.
RAYDECK_AWS_AMI_PARAMETER = os.environ.get(
    "RAYDECK_AWS_AMI_PARAMETER",
    "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
)
RAYDECK_GCP_IMAGE = os.environ.get(
    "RAYDECK_GCP_IMAGE", "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64"
)
# The local cloud runs nodes as processes on this machine.
RAYDECK_LOCAL_CLOUD_ENABLED = os.environ.get("RAYDECK_LOCAL_CLOUD_ENABLED", "1") == "1"
RAYDECK_LOCAL_CLOUD_ROOT = Path(os.environ.get("RAYDECK_LOCAL_CLOUD_ROOT", VAR_DIR / "local-cloud"))

# --- Clusters.
# Where node agents reach the control plane (defaults to the console's address).
RAYDECK_AGENT_URL = os.environ.get("RAYDECK_AGENT_URL", "")
RAYDECK_HEARTBEAT_SECONDS = 5
RAYDECK_NODE_LOST_AFTER_MISSED = 3  # heartbeats
# Web processes tick the cache so the reconciler judges no node while none is listening
# (clusters/live.py). Off in tests, which tick by hand.
RAYDECK_LISTENING_TICKS = True
RAYDECK_LAUNCH_TIMEOUT_SECONDS = 10 * 60  # cloud call to instance up
RAYDECK_REGISTER_TIMEOUT_SECONDS = 5 * 60  # instance up to agent registered
RAYDECK_READY_TIMEOUT_SECONDS = 5 * 60  # agent registered to Ray ready
RAYDECK_ORPHAN_GRACE_SECONDS = 120
# Heartbeats (clusters/services/agents.py): each web process keeps its table of live
# nodes this long, so a terminated cluster's nodes hear "stop" (and a gone node's
# credential stops working) within it; heartbeat fields other than state changes are
# batched and written this often.
RAYDECK_AGENT_CACHE_SECONDS = 2.0
RAYDECK_AGENT_WRITE_BEHIND_SECONDS = 1.0
CELERY_BEAT_SCHEDULE.update(
    {
        "clusters-sweep": {
            "task": "clusters.tasks.sweep_clusters",
            "schedule": int(os.environ.get("RAYDECK_SWEEP_SECONDS", 30)),
        },
        "clusters-orphans": {"task": "clusters.tasks.sweep_orphans", "schedule": 120},
        "clusters-idle": {
            "task": "clusters.tasks.sweep_idle_clusters",
            "schedule": int(os.environ.get("RAYDECK_IDLE_SWEEP_SECONDS", 30)),
        },
    }
)
# The dead-man's switch (raydeck_agent/deadman.py): a head that cannot reach the control
# plane for this long, while its cluster is idle for as long, stops Ray by itself.
RAYDECK_DEADMAN_SECONDS = int(os.environ.get("RAYDECK_DEADMAN_SECONDS", 60 * 60))
