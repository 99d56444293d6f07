"""Settings shared by every way of running Raydeck.

local.py (the embedded default), production.py and test.py build on this file. Only
secrets and addresses come from the environment; everything else is decided here.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from csp.constants import NONE, SELF

from kit import inline_assets

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
    # allauth's OpenID Connect provider, loaded on first use (accounts/sso/oidc/provider.py).
    "accounts.sso.oidc",
    "accounts",
    "clouds",
    "clusters",
    "workloads",
    "workloads.jobs",
    "workloads.workspaces",
    "workloads.serve",
    "kit",
    "console",
]

MIDDLEWARE = [
    "kit.metrics.RequestMetricsMiddleware",
    "kit.logs.RequestIdMiddleware",
    "kit.api.middleware.ApiErrorShapeMiddleware",
    "kit.middleware.RefuseNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Outside WhiteNoise, so static files are compressed too (kit/middleware.py says when).
    "kit.middleware.CompressMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "kit.middleware.HtmxSignInRedirectMiddleware",
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
        # The embedded default runs web, worker and beat processes on one file: WAL lets
        # readers work beside a writer; a transaction takes the write lock when it begins
        # (a deferred one that reads and then writes fails at once on a busy database,
        # whatever the timeout); a writer waits up to 20 s for another instead of failing.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
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
# The console's own files (collected into STATIC_ROOT for production; some go inline).
RAYDECK_STATIC_DIR = BASE_DIR / "static"
STATICFILES_DIRS = [RAYDECK_STATIC_DIR]
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
    # The same provider, its URLs with views imported on first use (accounts/sso/urls.py).
    "saml": {"provider_class": "accounts.sso.saml_provider.RaydeckSamlProvider"},
    "openid_connect": {
        "OAUTH_PKCE_ENABLED": True,
        # Always PKCE S256 and a nonce, whatever an app's settings say (accounts.sso.oidc_sign_in,
        # whose provider this stand-in makes: accounts/sso/oidc/provider.py).
        "provider_class": "accounts.sso.oidc.provider.LazyOidcProvider",
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
# styles but the console's own files, allowed by hash; htmx runs with allowEval off (see
# templates/base.html).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        # The console's own CSS and scripts travel inside each page (kit/inline_assets.py).
        "script-src": [
            SELF,
            *(inline_assets.csp_source(RAYDECK_STATIC_DIR, p) for p in inline_assets.SCRIPTS),
        ],
        "style-src": [
            SELF,
            *(inline_assets.csp_source(RAYDECK_STATIC_DIR, p) for p in inline_assets.STYLES),
        ],
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
# Two queues. "asap" carries reconciles of changes someone just asked for (a create, a
# terminate, an agent's report: clusters.tasks.enqueue_reconcile); "celery" everything
# else, including the periodic follow-ups of every running cluster, which at 1,000
# clusters are a standing backlog a change must not wait behind (docs/operations.md).
# Workers consume both, and on Redis they poll them in name order ("sorted"), so a
# waiting change is always taken first: "asap" is named to sort before "celery".
CELERY_TASK_DEFAULT_QUEUE = "celery"
CHANGES_QUEUE = "asap"
# The queues' names; console/celery.py makes them kombu's Queues (kombu is not
# imported here: it costs a web process's start).
TASK_QUEUES = [CHANGES_QUEUE, CELERY_TASK_DEFAULT_QUEUE]
# What the settings that broker through Redis pass as CELERY_BROKER_TRANSPORT_OPTIONS.
REDIS_BROKER_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "queue_order_strategy": "sorted",
}
# A second beat started by mistake stands by instead of sending twice (console/beat.py).
CELERY_BEAT_SCHEDULER = "console.beat:SingleBeatScheduler"
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

# --- Metrics (kit/metrics.py). /metrics answers only `Authorization: Bearer <token>` with
# this token, and is a 404 while it is empty. A Celery worker serves its own series on
# this port (0: off) and address, for a worker pod with a metrics directory of its own.
RAYDECK_METRICS_TOKEN = os.environ.get("RAYDECK_METRICS_TOKEN", "")
RAYDECK_WORKER_METRICS_PORT = int(os.environ.get("RAYDECK_WORKER_METRICS_PORT", "0"))
RAYDECK_WORKER_METRICS_ADDR = os.environ.get("RAYDECK_WORKER_METRICS_ADDR", "127.0.0.1")

# --- Console behaviour.
RAYDECK_INVITATION_DAYS = 7
RAYDECK_PAGE_SIZE = 50

# Logs (kit/logs.py): JSON lines (RAYDECK_LOG_FORMAT=json, production's default) or plain,
# the same for web, worker and beat (Celery leaves the root logger to this), each line
# with the request id it serves.
RAYDECK_LOG_FORMAT = os.environ.get("RAYDECK_LOG_FORMAT", "plain")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False


def logging_config(log_format: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "kit.logs.RequestIdFilter"},
            # A 403 or 404 is the client's doing: one line, no traceback.
            "client_errors": {"()": "kit.logs.ClientErrorsWithoutTraceback"},
        },
        "formatters": {
            "plain": {
                "()": "kit.logs.PlainFormatter",
                "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
            },
            "json": {"()": "kit.logs.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if log_format == "json" else "plain",
                "filters": ["request_id", "client_errors"],
            }
        },
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": {"django.db.backends": {"level": "INFO"}},
    }


LOGGING = logging_config(RAYDECK_LOG_FORMAT)

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
# A dotted path to a factory (cloud -> driver) that stands in for every cloud: only the
# test settings read it from the environment (scale tests, benchmarks/reconcile.py).
RAYDECK_TEST_CLOUD_DRIVER = ""

# --- Clusters.
# Where node agents reach the control plane (defaults to the console's address).
RAYDECK_AGENT_URL = os.environ.get("RAYDECK_AGENT_URL", "")
# A PEM file of the CAs node agents verify RAYDECK_AGENT_URL's certificate with, when
# it is not signed by a CA the nodes' systems trust (boot scripts carry it to the nodes).
RAYDECK_AGENT_CA_BUNDLE = os.environ.get("RAYDECK_AGENT_CA_BUNDLE", "")
RAYDECK_HEARTBEAT_SECONDS = 5
# A head with work a user waits on (jobs starting or running, a queue cluster) heartbeats
# this often, so a queued job starts within about a second (clusters/head_orders.py).
RAYDECK_PROMPT_HEARTBEAT_SECONDS = 1
# A node silent this long while the control plane listened is lost (and replaced). How
# long a gap in listening may go unnoticed follows from it (clusters/live.py); it must
# exceed that gap plus one heartbeat interval by a margin (a system check says so).
RAYDECK_NODE_LOST_AFTER_SECONDS = 3 * RAYDECK_HEARTBEAT_SECONDS
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
# TLS for the clusters' gateways (clusters/certificates.py): the installation's own CA, or
# an operator-supplied intermediate CA (its certificate and chain, and its key, as PEM
# files); certificates for heads live this long and are renewed in heartbeat answers.
RAYDECK_CA_CERT_FILE = os.environ.get("RAYDECK_CA_CERT_FILE", "")
RAYDECK_CA_KEY_FILE = os.environ.get("RAYDECK_CA_KEY_FILE", "")
RAYDECK_GATEWAY_CERT_SECONDS = int(os.environ.get("RAYDECK_GATEWAY_CERT_SECONDS", 7 * 24 * 3600))
# Optional: each cluster's gateway is also `c-<cluster uuid hex>.<domain>` (a wildcard DNS
# record of the operator's points there); without it users reach heads by address.
RAYDECK_CLUSTER_DOMAIN = os.environ.get("RAYDECK_CLUSTER_DOMAIN", "")
CELERY_BEAT_SCHEDULE.update(
    {
        "clusters-sweep": {
            "task": "clusters.tasks.sweep_clusters",
            "schedule": int(os.environ.get("RAYDECK_SWEEP_SECONDS", 10)),
        },
        "clusters-orphans": {"task": "clusters.tasks.sweep_orphans", "schedule": 120},
        "image-builds-sweep": {
            "task": "clusters.tasks.sweep_image_builds",
            "schedule": int(os.environ.get("RAYDECK_BUILD_SWEEP_SECONDS", 15)),
        },
        "clusters-idle": {
            "task": "clusters.tasks.sweep_idle_clusters",
            "schedule": int(os.environ.get("RAYDECK_IDLE_SWEEP_SECONDS", 30)),
        },
        # Services' orchestrator resumes from rows (workloads/serve/tasks.py).
        "services-sweep": {"task": "workloads.serve.tasks.sweep_services", "schedule": 10},
    }
)
# An image build nobody polled for this long (its worker died) is polled again by the sweep.
RAYDECK_BUILD_STALE_SECONDS = int(os.environ.get("RAYDECK_BUILD_STALE_SECONDS", 30))
# The dead-man's switch (raydeck_agent/deadman.py): a head that cannot reach the control
# plane for this long, while its cluster is idle for as long, stops Ray by itself.
RAYDECK_DEADMAN_SECONDS = int(os.environ.get("RAYDECK_DEADMAN_SECONDS", 60 * 60))

# Working directories (workloads/storage.py): the largest zipped tree a job may upload.
RAYDECK_WORKDIR_MAX_BYTES = int(os.environ.get("RAYDECK_WORKDIR_MAX_BYTES", 100 * 1024 * 1024))
# Jobs (workloads/jobs): re-enqueue every unfinished job, so a worker killed mid-way or a
# lost message delays a job by this much at most.
CELERY_BEAT_SCHEDULE["jobs-sweep"] = {
    "task": "workloads.jobs.tasks.sweep_jobs",
    "schedule": int(os.environ.get("RAYDECK_JOBS_SWEEP_SECONDS", 10)),
}
# Job schedules (workloads/jobs/schedules.py): submit the runs that are due. A cron
# names minutes, so a run starts at most this late.
CELERY_BEAT_SCHEDULE["job-schedules"] = {
    "task": "workloads.jobs.tasks.run_due_schedules",
    "schedule": 15,
}
# --- Workspaces (workloads/workspaces): what of a head's working directory is kept
# between runs, and how often it is saved while running. Shown on the workspace page.
RAYDECK_WORKSPACE_FILES = {
    "save_every_seconds": int(os.environ.get("RAYDECK_WORKSPACE_SAVE_SECONDS", 180)),
    "max_file_bytes": 100 * 1024 * 1024,
    "max_total_bytes": 2 * 1024 * 1024 * 1024,
    "excludes": [".ipynb_checkpoints", "__pycache__", ".cache", ".venv", "node_modules", "*.pyc"],
}
CELERY_BEAT_SCHEDULE["workspaces-sweep"] = {
    "task": "workloads.workspaces.tasks.sweep_workspaces",
    "schedule": int(os.environ.get("RAYDECK_WORKSPACE_SWEEP_SECONDS", 15)),
}
