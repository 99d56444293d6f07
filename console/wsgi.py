import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")
django_application = get_wsgi_application()

# Imported once the apps are loaded (get_wsgi_application above loads them).
from clusters.agent_api import HEARTBEAT_PATH, HeartbeatApp  # noqa: E402

heartbeat_application = HeartbeatApp()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Every request goes through Django with all the middleware, except agent heartbeats
    (thousands of nodes, every few seconds): that one exact path goes to a lean handler
    that calls the same service code with only the security and host checks, and hands
    anything but a plain 200 back to Django (clusters.agent_api.HeartbeatApp)."""
    if environ.get("PATH_INFO") == HEARTBEAT_PATH:
        return heartbeat_application(environ, start_response)
    return django_application(environ, start_response)
