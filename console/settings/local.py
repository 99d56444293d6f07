"""The embedded default: SQLite, a filesystem Celery transport, no Redis needed.

Everything lives under var/, so deleting that folder resets the installation.
"""

import os

from django.core.management.utils import get_random_secret_key

from .base import *  # noqa: F403
from .base import VAR_DIR

DEBUG = os.environ.get("RAYDECK_DEBUG", "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


def _local_secret_key() -> str:
    # Generated once per installation and kept beside the database, never committed.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(get_random_secret_key())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _local_secret_key()

# A file cache is shared by the web, worker and beat processes, so login rate limits
# count across all of them.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": VAR_DIR / "cache",
    }
}

EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

_BROKER_DIR = VAR_DIR / "broker"
# kombu's folder transport with an atomic put (kit/folder_broker.py says why). The host
# is unused by it; naming one keeps kombu from warning about it.
CELERY_BROKER_URL = "kit.folder_broker.Transport+filesystem://localhost/"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(_BROKER_DIR / "queue"),
    "data_folder_out": str(_BROKER_DIR / "queue"),
    "processed_folder": str(_BROKER_DIR / "processed"),
    "store_processed": False,
    # Broadcasts (remote control, pidbox); kombu's default is ./control in the cwd.
    "control_folder": str(_BROKER_DIR / "control"),
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# A local identity provider on this machine may speak plain http (see base.py).
RAYDECK_SSO_ALLOW_HTTP_LOOPBACK = True

# SQLite cannot enforce SsoGroupMapping's NULLS NOT DISTINCT constraint; the service
# checks the same rule, and the warning would be the first thing `make run` prints.
SILENCED_SYSTEM_CHECKS = ["models.W047"]
