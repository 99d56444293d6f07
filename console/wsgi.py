import functools
import gc
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")
django_application = get_wsgi_application()

# Imported once the apps are loaded (get_wsgi_application above loads them).
from django.core.signals import setting_changed  # noqa: E402
from django.urls import get_resolver, reverse  # noqa: E402

from clusters.agent_api import HEARTBEAT_PATH, HeartbeatApp  # noqa: E402
from clusters.live import start_ticking, start_ticking_after_fork  # noqa: E402
from kit.lean import LeanApp  # noqa: E402

# Middleware reads its settings when built; only tests change them (and the lean API
# path hands its refusals to this application, which must then follow them).
setting_changed.connect(lambda **kwargs: django_application.load_middleware(), weak=False)

heartbeat_application = HeartbeatApp()


@functools.cache
def api_read_application() -> LeanApp:
    """The API's cluster list path, loaded with the API by its first request (console/
    api/fast.py): ninja and its models are a third of a start that most processes'
    first minutes do not need."""
    from console.api.fast import ApiReadApp

    return ApiReadApp(django_application)


def load_lazy_parts() -> None:
    """Loads the JSON API and the Celery app (with every task) now instead of at their
    first use: production's master does before it forks its workers (console/
    gunicorn_conf.py), so they share them and none pays for them on a request; the
    embedded default leaves them out of its cold start."""
    from console.api import endpoints  # noqa: F401 - ninja's views, built on import
    from console.celery import app  # noqa: F401 - makes every declared task (kit/tasks.py)

    api_read_application()
    gc.freeze()


def _api_cluster_list(path: str) -> bool:
    """A cheap first look; the lean app matches the path exactly."""
    return path.startswith("/api/v1/orgs/") and path.endswith("/clusters")


# Each gunicorn worker ticks from its start, before any request. Never from here, in
# the master: a thread running while the master forks can hand the worker a module
# it was half-way through importing.
os.register_at_fork(after_in_child=start_ticking_after_fork)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Every request goes through Django with all the middleware, except the two that
    come by the thousand: agent heartbeats and the API's cluster list. Those go to lean
    handlers (kit/lean.py) that call the same service code with only the security
    and host checks, and hand anything but a plain 200 back to Django."""
    start_ticking()  # the reconciler judges nodes only while we listen (once per process)
    path = environ.get("PATH_INFO", "")
    if path == HEARTBEAT_PATH:
        return heartbeat_application(environ, start_response)
    if _api_cluster_list(path):
        return api_read_application()(environ, start_response)
    return django_application(environ, start_response)


# Every URL module, imported and compiled here rather than by each worker's first request
# (a tenth of a second each, and pages the workers would not share).
get_resolver().resolve("/healthz")
reverse("healthz")

# Everything imported so far lives as long as the process: keep the collector from ever
# scanning it, so that the workers gunicorn forks from here (--preload) do not copy the
# pages those objects sit on when a collection touches them.
gc.freeze()
