from importlib import import_module

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Console"

    def ready(self) -> None:
        # Tasks (celery's shared_task) find their app as Celery's default app when they
        # are sent. A process that has not loaded console/celery.py (a web process: the
        # app and its signals cost its start) gets it then, not Celery's own fallback
        # app with its default broker.
        from celery import _state
        from celery.local import Proxy

        if _state.default_app is None:
            _state.set_default_app(Proxy(lambda: import_module("console.celery").app))
