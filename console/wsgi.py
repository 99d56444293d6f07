import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")
django_application = get_wsgi_application()

# Imported once the apps are loaded (get_wsgi_application above loads them).
from clusters.agent_api import HEARTBEAT_PATH, HeartbeatApp  # noqa: E402
from clusters.services.listening import start_ticking  # noqa: E402
from console.api import fast  # noqa: E402

heartbeat_application = HeartbeatApp()
api_read_application = fast.ApiReadApp()
# Listening from the start, before any request: gunicorn's master ticks from here (it
# loads this module before forking), and each worker from its first request on.
start_ticking()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Every request goes through Django with all the middleware, except the two that
    come by the thousand: agent heartbeats and the API's cluster list. Those go to lean
    handlers (console/lean.py) that call the same service code with only the security
    and host checks, and hand anything but a plain 200 back to Django."""
    start_ticking()  # the reconciler judges nodes only while we listen (once per process)
    path = environ.get("PATH_INFO", "")
    if path == HEARTBEAT_PATH:
        return heartbeat_application(environ, start_response)
    if fast.handles(path):
        return api_read_application(environ, start_response)
    return django_application(environ, start_response)
