"""gunicorn's settings for Raydeck's web processes: `gunicorn -c python:console.gunicorn_conf
console.wsgi:application` (deploy/ uses it). gunicorn's own lines (boot, worker exits)
are written in the same format as Raydeck's (kit/logs.py); requests are logged once, by
Django (kit.logs.RequestIdMiddleware), so gunicorn keeps no access log."""

import os

from console.settings.base import logging_config

logconfig_dict = logging_config(os.environ.get("RAYDECK_LOG_FORMAT", "json"))
# Named, so the handler gunicorn gave it at start is replaced by Raydeck's.
logconfig_dict["loggers"]["gunicorn.error"] = {
    "handlers": ["console"],
    "level": "INFO",
    "propagate": False,
}
accesslog = None
# Behind a load balancer: keep connections a little longer than its idle timeout.
keepalive = 75


def when_ready(server: object) -> None:
    """In the master, after --preload loaded the app and before the workers fork."""
    from console.wsgi import load_lazy_parts

    load_lazy_parts()
